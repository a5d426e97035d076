"""One sandbox per task on a member, reused by its shards (issue 14), run for real: real
bubblewrap, the real launcher inside it, real shard processes.

What must hold is what held with a sandbox per shard: a shard's whole tree (even a daemon that
forked twice and left its session) is reached by the member's suspend, memory watch and kill,
and dies with the shard; another task's folder stays out of sight. And since the launcher lives
among the task's code, nothing it says is believed: the last tests play a hostile launcher.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from poolnet_desktop.core.task_protocol import ShardResult
from poolnet_desktop.runtime.client.task_client import TaskClient
from poolnet_desktop.runtime.host.pool_host import PoolHost
from poolnet_desktop.runtime.member import task_sandbox as task_sandbox_module
from poolnet_desktop.runtime.member.member import Member
from poolnet_desktop.runtime.member.runner import ShardRunner, ShardSpec, python_command
from poolnet_desktop.runtime.member.sandbox import Sandbox, hidden_folders, probe
from poolnet_desktop.runtime.member.sandbox_launcher import encode
from poolnet_desktop.runtime.member.shard_process import PipedProcess
from poolnet_desktop.runtime.member.task_sandbox import SandboxEnded, TaskSandbox, TaskSandboxes
from tests.runtime.test_task_pool import members, submit_manifest, wait_for

pytestmark = pytest.mark.skipif(not probe()[0], reason=f"no sandbox here: {probe()[1]}")
__all__ = ["members"]  # the fixture, used by name


@pytest.fixture
async def boxes(tmp_path: Path) -> AsyncIterator[TaskSandboxes]:
    work = tmp_path / "work"
    work.mkdir()
    sandbox = Sandbox(network=False, hidden=hidden_folders(tmp_path / "data", work))
    held = TaskSandboxes(sandbox, work, python_command(), idle_after=0.3)
    yield held
    held.close_all()


async def run_shard(
    boxes: TaskSandboxes, task: str, command: str, ok: bool = True, **spec: object
) -> tuple[str, ShardRunner, Path]:
    """Run a shell line as a shard of ``task`` (``ok``: check that it did not fail); returns
    its stdout, its runner, its folder."""
    box = await boxes.acquire((task,), [], [])
    workdir = boxes.take_folder(box)
    out: list[bytes] = []

    async def keep(stream: str, data: bytes) -> None:
        if stream == "stdout":
            out.append(data)

    runner = ShardRunner(ShardSpec(command=command, shell=True, workdir=workdir, sandbox=boxes.sandbox,
                                   task_sandbox=box, **spec), keep)  # type: ignore[arg-type]
    try:
        result = await runner.run()
    finally:
        boxes.release((task,), box)
    assert not ok or result.reason in ("succeeded", "timeout", "cancelled"), result
    return b"".join(out).decode(), runner, workdir


async def start_daemon_shard(
    boxes: TaskSandboxes, command: str
) -> tuple[ShardRunner, asyncio.Future[ShardResult], TaskSandbox]:
    """Start a shell line as a shard of task-a; returns it once its ``sleep TOKEN`` runs."""
    box = await boxes.acquire(("task-a",), [], [])
    runner = ShardRunner(ShardSpec(
        command=command, shell=True, workdir=boxes.take_folder(box), sandbox=boxes.sandbox,
        task_sandbox=box,
    ))
    running = asyncio.ensure_future(runner.run())
    token = command.split("sleep ", 1)[1].split()[0].strip("'")
    await wait_for(lambda: bool(with_token(token)))
    return runner, running, box


def with_token(token: str) -> list[psutil.Process]:
    """The ``sleep TOKEN`` processes (the shells that started them name the token too)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.cmdline() == ["sleep", token]:
                found.append(process)
        except psutil.Error:
            continue
    return found


def sandboxes_of(boxes: TaskSandboxes) -> list[TaskSandbox]:
    return [held.box for held in boxes._held.values()]


async def test_a_tasks_shards_share_its_sandbox_and_another_task_gets_its_own(boxes: TaskSandboxes) -> None:
    first, _, _ = await run_shard(boxes, "task-a", "readlink /proc/self/ns/pid")
    second, _, _ = await run_shard(boxes, "task-a", "readlink /proc/self/ns/pid")
    other, _, _ = await run_shard(boxes, "task-b", "readlink /proc/self/ns/pid")
    assert first == second != other
    assert first.startswith("pid:[") and other.startswith("pid:[")


