"""What one shard may leave to the next in its lane, and what the member must not take from
a launcher on its word (issue 14's lanes, after an attacker's review of them).

A lane's shards are one task's, one after another in one sandbox, so each must find the
lane as new: no process, no file in a temporary folder or queue, no setting on its pipes or
folder, no resource limit that the one before left. Run for real (bubblewrap, the real
launcher), from a shard, as the review did; the launcher's lies are played by the test.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from poolnet_desktop.runtime.member.runner import ShardRunner, ShardSpec, python_command
from poolnet_desktop.runtime.member import sandbox as sandbox_module
from poolnet_desktop.runtime.member.sandbox import probe
from poolnet_desktop.runtime.member.sandbox_launcher import StartRequest, encode
from tests.runtime.test_task_sandbox import (
    KEY,
    Lanes,
    LauncherCommand,
    launcher,
    lanes,
    new_token,
    ready_lane_played_by_the_test,
    sleeping,
    start_played,
)

pytestmark = pytest.mark.skipif(not probe()[0], reason=f"no sandbox here: {probe()[1]}")
__all__ = ["launcher", "lanes"]  # the fixtures, used by name

PYTHON = python_command()[0]


def python(code: str) -> str:
    """A shell line that runs ``code`` with the member's Python (visible in the sandbox)."""
    return f"{PYTHON} -c {json.dumps(code)}"


async def test_a_shard_that_makes_its_stdout_non_blocking_leaves_the_next_one_a_blocking_pipe(lanes: Lanes) -> None:
    """Each shard gets its own opening of the lane's pipes. They were shared before: after a
    shard (Node does it) set O_NONBLOCK, the next shard's big write failed with EAGAIN."""
    await lanes.run(python("import fcntl, os; fcntl.fcntl(1, fcntl.F_SETFL, os.O_NONBLOCK)"))
    result, _, _ = await lanes.run("head -c 5000000 /dev/zero")
    assert (result.reason, result.stdout_bytes) == ("succeeded", 5_000_000), result


async def test_a_shard_that_shrinks_its_pipe_leaves_the_next_one_the_usual_size(lanes: Lanes) -> None:
    await lanes.run(python("import fcntl; fcntl.fcntl(1, 1031, 4096)"))  # F_SETPIPE_SZ
    _, out, _ = await lanes.run(python("import fcntl; print(fcntl.fcntl(1, 1032))"))  # F_GETPIPE_SZ
    assert out == "65536\n"


async def test_a_shard_that_arms_sigio_on_its_stdout_does_not_kill_the_launcher_later(lanes: Lanes) -> None:
    """Owner and signal set on the shared pipe: the member's next read signalled the launcher
    (SIGKILL) during a later shard of the task."""
    await lanes.run(python("import fcntl; fcntl.fcntl(1, fcntl.F_SETOWN, 2); fcntl.fcntl(1, 10, 9); "
                           "fcntl.fcntl(1, fcntl.F_SETFL, fcntl.fcntl(1, fcntl.F_GETFL) | fcntl.FASYNC)"))
    result, out, _ = await lanes.run("head -c 300000 /dev/zero >/dev/null; sleep 0.2; echo alive")
    assert (result.reason, out) == ("succeeded", "alive\n"), result


async def test_a_kept_folder_carries_no_mode_owner_or_note_to_the_next_shard(lanes: Lanes) -> None:
    """A shard with no outputs leaves its empty folder to the next one only as the member made
    it: a setgid bit and a user xattr were handed on before."""
    await lanes.run(python("import os; os.chmod('.', 0o2777); os.setxattr('.', 'user.note', b'from shard one')"))
    _, out, _ = await lanes.run(python(
        "import os; print(oct(os.stat('.').st_mode & 0o7777), os.listxattr('.'))"))
    assert out == "0o700 []\n"


async def test_a_shard_that_locks_its_folder_does_not_stop_the_next(lanes: Lanes) -> None:
    await lanes.run("chmod 0 .")
    result, out, _ = await lanes.run("echo next")
    assert (result.reason, out) == ("succeeded", "next\n"), result


async def test_the_launcher_stays_out_of_a_sealed_folder(lanes: Lanes) -> None:
    """It worked in the shard's folder and stayed there: once the folder was moved out (and
    could be another task's next), an idle launcher still held it as its working folder."""
    _, _, sealed = await lanes.run("echo data > out.txt", outputs=["out.txt"])
    (lane,) = lanes.lanes._free[KEY]
    assert os.readlink(f"/proc/{lane._launcher}/cwd") == "/"
    assert os.stat(sealed).st_ino != os.stat(f"/proc/{lane._launcher}/cwd").st_ino


