"""How busy the real main window keeps the Qt thread with 500 devices updating every second.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_gui.py [--devices 500] [--seconds 60]
        [--rest-seconds 0] [--json FILE]

The real ``MainWindow`` (its bridge built but not started: no network) is fed one ``PoolState``
batch a second in which every device changed, from a QTimer, as the observer link would deliver
them; the window shows the Dashboard for the first half and the Devices tab for the second, so
both the charts and the cards are exercised. The batches are generated before the clock starts
(that cost is the benchmark's, not the app's).

Measured on the Qt thread:
* busy fraction: the Qt thread's CPU time over the wall time (what it spent processing events);
* stalls: the lateness of a 10 ms heartbeat timer (precise): the worst, the 99th percentile,
  and the worst part of a gap the thread spent on the CPU itself (on a loaded machine a gap can
  also be time spent waiting for a core, which no GUI code can shorten).
Targets (issue 4): busy under 10 %, no stall over 50 ms.

``--rest-seconds``: then the window is left at rest (no more batches) that long, and the whole
process's CPU over that time and its resident memory are measured (issue 14: a member's cost
when idle, the window's side).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QT_API", "pyside6")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QSettings, Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from poolnet_desktop.core.devices import pool_totals  # noqa: E402
from poolnet_desktop.core.protocol import PoolState  # noqa: E402
from poolnet_desktop.gui.bridge import PoolBridge  # noqa: E402
from poolnet_desktop.gui.main_window import MainWindow  # noqa: E402
from poolnet_desktop.gui.settings_model import SettingsStore  # noqa: E402
from poolnet_desktop.gui.theme import install_theme  # noqa: E402
from poolnet_desktop.gui.tray import PoolTray  # noqa: E402
from tools.screenshot_widgets import device_at, simulated_fleet  # noqa: E402

HEARTBEAT_MS = 10
FIRST_BATCH_S = 2.0  # the one-off start-up (cards created, pyqtgraph's first draw) ends by then


def batches(devices: int, seconds: int) -> list[PoolState]:
    fleet = simulated_fleet(devices)
    out = []
    for second in range(seconds + 1):
        views = [device_at(m, second, online=True) for m in fleet]
        out.append(PoolState(seq=second + 1, full=second == 0, devices=views, removed=[], pool=pool_totals([v.resources for v in views]),
                             tasks={"queued": 3, "running": 12, "succeeded": 40}))
    return out


class Meter:
    """A heartbeat's lateness, and how much of each late gap the Qt thread spent on the CPU
    (work of its own) rather than waiting for a core (other processes' load)."""

    def __init__(self) -> None:
        self.late_ms: list[float] = []
        self.cpu_ms: list[float] = []  # the thread's CPU time within each gap, minus nothing
        self.beat_at: list[float] = []  # seconds since start, per heartbeat
        self.t0 = self._last_beat = time.perf_counter()
        self._last_cpu = time.thread_time()
        self.heartbeat = QTimer()
        self.heartbeat.setTimerType(Qt.TimerType.PreciseTimer)
        self.heartbeat.setInterval(HEARTBEAT_MS)
        self.heartbeat.timeout.connect(self._beat)

    def start(self) -> None:
        self.t0 = self._last_beat = time.perf_counter()
        self._last_cpu = time.thread_time()
        self.heartbeat.start()

    def _beat(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        self.late_ms.append(max(0.0, (now - self._last_beat) * 1000 - HEARTBEAT_MS))
        self.cpu_ms.append((cpu - self._last_cpu) * 1000)
        self.beat_at.append(now - self.t0)
        self._last_beat, self._last_cpu = now, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--rest-seconds", type=float, default=0.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here as JSON")
    args = parser.parse_args()

    app = QApplication.instance() or QApplication([])
    assert isinstance(app, QApplication)
    app.setQuitOnLastWindowClosed(False)
    install_theme(app)
    feed = batches(args.devices, args.seconds)
    gc.freeze()  # the pre-built feed is the benchmark's data: keep it out of the app's GC passes
    scratch = tempfile.TemporaryDirectory(prefix="poolnet-bench-gui-")
    store = SettingsStore(QSettings(str(Path(scratch.name) / "s.ini"), QSettings.Format.IniFormat))
    store.update(data_dir=str(Path(scratch.name) / "data"), discovery=False)
    window = MainWindow(store, PoolBridge(store), PoolTray())
    window.resize(1280, 820)
    window.show()
    window.ensure_charts()

    meter = Meter()
    sent = 0

    def tick() -> None:
        nonlocal sent
        window.apply_state(feed[sent])
        sent += 1
        if sent == len(feed) // 2:
            window.show_page(1)  # the Devices tab for the second half
        if sent == len(feed):
            app.quit()

    feeder = QTimer()
    feeder.setInterval(1000)
    feeder.timeout.connect(tick)
    started, cpu_started = time.perf_counter(), time.thread_time()
    meter.start()
    feeder.start()
    tick()
    app.exec()
    wall = time.perf_counter() - started
    cpu = time.thread_time() - cpu_started
    meter.heartbeat.stop()
    feeder.stop()

    beats = list(zip(meter.late_ms, meter.cpu_ms, meter.beat_at))
    steady = sorted(late for late, _, at in beats if at > FIRST_BATCH_S)
    own = max((min(late, cpu) for late, cpu, at in beats if at > FIRST_BATCH_S), default=0.0)
    first = max((late for late, _, at in beats if at <= FIRST_BATCH_S), default=0.0)
    print(f"devices: {args.devices}, batches: {sent} over {wall:.1f} s, cards: {len(window.model)}")
    print(f"Qt thread busy (its CPU time / wall): {cpu / wall * 100:.1f} % (target < 10 %)")
    print(f"heartbeat every {HEARTBEAT_MS} ms, lateness after the first batch: worst {steady[-1]:.1f} ms, "
          f"p99 {steady[int(len(steady) * 0.99)]:.1f} ms, median {statistics.median(steady):.2f} ms; "
          f"worst spent working on the thread itself: {own:.1f} ms (target: no stall > 50 ms)")
    print(f"the first batch ({args.devices} new cards, pyqtgraph's first draw): {first:.0f} ms")
    figures = {
        "devices": args.devices, "seconds": round(wall, 1), "batches": sent,
        "busy_pct": round(cpu / wall * 100, 2),
        "late_p99_ms": round(steady[int(len(steady) * 0.99)], 1), "late_max_ms": round(steady[-1], 1),
        "own_stall_max_ms": round(own, 1), "first_batch_ms": round(first),
    }
    if args.rest_seconds > 0:
        figures.update(at_rest(app, args.rest_seconds))
        print(f"at rest for {args.rest_seconds:g} s: {figures['rest_cpu_pct']:.2f} % of a core, "
              f"{figures['rest_rss_mib']:.0f} MiB resident (most ever)")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    window.deleteLater()
    scratch.cleanup()


def at_rest(app: QApplication, seconds: float) -> dict[str, float]:
    """The whole process's CPU (percent of one core) while the window is left alone, and its
    peak resident memory."""
    started, cpu_started = time.perf_counter(), time.process_time()
    QTimer.singleShot(int(seconds * 1000), app.quit)
    app.exec()
    percent = (time.process_time() - cpu_started) / (time.perf_counter() - started) * 100
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"rest_seconds": seconds, "rest_cpu_pct": round(percent, 3), "rest_rss_mib": round(peak_mib, 1)}


if __name__ == "__main__":
    main()
