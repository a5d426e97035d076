"""The device registry: who is in the pool, when each was last heard from, and what changed.

Pure: the caller passes the time in (seconds on a monotonic clock for liveness, and a wall
clock only for the ISO ``lastSeen`` field that the seed protocol shows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache

import msgspec

from poolnet_desktop.core.resources import Resources, ResourceVector, SharingLimits, shared_capacity


class DeviceView(msgspec.Struct, rename="camel"):
    """The seed's device object, as sent in ``devices``, ``device_joined`` and REST answers.

    ``role``, ``acceptTasks``, ``runningShards`` and ``sandbox`` are PoolNet's additions.
    """

    id: str
    name: str
    platform: str
    ip_address: str
    last_seen: str
    is_online: bool
    resources: Resources
    role: str = "member"
    accept_tasks: bool = True
    running_shards: int = 0
    sandbox: str = ""


@dataclass
class Device:
    """One device's live record inside the coordinator."""

    id: str
    name: str
    platform: str
    ip_address: str
    role: str
    last_seen_monotonic: float
    last_seen_wall: float
    resources: Resources = field(default_factory=Resources)
    limits: SharingLimits = field(default_factory=SharingLimits)
    online: bool = True
    accept_tasks: bool = True
    running_shards: int = 0
    sandbox: str = ""

    def view(self) -> DeviceView:
        return DeviceView(
            id=self.id,
            name=self.name,
            platform=self.platform,
            ip_address=self.ip_address,
            last_seen=iso8601(self.last_seen_wall),
            is_online=self.online,
            resources=self.resources,
            role=self.role,
            accept_tasks=self.accept_tasks,
            running_shards=self.running_shards,
            sandbox=self.sandbox,
        )

    def capacity(self) -> ResourceVector:
        """What this device lends the pool in total (nothing while offline or refusing)."""
        if not self.online or not self.accept_tasks:
            return ResourceVector()
        return shared_capacity(self.resources, self.limits)


def pool_totals(online: list[Resources]) -> PoolTotals:
    """The totals of the online devices' reports.

    Summed column by column (every batch asks, over thousands of devices; adding into the
    struct's fields one device at a time took twice as long). Float columns start from 0.0 so
    the JSON stays ``0.0``, never ``0``."""
    gpu_counts = [r.gpus for r in online]
    gpus = sum(gpu_counts)
    return PoolTotals(
        devices=len(online),
        total_cpu_cores=sum(r.cpu_cores for r in online),
        total_cpu_available=sum((r.cpu_available for r in online), 0.0),
        cpu_cores_used=sum((r.cpu_usage * r.cpu_cores for r in online), 0.0) / 100.0,
        total_memory_available=sum((r.memory_available for r in online), 0.0),
        total_memory=sum((r.memory_total for r in online), 0.0),
        memory_used=sum((r.memory_usage for r in online), 0.0),
        total_storage_available=sum((r.storage_available for r in online), 0.0),
        total_storage=sum((r.storage_total for r in online), 0.0),
        storage_used=sum((r.storage_usage for r in online), 0.0),
        total_g_p_us=gpus,
        gpu_usage=sum((r.gpu_usage or 0.0) * n for r, n in zip(online, gpu_counts)) / gpus if gpus else 0.0,
    )


def _lendable_size(r: Resources) -> tuple[float, float, float, int]:
    """The figures of a report that ``shared_capacity`` reads."""
    return r.cpu_cores, r.memory_total, r.storage_available, r.gpus


def iso8601(wall_seconds: float) -> str:
    """A UTC ISO-8601 timestamp with milliseconds and ``Z``, as JavaScript's toISOString()."""
    whole = math.floor(wall_seconds)
    micros = round((wall_seconds - whole) * 1_000_000)  # as datetime rounds, half to even
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    return f"{_iso_seconds(whole)}.{micros // 1000:03d}Z"