async def test_a_shard_that_lowers_the_launchers_limits_leaves_the_next_one_the_usual_ones(lanes: Lanes) -> None:
    """``prlimit`` on the launcher (same uid: allowed) was inherited by every later shard of
    the task: a soft limit is set back, a hard one lowered for good ends the lane."""
    _, usual, _ = await lanes.run("prlimit --fsize --nproc --nofile --noheadings")
    await lanes.run("prlimit --pid $PPID --fsize=1000: --nofile=7:")
    _, after_soft, _ = await lanes.run("prlimit --fsize --nproc --nofile --noheadings")
    first, _, _ = await lanes.run("prlimit --pid $PPID --fsize=1000:1000 --nproc=5:5")
    _, after_hard, _ = await lanes.run("prlimit --fsize --nproc --nofile --noheadings")
    assert first.reason == "succeeded", first  # its own result stands; the lane goes after it
    assert after_soft == usual and after_hard == usual


SCHEDULING = python(
    "import os, subprocess; print(os.getpriority(os.PRIO_PROCESS, 0), sorted(os.sched_getaffinity(0)), "
    "os.sched_getscheduler(0), subprocess.run(['ionice'], capture_output=True, text=True).stdout.strip())"
)


async def test_a_shard_that_pins_the_launcher_or_lowers_its_io_priority_leaves_the_next_one_as_the_first(
    lanes: Lanes,
) -> None:
    """Cores and I/O class set on the launcher (same uid: allowed) were inherited by every
    later shard of the task (an attacker's review); they are set back, in the same lane."""
    _, usual, _ = await lanes.run(SCHEDULING)
    changed, _, _ = await lanes.run(python("import os; os.sched_setaffinity(2, {0})") + " && ionice -c 3 -p 2")
    _, after, _ = await lanes.run(SCHEDULING)
    assert changed.reason == "succeeded", changed
    assert after == usual and len(lanes.lane_folders()) == 1


async def test_a_shard_that_renices_the_launcher_leaves_the_next_one_the_usual_priority(lanes: Lanes) -> None:
    """A nice value raised on the launcher cannot be lowered again by its uid (no
    CAP_SYS_NICE): the lane ends after that shard, and the next gets a new one. So does a
    policy set to SCHED_BATCH."""
    _, usual, _ = await lanes.run(SCHEDULING)
    await lanes.run(python("import os; os.setpriority(os.PRIO_PROCESS, 2, 7)"))
    _, after_nice, _ = await lanes.run(SCHEDULING)
    await lanes.run(python("import os; os.sched_setscheduler(2, os.SCHED_BATCH, os.sched_param(0))"))
    _, after_policy, _ = await lanes.run(SCHEDULING)
    assert after_nice == usual and after_policy == usual


async def test_a_shard_that_changes_its_stdin_leaves_the_next_one_a_fresh_opening(lanes: Lanes) -> None:
    """Every shard of a lane read one opening of /dev/null: the flags one set (O_NONBLOCK,
    O_APPEND), an owner or a lock stayed for the next (an attacker's review)."""
    flags = python("import fcntl; print(fcntl.fcntl(0, fcntl.F_GETFL))")
    _, usual, _ = await lanes.run(flags)
    await lanes.run(python("import fcntl, os; fcntl.fcntl(0, fcntl.F_SETFL, os.O_NONBLOCK | os.O_APPEND)"))
    _, after, _ = await lanes.run(flags)
    assert after == usual


async def test_a_shard_that_locks_the_lanes_pipes_leaves_the_next_one_able_to_start(lanes: Lanes) -> None:
    """``fchmod(1, 0)`` on the lane's stdout pipe (its uid owns it): every later start opened
    the pipe afresh and was refused (EACCES), each shard of the task failing while the lane
    lived on (a second attacker's review). The launcher sets the pipes' modes back."""
    await lanes.run(python("import os; os.fchmod(1, 0); os.fchmod(2, 0)"))
    result, out, _ = await lanes.run("echo next")
    assert (result.reason, out) == ("succeeded", "next\n"), result


