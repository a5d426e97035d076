"""The seed's allocation algorithm, honouring each device's own sharing limits."""

from __future__ import annotations

from poolnet_desktop.core.allocation import allocate
from poolnet_desktop.core.devices import Device
from poolnet_desktop.core.resources import Requirements, Resources, SharingLimits


def device(device_id: str, cores: int = 4, cpu_free: float = 100, memory_free: float = 8000, memory_total: float = 8000,
           storage_free: float = 100_000, storage_total: float = 100_000, gpu: bool = False,
           limits: SharingLimits = SharingLimits(), online: bool = True) -> Device:
    d = Device(device_id, device_id.upper(), "linux", "10.0.0.1", "member", 0.0, 0.0)
    d.resources = Resources(cpu_cores=cores, cpu_available=cpu_free, cpu_usage=100 - cpu_free, memory_available=memory_free,
                            memory_total=memory_total, storage_available=storage_free, storage_total=storage_total, has_gpu=gpu)
    d.limits, d.online = limits, online
    return d


def plan(devices, requirements: Requirements, requester: str = "me"):
    return allocate(devices, requester, requirements, "a1", "2026-01-01T00:00:00.000Z")


def test_a_request_one_device_can_meet_is_fulfilled_from_it() -> None:
    result = plan([device("a")], Requirements(cpu=150, memory=1000, storage=500))
    assert result.fulfilled
    (granted,) = result.allocated_devices
    assert (granted.allocated_cpu, granted.allocated_memory, granted.allocated_storage) == (150, 1000, 500)


def test_a_request_is_spread_across_devices_in_order() -> None:
    # Each 2-core device shares 80 % of its cores: 160 (percent of one core).
    result = plan([device("a", cores=2), device("b", cores=2)], Requirements(cpu=300))
    assert result.fulfilled
    assert [g.allocated_cpu for g in result.allocated_devices] == [160, 140]


def test_sharing_limits_cap_what_each_device_gives() -> None:
    stingy = SharingLimits(cpu_percent=10, memory_percent=25, storage_percent=1)
    result = plan([device("a", cores=4, limits=stingy)], Requirements(cpu=400, memory=4000, storage=5000))
    assert not result.fulfilled
    (granted,) = result.allocated_devices
    assert granted.allocated_cpu == 40
    assert granted.allocated_memory == 2000
    assert granted.allocated_storage == 1000


def test_busy_devices_give_only_what_is_free() -> None:
    result = plan([device("a", cores=4, cpu_free=10, memory_free=300)], Requirements(cpu=400, memory=1000))
    (granted,) = result.allocated_devices
    assert granted.allocated_cpu == 40 and granted.allocated_memory == 300
    assert not result.fulfilled


def test_gpu_requests_need_a_device_that_has_and_shares_one() -> None:
    no_share = SharingLimits(gpu=False)
    assert not plan([device("a", gpu=True, limits=no_share)], Requirements(gpu=True)).fulfilled
    result = plan([device("a"), device("b", gpu=True)], Requirements(cpu=10, gpu=True))
    assert result.fulfilled
    assert [g.allocated_gpu for g in result.allocated_devices] == [False, True]


def test_the_requester_and_offline_devices_are_never_allocated() -> None:
    result = plan([device("me"), device("off", online=False)], Requirements(cpu=10))
    assert not result.fulfilled and result.allocated_devices == []
