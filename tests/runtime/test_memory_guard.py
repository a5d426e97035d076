"""The member's memory guard with real shards: real processes holding real memory, measured
through /proc. The machine's own memory cannot be made short here, so the lent share is made
small (a percent of this machine's memory that is a few tens of MB) or the floor high."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import psutil

from poolnet_desktop.core.resources import SharingLimits
from poolnet_desktop.runtime.client.link import open_link
from poolnet_desktop.runtime.client.task_client import TaskClient
from poolnet_desktop.runtime.host.pool_host import PoolHost
from poolnet_desktop.runtime.member.memory_guard import MemoryGuard
from poolnet_desktop.core.task_protocol import ShardResult
from poolnet_desktop.runtime.member.runner import ShardRunner, ShardSpec
from poolnet_desktop.runtime.member.shard_watch import ShardGuard
from tests.conftest import linux_only
from tests.runtime.test_recovery import patient_pool
from tests.runtime.test_task_pool import running_members, submit_manifest

__all__ = ["patient_pool"]  # the fixture, used by name

pytestmark = linux_only("/proc memory readings of a shard's tree")

MB = 1024**2
TOTAL = psutil.virtual_memory().total


def holding(megabytes: int, folder: Path) -> ShardRunner:
    """A shard that fills ``megabytes`` of memory (every page written), says so, and waits."""
    folder.mkdir()
    code = f"import sys, time; b = b'x' * ({megabytes} * 2**20); print('holding', flush=True); time.sleep(60)"
    return ShardRunner(ShardSpec(command=[sys.executable, "-c", code], workdir=folder, timeout=120))


async def started(runners: dict[str, ShardRunner]) -> None:
    async with asyncio.timeout(30):
        while min(runner.memory_in_use() for runner in runners.values()) < 5 * MB:
            await asyncio.sleep(0.05)


async def stops_one_spares_the_other(
    guard: ShardGuard, runners: dict[str, ShardRunner], runs: dict[str, asyncio.Future[ShardResult]],
    stopped: str, spared: str,
) -> ShardResult:
    """Watch with ``guard`` until it stops ``stopped``; ``spared`` lives through a few more
    checks, is then cancelled, and the watch ends by itself (no shard runs). The stopped
    shard's result."""
    watching = asyncio.ensure_future(guard.watch())
    result = await asyncio.wait_for(runs[stopped], 30)
    await asyncio.sleep(0.5)
    assert not runs[spared].done()
    runners[spared].cancel()
    assert (await runs[spared]).reason == "cancelled"
    await asyncio.wait_for(watching, 5)
    return result


async def test_shards_over_the_memory_their_owner_lends_lose_the_largest(tmp_path: Path) -> None:
    runners = {"big": holding(300, tmp_path / "big"), "small": holding(1, tmp_path / "small")}
    runs = {key: asyncio.ensure_future(runner.run()) for key, runner in runners.items()}
    await started(runners)
    # Lend 200 MB: the big one alone is over it, the small one (a Python, ~10 MB) is not.
    guard = MemoryGuard(lambda: {k: r for k, r in runners.items() if not runs[k].done()},
                        lambda: 200 * MB / TOTAL * 100, interval=0.1)
    big = await stops_one_spares_the_other(guard, runners, runs, stopped="big", spared="small")
    assert big.reason == "memory" and "its owner lends" in big.message, big


async def test_a_machine_short_of_memory_loses_its_largest_shard_but_not_a_small_one(tmp_path: Path) -> None:
    runners = {"big": holding(100, tmp_path / "big"), "small": holding(1, tmp_path / "small")}
    runs = {key: asyncio.ensure_future(runner.run()) for key, runner in runners.items()}
    await started(runners)
    # A floor above all the machine's memory: it is always short.
    guard = MemoryGuard(lambda: {k: r for k, r in runners.items() if not runs[k].done()},
                        lambda: 100.0, floor=TOTAL + 1, interval=0.1)
    big = await stops_one_spares_the_other(guard, runners, runs, stopped="big", spared="small")  # ~10 MB: not worth it
    assert big.reason == "memory" and "give this machine's owner memory back" in big.message, big


async def test_a_members_shard_using_more_memory_than_its_owner_lends_is_stopped(
    patient_pool: PoolHost, tmp_path: Path
) -> None:
    """End to end: a task that declares no memory had no limit on a member, and its shard
    could take all the owner's memory. Now the member's shards together stay within the share
    its owner lends (here 150 MB, as the memory slider's percent of this machine's memory)."""
    lent = SharingLimits(memory_percent=150 * MB / TOTAL * 100)
    link = await open_link(patient_pool.local_url, patient_pool.options.data_dir)
    try:
        async with running_members(patient_pool, tmp_path, ("lender",), lent):
            client = TaskClient(link)
            task_id = await submit_manifest(client, tmp_path / "greedy", """
                command = ["{python}", "-c", "import time; b = b'x' * (400 * 2**20); time.sleep(60)"]
                retries = 0
            """)
            assert (await client.wait(task_id)).state == "failed"
    finally:
        await link.close()
    shard = patient_pool.tasks.tasks[task_id].shards[0]
    assert shard.reason.startswith("stopped: this member's shards used") and "its owner lends" in shard.reason