SLICE = python(
    "import ctypes, os, struct; attr = ctypes.create_string_buffer(56); "
    "call = {'x86_64': 315, 'aarch64': 275}[os.uname().machine]; "
    "assert ctypes.CDLL(None).syscall(call, 0, attr, 56, 0) == 0; print(struct.unpack_from('=Q', attr, 24)[0])"
)
SET_LAUNCHERS_SLICE = python(
    "import ctypes, os, struct; attr = struct.pack('=IIQiIQQQII', 56, 0, 0, 0, 0, 30_000_000, 0, 0, 0, 0); "
    "call = {'x86_64': 314, 'aarch64': 274}[os.uname().machine]; "
    "assert ctypes.CDLL(None).syscall(call, 2, attr, 0) == 0"
)


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="sched_setattr's number is known here")
async def test_a_shard_that_sets_the_launchers_time_slice_leaves_the_next_one_the_usual_slice(lanes: Lanes) -> None:
    """``sched_setattr`` on the launcher (the same owner: allowed) with a time slice of its own
    (30 ms): every later shard inherited it (a second attacker's review). The launcher reads
    its whole ``sched_attr`` and sets it back."""
    _, usual, _ = await lanes.run(SLICE)
    changed, _, _ = await lanes.run(SET_LAUNCHERS_SLICE)
    _, after, _ = await lanes.run(SLICE)
    assert changed.reason == "succeeded", changed
    assert after == usual


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root member's shards can write the launcher's /proc files")
async def test_a_root_shard_that_raises_the_launchers_oom_score_leaves_the_next_one_the_usual(lanes: Lanes) -> None:
    """A launcher that is not dumpable has root's /proc files; a root member's shard is root:
    its ``oom_score_adj`` and ``coredump_filter`` passed to every later shard."""
    settings = "cat /proc/self/oom_score_adj /proc/self/coredump_filter"
    _, usual, _ = await lanes.run(settings)
    await lanes.run("echo 900 > /proc/2/oom_score_adj; echo 0x7f > /proc/2/coredump_filter")
    _, after, _ = await lanes.run(settings)
    assert after == usual


KEEP_LOWERING_THE_LAUNCHERS_LIMITS = r"""
import os, resource, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:  # an orphan: it comes to the launcher and outlives the shard
        while True:  # no descriptor left to the launcher for a listing of /proc; files of 8 blocks
            for limit, value in ((resource.RLIMIT_NOFILE, 0), (resource.RLIMIT_FSIZE, 8 * 512)):
                resource.prlimit(2, limit, (value, resource.prlimit(2, limit)[1]))
    os._exit(0)
time.sleep(0.2)  # past the launcher's STARTED_DELAY: told started, then its end
"""


async def test_a_process_that_keeps_lowering_the_launchers_limits_is_killed_before_they_are_set_back(
    lanes: Lanes,
) -> None:
    """A process left behind that lowers the launcher's limits over and over: the launcher
    set its limits back before it killed what was left, so a limit lowered in between stayed
    for the next shard, and with no descriptor to list /proc the C launcher took the lane for
    empty while the process ran on (an attacker's review, 2 runs in 8). Now the kill comes
    first and needs no descriptor, and the member believes an end only once the kernel lists no
    child under the launcher."""
    token = new_token()
    limits = "prlimit --fsize --nofile --noheadings"
    _, usual, _ = await lanes.run(limits)
    first, _, _ = await lanes.run(f"exec {PYTHON} -c {shlex.quote(KEEP_LOWERING_THE_LAUNCHERS_LIMITS)} {token}")
    assert first.reason == "succeeded", first
    assert not [p for p in psutil.process_iter(["cmdline"]) if token in (p.info["cmdline"] or [])]
    _, after, _ = await lanes.run(limits)
    assert after == usual


async def test_a_shard_that_leaves_its_launcher_no_descriptor_to_spare_still_runs_to_its_end(lanes: Lanes) -> None:
    """Its soft ``RLIMIT_NOFILE`` at 3 (``prlimit``, same uid): the launcher's pidfd for
    ``started`` could not be made, and it died of that, killing the shard with the lane. Now
    the member finds the shard itself, and the launcher sets its limits back before it
    cleans up (emptying the temporary folders opens them)."""
    first, out, _ = await lanes.run("prlimit --pid $PPID --nofile=3:; sleep 0.4; echo ran on")
    again, out_again, _ = await lanes.run("echo same lane")
    assert (first.reason, out) == ("succeeded", "ran on\n"), first
    assert (again.reason, out_again) == ("succeeded", "same lane\n") and len(lanes.lane_folders()) == 1


