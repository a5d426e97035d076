"""The process guard with real shards: real processes and threads started and counted
through /proc. A fork bomb on a member run as root would take every process id of this
machine, so the shards here start a bounded number, and the guard is told of a machine with
little room."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from poolnet_desktop.core.task_protocol import ShardResult
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


THREADS = """
import os, threading, time
for _ in range({processes} - 1):
    if os.fork() == 0:
        break
for _ in range({threads}):
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
time.sleep(60)
"""


def forking(n: int, folder: Path) -> ShardRunner:
    return running(FORKS.format(n=n), folder)


def running(code: str, folder: Path) -> ShardRunner:
    folder.mkdir()
    return ShardRunner(ShardSpec(command=[sys.executable, "-c", code], workdir=folder, timeout=120))


async def counted(runners: dict[str, ShardRunner], at_least: dict[str, int]) -> None:
    """Once every shard runs at least as many processes and threads as ``at_least`` says."""
    async with asyncio.timeout(30):
        while any(runners[key].threads_in_use() < n for key, n in at_least.items()):
            await asyncio.sleep(0.05)


async def stopped_of(runners: dict[str, ShardRunner], at_least: dict[str, int], stopped: str,
                     spared: str) -> ShardResult:
    """Run the shards until each holds ``at_least`` processes and threads, then watch them with
    a guard of a machine with room for 400 (crowded now: this one holds a few hundred tasks),
    where a shard may hold 100, and the shards together 100: the result of ``stopped``, once
    ``spared`` lived on."""
    runs = {key: asyncio.ensure_future(runner.run()) for key, runner in runners.items()}
    await counted(runners, at_least)
    guard = ProcessGuard(lambda: {k: r for k, r in runners.items() if not runs[k].done()}, room=400, limit=100,
                         interval=0.1)
    return await stops_one_spares_the_other(guard, runners, runs, stopped=stopped, spared=spared)


def test_the_machines_tasks_are_read_from_the_kernel() -> None:
    assert machine_tasks() > 1
    assert machine_tasks(Path("/nonexistent")) == 0


async def test_a_shard_with_more_processes_than_a_shard_may_run_is_stopped_once_the_machine_is_crowded(
    tmp_path: Path,
) -> None:
    runners = {"bomb": forking(150, tmp_path / "bomb"), "calm": forking(3, tmp_path / "calm")}
    bomb = await stopped_of(runners, {"bomb": 151, "calm": 4}, stopped="bomb", spared="calm")
    assert bomb.reason == "error" and "151 processes and threads, more than the 100" in bomb.message, bomb


async def test_a_shard_of_few_processes_and_many_threads_is_stopped_as_one_of_many_processes(
    tmp_path: Path,
) -> None:
    """Threads take process ids as processes do, and the guard counted only processes: 30
    processes of 1,000 threads each held a root member's machine as 30 (an attacker's review
    of 124a58f)."""
    runners = {"threads": running(THREADS.format(processes=3, threads=60), tmp_path / "threads"),
               "calm": forking(3, tmp_path / "calm")}
    many = await stopped_of(runners, {"threads": 183, "calm": 4}, stopped="threads", spared="calm")
    assert many.reason == "error" and "183 processes and threads, more than the 100" in many.message, many


async def test_shards_each_within_the_limit_lose_the_largest_once_together_past_the_members_share(
    tmp_path: Path,
) -> None:
    """Each lane of a task is a sandbox of its own, with a kernel limit of its own, and a
    task may hold a lane per hundredth of a core: eight at the limit are every process id of
    this machine (an attacker's review of 76d37a1)."""
    runners = {"big": forking(70, tmp_path / "big"), "small": forking(40, tmp_path / "small")}
    big = await stopped_of(runners, {"big": 71, "small": 41}, stopped="big", spared="small")
    assert big.reason == "error" and "112 processes and threads together, more than the 100" in big.message, big


async def test_an_uncrowded_machine_stops_no_shard(tmp_path: Path) -> None:
    runners = {"many": forking(150, tmp_path / "many")}
    run = asyncio.ensure_future(runners["many"].run())
    await counted(runners, {"many": 151})
    guard = ProcessGuard(lambda: {} if run.done() else runners, room=10**9, limit=100, interval=0.1)
    watching = asyncio.ensure_future(guard.watch())
    await asyncio.sleep(0.5)
    assert not run.done()
    runners["many"].cancel()
    assert (await run).reason == "cancelled"
    await asyncio.wait_for(watching, 5)
