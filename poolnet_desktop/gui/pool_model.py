"""The pool as the window sees it: devices by id, totals, task counts and their recent history.

``PoolModel`` is fed the coordinator's ``PoolState`` batches (by the bridge, or by a test) and
turns each into fine-grained Qt signals, so that a view updates only what changed: a card per
``device_changed``, the charts once per ``history_changed``. It holds the only copy of the data;
views read it back through ``device()``, ``totals``, ``history`` and ``device_history()``.
"""

from __future__ import annotations

from enum import Enum

from PySide6.QtCore import QObject, Signal

from poolnet_desktop.core.devices import DeviceView, PoolTotals
from poolnet_desktop.core.history import History
from poolnet_desktop.core.protocol import PoolState


class Resource(Enum):
    """A pooled resource, with the unit its history is kept in."""

    CPU = ("CPU", "cores")
    GPU = ("GPU", "GPUs")
    MEMORY = ("Memory", "MB")
    STORAGE = ("Storage", "MB")

    def __init__(self, label: str, unit: str) -> None:
        self.label = label
        self.unit = unit

    @property
    def used(self) -> str:
        """The history channel of what is in use."""
        return f"{self.name.lower()}_used"

    @property
    def total(self) -> str:
        """The pooled history channel of the total (online devices only)."""
        return f"{self.name.lower()}_total"


POOL_CHANNELS = tuple(ch for r in Resource for ch in (r.used, r.total))
DEVICE_CHANNELS = tuple(r.used for r in Resource)


def device_usage(device: DeviceView) -> tuple[float, float, float, float]:
    """What one device has in use, in ``DEVICE_CHANNELS`` order: cores, GPUs busy, MB, MB.

    An offline device contributes nothing, as in the coordinator's totals.
    """
    if not device.is_online:
        return (0.0, 0.0, 0.0, 0.0)
    r = device.resources
    return (
        r.cpu_usage * r.cpu_cores / 100.0,
        (r.gpu_usage or 0.0) * r.gpus / 100.0,
        r.memory_usage,
        r.storage_usage,
    )


def pool_usage(totals: PoolTotals) -> tuple[float, ...]:
    """The pooled figures in ``POOL_CHANNELS`` order (GPU in use is busy share times count)."""
    return (
        totals.cpu_cores_used,
        float(totals.total_cpu_cores),
        totals.gpu_usage * totals.total_g_p_us / 100.0,
        float(totals.total_g_p_us),
        totals.memory_used,
        totals.total_memory,
        totals.storage_used,
        totals.total_storage,
    )


class PoolModel(QObject):
    """Devices, totals and history, updated one ``PoolState`` batch at a time.

    Signals fire during ``apply`` in this order: removals, additions and changes (one per
    device whose view differs from before), then ``totals_changed`` when the totals or task
    counts differ, then ``history_changed`` once.
    """

    device_added = Signal(str)
    device_changed = Signal(str)
    device_removed = Signal(str)
    totals_changed = Signal()
    history_changed = Signal()

    def __init__(
        self,
        history_seconds: float = 600.0,
        sample_interval: float = 1.0,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        if sample_interval <= 0 or history_seconds < sample_interval:
            raise ValueError(
                f"need 0 < sample_interval <= history_seconds, got {sample_interval}, "
                f"{history_seconds}"
            )
        self._capacity = int(history_seconds / sample_interval)
        self._interval = sample_interval
        self._devices: dict[str, DeviceView] = {}
        self._device_history: dict[str, History] = {}
        self._totals = PoolTotals()
        self._tasks: dict[str, int] = {}
        self._seq: int | None = None
        # Ids listed so far by a full snapshot still arriving in parts; None when none is open.
        self._snapshot: set[str] | None = None
        self.history = History(POOL_CHANNELS, self._capacity, sample_interval)

    @property
    def totals(self) -> PoolTotals:
        return self._totals

    @property
    def tasks(self) -> dict[str, int]:
        """Task counts by state (``queued``, ``running``, ``succeeded``, ``failed``, ...)."""
        return dict(self._tasks)

    @property
    def seq(self) -> int | None:
        """The ``seq`` of the last batch applied, None before the first."""
        return self._seq

    @property
    def window_seconds(self) -> float:
        """How far back the history reaches once full."""
        return self._capacity * self._interval

    def __len__(self) -> int:
        return len(self._devices)

    def device(self, device_id: str) -> DeviceView | None:
        return self._devices.get(device_id)

    def devices(self) -> list[DeviceView]:
        return list(self._devices.values())

    def device_history(self, device_id: str) -> History | None:
        """One device's usage over time (channels ``DEVICE_CHANNELS``), None if unknown."""
        return self._device_history.get(device_id)

    def apply(self, state: PoolState, now: float) -> bool:
        """Take one batch in, at monotonic time ``now`` (seconds), and signal what changed.

        A ``full`` batch replaces everything: devices absent from it are removed. It may come
        in parts (``full`` on the first, ``more`` on all but the last); the ids of every part
        are gathered and the removal waits for the last part, so that a device listed in a
        later part is never removed and re-added (losing its history). A partial batch whose
        ``seq`` is not newer than the last one applied is a duplicate or arrived out of order;
        it is ignored and False is returned. The caller must resubscribe (and so get a full
        batch) after a gap, since lost changes cannot be rebuilt here.
        """
        if not state.full and self._seq is not None and state.seq <= self._seq:
            return False
        self._seq = state.seq

        listed = {d.id for d in state.devices}
        if state.full:
            self._snapshot = set()
        gone: list[str] = []
        if self._snapshot is not None:
            self._snapshot |= listed
            if not state.more:
                gone = [i for i in self._devices if i not in self._snapshot]
                self._snapshot = None
        gone.extend(
            i for i in state.removed if i in self._devices and i not in listed and i not in gone
        )
        for device_id in gone:
            del self._devices[device_id]
            del self._device_history[device_id]
            self.device_removed.emit(device_id)

        for device in state.devices:
            old = self._devices.get(device.id)
            self._devices[device.id] = device
            if old is None:
                self._device_history[device.id] = History(
                    DEVICE_CHANNELS, self._capacity, self._interval
                )
                self.device_added.emit(device.id)
            elif old != device:
                self.device_changed.emit(device.id)

        tasks = dict(state.tasks)
        if state.full or state.pool != self._totals or tasks != self._tasks:
            self._totals, self._tasks = state.pool, tasks
            self.totals_changed.emit()

        # Only a new sample needs every device (a device unchanged since the last one still
        # takes a slot); within a sample, devices outside this part are unchanged, so only the
        # part's own are rewritten: at 5,000 devices that is 500 records a part, not 5,000.
        new_sample = self.history.record(now, pool_usage(self._totals))
        for device in self._devices.values() if new_sample else state.devices:
            self._device_history[device.id].record(now, device_usage(device))
        self.history_changed.emit()
        return True
