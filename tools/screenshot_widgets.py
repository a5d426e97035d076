"""Render each desktop widget to PNG, in light and dark, fed with simulated pool data.

    QT_QPA_PLATFORM=offscreen python tools/screenshot_widgets.py [OUT_DIR] [--devices N]

Writes ``charts-{light,dark}.png``, ``charts-by-device-{light,dark}.png``,
``devices-{light,dark}.png`` and ``drop-zone-{light,dark}.png`` (default OUT_DIR: ./screenshots).
The data is a deterministic simulation: ten minutes of ``PoolState`` batches, one a second,
from a fleet of made-up machines whose load drifts smoothly, as the coordinator would send them.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QT_API", "pyside6")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PySide6.QtWidgets import QApplication, QWidget  # noqa: E402

from poolnet_desktop.core.devices import DeviceView, iso8601, pool_totals  # noqa: E402
from poolnet_desktop.core.protocol import PoolState  # noqa: E402
from poolnet_desktop.core.resources import Resources  # noqa: E402
from poolnet_desktop.gui.charts import ResourceCharts  # noqa: E402
from poolnet_desktop.gui.devices_view import DevicesView  # noqa: E402
from poolnet_desktop.gui.drop_zone import DropZone  # noqa: E402
from poolnet_desktop.gui.pool_model import PoolModel, Resource  # noqa: E402
from poolnet_desktop.gui.theme import apply_theme  # noqa: E402

WALL_START = datetime(2026, 3, 2, 14, 0, tzinfo=timezone.utc).timestamp()
SECONDS = 600

_MACHINES = [
    # name, platform, cores, memory GB, storage GB, GPU name, GPU count
    ("render-box", "linux", 32, 128, 2000, "NVIDIA GeForce RTX 4090", 2),
    ("workstation-01", "linux", 16, 64, 1000, "NVIDIA RTX A4000", 1),
    ("anna-macbook", "darwin", 10, 32, 512, "Apple M2 Pro", 1),
    ("office-pc-3", "windows", 8, 16, 512, None, 0),
    ("lab-server", "linux", 64, 256, 8000, None, 0),
    ("old-thinkpad", "linux", 4, 8, 256, None, 0),
    ("gaming-rig", "windows", 12, 32, 2000, "AMD Radeon RX 7900 XT", 1),
    ("nas", "linux", 4, 16, 16000, None, 0),
]


def simulated_fleet(count: int, seed: int = 7) -> list[tuple[str, str, str, int, float, float, str | None, int]]:
    """``count`` machines: the named ones first, then numbered copies of them."""
    rng = random.Random(seed)
    fleet = []
    for i in range(count):
        name, platform, cores, mem_gb, disk_gb, gpu, gpus = _MACHINES[i % len(_MACHINES)]
        if i >= len(_MACHINES):
            name = f"{name}-{i // len(_MACHINES) + 1}"
        fleet.append((f"dev-{i:04d}", name, platform, cores, mem_gb * 1024.0, disk_gb * 1024.0, gpu,
                      gpus if rng.random() > 0.1 else 0))
    return fleet


def device_at(machine: tuple, second: int, online: bool) -> DeviceView:
    """One machine's view at ``second`` of the simulation: smooth load waves, per machine."""
    device_id, name, platform, cores, mem_mb, disk_mb, gpu, gpus = machine
    phase = int(device_id[-4:]) * 0.9
    wave = 0.5 + 0.45 * math.sin(second / 70.0 + phase) * math.cos(second / 190.0 + phase / 2)
    cpu = max(1.0, min(99.0, 100.0 * wave))
    memory = mem_mb * (0.25 + 0.5 * wave)
    storage = disk_mb * (0.4 + 0.0002 * second)
    return DeviceView(
        id=device_id,
        name=name,
        platform=platform,
        ip_address=f"192.168.1.{20 + int(device_id[-4:]) % 230}",
        last_seen=iso8601(WALL_START + (second if online else 120)),
        is_online=online,
        resources=Resources(
            cpu_usage=cpu, cpu_available=100.0 - cpu, cpu_cores=cores,
            memory_usage=memory, memory_available=mem_mb - memory, memory_total=mem_mb,
            storage_usage=storage, storage_available=disk_mb - storage, storage_total=disk_mb,
            has_gpu=gpus > 0, gpu_name=gpu if gpus else None,
            gpu_usage=min(100.0, cpu * 1.1) if gpus else None, gpu_count=gpus,
        ),
        running_shards=int(wave * 6) if online else 0,
    )


def feed(model: PoolModel, count: int) -> None:
    """Ten minutes of one-second batches; the fourth machine drops offline at minute eight."""
    fleet = simulated_fleet(count)
    for second in range(SECONDS + 1):
        devices = [device_at(m, second, online=not (i == 3 and second > 480)) for i, m in enumerate(fleet)]
        online = [d.resources for d in devices if d.is_online]
        model.apply(
            PoolState(
                seq=second + 1, full=second == 0, devices=devices, removed=[], pool=pool_totals(online),
                tasks={"queued": 4, "running": 7, "succeeded": 42, "failed": 1},
            ),
            now=float(second),
        )


def save(app: QApplication, widget: QWidget, path: Path, width: int, height: int) -> None:
    widget.resize(width, height)
    widget.show()
    for _ in range(3):
        app.processEvents()
    widget.grab().save(str(path))
    print(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("screenshots"))
    parser.add_argument("--devices", type=int, default=8)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication([])
    model = PoolModel()
    feed(model, args.devices)
    for scheme in ("light", "dark"):
        apply_theme(app, dark=scheme == "dark")
        charts = ResourceCharts(model)
        save(app, charts, args.out / f"charts-{scheme}.png", 1200, 760)
        charts.show_device_breakdown(Resource.CPU)
        save(app, charts, args.out / f"charts-by-device-{scheme}.png", 1200, 760)
        # Widgets are deleted here, in order, not by the garbage collector at exit (where
        # pyqtgraph's items can outlive their scene and crash the interpreter).
        charts.deleteLater()

        devices = DevicesView(model, clock=lambda: WALL_START + SECONDS + 3)
        devices.resize(1040, 660)
        devices.show()
        app.processEvents()
        devices.flush()  # place the cards for the final width now, not a timer tick later
        save(app, devices, args.out / f"devices-{scheme}.png", 1040, 660)
        devices.deleteLater()

        zone = DropZone()
        zone.show_message("notes.txt is not a task: drop a .pool.toml manifest, a script, or a folder holding one")
        save(app, zone, args.out / f"drop-zone-{scheme}.png", 720, 240)
        zone.deleteLater()
        app.processEvents()


if __name__ == "__main__":
    main()