async def test_what_a_shard_locks_in_a_temporary_folder_is_gone_for_the_next(lanes: Lanes) -> None:
    """A folder made unreadable (mode 000) in /tmp or /dev/shm: its files were kept for the
    next shard before (the emptying could not read it, and said nothing)."""
    await lanes.run("for d in /tmp /var/tmp /dev/shm; do mkdir $d/x; echo secret > $d/x/f; chmod 000 $d/x; done")
    _, out, _ = await lanes.run("ls -A /tmp /var/tmp /dev/shm")
    assert "x" not in out.split()


@pytest.fixture
async def lanes_outside_tmp(launcher: LauncherCommand) -> AsyncIterator[Lanes]:
    """Lanes whose work root is outside ``/tmp`` (under ``/var/tmp``), as a member's is (in
    its cache): their ``/tmp`` is empty at the lane's start, so the launcher checks it after
    each shard by its ``lstat`` alone. (The ``lanes`` fixture's are under ``/tmp``: there the
    folders leading to the lane are in it, and each of them is checked so too.)"""
    root = Path(tempfile.mkdtemp(prefix="poolnet-test-", dir="/var/tmp"))
    made = Lanes(root, launcher)
    try:
        yield made
    finally:
        await made.lanes.close_all()
        shutil.rmtree(root)


async def test_what_a_shard_leaves_in_a_temporary_folder_it_found_empty_is_gone_for_the_next(
    lanes_outside_tmp: Lanes,
) -> None:
    """Checked by size (tmpfs counts entries in a folder's size), every kind of entry must
    still be seen and removed."""
    leave = "cd {d} && touch f && mkdir -p d/e && ln -s f l && mkfifo p && chmod 000 d; ls -A {d} | wc -l"
    for folder in ("/tmp", "/dev/shm"):
        made, count, _ = await lanes_outside_tmp.run(leave.format(d=folder))
        assert (made.reason, count) == ("succeeded", "4\n"), made
        _, listing, _ = await lanes_outside_tmp.run(f"ls -A {folder}")
        assert listing == "", listing
    assert len(lanes_outside_tmp.lane_folders()) == 1  # the same lane, made as new


async def test_what_a_shard_leaves_in_dev_is_gone_for_the_next(lanes_outside_tmp: Lanes) -> None:
    """bwrap's /dev was a tmpfs the shard could write, and /dev/shm a plain folder in it
    (a review of acc0167): a file left in /dev, /dev/shm moved aside full and a new one made,
    /dev/shm swapped for a 40-byte file or for a link whose target is 40 characters long (the
    size of an empty folder, which the size check took for one) all reached the next shard.
    /dev is now read-only once made, and /dev/shm a tmpfs of its own."""
    target = "/dev/shm/" + "x" * 31  # 40 characters
    await lanes_outside_tmp.run(
        "echo secret > /dev/leak; echo secret > /dev/shm/f; mv /dev/shm /dev/aside && mkdir /dev/shm; "
        f"rmdir /dev/shm && printf secret-{'0' * 33} > /dev/shm; "
        f"mkdir {target} && echo secret > {target}/f; rmdir /dev/shm && ln -s {target} /dev/shm")
    _, out, _ = await lanes_outside_tmp.run(
        "test -d /dev/shm && ! test -L /dev/shm && echo folder; ls -A /dev/shm; "
        f"cat /dev/leak /dev/aside/f {target}/f 2>/dev/null")
    assert out == "folder\n", out


async def test_a_shard_that_locks_an_empty_temporary_folder_leaves_the_next_one_a_usable_one(
    lanes_outside_tmp: Lanes,
) -> None:
    """Made mode 000 with nothing in it, the size check skipped it and the next shard could
    neither write to /tmp nor make a queue (a review of acc0167). Now the folder's mode is
    part of what is checked, and set back to the lane's."""
    await lanes_outside_tmp.run("chmod 000 /tmp /var/tmp /dev/shm /dev/mqueue")
    _, out, _ = await lanes_outside_tmp.run(
        "for d in /tmp /var/tmp /dev/shm; do echo x > $d/f && echo $d; done; touch /dev/mqueue/q && echo queue")
    assert out == "/tmp\n/var/tmp\n/dev/shm\nqueue\n", out


