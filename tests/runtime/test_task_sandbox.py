"""Lanes: a sandbox kept for a task and reused by its shards one at a time (issue 14), run for
real: real bubblewrap, the real launcher inside it, real shard processes.

What must hold is what held with a sandbox per shard: a shard's whole tree (even what left its
session or used ``clone(CLONE_PARENT)``) is suspended, measured and killed as one and does not
outlive the shard; its folder, once it ended, is out of every process's reach; another task's
folder stays out of sight. The launcher lives among the task's code, so the attacks below are
made from a shard (stopping the launcher, replacing the shard's folder with a symlink) and by
the test playing a hostile launcher. Several of them succeeded against the first design (a
sandbox shared by a task's running shards, one writable folder for all): an attacker's review.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import psutil
import pytest

from poolnet_desktop.core.task_protocol import ShardResult
from poolnet_desktop.runtime.client.task_client import TaskClient
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.host.pool_host import PoolHost
from poolnet_desktop.runtime.member import task_executor as task_executor_module
from poolnet_desktop.runtime.member import native_launcher
from poolnet_desktop.runtime.member import task_sandbox as task_sandbox_module
from poolnet_desktop.runtime.member.lane_pool import LanePool
from poolnet_desktop.runtime.member.member import Member, MemberOptions
from poolnet_desktop.runtime.member.runner import OutputCallback, ShardRunner, ShardSpec, python_command
from poolnet_desktop.runtime.member.sandbox import Sandbox, hidden_folders, probe, shard_process_limit
from poolnet_desktop.runtime.member.sandbox_launcher import StartRequest, encode
from poolnet_desktop.runtime.member.task_sandbox import LauncherCommand, LaneProcess, SandboxEnded, TaskSandbox
from poolnet_desktop.runtime.net.discovery import DiscoverySettings
from tests.runtime.conftest import PAIRING_CODE
from tests.runtime.test_task_pool import members, submit_manifest, wait_for

pytestmark = pytest.mark.skipif(not probe()[0], reason=f"no sandbox here: {probe()[1]}")
__all__ = ["members"]  # the fixture, used by name

KEY = ("task-a",)


class Lanes:
    """A member's work root, data folder (with a key in it) and lanes, as the executor lays them
    out; ``run`` runs a shell line as a shard of task-a in a lane."""

    def __init__(self, root: Path, launcher: LauncherCommand) -> None:
        self.work = root / "work"
        self.data = root / "data"
        self.work.mkdir()
        self.data.mkdir()
        self.marker = uuid.uuid4().hex
        (self.data / "identity.key").write_text(f"secret {self.marker}")
        self.sandbox = Sandbox(network=False, hidden=hidden_folders(self.data, self.work))
        self.taken = 0
        self.lanes = LanePool(self.sandbox, self.work, launcher, self.take_folder, idle_after=0.3)

    def take_folder(self) -> Path:
        self.taken += 1
        folder = self.work / f"slot-{self.taken}"
        folder.mkdir()
        return folder

    async def start(self, command: str, **spec: object) -> tuple[ShardRunner, asyncio.Future[ShardResult], TaskSandbox]:
        lane = await self.lanes.acquire(KEY, [], [])
        runner = ShardRunner(ShardSpec(command=command, shell=True, workdir=lane.workdir, sandbox=self.sandbox,
                                       task_sandbox=lane, **spec))  # type: ignore[arg-type]
        return runner, asyncio.ensure_future(runner.run()), lane

    async def run(
        self, command: str, files: dict[str, str] | None = None, visible: Sequence[Path] = (), **spec: object
    ) -> tuple[ShardResult, str, Path]:
        """Run to its end, with ``files`` in its folder (in a lane that also sees the folders
        ``visible``); returns its result, its stdout and the folder its files are in then."""
        out: list[bytes] = []

        async def keep(stream: str, data: bytes) -> None:
            if stream == "stdout":
                out.append(data)

        lane = await self.lanes.acquire(KEY, [], visible)
        for name, text in (files or {}).items():
            (lane.workdir / name).write_text(text)
        runner = ShardRunner(ShardSpec(command=command, shell=True, workdir=lane.workdir, sandbox=self.sandbox,
                                       task_sandbox=lane, **spec), keep)  # type: ignore[arg-type]
        try:
            result = await runner.run()
        finally:
            await self.lanes.release(KEY, lane)
        return result, b"".join(out).decode(), runner.workdir

    def lane_folders(self) -> list[Path]:
        return sorted(self.work.glob("lane-*"))


def launcher_of(kind: str) -> LauncherCommand:
    """A member's launcher of ``kind``: the build of the C one ("native"; skipped where there is
    none: ``./dev setup`` makes it, and ``test_native_launcher`` fails where a compiler could
    have) or the Python one."""
    if kind == "python":
        return LauncherCommand(tuple(python_command()))
    native = native_launcher.find()
    if native is None:
        pytest.skip("no build of the C launcher here")
    return LauncherCommand(tuple(python_command()), native)


@pytest.fixture(params=["native", "python"])
def launcher(request: pytest.FixtureRequest) -> LauncherCommand:
    """Each test of a lane runs with both launchers: they must do the same."""
    return launcher_of(request.param)


@pytest.fixture
async def lanes(tmp_path: Path, launcher: LauncherCommand) -> AsyncIterator[Lanes]:
    made = Lanes(tmp_path, launcher)
    yield made
    await made.lanes.close_all()


def sleeping(token: str) -> list[psutil.Process]:
    """The ``sleep TOKEN`` processes (the shells that started them name the token too)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.cmdline() == ["sleep", token] and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            continue
    return found


