"""A big pool's state reaches observers as several bounded frames, never one oversized one."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from poolnet_desktop.commands.status import observed_status
from poolnet_desktop.core.protocol import PoolState
from poolnet_desktop.runtime.client.link import open_link
from poolnet_desktop.runtime.host import coordinator as coordinator_module
from poolnet_desktop.runtime.host.session import Session
from tests.runtime.conftest import register_members, seed_resources


async def test_full_state_is_split_into_parts_with_rising_seq(pool, raw_client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coordinator_module, "POOL_STATE_PART", 2)
    await register_members(raw_client, 5)
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
    await register_members(raw_client, 5)
    status = await observed_status(pool.local_url, pool.options.data_dir)
    assert sorted(d["id"] for d in status["devices"]) == [f"m{i}" for i in range(5)]
    assert status["pool"]["devices"] == 5


async def test_no_batch_lands_inside_the_snapshot(pool, raw_client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches go out every 0.1 s here while every awaited send stalls 0.15 s (a slow socket
    draining): the snapshot's parts still arrive one after another, nothing between them."""
    monkeypatch.setattr(coordinator_module, "POOL_STATE_PART", 1)
    members = await register_members(raw_client, 5)
    send = Session.send

    async def slow_send(self: Session, message: Any) -> None:
        await send(self, message)
        await asyncio.sleep(0.15)

    async def keep_changing() -> None:
        for cpu in itertools.cycle((10, 20)):
            for index, member in enumerate(members):
                await member.send({"type": "resource_update", "deviceId": f"m{index}", "resources": seed_resources(cpuUsage=cpu)})
            await asyncio.sleep(0.02)

    monkeypatch.setattr(Session, "send", slow_send)
    changing = asyncio.create_task(keep_changing())
    link = await open_link(pool.local_url, pool.options.data_dir)
    try:
        while not (first := await link.expect(PoolState)).full:
            pass
        rest = [await link.expect(PoolState) for _ in range(4)]
    finally:
        changing.cancel()
        await link.close()
    snapshot = [first, *rest]
    assert [p.more for p in snapshot] == [True, True, True, True, False]
    assert [p.seq for p in snapshot] == list(range(first.seq, first.seq + 5))
    assert sorted(d.id for p in snapshot for d in p.devices) == [f"m{i}" for i in range(5)]
