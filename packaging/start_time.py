"""Time the installed desktop app from process start to its window shown (offscreen).

    .venv/bin/python packaging/start_time.py [--exe /opt/poolnet/poolnet-desktop] [-n 5]

Each run starts the bundle's executable as its own Python on ``window_probe.py``, which runs
the app's ``main`` and reports the first window exposed; the clock runs from just before the
process is spawned until that report. Prints every run and the median. The runs share one data
folder, so only the first creates this instance's identity, as on a real first start.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from poolnet_desktop.frozen import FLAG

PROBE = Path(__file__).resolve().parent / "window_probe.py"


def one_start(exe: str, home: Path) -> float:
    """Seconds from spawning ``exe`` to its window being exposed."""
    argv = [exe, FLAG, str(PROBE), "--no-discovery", "--data-dir", str(home / "data"), "--settings", str(home / "settings.ini")]
    env = {"PATH": os.defpath, "HOME": str(home), "LANG": "C.UTF-8", "QT_QPA_PLATFORM": "offscreen"}
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - started
    if "window-shown" not in result.stdout:
        raise SystemExit(f"no window from {exe}:\n{result.stderr}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exe", default="/opt/poolnet/poolnet-desktop", help="the bundle's poolnet-desktop")
    parser.add_argument("-n", "--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        times = [one_start(args.exe, Path(home)) for _ in range(args.runs)]
    print("runs:   " + "  ".join(f"{t:.2f}" for t in times) + " s")
    print(f"median: {statistics.median(times):.2f} s (start to window shown, offscreen)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