async def test_the_temporary_folders_carry_no_note_or_time_to_the_next_shard(lanes_outside_tmp: Lanes) -> None:
    """A note (a user xattr) or a time set on /tmp reached the next shard: the folders' own
    metadata was never set back (a review of acc0167; the shard's own folder is checked for
    the same: test_a_kept_folder_carries_no_mode_owner_or_note_to_the_next_shard)."""
    made, _, _ = await lanes_outside_tmp.run(
        python("import os; os.setxattr('/tmp', 'user.note', b'from shard one')")
        + " && touch -d '2001-02-03 04:05:06' /tmp /var/tmp")
    assert made.reason == "succeeded", made
    _, out, _ = await lanes_outside_tmp.run(python("import os; print(os.listxattr('/tmp'))") + "; stat -c %y /tmp /var/tmp")
    notes, *times = out.splitlines()
    assert notes == "[]" and not any(time.startswith("2001") for time in times), out


async def test_a_posix_message_queue_is_gone_for_the_next_shard(lanes: Lanes) -> None:
    """The lane's IPC namespace outlives its shards: a queue left by one was read by the next."""
    made, _, _ = await lanes.run(python(
        "import ctypes, os; rt = ctypes.CDLL('librt.so.1', use_errno=True); "
        "q = rt.mq_open(b'/left', os.O_CREAT | os.O_WRONLY, 0o600, None); assert q >= 0; "
        "assert rt.mq_send(q, b'secret', 6, 0) == 0"))
    assert made.reason == "succeeded", made
    _, out, _ = await lanes.run(python(
        "import ctypes, os; rt = ctypes.CDLL('librt.so.1', use_errno=True); "
        "print(rt.mq_open(b'/left', os.O_RDONLY), os.listdir('/dev/mqueue'))"))
    assert out == "-1 []\n"


async def test_the_member_reads_a_lanes_pipe_no_further_than_what_was_in_it(tmp_path: Path) -> None:
    """Once a shard's end is told, the member reads what is in the pipes then, and no more:
    it read on while anything came, so writers that kept a pipe full (a launcher that lied,
    vmsplice from several processes in the review) held the member's loop, every task's, for
    as long as they wrote. Here each chunk read is followed at once by another written."""
    writers: dict[str, int] = {}
    read: list[bytes] = []

    def refill(stream: str, data: bytes) -> None:
        read.append(data)
        if len(read) < 1000:
            os.write(writers["stdout"], b"more")

    async with ready_lane_played_by_the_test(tmp_path, writers) as (lane, _, _):
        os.write(writers["stdout"], b"there when the end was told")
        lane._on_data = refill
        lane._drain()
        assert b"".join(read) == b"there when the end was told"


async def test_a_launcher_that_says_a_running_shard_ended_ends_its_lane(tmp_path: Path) -> None:
    """Told of an end the kernel has not seen (the shard's pidfd is not readable), the member
    would seal or reuse a folder a process still works in: the lane ends instead."""
    shard = subprocess.Popen(["sleep", "60"])
    try:
        async with ready_lane_played_by_the_test(tmp_path) as (lane, launcher, _):
            _, running, request_id = await start_played(lane, launcher, shard.pid)
            launcher.send(encode({"op": "exited", "id": request_id, "code": 0}))
            result = await asyncio.wait_for(running, 10)
            assert lane.ended and result.exit_code == -9
    finally:
        shard.kill()
        shard.wait()


async def test_a_launcher_that_tells_the_end_of_a_started_shard_while_a_process_of_it_runs_ends_its_lane(
    tmp_path: Path,
) -> None:
    """The shard was told started and its main process ended, but a process it left runs on
    under the launcher (one that kept the launcher's clean-up from seeing it, as an attacker's
    review did to the C launcher): the member asked the kernel for the launcher's children
    only when an end came without ``started``. It asks on every end now."""
    shard = subprocess.Popen(["sleep", "0.3"])
    async with ready_lane_played_by_the_test(tmp_path, launcher_has_a_child=True) as (lane, launcher, _):
        _, running, request_id = await start_played(lane, launcher, shard.pid)
        await asyncio.to_thread(shard.wait)
        launcher.send(encode({"op": "exited", "id": request_id, "code": 0}))
        result = await asyncio.wait_for(running, 10)
        assert lane.ended and result.exit_code == -9, result