async def test_a_shard_cannot_see_another_tasks_folder(boxes: TaskSandboxes) -> None:
    marker = uuid.uuid4().hex
    _, _, theirs = await run_shard(boxes, "task-a", f"echo {marker} > result.txt")
    assert (theirs / "result.txt").read_text().strip() == marker
    out, _, _ = await run_shard(boxes, "task-b", f"cat {theirs}/result.txt 2>&1; ls {theirs.parent} 2>&1", ok=False)
    assert marker not in out
    assert "No such file" in out


async def test_each_shard_has_its_own_temporary_folder_removed_at_its_end(boxes: TaskSandboxes) -> None:
    first, _, _ = await run_shard(boxes, "task-a", 'echo "$TMPDIR"; touch "$TMPDIR/left"')
    second, _, _ = await run_shard(boxes, "task-a", 'echo "$TMPDIR"; ls /tmp')
    assert first.splitlines()[0] != second.splitlines()[0]
    assert first.splitlines()[0].removeprefix("/tmp/") not in second.splitlines()[1:]


async def test_a_daemon_that_left_its_session_stays_in_its_shards_tree_and_dies_with_it(
    boxes: TaskSandboxes,
) -> None:
    """Forked twice into a session of its own, the daemon is still under the shard (a child
    subreaper) while the shard runs, so the member's suspend and kill reach it; once the shard
    ends, the launcher kills it, though the sandbox stays for the task's next shard."""
    token = f"1000.{uuid.uuid4().int % 10**9}"
    runner, running, box = await start_daemon_shard(
        boxes, f"setsid sh -c 'sleep {token} & :' & sleep 0.5; echo done"
    )
    daemon = with_token(token)[0]
    assert runner.pid is not None
    assert daemon in psutil.Process(runner.pid).children(recursive=True)
    assert (await running).reason == "succeeded"
    await wait_for(lambda: not daemon.is_running() or daemon.status() == psutil.STATUS_ZOMBIE)
    assert not box.ended
    boxes.release(("task-a",), box)


async def test_a_timed_out_shards_escaped_daemon_dies_with_it(boxes: TaskSandboxes) -> None:
    token = f"1000.{uuid.uuid4().int % 10**9}"
    out, runner, _ = await run_shard(
        boxes, "task-a", f"setsid sh -c 'sleep {token} & :'; echo started; sleep 1000", timeout=2.0,
    )
    assert "started" in out
    left = [p for p in with_token(token) if p.status() != psutil.STATUS_ZOMBIE]
    for process in left:
        process.kill()
    assert not left, f"still running after the timeout: {left}"


async def test_a_suspended_shard_stops_with_its_escaped_daemon(boxes: TaskSandboxes) -> None:
    token = f"1000.{uuid.uuid4().int % 10**9}"
    runner, running, box = await start_daemon_shard(boxes, f"setsid sh -c 'sleep {token} & :'; sleep 1000")
    runner.suspend()
    daemon = with_token(token)[0]
    await wait_for(lambda: daemon.status() == psutil.STATUS_STOPPED)
    runner.cancel()
    assert (await running).reason == "cancelled"
    boxes.release(("task-a",), box)


async def test_a_shard_that_kills_the_launcher_ends_only_its_tasks_sandbox(boxes: TaskSandboxes) -> None:
    """Same task, same submitter: a shard may break its own task's sandbox. Its shards still
    running end as killed, and the task's next shard gets a new sandbox."""
    token = f"1000.{uuid.uuid4().int % 10**9}"
    other_box = await boxes.acquire(("task-b",), [], [])
    box = await boxes.acquire(("task-a",), [], [])
    bystander = ShardRunner(ShardSpec(
        command=["sleep", token], workdir=boxes.take_folder(box), sandbox=boxes.sandbox, task_sandbox=box,
    ))
    waiting = asyncio.ensure_future(bystander.run())
    await wait_for(lambda: bool(with_token(token)))
    # sandbox[-]launcher: this shell's own command line must not match.
    killer = "for p in /proc/[0-9]*; do grep -qs 'sandbox[-]launcher' $p/cmdline && kill -9 ${p#/proc/}; done; sleep 1"
    await run_shard(boxes, "task-a", killer, ok=False)  # it dies with the sandbox it broke
    result = await waiting
    assert result.reason == "failed" and result.exit_code == -9
    assert box.ended and not other_box.ended
    again, _, _ = await run_shard(boxes, "task-a", "echo fresh")
    assert again == "fresh\n"
    boxes.release(("task-a",), box)
    boxes.release(("task-b",), other_box)


