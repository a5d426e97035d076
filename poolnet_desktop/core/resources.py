"""What a device has, what it shares, and what work asks for.

``Resources`` and ``Requirements`` are the seed protocol's objects with its field names and
units (percent, MB). ``ResourceVector`` is the scheduler's view: cores, MB, MB and GPUs, which
can be added, subtracted and compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import msgspec

Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]
# One exbibyte in MB: anything larger is a lie or a bug, and is refused at the edge.
MegaBytes = Annotated[float, msgspec.Meta(ge=0, le=1024.0**4)]
Cores = Annotated[int, msgspec.Meta(ge=0, le=100_000)]
ShortText = Annotated[str, msgspec.Meta(max_length=256)]


class SharingLimits(msgspec.Struct, rename="camel", frozen=True, omit_defaults=True):
    """How much of a machine its owner lends to the pool (the seed's defaults: 80/80/50/on)."""

    cpu_percent: Percent = 80.0
    memory_percent: Percent = 80.0
    storage_percent: Percent = 50.0
    gpu: bool = True


class Resources(msgspec.Struct, rename="camel", frozen=True, omit_defaults=False):
    """A live snapshot of one device, as reported every couple of seconds.

    Every field is optional on the wire (seed clients may omit any); the defaults are the
    seed's. ``gpuCount``, ``gpuMemoryTotal``, ``gpuMemoryUsed`` and ``limits`` are PoolNet's
    additions, which seed clients never send and may ignore.
    """

    cpu_usage: Percent = 0.0
    cpu_available: Percent = 100.0
    cpu_cores: Cores = 0
    memory_usage: MegaBytes = 0.0
    memory_available: MegaBytes = 0.0
    memory_total: MegaBytes = 0.0
    storage_usage: MegaBytes = 0.0
    storage_available: MegaBytes = 0.0
    storage_total: MegaBytes = 0.0
    has_gpu: bool = msgspec.field(default=False, name="hasGPU")
    gpu_name: ShortText | None = None
    gpu_usage: Percent | None = None
    gpu_count: Annotated[int, msgspec.Meta(ge=0, le=64)] = 0
    gpu_memory_total: MegaBytes = 0.0
    gpu_memory_used: MegaBytes = 0.0
    limits: SharingLimits | None = None
    # Python environments a member keeps built for tasks (issue 16): how many, and their size.
    environments: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    environments_size: MegaBytes = 0.0
    # The member's Python as uv names a platform (``x86_64-manylinux_2_36``; "" unknown): a
    # submitter resolves a task's requirements for each one present in the pool.
    python_target: Annotated[str, msgspec.Meta(max_length=64)] = ""

    @property
    def gpus(self) -> int:
        """GPUs present: a seed client only says ``hasGPU``, which counts as one."""
        return self.gpu_count or (1 if self.has_gpu else 0)


class Requirements(msgspec.Struct, frozen=True):
    """The seed's resource request: ``cpu`` in percent of one core (100 = one full core),
    ``memory`` and ``storage`` in MB, ``gpu`` whether one is needed."""

    cpu: Annotated[float, msgspec.Meta(ge=0, le=10_000_000)] = 0.0
    memory: MegaBytes = 0.0
    storage: MegaBytes = 0.0
    gpu: bool = False


@dataclass(frozen=True, slots=True)
class ResourceVector:
    """An amount of resources in scheduling units: CPU cores, memory MB, storage MB, GPUs."""

    cpu: float = 0.0
    memory_mb: float = 0.0
    storage_mb: float = 0.0
    gpus: int = 0

    def __add__(self, other: ResourceVector) -> ResourceVector:
        return ResourceVector(
            self.cpu + other.cpu,
            self.memory_mb + other.memory_mb,
            self.storage_mb + other.storage_mb,
            self.gpus + other.gpus,
        )

    def __sub__(self, other: ResourceVector) -> ResourceVector:
        return ResourceVector(
            self.cpu - other.cpu,
            self.memory_mb - other.memory_mb,
            self.storage_mb - other.storage_mb,
            self.gpus - other.gpus,
        )

    def fits_in(self, capacity: ResourceVector) -> bool:
        """True when every component of this demand is within ``capacity`` (with float slack)."""
        eps = 1e-9
        return (
            self.cpu <= capacity.cpu + eps
            and self.memory_mb <= capacity.memory_mb + eps
            and self.storage_mb <= capacity.storage_mb + eps
            and self.gpus <= capacity.gpus
        )

    def shortfall(self, capacity: ResourceVector) -> list[str]:
        """Which components do not fit, in words, for reasons shown to people."""
        lacking = []
        if self.cpu > capacity.cpu + 1e-9:
            lacking.append(f"{self.cpu:g} CPU cores (shares {capacity.cpu:.1f})")
        if self.memory_mb > capacity.memory_mb + 1e-9:
            lacking.append(f"{self.memory_mb:.0f} MB memory (shares {capacity.memory_mb:.0f})")
        if self.storage_mb > capacity.storage_mb + 1e-9:
            lacking.append(f"{self.storage_mb:.0f} MB storage (shares {capacity.storage_mb:.0f})")
        if self.gpus > capacity.gpus:
            lacking.append(f"{self.gpus} GPU (shares {capacity.gpus})")
        return lacking


def shared_capacity(resources: Resources, limits: SharingLimits) -> ResourceVector:
    """What a device lends the pool in total, from its size and its owner's limits.

    Memory is a share of the total (stable while other programs come and go); storage is a
    share of the free space, since used space is never lendable.
    """
    return ResourceVector(
        cpu=resources.cpu_cores * limits.cpu_percent / 100.0,
        memory_mb=resources.memory_total * limits.memory_percent / 100.0,
        storage_mb=resources.storage_available * limits.storage_percent / 100.0,
        gpus=resources.gpus if limits.gpu else 0,
    )