HOLD_ITS_PIDFD = r"""
import os, signal, socket, subprocess, sys, time
launcher = os.getppid()
held, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
null = os.open("/dev/null", os.O_RDONLY)
for _ in range(4):
    socket.send_fds(held, [b"x"], [null] * 250)  # 1000 descriptors in flight, counted to this uid
subprocess.run(["prlimit", "--pid", str(launcher), "--nofile=64:"], check=True)
os.kill(launcher, signal.SIGCONT)  # its "started" (a pidfd) now fails with ETOOMANYREFS, unheard
time.sleep(0.2)
os.execvp("sleep", ["sleep", sys.argv[1]])
"""


async def test_a_shard_whose_start_is_never_told_still_times_out(lanes: Lanes) -> None:
    """The launcher tells of a start only after ``STARTED_DELAY``, and only once. The shard
    stops it for that moment (the member adopted a shard only from a launcher still stopped
    at its next look, 0.25 s on), makes the one send of its pidfd fail (descriptors in flight
    past the launcher's RLIMIT_NOFILE, set by ``prlimit``: same uid), and lets it go. The
    member then waited ``ANSWER_TIMEOUT`` (30 s) for an answer, with no timeout, memory
    limit, suspend or cancel on the shard. Now it takes the launcher's child at its look."""
    token = new_token()
    started = asyncio.get_running_loop().time()
    try:
        result, _, _ = await asyncio.wait_for(
            lanes.run(f"kill -STOP $PPID; exec {PYTHON} hold.py {token}", files={"hold.py": HOLD_ITS_PIDFD},
                      timeout=1.0), 10)
    finally:
        still_running = bool(sleeping(token))
        await lanes.lanes.close_all()
    assert result.reason == "timeout", (result, asyncio.get_running_loop().time() - started, still_running)


async def test_a_launcher_that_tells_only_the_end_of_a_shard_still_running_ends_its_lane(tmp_path: Path) -> None:
    """A start answered by ``exited`` alone (no ``started``, so no pidfd to check it against)
    while a process still runs under the launcher: the member sealed and reused the folder of
    a shard still at work. Now it asks the kernel whether the launcher has a child. (Its
    ``started``-then-``exited`` twin is the test above; here the launcher skips ``started``.)"""
    async with ready_lane_played_by_the_test(tmp_path, launcher_has_a_child=True) as (lane, launcher, _):
        runner = ShardRunner(ShardSpec(command=["true"], workdir=lane.workdir, task_sandbox=lane))
        running = asyncio.ensure_future(runner.run())
        request = StartRequest(await asyncio.to_thread(launcher.recv, 65536))
        launcher.send(encode({"op": "exited", "id": request.request_id, "code": 0}))
        result = await asyncio.wait_for(running, 10)
        assert lane.ended and result.exit_code == -9, result  # it ran on, and its lane was kept


async def test_what_a_shard_leaves_where_the_members_folders_are_hidden_is_gone_for_the_next(
    lanes_outside_tmp: Lanes,
) -> None:
    """The empty file systems laid over the home, the data folder and the work root were
    writable, and never emptied between a lane's shards: a file left there reached the next."""
    hidden = [lanes_outside_tmp.data, Path.home(), Path("/root"), lanes_outside_tmp.work]
    await lanes_outside_tmp.run("; ".join(f"echo secret > {folder}/left; mkdir {folder}/d" for folder in hidden))
    _, out, _ = await lanes_outside_tmp.run(f"ls -A {' '.join(map(str, hidden))}")
    assert "left" not in out, out


async def test_a_shard_in_a_lane_cannot_use_the_kernel_keyrings(lanes_outside_tmp: Lanes) -> None:
    """The launcher and every shard of a lane run under the sandbox's seccomp filter: a note
    left in a keyring would reach the next shard of the lane, or another task's."""
    _, out, _ = await lanes_outside_tmp.run(python(
        "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); "
        "add_key = {'x86_64': 248, 'aarch64': 217}[os.uname().machine]; "
        "print(libc.syscall(add_key, b'user', b'note', b'x', 1, -4), ctypes.get_errno())"))
    assert out == f"-1 {errno.EPERM}\n", out