@lru_cache(maxsize=256)
def _iso_seconds(whole: int) -> str:
    # Every device view formats its lastSeen, thousands per batch, nearly all within the same
    # few seconds: formatting each second once keeps datetime out of the batch's cost.
    return datetime.fromtimestamp(whole, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


class PoolTotals(msgspec.Struct, rename="camel"):
    """The seed's ``pool`` object (REST ``/api/resources``), plus PoolNet's in-use figures.

    ``totalCpuAvailable`` is the sum of the devices' ``cpuAvailable`` percents, as the seed
    summed them; ``cpuCoresUsed`` is PoolNet's clearer figure in cores.
    """

    total_cpu_available: float = 0.0
    total_cpu_cores: int = 0
    total_memory_available: float = 0.0
    total_storage_available: float = 0.0
    total_g_p_us: int = msgspec.field(default=0, name="totalGPUs")
    devices: int = 0
    total_memory: float = 0.0
    total_storage: float = 0.0
    cpu_cores_used: float = 0.0
    memory_used: float = 0.0
    storage_used: float = 0.0
    gpu_usage: float = 0.0


class DeviceRegistry:
    """Every known device, with a dirty set so observers get changes in coalesced batches.

    Devices stay known after they go offline (their cards grey out) until ``forget``.
    """

    def __init__(self) -> None:
        self._devices: dict[str, Device] = {}
        self._changed: set[str] = set()
        self._removed: set[str] = set()

    def __len__(self) -> int:
        return len(self._devices)

    def __contains__(self, device_id: str) -> bool:
        return device_id in self._devices

    def get(self, device_id: str) -> Device | None:
        return self._devices.get(device_id)

    def all(self) -> list[Device]:
        return list(self._devices.values())

    def online_count(self) -> int:
        return sum(d.online for d in self._devices.values())

    def online(self) -> list[Device]:
        return [d for d in self._devices.values() if d.online]

    def register(
        self,
        device_id: str,
        name: str,
        platform: str,
        ip_address: str,
        role: str,
        now: float,
        wall: float,
    ) -> Device:
        """Add a device, or bring a known one back online with its new name and address."""
        device = self._devices.get(device_id)
        if device is None:
            device = Device(device_id, name, platform, ip_address, role, now, wall)
            self._devices[device_id] = device
        else:
            device.name, device.platform, device.ip_address, device.role = name, platform, ip_address, role
            device.online = True
            device.last_seen_monotonic, device.last_seen_wall = now, wall
        self._removed.discard(device_id)
        self._changed.add(device_id)
        return device

    def touch(self, device_id: str, now: float, wall: float) -> None:
        """Record that the device was heard from (any message counts as a sign of life)."""
        device = self._devices.get(device_id)
        if device is not None:
            device.last_seen_monotonic, device.last_seen_wall = now, wall

    def update_resources(self, device_id: str, resources: Resources) -> bool:
        """Take a device's new report; True when what it lends may have changed (its size or
        its limits), not only its usage figures, which change in every report."""
        device = self._devices.get(device_id)
        if device is None:
            return False
        before, limits_before = device.resources, device.limits
        device.resources = resources
        if resources.limits is not None:
            device.limits = resources.limits
        self._changed.add(device_id)
        return device.limits != limits_before or _lendable_size(resources) != _lendable_size(before)

    def set_accept_tasks(self, device_id: str, accept: bool) -> None:
        device = self._devices.get(device_id)
        if device is not None and device.accept_tasks != accept:
            device.accept_tasks = accept
            self._changed.add(device_id)

    def set_sandbox(self, device_id: str, state: str) -> None:
        device = self._devices.get(device_id)
        if device is not None and device.sandbox != state:
            device.sandbox = state
            self._changed.add(device_id)

    def set_running_shards(self, device_id: str, count: int) -> None:
        device = self._devices.get(device_id)
        if device is not None and device.running_shards != count:
            device.running_shards = count
            self._changed.add(device_id)

    def mark_offline(self, device_id: str) -> bool:
        """Mark a device offline; returns True if it was online (so others must be told)."""
        device = self._devices.get(device_id)
        if device is None or not device.online:
            return False
        device.online = False
        self._changed.add(device_id)
        return True

    def expired(self, now: float, timeout: float) -> list[str]:
        """Ids of online devices silent for longer than ``timeout`` seconds."""
        return [
            d.id for d in self._devices.values() if d.online and now - d.last_seen_monotonic > timeout
        ]

    def forget(self, device_id: str) -> bool:
        """Remove a device entirely (the user's "forget"); returns True if it was known."""
        if self._devices.pop(device_id, None) is None:
            return False
        self._changed.discard(device_id)
        self._removed.add(device_id)
        return True

    def take_changes(self) -> tuple[list[Device], list[str]]:
        """The devices changed and the ids removed since the last call; clears both sets."""
        changed = [self._devices[i] for i in self._changed if i in self._devices]
        removed = sorted(self._removed)
        self._changed.clear()
        self._removed.clear()
        return changed, removed

    def totals(self) -> PoolTotals:
        """Pool totals over online devices, in the seed's units (percent, MB)."""
        return pool_totals([d.resources for d in self._devices.values() if d.online])
