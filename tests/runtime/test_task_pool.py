"""Tasks end to end inside one process: a real pool host, two real members, real shards.

Everything is real (TLS WebSockets on 127.0.0.1, subprocesses, SQLite, files); waits are
bounded polls, never sleeps that assume a speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
from websockets.asyncio.client import connect

from poolnet_desktop.core.protocol import ProtocolError
from poolnet_desktop.core.resources import SharingLimits
from poolnet_desktop.core.task_protocol import SubmitTask, TaskAccepted
from poolnet_desktop.core.transfer import ChunkHeader, encode_chunk
from poolnet_desktop.runtime.client.task_client import TaskClient
from poolnet_desktop.runtime.client.task_files import load_task
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.host.pool_host import HostOptions, PoolHost
from poolnet_desktop.runtime.member.environments import MARKER
from poolnet_desktop.runtime.member.member import Member, MemberOptions
from poolnet_desktop.runtime.net.discovery import DiscoverySettings
from tests.conftest import SANDBOXED_SHARDS, linux_only
from tests.runtime.conftest import PAIRING_CODE

pytestmark = linux_only(SANDBOXED_SHARDS)


async def wait_for(condition, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_members(
    pool: PoolHost, tmp_path: Path, names: tuple[str, ...], limits: SharingLimits | None = None
) -> AsyncIterator[list[Member]]:
    """Members of ``pool`` in this process, each with its own data folder, ready for shards."""
    started = []
    for name in names:
        member = Member(MemberOptions(
            url=pool.local_url, data_dir=resolve_data_dir(tmp_path / name), name=name, limits=limits or SharingLimits(),
            code=PAIRING_CODE, discovery=DiscoverySettings(enabled=False),
        ))
        started.append((member, asyncio.create_task(member.run())))
    ready = pool.tasks._members
    await wait_for(lambda: all(m.agent.config.device_id in ready for m, _ in started))
    try:
        yield [m for m, _ in started]
    finally:
        for member, running in started:
            await member.stop()
            await running


@pytest.fixture
async def members(pool: PoolHost, tmp_path: Path) -> AsyncIterator[list[Member]]:
    """Two members of ``pool``, ready for shards."""
    async with running_members(pool, tmp_path, ("alpha", "beta")) as started:
        yield started



def join_subprocess(pool: PoolHost, data_dir: Path, name: str) -> subprocess.Popen[bytes]:
    """A ``poolnet join`` member in its own process (so it can be killed for real)."""
    return subprocess.Popen(
        [sys.executable, "-m", "poolnet_desktop", "join", pool.local_url,
         "--no-discovery", "--name", name, "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "POOLNET_PAIRING_CODE": PAIRING_CODE},
    )


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


async def test_twenty_shards_run_on_both_members_and_every_output_comes_back(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path
) -> None:
    task_dir = tmp_path / "job"
    write(task_dir, "data/words.txt", "alpha beta gamma delta\n" * 50)
    write(task_dir, "shard.py", """
        import os, pathlib, sys
        shard, shards = int(sys.argv[1]), int(sys.argv[2])
        words = pathlib.Path("data/words.txt").read_text().split()
        out = pathlib.Path("out"); out.mkdir()
        (out / f"part-{shard}.txt").write_text(" ".join(words[shard::shards]) + f" {os.environ['POOLNET_SHARD']}\\n")
        print(f"shard {shard} done")
    """)
    write(task_dir, "job.pool.toml", """
        name = "split words"
        command = ["{python}", "shard.py", "{shard}", "{shards}"]
        shards = 20
        files = ["shard.py", "data"]
        outputs = ["out/*.txt"]
        [resources]
        cpu = 0.5
    """)
    loaded = await asyncio.to_thread(load_task, task_dir)
    task_id = await client.submit(loaded)
    summary = await client.wait(task_id)
    assert (summary.state, summary.succeeded, summary.total) == ("succeeded", 20, 20)

    results = await client.fetch_results(task_id, tmp_path / "results")
    words = (task_dir / "data/words.txt").read_text().split()
    for shard in range(20):
        got = (results / str(shard) / "out" / f"part-{shard}.txt").read_bytes()
        assert got == (" ".join(words[shard::20]) + f" {shard}\n").encode()
    task = pool.tasks.tasks[task_id]
    assert {s.device_id for s in task.shards} == {m.agent.config.device_id for m in members}
    # Each member fetched each input once, however many shards it ran.
    for member in members:
        cached = sorted(p.name for p in (member.options.data_dir / "cache").iterdir())
        assert cached == sorted({e.sha256 for e in loaded.spec.files})

    lines: list[str] = []
    await client.logs(task_id, lambda out: lines.append(out.data), shard=7)
    assert "".join(lines) == "shard 7 done\n"


async def submit_manifest(client: TaskClient, folder: Path, body: str) -> str:
    write(folder, "job.pool.toml", body)
    return await client.submit(await asyncio.to_thread(load_task, folder))


async def test_a_shard_past_its_timeout_is_killed_and_reported(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path
) -> None:
    task_id = await submit_manifest(client, tmp_path / "slow", """
        command = ["sleep", "30"]
        timeout = 0.5
        retries = 0
    """)
    summary = await client.wait(task_id)
    assert summary.state == "failed"
    shard = pool.tasks.tasks[task_id].shards[0]
    assert shard.state == "timed_out" and "timed out after 0.5" in shard.reason


async def test_cancel_kills_the_whole_process_tree(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path
) -> None:
    # The shard runs in its own PID namespace behind a private /tmp: the test finds the
    # grandchild by a unique argument rather than by a pid file the shard writes.
    token = unique_sleep()
    task_id = await submit_manifest(client, tmp_path / "tree", f"""
        command = "sleep {token} & wait"
        shell = true
    """)
    await wait_for(lambda: bool(running_with(token)))
    grandchild = running_with(token)[0]
    summary = await client.cancel(task_id)
    assert summary.state in ("running", "cancelled")
    summary = await client.wait(task_id)
    assert summary.state == "cancelled"
    await wait_for(lambda: not grandchild.is_running() or grandchild.status() == psutil.STATUS_ZOMBIE)


async def test_an_ended_task_is_forgotten_with_its_result_files_but_a_running_one_is_not(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path
) -> None:
    token = unique_sleep()
    running = await submit_manifest(client, tmp_path / "running", f"""
        command = ["sleep", "{token}"]
    """)
    done = await submit_manifest(client, tmp_path / "done", """
        command = "mkdir out && echo kept > out/a.txt"
        shell = true
        outputs = ["out/*.txt"]
    """)
    assert (await client.wait(done)).state == "succeeded"
    results = pool.tasks.results / done
    assert (results / "0" / "out" / "a.txt").read_text() == "kept\n"
    with pytest.raises(ProtocolError, match="cancel it before forgetting it"):
        await pool.tasks.forget(running)
    await pool.tasks.forget(done)
    assert done not in pool.tasks.tasks and (done, 0) not in pool.tasks.recorded
    assert not results.exists()
    await client.cancel(running)
    assert (await client.wait(running)).state == "cancelled"


def unique_sleep() -> str:
    """A ``sleep`` argument no other process on the machine has (1000 s and a random part)."""
    return f"1000.{uuid.uuid4().int % 10**9}"


def running_with(token: str) -> list[psutil.Process]:
    """The processes (seen from outside any PID namespace) with ``token`` in their argv."""
    found = []
    for process in psutil.process_iter():
        try:
            if token in process.cmdline() and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            continue
    return found


async def test_an_output_symlink_out_of_the_folder_is_not_brought_back(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    task_id = await submit_manifest(client, tmp_path / "leak", f"""
        command = "mkdir out && ln -s {secret} out/leak.txt && echo ok > out/fine.txt"
        shell = true
        outputs = ["out/*"]
    """)
    assert (await client.wait(task_id)).state == "succeeded"
    results = await client.fetch_results(task_id, tmp_path / "results")
    assert sorted(p.name for p in (results / "0" / "out").iterdir()) == ["fine.txt"]
    assert "out/leak.txt: points outside" in pool.tasks.recorded[(task_id, 0)].refused[0]


async def test_uploads_outside_the_announced_files_are_refused(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path
) -> None:
    write(tmp_path / "up", "data.txt", "payload")
    write(tmp_path / "up", "job.pool.toml", 'command = ["cat", "data.txt"]\nfiles = ["data.txt"]\n')
    loaded = await asyncio.to_thread(load_task, tmp_path / "up")
    await client.link.send(SubmitTask(request_id="r1", spec=loaded.spec))
    accepted = await client.link.expect(TaskAccepted)
    assert accepted.missing == ["data.txt"]
    entry = loaded.spec.files[0]
    for path in ("../../escape.txt", "other.txt"):
        header = ChunkHeader(transfer_id=accepted.task_id, path=path, offset=0, size=entry.size,
                             sha256=entry.sha256, last=True)
        await client.link.send_bytes(encode_chunk(header, b"payload"))
        with pytest.raises(ProtocolError) as refused:
            await client.link.expect(TaskAccepted)
        assert refused.value.code == "forbidden"
    assert not (pool.options.data_dir / "escape.txt").exists()
    assert not list(pool.options.data_dir.rglob("escape.txt"))
    assert pool.tasks.tasks[accepted.task_id].state == "cancelled"


async def test_a_shard_bigger_than_any_member_is_refused_and_nothing_is_queued(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path
) -> None:
    with pytest.raises(ProtocolError) as refused:
        await submit_manifest(client, tmp_path / "big", 'command = ["true"]\n[resources]\ncpu = 512\n')
    assert refused.value.code == "unfit"
    assert "more than any member shares" in refused.value.message
    assert pool.tasks.tasks == {}


async def test_a_member_killed_mid_shard_loses_it_to_the_other_member(
    pool: PoolHost, tmp_path: Path, client: TaskClient
) -> None:
    joiners = [join_subprocess(pool, tmp_path / name, name) for name in ("doomed", "steady")]
    try:
        await wait_for(lambda: len(pool.tasks._members) == 2)
        task_id = await submit_manifest(client, tmp_path / "pair", """
            command = "sleep 1 && mkdir -p out && echo $POOLNET_SHARD > out/n.txt"
            shell = true
            shards = 2
            outputs = ["out/n.txt"]
            [resources]
            cpu = 1
        """)
        task = pool.tasks.tasks[task_id]
        await wait_for(lambda: all(s.state == "running" for s in task.shards))
        joiners[0].send_signal(signal.SIGKILL)
        joiners[0].wait()
        summary = await client.wait(task_id)
        assert (summary.state, summary.succeeded) == ("succeeded", 2)
        # The killed member's shard ran again on the other one; the other kept its first run.
        assert sorted(s.attempt for s in task.shards) == [1, 2]
        assert len({s.device_id for s in task.shards}) == 1
        results = await client.fetch_results(task_id, tmp_path / "results")
        for shard in range(2):
            assert (results / str(shard) / "out" / "n.txt").read_text() == f"{shard}\n"
    finally:
        for process in joiners:
            if process.poll() is None:
                process.terminate()
            process.communicate()


async def test_the_seeds_task_submit_really_runs_its_command(tmp_path: Path) -> None:
    host = PoolHost(HostOptions(
        data_dir=resolve_data_dir(tmp_path / "host"), bind="127.0.0.1", port=0, legacy_port=0,
        seed_may_submit=True, heartbeat_timeout=1.5, pairing_code=PAIRING_CODE,
        discovery=DiscoverySettings(enabled=False),
    ))
    await host.start()
    member = Member(MemberOptions(
        url=host.local_url, data_dir=resolve_data_dir(tmp_path / "m"), code=PAIRING_CODE,
        discovery=DiscoverySettings(enabled=False),
    ))
    running = asyncio.create_task(member.run())
    try:
        await wait_for(lambda: len(host.tasks._members) == 1)
        assert host.legacy_server is not None
        async with connect(f"ws://127.0.0.1:{host.legacy_server.port}/ws", proxy=None) as seed:
            await seed.send(json.dumps({"type": "register", "deviceId": "seed-1", "platform": "linux"}))
            answers = {}
            for seed_id, command in (("ok", "echo hello"), ("bad", "echo oops >&2; exit 3")):
                await seed.send(json.dumps({"type": "task_submit", "task": {
                    "id": seed_id, "type": "command", "data": {"command": command}}}))
            async with asyncio.timeout(20):
                while len(answers) < 2:
                    message = json.loads(await seed.recv())
                    if message["type"] == "task_result":
                        answers[message["taskId"]] = message["result"]
        assert answers["ok"]["success"] is True
        assert answers["ok"]["result"]["exitCode"] == 0
        assert answers["ok"]["result"]["stdout"] == "hello\n"
        assert answers["bad"]["success"] is False
        assert answers["bad"]["result"]["exitCode"] == 3
        assert answers["bad"]["result"]["stderr"] == "oops\n"
    finally:
        await member.stop()
        await running
        await host.stop()


async def test_shards_held_ahead_never_run_beside_the_one_they_follow(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path
) -> None:
    """Each member shares 1.6 cores, so one ``cpu = 1`` shard at a time, with more waiting
    behind it. A shard takes a lock folder in its member's data folder and fails if another
    shard of that member holds it, so a waiting shard that started early fails the task."""
    task_dir = tmp_path / "ahead"
    write(task_dir, "hold.py", """
        import os, pathlib, sys, time
        lock = pathlib.Path.cwd().parent.parent / "one-at-a-time"
        try:
            os.mkdir(lock)
        except FileExistsError:
            sys.exit("another shard of this member is running")
        time.sleep(0.05)
        os.rmdir(lock)
    """)
    write(task_dir, "ahead.pool.toml", """
        command = ["{python}", "hold.py"]
        shards = 16
        files = ["hold.py"]
        retries = 0
        [resources]
        cpu = 1
    """)
    task_id = await client.submit(await asyncio.to_thread(load_task, task_dir))
    await wait_for(lambda: any(
        len(pool.tasks.scheduler.placed_on(m.agent.config.device_id)) > 1 for m in members
    ))
    summary = await client.wait(task_id)
    assert (summary.state, summary.succeeded) == ("succeeded", 16)


async def test_a_member_that_stops_accepting_tasks_gets_no_more_shards(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path
) -> None:
    """The coordinator tells the task service at once (``share_listeners``): no polling."""
    resting, working = members
    await resting.agent.set_accept_tasks(False)
    resting_id = resting.agent.config.device_id
    await wait_for(lambda: pool.tasks.scheduler.member_usage(resting_id)[0].cpu == 0)
    write(tmp_path / "job", "job.pool.toml", """
        command = ["true"]
        shards = 6
    """)
    task_id = await client.submit(await asyncio.to_thread(load_task, tmp_path / "job"))
    assert (await client.wait(task_id)).succeeded == 6
    devices = {shard.device_id for shard in pool.tasks.tasks[task_id].shards}
    assert devices == {working.agent.config.device_id}


async def test_new_sharing_limits_reach_the_scheduler_with_the_next_report(
    pool: PoolHost, members: list[Member]
) -> None:
    """Reports whose share is unchanged skip the scheduler; one that changes it does not."""
    pool.coordinator.config.heartbeat_timeout = 30.0  # the fixture's 1.5 s is shorter than a report
    member = members[0]
    member_id = member.agent.config.device_id
    cores = pool.coordinator.registry.get(member_id).resources.cpu_cores
    assert pool.tasks.scheduler.member_usage(member_id)[0].cpu == pytest.approx(cores * 0.8)
    member.agent.set_limits(SharingLimits(cpu_percent=25.0))
    await wait_for(lambda: pool.tasks.scheduler.member_usage(member_id)[0].cpu == pytest.approx(cores * 0.25))


async def test_a_member_killed_by_sigkill_takes_its_sandboxed_shards_with_it(
    pool: PoolHost, tmp_path: Path, client: TaskClient
) -> None:
    """Before the sandbox, such shards outlived their member until its next start reaped
    them (``runtime.member.orphans``, still there for members without a sandbox); bwrap's
    --die-with-parent now ends the shard's PID namespace with the member."""
    token = unique_sleep()
    member = join_subprocess(pool, tmp_path / "member", "restarted")
    try:
        await wait_for(lambda: len(pool.tasks._members) == 1)
        await submit_manifest(client, tmp_path / "long", f"""
            command = "sleep {token} & wait"
            shell = true
        """)
        await wait_for(lambda: bool(running_with(token)))
        member.send_signal(signal.SIGKILL)
        member.wait()
        await wait_for(lambda: not running_with(token))
    finally:
        if member.poll() is None:
            member.terminate()
        member.communicate()
        for process in running_with(token):
            process.kill()


