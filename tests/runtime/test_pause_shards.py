"""Pausing sharing suspends the shards running here, and resuming lets them run on (issue 15).

A real pool host and member on 127.0.0.1, a real sandboxed shard: its processes' state is read
from the kernel (psutil: 'T', stopped) while paused, and the host keeps the shard placed on the
member meanwhile, since the member's heartbeats go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.host.pool_host import PoolHost
from poolnet_desktop.runtime.member.member import Member, MemberOptions
from poolnet_desktop.runtime.member.runner import ShardRunner, ShardSpec
from poolnet_desktop.runtime.net.discovery import DiscoverySettings
from tests.conftest import SANDBOXED_SHARDS, linux_only
from tests.runtime.conftest import PAIRING_CODE
from tests.runtime.test_task_pool import running_with, submit_manifest, unique_sleep, wait_for

pytestmark = linux_only(f"{SANDBOXED_SHARDS}; SIGSTOP and the process states of /proc")
__all__ = ["client"]  # the fixture, used by name


@pytest.fixture
async def member(pool: PoolHost, tmp_path: Path) -> AsyncIterator[Member]:
    """A member heartbeating every 0.2 s to a host that takes it as overdue after 0.8 s."""
    pool.coordinator.config.heartbeat_interval = 0.2
    pool.coordinator.config.overdue_after = 0.8
    member = Member(MemberOptions(
        url=pool.local_url, data_dir=resolve_data_dir(tmp_path / "laptop"), name="laptop",
        code=PAIRING_CODE, discovery=DiscoverySettings(enabled=False),
    ))
    running = asyncio.create_task(member.run())
    await wait_for(lambda: member.agent.config.device_id in pool.tasks._members)
    yield member
    await member.stop()
    await running


def states(processes: list[psutil.Process]) -> set[str]:
    return {process.status() for process in processes}


async def test_a_pause_stops_the_running_shards_tree_and_a_resume_runs_it_again(
    pool: PoolHost, member: Member, client, tmp_path: Path  # noqa: ANN001 - the imported fixture
) -> None:
    token = unique_sleep()
    task_id = await submit_manifest(client, tmp_path / "long", f"""
        command = "sleep {token} & wait"
        shell = true
    """)
    await wait_for(lambda: bool(running_with(token)))
    sleeper = running_with(token)[0]
    runner = next(job.runner for job in member.executor._jobs.values() if job.runner is not None)
    assert runner.pid is not None
    tree = [psutil.Process(runner.pid), *psutil.Process(runner.pid).children(recursive=True)]
    assert sleeper in tree and len(tree) >= 3  # bwrap, its init, the shell, the sleep

    member.executor.set_paused(True)
    await wait_for(lambda: states(tree) == {psutil.STATUS_STOPPED})
    # Past the host's overdue and heartbeat timeouts: the member is heard from, its shard stays.
    await asyncio.sleep(2 * max(pool.coordinator.config.overdue_after, pool.options.heartbeat_timeout))
    shard = pool.tasks.tasks[task_id].shards[0]
    assert (shard.state, shard.attempt, shard.device_id) == ("running", 1, member.agent.config.device_id)
    assert states(tree) == {psutil.STATUS_STOPPED}

    member.executor.set_paused(False)
    await wait_for(lambda: psutil.STATUS_STOPPED not in states(tree))
    # Woken by SIGCONT, the sleep is briefly 'running' before its nanosleep goes on.
    await wait_for(lambda: sleeper.status() == psutil.STATUS_SLEEPING)
    await client.cancel(task_id)
    assert (await client.wait(task_id)).state == "cancelled"


async def test_a_shard_timeout_does_not_count_while_it_is_suspended(tmp_path: Path) -> None:
    """Suspended from its start for longer than its timeout, a short shard still succeeds:
    only the time it may run counts."""
    runner = ShardRunner(ShardSpec(command=["sleep", "0.1"], workdir=tmp_path, timeout=1.0))
    runner.suspend()
    running = asyncio.ensure_future(runner.run())
    await wait_for(lambda: runner.pid is not None)
    await wait_for(lambda: psutil.Process(runner.pid).status() == psutil.STATUS_STOPPED)
    await asyncio.sleep(1.5)
    runner.resume()
    assert (await running).reason == "succeeded"