def new_token() -> str:
    return f"1000.{uuid.uuid4().int % 10**9}"


async def test_a_tasks_shards_reuse_one_lane_one_after_another(lanes: Lanes) -> None:
    first, ns1, folder1 = await lanes.run("readlink /proc/self/ns/pid; echo one > out.txt")
    second, ns2, folder2 = await lanes.run("readlink /proc/self/ns/pid; ls")
    assert first.reason == second.reason == "succeeded"
    assert ns1 == ns2.splitlines()[0] + "\n" and ns1.startswith("pid:[")
    assert ns2.splitlines()[1:] == []  # a fresh folder: nothing of the first shard's
    assert (folder1 / "out.txt").read_text() == "one\n"  # moved out of the lane, kept
    assert folder1 != folder2 and lanes.work in folder1.parents
    assert len(lanes.lane_folders()) == 1


async def test_a_lanes_shards_run_under_the_process_limit_even_one_that_lowered_it(lanes: Lanes) -> None:
    """The launcher runs under the sandbox's process limit, and so does each shard it starts;
    a limit a shard set on the launcher is set back before the next shard."""
    limit = shard_process_limit()
    if limit is None:
        pytest.skip("no prlimit (util-linux) here")
    lowered, ns1, _ = await lanes.run("readlink /proc/self/ns/pid; prlimit --pid 2 --nproc=100:")
    result, out, _ = await lanes.run("readlink /proc/self/ns/pid; grep 'Max processes' /proc/self/limits")
    assert lowered.reason == result.reason == "succeeded"
    ns2, limits = out.splitlines()
    assert ns1 == ns2 + "\n"  # the same lane
    assert limits.split()[2:4] == [str(limit[1])] * 2, out


async def test_a_lanes_shard_counts_its_threads_with_its_processes(lanes: Lanes) -> None:
    """What the process guard reads of a lane's shard: every thread of every process in it,
    as the kernel counts them against a process limit."""
    code = ("import os, threading, time; os.fork(); "
            "[threading.Thread(target=time.sleep, args=(30,), daemon=True).start() for _ in range(40)]; time.sleep(30)")
    runner, running, _ = await lanes.start(f"{python_command()[0]} -c '{code}'")
    await wait_for(lambda: runner.threads_in_use() >= 82)  # the shell, two Pythons of 41 threads
    runner.cancel()
    assert (await running).reason == "cancelled"


async def test_each_shard_gets_all_it_wrote_and_nothing_of_the_others(lanes: Lanes) -> None:
    """A lane's shards write to the same two pipes: what a shard wrote up to its end (more
    than a pipe holds, the last of it written as it exits) is its own, all of it."""
    first, out, _ = await lanes.run("head -c 300000 /dev/zero; head -c 100000 /dev/zero >&2; printf last")
    second, out2, _ = await lanes.run("echo second; echo err >&2")
    assert (first.stdout_bytes, first.stderr_bytes) == (300_004, 100_000)
    assert out.endswith("last") and len(out) == 300_004
    assert (out2, second.stdout_bytes, second.stderr_bytes) == ("second\n", 7, 4)


async def test_each_shard_starts_with_an_empty_tmp(lanes: Lanes) -> None:
    await lanes.run("head -c 100000 /dev/zero > /tmp/big; mkdir /var/tmp/d; touch /var/tmp/d/f")
    _, out, _ = await lanes.run("ls -A /tmp /var/tmp")
    assert "big" not in out and "d" not in out.split()


async def test_a_daemon_that_left_its_session_is_in_the_shards_tree_and_dies_with_it(lanes: Lanes) -> None:
    token = new_token()
    runner, running, lane = await lanes.start(f"setsid sh -c 'sleep {token} & :'; sleep 0.5")
    await wait_for(lambda: bool(sleeping(token)))
    assert sleeping(token)[0] in lane._contents()
    assert (await running).reason == "succeeded"
    assert not sleeping(token)  # gone before the end was reported
    assert not lane.ended
    await lanes.lanes.release(KEY, lane)


CLONE_PARENT = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
if libc.syscall(56, 0x8000 | 17, 0, 0, 0, 0) == 0:  # clone(CLONE_PARENT | SIGCHLD)
    os.setsid()
    hog = bytearray(200 * 1024 * 1024)
    for i in range(0, len(hog), 4096):
        hog[i] = 1