async def test_a_task_cancelled_while_all_queued_leaves_the_scheduler_and_runs_again_on_retry(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing of it is on a member, so no report would ever end it in the scheduler."""
    monkeypatch.setattr(pool.tasks, "schedule", lambda: None)  # keep every shard queued
    task_id = await submit_manifest(client, tmp_path / "queued", 'command = ["true"]\nshards = 3\n')
    assert pool.tasks.scheduler.submitted(task_id)
    assert (await client.cancel(task_id)).state == "cancelled"
    assert not pool.tasks.scheduler.submitted(task_id)
    monkeypatch.undo()
    await client.retry(task_id)
    summary = await client.wait(task_id)
    assert (summary.state, summary.succeeded) == ("succeeded", 3)


async def test_a_retry_while_other_shards_of_the_task_run_queues_the_failed_ones(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path,
    visible_to_shards: Path,
) -> None:
    """The scheduler still holds the task (shard 1 runs): the retry must not submit it twice."""
    ready, go = visible_to_shards / "ready", visible_to_shards / "go"
    task_id = await submit_manifest(client, tmp_path / "half", f"""
        command = "if [ $POOLNET_SHARD = 0 ]; then test -e {ready}; else while [ ! -e {go} ]; do sleep 0.05; done; fi"
        shell = true
        shards = 2
        retries = 0
    """)
    task = pool.tasks.tasks[task_id]
    await wait_for(lambda: task.shards[0].state == "failed" and task.shards[1].state == "running")
    ready.touch()
    await client.retry(task_id)
    go.touch()
    summary = await client.wait(task_id)
    assert (summary.state, summary.succeeded) == ("succeeded", 2)
    assert not pool.tasks.scheduler.submitted(task_id)


async def test_results_fetched_the_moment_a_task_ends_are_all_there(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A result is recorded, and its task may end and its submitter be told, while the host
    still moves the result's files into place in a thread: a fetch right then found a file
    missing (seen in a full run of the suite). Here the moves are made slow."""
    move = pool.tasks._move_outputs

    def slow_move(task_id: str, shard: int, files: Path | None) -> None:
        time.sleep(0.5)
        move(task_id, shard, files)

    monkeypatch.setattr(pool.tasks, "_move_outputs", slow_move)
    write(tmp_path / "job", "job.pool.toml", """
        command = "echo {shard} > out.txt"
        shell = true
        shards = 2
        outputs = ["out.txt"]
        [resources]
        cpu = 0.5
    """)
    task_id = await client.submit(await asyncio.to_thread(load_task, tmp_path / "job"))
    assert (await client.wait(task_id)).state == "succeeded"
    results = await client.fetch_results(task_id, tmp_path / "results")
    assert [(results / str(shard) / "out.txt").read_text() for shard in range(2)] == ["0\n", "1\n"]


async def test_a_member_that_stops_leaves_no_scratch_in_the_users_cache(
    pool: PoolHost, client: TaskClient, tmp_path: Path
) -> None:
    """Each data folder has its own work root in the user's cache. A data folder that never
    runs again (a test's, a benchmark's) used to leave it there for good."""
    async with running_members(pool, tmp_path, ("alpha", "beta")) as (alpha, beta):
        task_id = await submit_manifest(client, tmp_path / "job", """
            command = ["true"]
            shards = 6
        """)
        assert (await client.wait(task_id)).state == "succeeded"
        scratch = [m.executor.work for m in (alpha, beta)]
        assert all(work.is_dir() for work in scratch)
        built = beta.executor.environments.root / "an-environment"
        built.mkdir()
        (built / MARKER).write_text("{}")
    assert not any(work.exists() for work in scratch)
    assert not alpha.executor.environments.root.exists()  # nothing built: nothing kept
    assert (built / MARKER).is_file()  # what was built stays for the next start


async def test_a_members_guards_see_two_tasks_of_one_submitter_as_one(
    pool: PoolHost, client: TaskClient, tmp_path: Path
) -> None:
    """A submitter could spread a load over many tasks, each lighter than someone else's one
    task, and get that one's shard stopped by a guard weighing by task. The host tags each
    task's submitter, and the member weighs by the tag (``core.shard_choice``)."""
    async with running_members(pool, tmp_path, ("alpha",)) as (alpha,):
        body = """
            command = ["sleep", "30"]
            [resources]
            cpu = 0.25
        """
        first = await submit_manifest(client, tmp_path / "one", body)
        second = await submit_manifest(client, tmp_path / "two", body)
        await wait_for(lambda: {ref.task_id for ref in alpha.executor.running} == {first, second})
        one, two = sorted(alpha.executor.running, key=lambda ref: ref.task_id != first)
        assert alpha.executor.submitter_of(one) == alpha.executor.submitter_of(two)
        assert alpha.executor.submitter_of(one) == pool.tasks.core.submitter_tag(pool.tasks.tasks[first].submitter)
        for task_id in (first, second):
            await client.cancel(task_id)
