"""``./dev bench``: every benchmark at a quick size, into one JSON file of results.

Runs, one after the other, each benchmark script with ``--json`` at a size that keeps the
whole under about five minutes: throughput beside ``xargs -P 2`` (with the one-shard latency
and the start-to-start gap; members on uvloop and asyncio, sandboxed and not), scale at 1,000
simulated members held 30 s, the window at 500 devices for 20 s, recovery after a member is
SIGKILLed (beside the same task undisturbed), and a member's cost at rest (``poolnet join``,
and the window left alone after its 20 s). Then writes
``benchmarks/results/DATE-COMMIT.json``: the commit (``-dirty`` when the tree has changes),
the date, the machine (CPU model, cores, load average before and after), and each benchmark's
arguments, seconds, figures and targets. Baselines (``xargs``, the undisturbed task) are
measured in the same run: compare ratios, not absolute figures, on a shared machine.

``benchmarks/render_readme.py FILE`` then makes the README's figure tables from that file.

    ./dev bench [--only throughput,recovery] [--set 'scale=--members 5000 --hold-s 300'] [--out FILE]

``--set NAME=ARGS`` runs one benchmark with other arguments than its quick size (the file
records which), for the figures a quick run cannot give, such as 5,000 members held 5 minutes.

A benchmark that fails is recorded with its error (the others still run) and the exit code
is 1. Loopback only; each benchmark stops what it started.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# name -> (script, quick-size arguments, the targets its figures are held to: issue 14)
BENCHMARKS: dict[str, tuple[str, list[str], dict[str, Any]]] = {
    "throughput": (
        "bench_throughput.py",
        ["--shards", "2000", "--latency-tasks", "20", "--gap-shards", "4",
         "--member-loops", "uvloop,asyncio", "--sandbox", "both"],
        {"ratio_to_xargs_min": 1.0, "gap_median_ms_max": 5.0},
    ),
    "scale": (
        "bench_scale.py",
        ["--members", "1000", "--hold-s", "30", "--ramp", "200"],
        {"note": "at 5,000 members", "host_cpu_pct_max": 50, "host_rss_mb_max": 500,
         "staleness_p99_s_max": 2.0, "shard_start_p99_s_max": 1.0},
    ),
    "gui": (
        "bench_gui.py",
        ["--devices", "500", "--seconds", "20", "--rest-seconds", "15"],
        {"busy_pct_max": 10.0, "own_stall_max_ms": 50.0, "rest_cpu_pct_max": 0.5},
    ),
    "recovery": (
        "bench_recovery.py",
        ["--shards", "8", "--shard-s", "1.5", "--kill-after", "2.25"],
        {"recovery_max_s": 2.0},
    ),
    "idle": (
        "bench_idle.py",
        ["--seconds", "20", "--member-loops", "uvloop,asyncio"],
        {"cpu_pct_max": 0.5},
    ),
}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()


def commit_name() -> str:
    """The short commit, with ``-dirty`` when tracked files differ from it."""
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD") + ("-dirty" if dirty else "")


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu_model": model, "cores": os.cpu_count(), "system": platform.platform(),
            "python": platform.python_version()}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_one(name: str, arguments: list[str], timeout: float) -> dict[str, Any]:
    """One benchmark as a subprocess: its arguments, seconds, figures (or error) and targets."""
    script, _, targets = BENCHMARKS[name]
    entry: dict[str, Any] = {"script": f"benchmarks/{script}", "args": arguments, "targets": targets}
    with tempfile.TemporaryDirectory(prefix=f"poolnet-bench-{name}-") as folder:
        out = Path(folder) / "figures.json"
        started = time.monotonic()
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QT_API": "pyside6"}
        try:
            done = subprocess.run([sys.executable, str(HERE / script), *arguments, "--json", str(out)],
                                  cwd=HERE, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            done = None
        entry["seconds"] = round(time.monotonic() - started, 1)
        if done is None:
            entry["error"] = f"did not end within {timeout:.0f} s"
        elif done.returncode != 0 or not out.exists():
            entry["error"] = f"exit {done.returncode}: {(done.stderr or done.stdout)[-1500:]}"
        else:
            entry["figures"] = json.loads(out.read_text())
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help="comma-separated, from: " + ", ".join(BENCHMARKS))
    parser.add_argument("--out", type=Path, default=None,
                        help="the results file (default: benchmarks/results/DATE-COMMIT.json)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=ARGS",
                        help="run benchmark NAME with these arguments instead of its quick size")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per benchmark at most")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    arguments = {name: spec[1] for name, spec in BENCHMARKS.items()}
    for setting in args.set:
        name, _, line = setting.partition("=")
        arguments[name] = shlex.split(line)
        names += [name] if name not in names else []
    if unknown := [n for n in names if n not in BENCHMARKS]:
        parser.error(f"no benchmark {unknown[0]!r}; they are {', '.join(BENCHMARKS)}")
    now = datetime.datetime.now(datetime.timezone.utc)
    commit = commit_name()
    results: dict[str, Any] = {
        "commit": commit, "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "command": "./dev bench",
        "machine": machine(), "load_average_before": load_average(), "benchmarks": {},
    }
    for name in names:
        print(f"==> {name}", file=sys.stderr, flush=True)
        results["benchmarks"][name] = entry = run_one(name, arguments[name], args.timeout)
        print(f"    {entry['seconds']} s" + (f": FAILED {entry['error']}" if "error" in entry else ""),
              file=sys.stderr, flush=True)
    results["load_average_after"] = load_average()
    out = args.out or HERE / "results" / f"{now:%Y-%m-%d}-{commit}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(out)
    return 1 if any("error" in e for e in results["benchmarks"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