time.sleep(float(sys.argv[1]))
"""


async def test_what_left_the_tree_with_clone_parent_counts_against_the_memory_limit(lanes: Lanes) -> None:
    """clone(CLONE_PARENT) makes a sibling of the shard, a child of the launcher: out of the
    shard's own tree. It held 200 MB under a 100 MB limit before; the lane counts it."""
    token = new_token()
    result, _, _ = await lanes.run(
        f"exec {python_command()[0]} escape.py {token}", files={"escape.py": CLONE_PARENT},
        memory_limit=100 * 1024 * 1024, timeout=20.0,
    )
    assert result.reason == "memory", result
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and token in p.info["cmdline"]]


async def test_a_suspended_shard_stops_with_what_it_started(lanes: Lanes) -> None:
    token = new_token()
    runner, running, lane = await lanes.start(f"setsid sh -c 'sleep {token} & :'; sleep 1000")
    await wait_for(lambda: bool(sleeping(token)))
    runner.suspend()
    daemon = sleeping(token)[0]
    await wait_for(lambda: daemon.status() == psutil.STATUS_STOPPED)
    runner.cancel()
    assert (await running).reason == "cancelled"
    assert not sleeping(token)
    await lanes.lanes.release(KEY, lane)


async def test_a_shard_that_stops_its_launcher_still_times_out(lanes: Lanes) -> None:
    """SIGSTOP to the launcher (same uid, in reach of signals): its runner hung past the
    timeout before, with the sandbox left running. The kill ends the whole lane."""
    token = new_token()
    # It sleeps for ~1000 s unless the timeout ends it: the wait bounds the test, not a clock.
    result, _, _ = await asyncio.wait_for(lanes.run(f"kill -STOP $PPID; sleep {token}", timeout=1.0), 30)
    assert result.reason == "timeout"
    assert not sleeping(token)


