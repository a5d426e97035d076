"""A big pool's state reaches observers as several bounded frames, never one oversized one."""

from __future__ import annotations

import pytest

from poolnet_desktop.commands.status import observed_status
from poolnet_desktop.core.protocol import PoolState
from poolnet_desktop.runtime import coordinator as coordinator_module
from poolnet_desktop.runtime.link import open_link


async def test_full_state_is_split_into_parts_with_rising_seq(pool, raw_client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coordinator_module, "POOL_STATE_PART", 2)
    for index in range(5):
        member = await raw_client()
        await member.send({"type": "register", "deviceId": f"m{index}", "deviceName": f"M{index}", "platform": "linux"})
        await member.receive_type("devices")
    link = await open_link(pool.local_url, pool.options.data_dir)
    try:
        parts = [await link.recv() for _ in range(3)]
    finally:
        await link.close()
    assert all(isinstance(p, PoolState) for p in parts)
    assert [p.full for p in parts] == [True, False, False]
    assert [p.more for p in parts] == [True, True, False]
    assert [len(p.devices) for p in parts] == [2, 2, 1]
    assert sorted(d.id for p in parts for d in p.devices) == [f"m{i}" for i in range(5)]
    assert [p.seq for p in parts] == sorted({p.seq for p in parts})
    assert all(p.pool.devices == 5 for p in parts)


async def test_status_lists_the_devices_of_every_part(pool, raw_client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coordinator_module, "POOL_STATE_PART", 2)
    for index in range(5):
        member = await raw_client()
        await member.send({"type": "register", "deviceId": f"m{index}", "deviceName": f"M{index}", "platform": "linux"})
        await member.receive_type("devices")
    status = await observed_status(pool.local_url, pool.options.data_dir)
    assert sorted(d["id"] for d in status["devices"]) == [f"m{i}" for i in range(5)]
    assert status["pool"]["devices"] == 5
