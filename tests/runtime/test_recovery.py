"""A member that is killed or stopped: its shards run again elsewhere in seconds, whatever the
heartbeat timeout, and every result is recorded once.

The pools here use a heartbeat timeout of ten minutes, so nothing below can pass by waiting
for it: the shards must move because the connection closed, or because two heartbeats were
missed. Members are real ``poolnet join`` processes, killed and stopped with real signals.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from poolnet_desktop.runtime.client.link import open_link
from poolnet_desktop.runtime.client.task_client import TaskClient
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.host.pool_host import HostOptions, PoolHost
from poolnet_desktop.runtime.net.discovery import DiscoverySettings
from tests.conftest import SANDBOXED_SHARDS, linux_only
from tests.runtime.conftest import PAIRING_CODE
from tests.runtime.test_task_pool import join_subprocess, submit_manifest, wait_for

pytestmark = [pytest.mark.slow, linux_only(f"{SANDBOXED_SHARDS}; SIGSTOP")]


@pytest.fixture
async def patient_pool(tmp_path: Path) -> AsyncIterator[PoolHost]:
    """A pool whose heartbeat timeout never comes within a test; heartbeats every 0.5 s, so a
    member is overdue after 1.5 s of silence."""
    host = PoolHost(HostOptions(
        data_dir=resolve_data_dir(tmp_path / "host"), bind="127.0.0.1", port=0, heartbeat_timeout=600.0,
        batch_interval=0.1, pairing_code=PAIRING_CODE, discovery=DiscoverySettings(enabled=False),
    ))
    host.coordinator.config.heartbeat_interval = 0.5
    host.coordinator.config.overdue_after = 1.5
    await host.start()
    yield host
    await host.stop()


EIGHT_SHARDS = """
    command = "sleep 1.5 && mkdir -p out && echo $POOLNET_SHARD > out/n.txt"
    shell = true
    shards = 8
    outputs = ["out/n.txt"]
    retries = 1
    [resources]
    cpu = 1
"""


def member_named(pool: PoolHost, name: str) -> str:
    return next(d for d in pool.tasks._members if pool.coordinator.registry.get(d).name == name)


@pytest.fixture
def joiners() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


async def run_with_one_member_failing(
    pool: PoolHost, tmp_path: Path, fail: signal.Signals, joiners: list[subprocess.Popen[bytes]]
) -> tuple[TaskClient, str, psutil.Process]:
    joiners.extend(join_subprocess(pool, tmp_path / name, name) for name in ("doomed", "steady"))
    await wait_for(lambda: len(pool.tasks._members) == 2)
    link = await open_link(pool.local_url, pool.options.data_dir)
    client = TaskClient(link)
    task_id = await submit_manifest(client, tmp_path / "eight", EIGHT_SHARDS)
    task = pool.tasks.tasks[task_id]
    doomed = psutil.Process(joiners[0].pid)
    doomed_id = member_named(pool, "doomed")
    await wait_for(lambda: any(s.device_id == doomed_id and s.state == "running" for s in task.shards))
    doomed.send_signal(fail)
    return client, task_id, doomed


async def test_a_killed_members_shards_run_again_at_once_and_each_result_is_recorded_once(
    patient_pool: PoolHost, tmp_path: Path, joiners: list[subprocess.Popen[bytes]]
) -> None:
    client, task_id, doomed = await run_with_one_member_failing(patient_pool, tmp_path, signal.SIGKILL, joiners)
    try:
        async with asyncio.timeout(60):  # a safety net: the timeout it must not wait for is 600 s
            summary = await client.wait(task_id)
        assert (summary.state, summary.succeeded, summary.total) == ("succeeded", 8, 8)
        task = patient_pool.tasks.tasks[task_id]
        assert any(s.attempt == 2 for s in task.shards)  # the killed member's ran again
        assert all(len(s.reported) == 1 for s in task.shards)  # one result each
        results = await client.fetch_results(task_id, tmp_path / "results")
        assert [(results / str(n) / "out" / "n.txt").read_text() for n in range(8)] == [f"{n}\n" for n in range(8)]
    finally:
        await client.link.close()


async def test_a_stopped_members_shards_run_again_once_it_is_overdue_and_it_rejoins_the_work(
    patient_pool: PoolHost, tmp_path: Path, joiners: list[subprocess.Popen[bytes]]
) -> None:
    client, task_id, doomed = await run_with_one_member_failing(patient_pool, tmp_path, signal.SIGSTOP, joiners)
    try:
        task = patient_pool.tasks.tasks[task_id]
        async with asyncio.timeout(60):
            summary = await client.wait(task_id)
        assert (summary.state, summary.succeeded) == ("succeeded", 8)
        assert all(len(s.reported) == 1 for s in task.shards)
        stopped_id = member_named(patient_pool, "doomed")
        assert patient_pool.coordinator.registry.get(stopped_id).online  # overdue is not gone

        doomed.send_signal(signal.SIGCONT)  # back: it gets work again, and its old results count once
        again = await submit_manifest(client, tmp_path / "again", EIGHT_SHARDS.replace("shards = 8", "shards = 4"))
        async with asyncio.timeout(60):
            assert (await client.wait(again)).succeeded == 4
        assert any(s.device_id == stopped_id for s in patient_pool.tasks.tasks[again].shards)
        assert all(len(s.reported) == 1 for s in task.shards)
    finally:
        await client.link.close()