@pytest.mark.parametrize("folder", ["/tmp", "/var/tmp", "/dev/shm"])
async def test_what_a_lanes_shard_keeps_in_its_temporary_folders_counts_against_its_memory_limit(
    lanes_outside_tmp: Lanes, folder: str
) -> None:
    """Those folders are tmpfs: memory that no process's resident size shows. A shard held
    300 MB there under a 100 MB limit (and any amount where no limit is set) and was not
    stopped; the member's memory guard did not see it either."""
    result, _, _ = await lanes_outside_tmp.run(f"head -c 300000000 /dev/zero > {folder}/held && sleep 20",
                                               memory_limit=100 * 1024 * 1024)
    assert result.reason == "memory", result


async def test_a_shard_in_a_lane_cannot_set_the_kernels_settings(lanes_outside_tmp: Lanes) -> None:
    """A lane is made by the same bwrap command line: on a member run as root its shards
    could write ``/proc/sys`` (``kernel.core_pattern``: a command run as root outside; a
    setting left for the next shard and every other process). Only access() is asked."""
    _, out, _ = await lanes_outside_tmp.run(python(
        "import os; print(os.access('/proc/sys/kernel/core_pattern', os.W_OK))"))
    assert out == "False\n", out


async def test_a_lanes_shard_cannot_reach_a_socket_bound_after_its_lane_was_made(lanes_outside_tmp: Lanes) -> None:
    """The folders of listening sockets are hidden as /proc/net/unix lists them when a sandbox
    is made, and a lane lives as long as its task: a daemon started meanwhile (its control
    socket in /srv, root's) was reached by a later shard of the lane, network off (an
    attacker's review of 8866096). A lane made before such a socket is no longer lent once
    the socket is seen (within a second; here at once): the next shard gets a new one, which
    hides it."""
    lanes_outside_tmp.lanes.recheck = 0.0
    first, _, _ = await lanes_outside_tmp.run("true")  # the lane is made, and kept
    assert first.reason == "succeeded", first
    top = Path(f"/srv/poolnet-test-{uuid.uuid4().hex[:8]}")
    path = top / "daemon" / "control.sock"
    path.parent.mkdir(parents=True)
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listening.bind(str(path))
        listening.listen(1)
        _, out, _ = await lanes_outside_tmp.run(python(
            f"import socket; code = socket.socket(socket.AF_UNIX).connect_ex({str(path)!r}); "
            f"print('connected' if code == 0 else f'refused {{code}}')"))
        assert out.startswith("refused"), out
    finally:
        listening.close()
        shutil.rmtree(top, ignore_errors=True)


