"""GUI tests run offscreen with PySide6; the environment is set before anything imports Qt.

The ``make_device`` and ``make_state`` fixtures build the coordinator's real message types
(``DeviceView`` and ``PoolState``) with plausible values, so tests name only what they check.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QT_API", "pyside6")
os.environ.setdefault("PYTEST_QT_API", "pyside6")
# The window writes its pause rules into the data folder (sharing.toml): never the real one.
os.environ.setdefault("POOLNET_HOME", __import__("tempfile").mkdtemp(prefix="poolnet-gui-tests-"))

from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from poolnet_desktop.core.devices import DeviceView, PoolTotals, pool_totals  # noqa: E402
from poolnet_desktop.core.protocol import PoolState  # noqa: E402
from poolnet_desktop.core.resources import Resources  # noqa: E402

MakeDevice = Callable[..., DeviceView]
MakeState = Callable[..., PoolState]


def binding_drops_references() -> str | None:
    """Why the installed Qt binding is unusable, or None when it is sound.

    PySide6-Essentials 6.12.0 on Python 3.11 returns ``None`` from every void method (``move``,
    ``show``, ``update``, ``setText``...) and ``True`` from ``Signal.emit`` without taking a
    reference (harmless only where they are immortal, Python 3.12+). Each call then drops one
    reference to the singleton, and after some thousands the interpreter aborts with
    "Fatal Python error: none_dealloc". 6.11.3 on Python 3.11 is sound.
    """
    import sys

    from PySide6 import __version__
    from PySide6.QtCore import QObject, Signal

    class Probe(QObject):
        fired = Signal()

    probe = Probe()
    none_before, true_before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(64):
        probe.setObjectName("probe")  # a void method
        probe.fired.emit()
    lost_none = none_before - sys.getrefcount(None)
    lost_true = true_before - sys.getrefcount(True)
    if lost_none < 64 and lost_true < 64:
        return None
    return (
        f"PySide6 {__version__} on Python {sys.version.split()[0]} drops a reference to None on "
        f"every void call and to True on every emit ({lost_none} and {lost_true} lost in 64 "
        "calls): a running window aborts within minutes. Install PySide6-Essentials<6.12 "
        "(6.11.3 verified) or run on Python 3.12+."
    )


BINDING_DEFECT = binding_drops_references()


def _device(
    device_id: str,
    name: str | None = None,
    *,
    online: bool = True,
    cpu: float = 25.0,
    cores: int = 8,
    memory_used: float = 4096.0,
    memory_total: float = 16384.0,
    gpu: float | None = None,
    gpu_name: str | None = None,
    platform: str = "linux",
    ip: str = "192.168.1.20",
    shards: int = 0,
    last_seen: str = "2026-01-01T12:00:00.000Z",
    storage_used: float = 100_000.0,
    storage_total: float = 500_000.0,
    **resources: Any,
) -> DeviceView:
    return DeviceView(
        id=device_id,
        name=name if name is not None else device_id,
        platform=platform,
        ip_address=ip,
        last_seen=last_seen,
        is_online=online,
        resources=Resources(
            cpu_usage=cpu,
            cpu_available=100.0 - cpu,
            cpu_cores=cores,
            memory_usage=memory_used,
            memory_available=memory_total - memory_used,
            memory_total=memory_total,
            storage_usage=storage_used,
            storage_total=storage_total,
            storage_available=storage_total - storage_used,
            has_gpu=gpu is not None,
            gpu_name=gpu_name,
            gpu_usage=gpu,
            gpu_count=1 if gpu is not None else 0,
            **resources,
        ),
        running_shards=shards,
    )


def _state(
    seq: int,
    devices: Sequence[DeviceView] = (),
    *,
    full: bool = False,
    removed: Sequence[str] = (),
    tasks: dict[str, int] | None = None,
    pool: PoolTotals | None = None,
) -> PoolState:
    """A batch whose totals are computed from ``devices`` as the coordinator would."""
    if pool is None:
        pool = pool_totals([d.resources for d in devices if d.is_online])
    return PoolState(
        seq=seq, full=full, devices=list(devices), removed=list(removed), pool=pool,
        tasks=tasks or {},
    )


@pytest.fixture
def make_device() -> MakeDevice:
    return _device


@pytest.fixture
def make_state() -> MakeState:
    return _state


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Async GUI tests run on a qasync loop, as the app does: Qt events and asyncio tasks share
    the thread. Such tests wait by polling with ``await asyncio.sleep``, never with qtbot's
    waits, which would re-enter the loop."""
    import qasync
    from PySide6.QtWidgets import QApplication

    return {"qasync": lambda: qasync.QEventLoop(QApplication.instance() or QApplication([]))}
