"""NVIDIA GPUs through NVML (the ``nvidia-ml-py`` package, module ``pynvml``).

On a machine without an NVIDIA GPU or driver, NVML fails to load within a millisecond; that is
the normal case for most desktops, so it is logged at debug level and the machine simply reports
no GPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from poolnet_desktop.core.units import bytes_to_mb

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GpuSample:
    index: int
    name: str
    utilisation: float  # percent
    memory_total_mb: float
    memory_used_mb: float


class GpuProbe:
    """Reads every NVIDIA GPU; ``available`` is False when NVML cannot be used here."""

    def __init__(self) -> None:
        self._nvml = None
        self._handles: list[object] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._nvml = pynvml
        except Exception as exc:  # NVMLError_LibraryNotFound, driver mismatch, no device...
            log.debug("no NVIDIA GPU usable here: %s", exc)

    def sample(self) -> list[GpuSample]:
        """One reading per GPU; a GPU that fails to answer is left out of this reading."""
        if self._nvml is None:
            return []
        nvml = self._nvml
        samples = []
        for index, handle in enumerate(self._handles):
            try:
                name = nvml.nvmlDeviceGetName(handle)
                util = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            except nvml.NVMLError as exc:
                log.debug("GPU %d did not answer: %s", index, exc)
                continue
            samples.append(
                GpuSample(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    utilisation=float(util.gpu),
                    memory_total_mb=bytes_to_mb(memory.total),
                    memory_used_mb=bytes_to_mb(memory.used),
                )
            )
        return samples

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._nvml = None
