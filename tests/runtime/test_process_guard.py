"""The process guard with real shards: real processes forked and counted through /proc. A
fork bomb on a member run as root would take every process id of this machine, so the shard
here forks a bounded number, and the guard is told of a machine with little room."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from poolnet_desktop.runtime.member.process_guard import ProcessGuard, machine_tasks
from poolnet_desktop.runtime.member.runner import ShardRunner, ShardSpec
from tests.conftest import linux_only
from tests.runtime.test_memory_guard import stops_one_spares_the_other

pytestmark = linux_only("/proc readings of the machine's tasks and a shard's tree")

FORKS = """
import os, time
for _ in range({n}):
    if os.fork() == 0:
        time.sleep(60)
        os._exit(0)
print("forked", flush=True)
time.sleep(60)
"""


def forking(n: int, folder: Path) -> ShardRunner:
    folder.mkdir()
    return ShardRunner(ShardSpec(command=[sys.executable, "-c", FORKS.format(n=n)], workdir=folder, timeout=120))


def test_the_machines_tasks_are_read_from_the_kernel() -> None:
    assert machine_tasks() > 1
    assert machine_tasks(Path("/nonexistent")) == 0


async def test_a_shard_with_more_processes_than_a_shard_may_run_is_stopped_once_the_machine_is_crowded(
    tmp_path: Path,
) -> None:
    runners = {"bomb": forking(150, tmp_path / "bomb"), "calm": forking(3, tmp_path / "calm")}
    runs = {key: asyncio.ensure_future(runner.run()) for key, runner in runners.items()}
    async with asyncio.timeout(30):
        while runners["bomb"].processes_in_use() < 151 or runners["calm"].processes_in_use() < 4:
            await asyncio.sleep(0.05)
    # This machine now holds a few hundred tasks: crowded for a machine with room for 400.
    guard = ProcessGuard(lambda: {k: r for k, r in runners.items() if not runs[k].done()}, room=400, limit=100,
                         interval=0.1)
    bomb = await stops_one_spares_the_other(guard, runners, runs, stopped="bomb", spared="calm")
    assert bomb.reason == "error" and "151 processes, more than the 100" in bomb.message, bomb


async def test_an_uncrowded_machine_stops_no_shard(tmp_path: Path) -> None:
    runners = {"many": forking(150, tmp_path / "many")}
    run = asyncio.ensure_future(runners["many"].run())
    async with asyncio.timeout(30):
        while runners["many"].processes_in_use() < 151:
            await asyncio.sleep(0.05)
    guard = ProcessGuard(lambda: {} if run.done() else runners, room=10**9, limit=100, interval=0.1)
    watching = asyncio.ensure_future(guard.watch())
    await asyncio.sleep(0.5)
    assert not run.done()
    runners["many"].cancel()
    assert (await run).reason == "cancelled"
    await asyncio.wait_for(watching, 5)