async def test_a_shard_that_stops_its_launcher_and_ends_is_reported_all_the_same(
    lanes: Lanes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(task_sandbox_module, "EXIT_REPORT_TIMEOUT", 0.5)
    result, _, _ = await asyncio.wait_for(lanes.run("kill -STOP $PPID"), 10)
    assert result.reason == "failed" and result.exit_code == -9
    assert len(lanes.lane_folders()) <= 1


async def test_a_shard_that_leaves_a_symlink_for_its_folder_gets_nothing_read_through_it(lanes: Lanes) -> None:
    """The shard swaps its folder for a symlink to the member's data folder: the member read
    the key there as an output, and uploaded it, before."""
    result, _, folder = await lanes.run(
        f'd="$PWD"; cd ..; mv "$d" "$d.x"; ln -s {lanes.data} "$d"', outputs=["*"],
    )
    assert result.outputs == []
    assert "replaced its working folder" in result.message
    assert not folder.is_symlink() and list(folder.iterdir()) == []
    assert (lanes.data / "identity.key").exists()


async def test_a_shard_whose_files_nobody_wants_leaves_its_empty_folder_to_the_next(lanes: Lanes) -> None:
    """No outputs named and nothing left: the folder is not moved out (a move and a new
    folder cost a small shard a sixth of the member's work), and the next shard works in it."""
    await lanes.run("true")
    (lane,) = lanes.lane_folders()
    inode = (lane / "work").stat().st_ino
    result, out, _ = await lanes.run("ls -A")
    assert result.reason == "succeeded" and out == ""
    assert (lane / "work").stat().st_ino == inode and lanes.taken == 0


async def test_a_shard_whose_files_nobody_wants_cannot_leave_a_symlink_for_the_next_ones_folder(
    lanes: Lanes, tmp_path: Path
) -> None:
    """With no outputs named, a shard swaps its folder for a symlink (or fills it): the next
    shard still gets a real, empty folder of its own, and the member writes nothing through
    the link (its inputs are copied into that folder)."""
    victim = tmp_path / "victim"
    victim.mkdir()
    await lanes.run(f'd="$PWD"; cd ..; rmdir "$d"; ln -s {victim} "$d"')
    await lanes.run("touch left-behind")
    lane = await lanes.lanes.acquire(KEY, [], [])
    try:
        assert not lane.workdir.is_symlink() and list(lane.workdir.iterdir()) == []
        (lane.workdir / "input.txt").write_text("the next shard's input")
    finally:
        await lanes.lanes.release(KEY, lane)
    assert list(victim.iterdir()) == []


@pytest.mark.parametrize(("command", "expected"), [
    ("no-such-program-here", "program not found"),
    ("./not-executable", "permission denied"),
])
async def test_a_lane_says_why_a_shard_could_not_start(lanes: Lanes, command: str, expected: str) -> None:
    lane = await lanes.lanes.acquire(KEY, [], [])
    (lane.workdir / "not-executable").write_text("echo never\n")
    runner = ShardRunner(ShardSpec(command=[command], workdir=lane.workdir, sandbox=lanes.sandbox, task_sandbox=lane))
    try:
        result = await runner.run()
    finally:
        await lanes.lanes.release(KEY, lane)
    assert result.reason == "error" and expected in result.message, result


async def test_a_lane_shard_starts_as_from_a_shell(lanes: Lanes) -> None:
    """Started with ``posix_spawn``: a command found on PATH or in its folder, no signal left
    ignored (Python ignores SIGPIPE; ``yes | head`` would run forever), a session of its own.
    glibc's two internal signals (32, 33) are the C library's own to set."""
    result, out, _ = await lanes.run(
        "printf '#!/bin/sh\\necho from-folder\\n' > run.sh; chmod +x run.sh; ./run.sh; "
        "grep SigIgn /proc/self/status; yes | head -n 1; ps -o sid= -p $$; echo $$",
    )
    lines = out.split()
    assert result.reason == "succeeded", result
    assert lines[0] == "from-folder"
    assert lines[1] == "SigIgn:" and int(lines[2], 16) & ~(0b11 << 31) == 0
    assert lines[3] == "y"
    assert lines[4] == lines[5]  # the shell leads its own session


async def test_what_a_shard_plants_beside_its_folder_is_gone_before_the_next_one(lanes: Lanes, tmp_path: Path) -> None:
    """Before, a shard could plant the next shard's folder as a symlink: the member then
    copied that shard's inputs wherever it pointed. Now the lane's folder is emptied."""
    victim = tmp_path / "victim"
    victim.mkdir()
    await lanes.run(f"ln -s {victim} ../work2; ln -s {victim} ../slot-9; head -c 1000 /dev/zero > ../junk")
    (folder,) = lanes.lane_folders()
    assert sorted(p.name for p in folder.iterdir()) == ["work"]
    assert not (folder / "work").is_symlink() and list((folder / "work").iterdir()) == []


async def test_a_shard_that_kills_the_launcher_ends_only_its_lane(lanes: Lanes) -> None:
    result, _, _ = await lanes.run("kill -9 $PPID; sleep 5")
    assert result.reason == "failed" and result.exit_code == -9
    again, out, _ = await lanes.run("echo fresh")
    assert (again.reason, out) == ("succeeded", "fresh\n")


async def test_a_shard_cannot_reach_the_launchers_descriptors_or_memory(lanes: Lanes) -> None:
    _, out, _ = await lanes.run("""
        readlink /proc/$PPID/fd/0 >/dev/null 2>&1 && echo fds-readable
        head -c1 /proc/$PPID/mem >/dev/null 2>&1 && echo mem-readable
        echo checked
    """)
    assert out == "checked\n"


async def test_an_idle_lane_closes_and_its_folder_goes(lanes: Lanes) -> None:
    await lanes.run("true")
    (folder,) = lanes.lane_folders()
    await wait_for(lambda: not folder.exists(), timeout=5)


def spare_of(lanes: Lanes) -> TaskSandbox | None:
    return lanes.lanes._spare


async def test_a_spare_lane_made_at_rest_goes_at_once_to_a_new_tasks_first_shard_never_to_an_old_one(
    lanes: Lanes, tmp_path: Path
) -> None:
    """A task's first shard starts in a lane made ahead instead of a sandbox of its own (the
    spare has run nothing: another task's lane, though free, is never lent), a shard that
    needs something bound in does not get it, and another spare follows once at rest."""
    _, ns_a, _ = await lanes.run("readlink /proc/self/ns/pid")
    lanes.lanes.spare_after = 0.1
    lanes.lanes.keep_spare()
    await wait_for(lambda: spare_of(lanes) is not None)
    spare = spare_of(lanes)
    environment = tmp_path / "environment"
    environment.mkdir()
    assert lanes.lanes.ready(("task-with-environment",), [], [environment]) is None
    assert spare_of(lanes) is spare

    lane = lanes.lanes.ready(("task-b",), [], [])
    assert lane is spare and spare_of(lanes) is None
    assert not any(lane.workdir.iterdir())
    out: list[bytes] = []

    async def keep(stream: str, data: bytes) -> None:
        out.append(data)

    runner = ShardRunner(ShardSpec(command="readlink /proc/self/ns/pid", shell=True, workdir=lane.workdir,
                                   sandbox=lanes.sandbox, task_sandbox=lane), keep)
    try:
        assert (await runner.run()).reason == "succeeded"
    finally:
        await lanes.lanes.release(("task-b",), lane)
    assert b"".join(out).decode() != ns_a  # not task-a's lane, free all along
    await wait_for(lambda: spare_of(lanes) not in (None, spare))


async def test_the_pool_closed_leaves_no_lane_running_no_watch_and_no_folder(lanes: Lanes) -> None:
    """Closing waits for each sandbox's end: a lane left closing when the loop stopped kept a
    watch on its init's pidfd (under Qt's loop, a notifier that outlived the loop)."""
    await lanes.run("true")
    lanes.lanes.spare_after = 0.1
    lanes.lanes.keep_spare()
    await wait_for(lambda: spare_of(lanes) is not None)
    launchers = [psutil.Process(lane._launcher) for lane in (spare_of(lanes), *lanes.lanes._free[KEY])]
    watched = set(asyncio.get_running_loop()._selector.get_map())  # type: ignore[attr-defined]
    await lanes.lanes.close_all()
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in launchers)
    assert set(asyncio.get_running_loop()._selector.get_map()) < watched  # type: ignore[attr-defined]
    assert spare_of(lanes) is None and lanes.lane_folders() == []


