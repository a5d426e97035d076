"""The seed system's allocation: answer a ``resource_request`` with a plan across devices.

For each online device other than the requester, in order, take the minimum of what it has
available, what is still required and what its owner shares, for CPU, memory and storage, and a
GPU when one is required and the device has one and shares it. ``fulfilled`` is true when nothing
remains required and a required GPU was found.

Units follow the seed: CPU in percent of one core (100 = one full core), memory and storage in MB.
A device's ``cpuAvailable`` is a percent of the whole machine, so it is scaled by its core count.
"""

from __future__ import annotations

from collections.abc import Iterable

from poolnet_desktop.core.devices import Device
from poolnet_desktop.core.protocol import AllocatedDevice, Allocation
from poolnet_desktop.core.resources import Requirements


def allocate(
    devices: Iterable[Device],
    requester_id: str,
    requirements: Requirements,
    allocation_id: str,
    timestamp: str,
) -> Allocation:
    """Plan how the pool would meet ``requirements``; nothing is reserved by the plan."""
    need_cpu, need_memory, need_storage = requirements.cpu, requirements.memory, requirements.storage
    gpu_found = False
    granted: list[AllocatedDevice] = []
    for device in devices:
        if not device.online or device.id == requester_id:
            continue
        r, limits = device.resources, device.limits
        cpu_available = r.cpu_available * r.cpu_cores
        cpu_limit = limits.cpu_percent * r.cpu_cores
        cpu = max(0.0, min(cpu_available, need_cpu, cpu_limit))
        memory = max(0.0, min(r.memory_available, need_memory, r.memory_total * limits.memory_percent / 100))
        storage = max(
            0.0, min(r.storage_available, need_storage, r.storage_total * limits.storage_percent / 100)
        )
        gpu = requirements.gpu and not gpu_found and r.gpus > 0 and limits.gpu
        if cpu <= 0 and memory <= 0 and storage <= 0 and not gpu:
            continue
        need_cpu -= cpu
        need_memory -= memory
        need_storage -= storage
        gpu_found = gpu_found or gpu
        granted.append(
            AllocatedDevice(
                device_id=device.id,
                device_name=device.name,
                allocated_cpu=cpu,
                allocated_memory=memory,
                allocated_storage=storage,
                allocated_gpu=gpu,
            )
        )
    fulfilled = (
        need_cpu <= 1e-9
        and need_memory <= 1e-9
        and need_storage <= 1e-9
        and (gpu_found or not requirements.gpu)
    )
    return Allocation(
        id=allocation_id,
        requesting_device=requester_id,
        timestamp=timestamp,
        requirements=requirements,
        fulfilled=fulfilled,
        allocated_devices=granted,
    )
