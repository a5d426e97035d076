"""A shard held ahead on a member says what it waits for, in the CLI and the window's detail,
never "running" (issue 15): a real host, a real member sharing room for one shard at a time."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from poolnet_desktop.commands.tasks import render_shards
from poolnet_desktop.core.resources import SharingLimits
from poolnet_desktop.runtime.client.task_client import TaskClient
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.host.pool_host import PoolHost
from poolnet_desktop.runtime.member.member import Member, MemberOptions
from poolnet_desktop.runtime.net.discovery import DiscoverySettings
from tests.conftest import SANDBOXED_SHARDS, linux_only
from tests.runtime.conftest import PAIRING_CODE
from tests.runtime.test_task_pool import submit_manifest, unique_sleep, wait_for

pytestmark = linux_only(SANDBOXED_SHARDS)


@pytest.fixture
async def desk(pool: PoolHost, tmp_path: Path) -> AsyncIterator[Member]:
    """A member named desk2 sharing 1.5 cores: one ``cpu = 1`` shard runs, the next waits."""
    member = Member(MemberOptions(
        url=pool.local_url, data_dir=resolve_data_dir(tmp_path / "desk2"), name="desk2", code=PAIRING_CODE,
        discovery=DiscoverySettings(enabled=False),
        limits=SharingLimits(cpu_percent=min(100.0, 150.0 / (os.cpu_count() or 1))),
    ))
    running = asyncio.create_task(member.run())
    await wait_for(lambda: member.agent.config.device_id in pool.tasks._members)
    yield member
    await member.stop()
    await running


async def test_a_shard_held_ahead_says_it_waits_on_its_device_behind_the_shard_it_follows(
    pool: PoolHost, desk: Member, client: TaskClient, tmp_path: Path
) -> None:
    task_id = await submit_manifest(client, tmp_path / "long", f"""
        name = "render"
        command = ["sleep", "{unique_sleep()}"]
        shards = 2
        [resources]
        cpu = 1
    """)

    async def shards() -> list:
        return await client.shards(task_id)

    found: list = []

    async def one_running_one_held() -> bool:
        found[:] = await shards()
        return sorted(s.state for s in found) == ["assigned", "running"]

    async with asyncio.timeout(30):
        while not await one_running_one_held():
            await asyncio.sleep(0.1)
    running = next(s for s in found if s.state == "running")
    held = next(s for s in found if s.state == "assigned")
    assert held.reason == f"waiting on desk2 behind render (shard {running.index})"
    assert running.reason == ""
    summary = next(t for t in await client.list() if t.id == task_id)
    table = render_shards(summary, found).splitlines()[1:]
    assert table[0].split() == ["SHARD", "STATE", "DEVICE", "ATTEMPT", "VALUES", "NOTE"]
    assert table[1 + held.index].split()[1] == "waiting"  # not "running"
    assert table[1 + held.index].endswith(f"waiting on desk2 behind render (shard {running.index})")
    assert table[1 + running.index].split()[1] == "running"
    await client.cancel(task_id)
    assert (await client.wait(task_id)).state == "cancelled"
