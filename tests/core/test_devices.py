"""The device registry: liveness from passed-in time, coalesced change sets, pool totals."""

from __future__ import annotations

from poolnet_desktop.core.devices import DeviceRegistry, iso8601
from poolnet_desktop.core.resources import Resources, SharingLimits


def test_liveness_uses_the_time_it_is_given() -> None:
    registry = DeviceRegistry()
    registry.register("a", "A", "linux", "1.2.3.4", "member", now=100.0, wall=0)
    registry.register("b", "B", "linux", "1.2.3.5", "member", now=100.0, wall=0)
    registry.touch("a", now=125.0, wall=0)
    assert registry.expired(now=131.0, timeout=30) == ["b"]
    assert registry.mark_offline("b") is True
    assert registry.mark_offline("b") is False  # telling others twice is a bug
    assert registry.expired(now=131.0, timeout=30) == []


def test_changes_are_coalesced_until_taken() -> None:
    registry = DeviceRegistry()
    registry.register("a", "A", "linux", "ip", "member", 0, 0)
    for usage in range(50):
        registry.update_resources("a", Resources(cpu_usage=usage))
    changed, removed = registry.take_changes()
    assert [d.id for d in changed] == ["a"] and changed[0].resources.cpu_usage == 49
    assert registry.take_changes() == ([], [])
    registry.mark_offline("a")
    registry.forget("a")
    assert registry.take_changes() == ([], ["a"])


def test_reported_limits_are_adopted_and_totals_count_online_devices_only() -> None:
    registry = DeviceRegistry()
    registry.register("a", "A", "linux", "ip", "member", 0, 0)
    registry.register("b", "B", "linux", "ip", "member", 0, 0)
    limits = SharingLimits(cpu_percent=50)
    registry.update_resources("a", Resources(cpu_cores=4, cpu_available=75, memory_available=100, memory_total=200, has_gpu=True, limits=limits))
    registry.update_resources("b", Resources(cpu_cores=8, memory_available=1000, memory_total=2000))
    assert registry.get("a").limits == limits
    registry.mark_offline("b")
    totals = registry.totals()
    assert totals.devices == 1 and totals.total_cpu_cores == 4 and totals.total_memory_available == 100
    assert totals.total_g_p_us == 1 and totals.total_cpu_available == 75


def test_iso8601_matches_javascripts_format() -> None:
    assert iso8601(0) == "1970-01-01T00:00:00.000Z"
    assert iso8601(1.2345) == "1970-01-01T00:00:01.234Z"


def test_a_report_says_whether_the_share_may_have_changed() -> None:
    registry = DeviceRegistry()
    registry.register("a", "A", "linux", "10.0.0.2", "member", 0.0, 0.0)
    size = {"cpu_cores": 8, "memory_total": 16_000.0, "storage_available": 90_000.0}
    assert registry.update_resources("a", Resources(cpu_usage=10.0, **size)) is True  # from nothing
    assert registry.update_resources("a", Resources(cpu_usage=70.0, memory_usage=5_000.0, **size)) is False
    assert registry.update_resources("a", Resources(**{**size, "storage_available": 80_000.0})) is True
    assert registry.update_resources("a", Resources(gpu_count=1, **{**size, "storage_available": 80_000.0})) is True
    limited = Resources(gpu_count=1, limits=SharingLimits(cpu_percent=20.0), **{**size, "storage_available": 80_000.0})
    assert registry.update_resources("a", limited) is True
    assert registry.update_resources("a", limited) is False
    assert registry.update_resources("unknown", limited) is False


def test_totals_of_an_empty_pool_keep_their_float_figures() -> None:
    totals = DeviceRegistry().totals()
    assert totals.devices == 0 and totals.total_g_p_us == 0 and totals.gpu_usage == 0.0
    assert all(isinstance(v, float) for v in (totals.total_memory, totals.storage_used, totals.total_cpu_available))
