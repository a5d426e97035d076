"""Live resources of this machine, read with psutil and NVML, in the seed protocol's units."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from poolnet_desktop.core.resources import Resources, SharingLimits
from poolnet_desktop.core.units import bytes_to_mb
from poolnet_desktop.runtime.member.gpu import GpuProbe
from poolnet_desktop.runtime.uv_tool import this_platform_target


class ResourceSampler:
    """Samples CPU, memory, the storage volume holding ``storage_path``, and GPUs.

    ``sample()`` blocks for well under a millisecond on psutil and a few on NVML: call it through
    ``asyncio.to_thread`` from the event loop. CPU percent is measured between two calls, so the
    first reading primes the counter.
    """

    def __init__(self, storage_path: Path, gpu: GpuProbe | None = None) -> None:
        self._storage_path = storage_path
        self._gpu = gpu if gpu is not None else GpuProbe()
        self._cores = psutil.cpu_count(logical=True) or 1
        # The member's task environments as (count, bytes), once it has an executor.
        self.environments: Callable[[], tuple[int, int]] | None = None
        self._python_target = this_platform_target() or ""
        psutil.cpu_percent(interval=None)

    def sample(self, limits: SharingLimits) -> Resources:
        cpu = psutil.cpu_percent(interval=None)
        memory = psutil.virtual_memory()
        disk = psutil.disk_usage(str(self._storage_path))
        gpus = self._gpu.sample()
        return Resources(
            cpu_usage=cpu,
            cpu_available=max(0.0, 100.0 - cpu),
            cpu_cores=self._cores,
            memory_usage=bytes_to_mb(memory.total - memory.available),
            memory_available=bytes_to_mb(memory.available),
            memory_total=bytes_to_mb(memory.total),
            storage_usage=bytes_to_mb(disk.used),
            storage_available=bytes_to_mb(disk.free),
            storage_total=bytes_to_mb(disk.total),
            has_gpu=bool(gpus),
            gpu_name=gpus[0].name if gpus else None,
            gpu_usage=sum(g.utilisation for g in gpus) / len(gpus) if gpus else None,
            gpu_count=len(gpus),
            gpu_memory_total=sum(g.memory_total_mb for g in gpus),
            gpu_memory_used=sum(g.memory_used_mb for g in gpus),
            limits=limits,
            python_target=self._python_target,
            **self._environments(),
        )

    def _environments(self) -> dict[str, Any]:
        if self.environments is None:
            return {}
        count, size = self.environments()
        return {"environments": count, "environments_size": bytes_to_mb(size)}

    def close(self) -> None:
        self._gpu.close()