async def test_a_lanes_shard_sees_the_resolver_configuration_of_now(
    lanes_outside_tmp: Lanes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where /etc/resolv.conf points into the hidden /run (systemd-resolved's,
    NetworkManager's), a sandbox gets that one file bound in, and a bound file stays the file
    it was. NetworkManager writes a new one when a laptop changes networks: a lane made before
    showed the old name servers to the rest of its task's shards, for as long as the task ran.
    A lane made before such a change is no longer lent once the change is seen (within a
    second; here at once)."""
    folder = Path(tempfile.mkdtemp(prefix="poolnet-test-", dir="/run"))
    try:
        configuration = folder / "resolv.conf"
        configuration.write_text("nameserver 10.0.0.1\n")
        (tmp_path / "resolv.conf").symlink_to(configuration)
        monkeypatch.setattr(sandbox_module, "RESOLV_CONF", tmp_path / "resolv.conf")
        lanes_outside_tmp.lanes.recheck = 0.0
        _, before, _ = await lanes_outside_tmp.run(f"cat {configuration}")
        (folder / "resolv.conf.new").write_text("nameserver 10.0.0.2\n")
        os.replace(folder / "resolv.conf.new", configuration)  # as NetworkManager writes it
        _, after, _ = await lanes_outside_tmp.run(f"cat {configuration}")
        assert (before, after) == ("nameserver 10.0.0.1\n", "nameserver 10.0.0.2\n")
    finally:
        shutil.rmtree(folder)


LEAVE_ON_THE_WAY = (  # a file in each folder of /tmp that leads to the shard's own, not in /tmp
    'd="$PWD"; while d=$(dirname "$d"); [ "$d" != /tmp ]; do '
    'if [ "$(stat -f -c %T "$d")" = tmpfs ] && echo secret > "$d/left"; then echo "$d"; fi; done')


async def test_what_a_shard_leaves_on_the_way_to_its_lane_under_tmp_is_gone_for_the_next(lanes: Lanes) -> None:
    """A work root under /tmp puts folders in the lane's /tmp that lead to the lane's own.
    They are checked by their lstat alone after each shard, like an empty /tmp: a file left in
    any of them (and not in /tmp itself) must still be seen and removed."""
    made, way, _ = await lanes.run(LEAVE_ON_THE_WAY)
    assert made.reason == "succeeded" and len(way.split()) >= 2, (made, way)
    for _ in range(2):  # and the one after, once the clean-up noted the folders as it left them
        _, found, _ = await lanes.run("find /tmp -name left")
        assert found == "", found
        await lanes.run(LEAVE_ON_THE_WAY)
    assert len(lanes.lane_folders()) == 1  # the same lane, made as new


async def test_a_shard_that_moves_the_way_to_its_lane_leaves_the_next_one_a_new_lane(lanes: Lanes) -> None:
    """A folder on the way to the lane cannot be removed (the lane's folder is bound in it),
    but it can be renamed, and no clean-up can put it back: the lane ends, and the next shard
    runs in a new one where its folder is."""
    moved, said, _ = await lanes.run('top=$(echo "$PWD" | cut -d/ -f1-3); mv "$top" "$top-moved" && echo moved')
    after, out, _ = await lanes.run("ls /tmp")
    assert (moved.reason, said, after.reason) == ("succeeded", "moved\n", "succeeded"), (moved, after)
    assert "moved" not in out, out


async def test_a_folder_moved_onto_the_way_to_a_second_bound_folder_carries_nothing_to_the_next_shard(
    lanes: Lanes, tmp_path: Path,
) -> None:
    """A second folder bound in under /tmp (a task's environment in a cache under /tmp) has a
    way of its own. A shard that moves that way into a folder of its making, which no clean-up
    can remove (the bound folder is in it), had a folder nobody checked: what it left there
    reached the next shard (an attacker's review of 10e8698). The lane now ends instead."""
    environment = tmp_path / "envs" / "env1"
    environment.mkdir(parents=True)
    top = f"{tmp_path}"
    moved, _, _ = await lanes.run(
        f"mkdir {top}/new && mv {top}/envs {top}/new/hidden && mv {top}/new {top}/envs && echo moved",
        visible=[environment])
    await lanes.run(f"echo secret > {top}/envs/hidden/left; mkfifo {top}/envs/hidden/fifo", visible=[environment])
    _, found, _ = await lanes.run(f"ls -A {top}/envs/hidden 2>/dev/null; cat {top}/envs/hidden/left 2>/dev/null",
                                  visible=[environment])
    assert moved.reason == "succeeded", moved
    assert "secret" not in found and "fifo" not in found, found


async def test_when_a_shard_read_tmp_is_not_told_to_the_next(lanes: Lanes) -> None:
    """Reading a folder sets its access time, and no other time: a /tmp checked by its lstat
    alone told the next shard when the one before had listed it (an attacker's review of
    10e8698)."""
    await lanes.run("touch /tmp/x")  # a clean-up follows, which sets the access time back
    _, before, _ = await lanes.run("stat -c %X.%x /tmp; sleep 0.05; ls /tmp > /dev/null")
    _, after, _ = await lanes.run("stat -c %X.%x /tmp")
    assert after == before, (before, after)


async def test_the_way_to_the_lane_in_tmp_carries_no_mode_note_or_time_to_the_next_shard(lanes: Lanes) -> None:
    """The folders in /tmp that lead to the lane were emptied after a shard, but a mode, a
    note or a time set on them stayed (an attacker's review of 10e8698); one made
    unsearchable ended the lane."""
    look = python("import os, sys; i = os.stat(sys.argv[1]); "
                  "print(oct(i.st_mode), i.st_mtime_ns, os.listxattr(sys.argv[1]))") + ' "$top"'
    top = 'top=$(echo "$PWD" | cut -d/ -f1-3); '
    first, before, _ = await lanes.run(
        top + look + "; " + python("import os, sys; os.setxattr(sys.argv[1], 'user.note', b'one')")
        + ' "$top" && touch -d "2001-02-03 04:05:06" "$top" && chmod 0 "$top"')
    again, after, _ = await lanes.run(top + look)
    assert (first.reason, again.reason) == ("succeeded", "succeeded"), (first, again)
    assert after == before, (before, after)
    assert len(lanes.lane_folders()) == 1  # the same lane, made as new