async def test_a_sandbox_that_will_not_end_holds_the_pools_close_only_so_long(
    lanes: Lanes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process stuck in the kernel can keep a sandbox from ending (played here: nothing on
    this machine makes one on demand); a window's quit must not hang on it."""
    await lanes.run("true")

    async def never_gone(self: TaskSandbox) -> None:
        await asyncio.sleep(3600)

    monkeypatch.setattr(TaskSandbox, "gone", never_gone)
    lanes.lanes.close_wait = 0.3
    started = time.monotonic()
    await asyncio.wait_for(lanes.lanes.close_all(), 10)
    assert time.monotonic() - started < 5


async def test_a_members_shards_of_one_task_share_lanes_end_to_end(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path
) -> None:
    """Through a real pool: the shards of a ten-shard task reuse their member's lanes once
    made (the first ones may each get a sandbox of their own meanwhile)."""
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


async def lane_played_by_the_test(
    tmp_path: Path, writers: dict[str, int] | None = None, launcher_has_a_child: bool = False,
) -> tuple[TaskSandbox, socket.socket, psutil.Process]:
    """A lane whose launcher is this test, and a 'launcher' process where a real one would be:
    ``sh`` stands in for bwrap, a child ``sh`` for its init, a ``sleep`` for the launcher (or
    an ``sh`` with a ``sleep`` under it: a shard still running). The write ends of the lane's
    pipes go to ``writers``, or are closed."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    launcher = "sh -c \"sh -c 'sleep 60 & wait' & wait\"" if launcher_has_a_child else "sh -c 'sleep 60 & wait'"
    bwrap = subprocess.Popen(["sh", "-c", f"{launcher} & wait"], start_new_session=True)
    await wait_for(lambda: len(psutil.Process(bwrap.pid).children(recursive=True)) == 2 + launcher_has_a_child)
    stand_in = psutil.Process(bwrap.pid).children()[0].children()[0]
    (tmp_path / "work").mkdir()
    outputs = {}
    for stream in ("stdout", "stderr"):
        outputs[stream], write_end = os.pipe()
        if writers is None:
            os.close(write_end)
        else:
            writers[stream] = write_end
    lane = TaskSandbox(tmp_path, bwrap, ours, outputs, lambda: Path(tempfile.mkdtemp(dir=tmp_path)))
    return lane, theirs, stand_in


@contextlib.asynccontextmanager
async def ready_lane_played_by_the_test(
    tmp_path: Path, writers: dict[str, int] | None = None, launcher_has_a_child: bool = False,
) -> AsyncIterator[tuple[TaskSandbox, socket.socket, psutil.Process]]:
    """``lane_played_by_the_test``, its launcher said ready; the lane, the test's end of its
    socket and the pipes' write ends are closed after."""
    lane, launcher, stand_in = await lane_played_by_the_test(tmp_path, writers, launcher_has_a_child)
    try:
        say_ready(launcher, stand_in.pid)
        await asyncio.wait_for(lane._ready, 5)
        yield lane, launcher, stand_in
    finally:
        lane.close()
        launcher.close()
        for fd in (writers or {}).values():
            os.close(fd)


def say_ready(launcher: socket.socket, pid: int) -> None:
    me = os.pidfd_open(pid)
    socket.send_fds(launcher, [encode({"op": "ready"})], [me])
    os.close(me)


async def start_played(
    lane: TaskSandbox, launcher: socket.socket, pid: int, on_data: OutputCallback | None = None,
) -> tuple[ShardRunner, asyncio.Future[ShardResult], int]:
    """A shard started in a lane whose launcher is this test, its start answered with a
    pidfd of ``pid``: the runner, its run, and the request's id."""
    runner = ShardRunner(ShardSpec(command=["true"], workdir=lane.workdir, task_sandbox=lane), on_data)
    running = asyncio.ensure_future(runner.run())
    request = StartRequest(await asyncio.to_thread(launcher.recv, 65536))
    pidfd = os.pidfd_open(pid)
    socket.send_fds(launcher, [encode({"op": "started", "id": request.request_id})], [pidfd])
    os.close(pidfd)
    await wait_for(lambda: bool(lane._shards))  # its start was read
    return runner, running, request.request_id


@pytest.fixture
async def hostile(tmp_path: Path) -> AsyncIterator[tuple[TaskSandbox, socket.socket]]:
    """A ready lane whose launcher is this test."""
    lane, launcher, stand_in = await lane_played_by_the_test(tmp_path)
    say_ready(launcher, stand_in.pid)
    await asyncio.wait_for(lane._ready, 5)
    yield lane, launcher
    lane.close()
    launcher.close()


def test_the_launcher_will_not_serve_outside_a_sandbox(launcher: LauncherCommand) -> None:
    """Started by hand on the machine itself, its clean-up after a first shard would have
    emptied the machine's /tmp (it did, in a profiling run) and killed every process it could
    see. It refuses before it answers anything (no request is sent here either way)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    (out_read, out_write), (err_read, err_write) = os.pipe(), os.pipe()
    fds = [theirs.fileno(), out_write, err_write]
    with launcher.prepared(fds) as (argv, program_fds):
        launched = subprocess.run(argv, pass_fds=[*program_fds, *fds], capture_output=True, text=True,
                                  timeout=10, check=False)
    for fd in (out_read, out_write, err_read, err_write):
        os.close(fd)
    theirs.close()
    ours.settimeout(5)
    assert ours.recv(4096) == b""  # its end, and no "ready" before it
    ours.close()
    assert launched.returncode == 2 and "only as the command of a sandbox" in launched.stderr


async def test_a_launcher_that_is_not_inside_its_sandbox_is_refused(tmp_path: Path) -> None:
    """It names some other process as itself (here, the member): the lane is never used."""
    lane, launcher, _ = await lane_played_by_the_test(tmp_path)
    say_ready(launcher, os.getpid())
    with pytest.raises(SandboxEnded):
        await asyncio.wait_for(lane._ready, 5)
    assert lane.ended
    launcher.close()


async def start_in(lane: TaskSandbox) -> asyncio.Future[LaneProcess]:
    starting = asyncio.ensure_future(lane.start(["true"], {}, lambda s, d: None, None))
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
    hostile: tuple[TaskSandbox, socket.socket], answer: bytes
) -> None:
    lane, launcher = hostile
    starting = await start_in(lane)
    launcher.recv(65536)
    launcher.send(answer)
    with pytest.raises(SandboxEnded):
        await asyncio.wait_for(starting, 5)
    assert lane.ended
    assert lane._popen.returncode is not None  # its bwrap was killed and reaped


async def test_a_shard_that_ends_before_it_is_told_started_is_answered_by_its_end_alone(tmp_path: Path) -> None:
    """Most small shards end within the launcher's ``STARTED_DELAY``: their one message is
    ``exited``, and what they wrote is theirs."""
    writers: dict[str, int] = {}
    out: list[bytes] = []

    async def keep(stream: str, data: bytes) -> None:
        out.append(data)

    async with ready_lane_played_by_the_test(tmp_path, writers) as (lane, launcher, _):
        runner = ShardRunner(ShardSpec(command=["true"], workdir=lane.workdir, task_sandbox=lane), keep)
        running = asyncio.ensure_future(runner.run())
        request = StartRequest(await asyncio.to_thread(launcher.recv, 65536))
        os.write(writers["stdout"], b"all of it")
        launcher.send(encode({"op": "exited", "id": request.request_id, "code": 3}))
        result = await asyncio.wait_for(running, 10)
        assert (result.reason, result.exit_code, b"".join(out)) == ("failed", 3, b"all of it")
        assert not lane.ended and not lane._shards and not lane._pending


async def test_a_shard_that_runs_on_is_told_with_a_pidfd_and_a_quick_one_is_not(
    lanes: Lanes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The launcher tells of a start only once the shard has run for ``STARTED_DELAY``: the
    member then knows its pid and hears its end from the kernel. A quick shard's one message
    is its end."""
    told: list[object] = []

    def listen(lane: TaskSandbox) -> None:
        answer = lane._answer
        monkeypatch.setattr(lane, "_answer", lambda message, pidfd: told.append(message["op"]) or answer(message, pidfd))

    token = new_token()
    runner, running, lane = await lanes.start(f"sleep {token}")
    listen(lane)
    await wait_for(lambda: runner.pid is not None)
    assert psutil.Process(runner.pid).cmdline()[-1].endswith(token)
    assert not lane._shards[max(lane._shards)].main_ended()
    runner.cancel()  # the lane goes with it
    assert (await asyncio.wait_for(running, 10)).reason == "cancelled"
    await lanes.lanes.release(KEY, lane)
    assert told == ["started"]
    told.clear()
    listen(lane := await lanes.lanes.acquire(KEY, [], []))
    await lanes.lanes.release(KEY, lane)
    quick, _, _ = await lanes.run("true")
    assert quick.reason == "succeeded" and told == ["exited"]


async def test_a_launcher_that_sends_some_other_descriptor_as_the_pidfd_ends_its_sandbox(
    hostile: tuple[TaskSandbox, socket.socket],
) -> None:
    lane, launcher = hostile
    starting = await start_in(lane)
    launcher.recv(65536)
    read, write = os.pipe()
    socket.send_fds(launcher, [encode({"op": "started", "id": 1})], [read])
    os.close(read)
    os.close(write)
    with pytest.raises(SandboxEnded):
        await asyncio.wait_for(starting, 5)
    assert lane.ended


@pytest.mark.parametrize("behind_a_pidfd", [False, True])
async def test_a_lingering_socket_sent_as_a_pidfd_does_not_stall_the_member(
    hostile: tuple[TaskSandbox, socket.socket], behind_a_pidfd: bool
) -> None:
    """A TCP socket with unsent data and SO_LINGER: its last close blocks for the linger
    time. The member closed it on its loop before (stalled 3.2 s), and as a second descriptor
    the kernel closed it there (3.1 s); now it is reset first."""
    lane, launcher = hostile
    server = socket.create_server(("127.0.0.1", 0))
    sender = socket.socket()
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sender.connect(server.getsockname())
    peer, _ = server.accept()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sender.setblocking(False)
    try:
        while True:
            sender.send(b"x" * 65536)
    except BlockingIOError:
        pass
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 3))
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.05)

    ticking = asyncio.ensure_future(tick())
    fds = [sender.fileno()]
    if behind_a_pidfd:
        fds.insert(0, os.pidfd_open(os.getpid()))
    socket.send_fds(launcher, [encode({"op": "ready"})], fds)
    for fd in fds[:-1]:
        os.close(fd)
    sender.close()
    await asyncio.sleep(1.5)
    ticking.cancel()
    assert max(b - a for a, b in zip(ticks, ticks[1:])) < 1.0
    assert lane.ended
    peer.close()
    server.close()