async def test_a_shard_cannot_reach_the_launchers_socket_or_memory(boxes: TaskSandboxes) -> None:
    """The launcher is not dumpable: a shard can neither see its descriptors nor take its
    socket (pidfd_getfd needs the same right) nor read its memory."""
    out, _, _ = await run_shard(boxes, "task-a", """
        for p in /proc/[0-9]*; do
          if grep -qs 'sandbox[-]launcher' $p/cmdline && ! grep -qs '^bwrap' $p/cmdline; then
            readlink $p/fd/0 >/dev/null 2>&1 && echo fds-readable
            head -c1 $p/mem >/dev/null 2>&1 && echo mem-readable
            echo checked
          fi
        done
    """)
    assert out.strip() == "checked"


async def test_an_idle_tasks_sandbox_closes_and_its_folder_goes(boxes: TaskSandboxes) -> None:
    _, _, workdir = await run_shard(boxes, "task-a", "true")
    await boxes.give_back(workdir, empty=True)
    (box,) = sandboxes_of(boxes)
    bwrap = psutil.Process(box._popen.pid)
    await wait_for(lambda: bool(box.ended), timeout=5)
    assert not bwrap.is_running()
    assert not box.folder.exists()


async def test_a_members_shards_of_one_task_run_in_one_sandbox_end_to_end(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path
) -> None:
    """Through a real pool: the shards of a ten-shard task share their member's sandbox for
    the task once it is made (the first ones may each get one of their own meanwhile)."""
    task_id = await submit_manifest(client, tmp_path / "ns", """
        command = "sleep 0.3; readlink /proc/self/ns/pid"
        shell = true
        shards = 10
    """)
    assert (await client.wait(task_id)).state == "succeeded"
    namespaces = []
    for shard in range(10):
        lines: list[str] = []
        await client.logs(task_id, lambda out: lines.append(out.data), shard=shard)
        namespaces.append("".join(lines).strip())
    assert all(ns.startswith("pid:[") for ns in namespaces)
    assert len(set(namespaces)) < len(namespaces)


# ---- a hostile launcher: the test plays it on the other end of the socket -----------------


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[tuple[TaskSandbox, socket.socket]]:
    """A TaskSandbox whose 'launcher' is this test: ``sleep`` stands in for bwrap."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    popen = subprocess.Popen(["sleep", "60"], start_new_session=True)
    box = TaskSandbox(tmp_path, popen, ours)
    theirs.send(encode({"op": "ready"}))
    await asyncio.wait_for(box._ready, 5)
    yield box, theirs
    box.close()
    theirs.close()


async def start_in(box: TaskSandbox) -> asyncio.Future[PipedProcess]:
    starting = asyncio.ensure_future(box.start(["true"], Path("/"), {}, lambda s, d: None, None))
    await asyncio.sleep(0.05)
    return starting


@pytest.mark.parametrize("answer", [
    b"not json",
    encode({"op": "exited", "id": 99, "code": 0}),
    encode({"op": "started", "id": 1}),
    encode({"op": "exited", "id": 1, "code": "zero"}),
    encode({"op": "ready"}),
])
async def test_a_launcher_that_says_what_was_not_asked_ends_its_sandbox(
    fake: tuple[TaskSandbox, socket.socket], answer: bytes
) -> None:
    box, launcher = fake
    starting = await start_in(box)
    launcher.recv(65536)
    launcher.send(answer)
    with pytest.raises(SandboxEnded):
        await asyncio.wait_for(starting, 5)
    assert box.ended
    assert box._popen.returncode is not None  # its bwrap was killed and reaped


async def test_a_launcher_that_sends_some_other_descriptor_as_the_pidfd_ends_its_sandbox(
    fake: tuple[TaskSandbox, socket.socket],
) -> None:
    box, launcher = fake
    starting = await start_in(box)
    launcher.recv(65536)
    read, write = os.pipe()
    socket.send_fds(launcher, [encode({"op": "started", "id": 1})], [read])
    os.close(read)
    os.close(write)
    with pytest.raises(SandboxEnded):
        await asyncio.wait_for(starting, 5)
    assert box.ended


async def test_a_launcher_that_never_answers_is_given_up_on(
    fake: tuple[TaskSandbox, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(task_sandbox_module, "ANSWER_TIMEOUT", 0.3)
    box, launcher = fake
    with pytest.raises(SandboxEnded):
        await asyncio.wait_for(box.start(["true"], Path("/"), {}, lambda s, d: None, None), 5)
    assert box.ended
    request = json.loads(launcher.recv(65536))
    assert request["op"] == "start"