async def test_what_a_shard_wrote_before_its_end_was_told_is_its_own(tmp_path: Path) -> None:
    """The lane's pipes are read to their end before a shard's end is told: here the end is
    read before the output written ahead of it (without that, the output was lost)."""
    writers: dict[str, int] = {}
    shard = subprocess.Popen(["true"])
    os.waitid(os.P_PID, shard.pid, os.WEXITED | os.WNOWAIT)  # ended, not reaped: its pidfd says so
    out: list[bytes] = []

    async def keep(stream: str, data: bytes) -> None:
        out.append(data)

    try:
        async with ready_lane_played_by_the_test(tmp_path, writers) as (lane, launcher, _):
            _, running, request_id = await start_played(lane, launcher, shard.pid, keep)
            launcher.send(encode({"op": "exited", "id": request_id, "code": 0}))
            os.write(writers["stdout"], b"written last")
            result = await asyncio.wait_for(running, 10)
            assert (result.reason, b"".join(out), result.stdout_bytes) == ("succeeded", b"written last", 12)
            assert not lane.ended
    finally:
        shard.wait()


async def test_a_launcher_that_never_answers_is_given_up_on(
    hostile: tuple[TaskSandbox, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(task_sandbox_module, "ANSWER_TIMEOUT", 0.3)
    lane, launcher = hostile
    with pytest.raises(SandboxEnded):
        await asyncio.wait_for(lane.start(["true"], {}, lambda s, d: None, None), 5)
    assert lane.ended
    assert StartRequest(launcher.recv(65536)).argv == [b"true"]


async def test_a_shards_kill_never_signals_a_pid_the_launcher_named(
    hostile: tuple[TaskSandbox, socket.socket], tmp_path: Path
) -> None:
    """The launcher names an outside process as the shard (or reaps it early, freeing its
    pid): the member's kill ends the lane; it signals no pid of the launcher's naming."""
    lane, launcher = hostile
    outsider = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        runner, running, _ = await start_played(lane, launcher, outsider.pid)
        runner.cancel()
        result = await asyncio.wait_for(running, 10)
        assert result.reason == "cancelled"
        assert outsider.poll() is None  # untouched
        assert lane.ended
    finally:
        outsider.kill()
        outsider.wait()


async def test_a_shard_leaves_no_shared_memory_or_ipc_to_the_next(lanes: Lanes) -> None:
    await lanes.run(
        "touch /dev/shm/left 2>/dev/null; "
        f"{python_command()[0]} -c 'import ctypes; ctypes.CDLL(None).shmget(0, 1 << 20, 0o1600)'"
    )
    _, out, _ = await lanes.run("ls -A /dev/shm; tail -n +2 /proc/sysvipc/shm | wc -l")
    assert out.split() == ["0"]


async def test_a_shard_too_large_for_a_request_runs_alone_and_keeps_its_outputs(lanes: Lanes) -> None:
    # 300 KB: past what one message to the launcher carries, within what exec takes.
    env = {f"BIG{i}": "x" * 100_000 for i in range(3)}
    result, _, folder = await lanes.run("echo kept > out.txt", env=env, outputs=["out.txt"])
    assert result.reason == "succeeded", result
    assert [o.path for o in result.outputs] == ["out.txt"]
    assert (folder / "out.txt").read_text() == "kept\n"


FORK_CHAIN = r"""
import os, time
while True:
    if os.fork():
        os._exit(0)
    os.setsid()
"""


async def test_a_shard_that_outruns_the_suspend_is_stopped_or_its_lane_ended(lanes: Lanes) -> None:
    """A process that forks and exits over and over escaped two walks of the tree and went on
    running while 'suspended' (2,200 forks a second). Now the walks go on until all is
    stopped, or the lane ends."""
    lane = await lanes.lanes.acquire(KEY, [], [])
    (lane.workdir / "chain.py").write_text(FORK_CHAIN)
    runner = ShardRunner(ShardSpec(command=f"{python_command()[0]} chain.py & sleep 1000", shell=True,
                                   workdir=lane.workdir, sandbox=lanes.sandbox, task_sandbox=lane, timeout=30.0))
    running = asyncio.ensure_future(runner.run())
    await asyncio.sleep(0.5)
    runner.suspend()
    if not lane.ended:
        before = len(lane._contents())
        states = {p.status() for p in lane._contents()}
        await asyncio.sleep(0.5)
        assert states <= {psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE} and before >= 1
        runner.cancel()
    result = await asyncio.wait_for(running, 10)
    assert result.reason in ("cancelled", "failed")
    await lanes.lanes.release(KEY, lane)


PTRACE_INIT = r"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
if libc.ptrace(16, 1, None, None) == 0:  # PTRACE_ATTACH to bwrap's init
    print("attached")
else:
    print("refused", ctypes.get_errno())
"""


async def test_a_shard_cannot_ptrace_the_lanes_init(lanes: Lanes) -> None:
    """bwrap's init is dumpable and lives as long as the lane: a shard attached to it and made
    it open the shard's folder, then reached that folder after it was sealed and handed on
    (a third review did it). The launcher, and so every shard, is in a nested Landlock
    domain, from which no process of the outer one can be traced."""
    _, out, _ = await lanes.run(f"{python_command()[0]} ptrace.py", files={"ptrace.py": PTRACE_INIT})
    assert out.startswith("refused"), out


async def test_a_lane_outlives_its_starting_thread_in_a_crowded_member(lanes: Lanes) -> None:
    """A host raises its descriptor limit and holds many sockets: its thread that stays as a
    sandbox's parent waited with select(), which fails past descriptor 1023; the thread ended
    and bwrap's --die-with-parent killed the lane."""
    crowd = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        result, out, _ = await lanes.run("sleep 0.5; echo alive")
    finally:
        for fd in crowd:
            os.close(fd)
    assert (result.reason, out) == ("succeeded", "alive\n")


async def test_a_member_stopped_while_it_prepares_makes_no_lane_after(tmp_path: Path) -> None:
    """Its start scans the processes and probes the sandbox in threads; a member stopped
    meanwhile (the window's member switched off at once) must not go on to keep lanes: a
    spare made after its stop would outlive it, in the next member's work folder."""
    member = Member(MemberOptions(
        url="wss://127.0.0.1:9/ws", data_dir=resolve_data_dir(tmp_path / "data"), name="brief",
        code=PAIRING_CODE, discovery=DiscoverySettings(enabled=False),
    ))
    preparing = asyncio.ensure_future(member.executor.prepare())
    await asyncio.sleep(0)
    await member.executor.stop()
    await preparing
    assert member.executor.lanes is None


async def test_without_landlock_scopes_a_member_keeps_no_lanes_and_reuses_no_folder(
    pool: PoolHost, client: TaskClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a kernel without scopes (played here: this one has them), a descriptor of a shard's
    folder can reach another sandbox: a lane's long-lived folder, or a folder given to the next
    shard, could then take inputs wherever a planted link points. So there are no lanes, and
    every shard gets a new folder, removed once its result is acknowledged."""
    monkeypatch.setattr(task_executor_module, "scopes_supported", lambda: False)
    member = Member(MemberOptions(
        url=pool.local_url, data_dir=resolve_data_dir(tmp_path / "old-kernel"), name="old-kernel",
        code=PAIRING_CODE, discovery=DiscoverySettings(enabled=False),
    ))
    running = asyncio.create_task(member.run())
    try:
        await wait_for(lambda: member.agent.config.device_id in pool.tasks._members)
        task_id = await submit_manifest(client, tmp_path / "job", """
            command = "pwd"
            shell = true
            shards = 4
            [resources]
            cpu = 1.5
        """)
        assert (await client.wait(task_id)).state == "succeeded"
        folders = set()
        for shard in range(4):
            lines: list[str] = []
            await client.logs(task_id, lambda out: lines.append(out.data), shard=shard)
            folders.add("".join(lines).strip())
        assert len(folders) == 4 and all("/slot-" in folder for folder in folders)
        assert member.executor.lanes is None
        await wait_for(lambda: not any(Path(folder).exists() for folder in folders))
        assert member.executor._free_folders == []
    finally:
        await member.stop()
        await running


async def test_a_start_given_up_while_unanswered_leaves_no_shard_running_in_a_free_lane(lanes: Lanes) -> None:
    """A shard keeps its start unanswered (it stops its launcher within ``STARTED_DELAY``),
    and its run is cancelled meanwhile (the member stops, the job is dropped): the lane went
    back to the free ones with the shard running in it, and the next shard's start, with the
    launcher still stopped, adopted the launcher's oldest child, the previous shard, as its own."""
    token = new_token()
    _, running, lane = await lanes.start(f"kill -STOP $PPID; sleep {token}")
    await asyncio.sleep(0.1)  # no answer yet; the member's first look is 0.25 s after the start
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await lanes.lanes.release(KEY, lane)  # as the executor does, whatever its run did
    assert lane.ended or not sleeping(token), "a free lane with the last shard still in it"
