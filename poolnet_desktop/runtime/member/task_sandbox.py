"""Sandboxes a member keeps for a task and reuses for its shards, one shard at a time (lanes).

A sandbox costs 2-3.5 ms of CPU to make, several times what a small shard costs to run, so a
member that made one per shard ran 2,000 shards of ``true`` at a fifth of ``xargs -P 2``'s
rate (issue 14). A lane is a sandbox with ``runtime/member/sandbox_launcher.py`` inside that
runs a task's shards one after another; a member keeps as many lanes of a task as it runs
shards of it at once, and closes one idle for a few seconds.

Each lane is what a sandbox of one shard was, for every party but the task itself:
- It binds one folder, ``LANE/``, and its shard works in ``LANE/work``. Before a shard starts
  nothing else runs in the lane, and when it has ended nothing does either (the launcher kills
  every other process in the sandbox before it reports the end, or the member ends the whole
  sandbox and waits for its PID namespace to be empty). Only then does the member move
  ``LANE/work`` out, to a folder of its work root that no sandbox binds, and check that it moved
  a real folder (a shard may have left a symlink in its place): its outputs are read there,
  where nothing can change them. Then the lane folder is emptied and a fresh ``work`` made.
- The shard's tree is everything in the sandbox under the launcher (the launcher is a
  subreaper: even what left with ``clone(CLONE_PARENT)`` stays there): suspended, measured and
  killed as one. A kill ends the whole sandbox.
- Its ``/tmp``, ``/var/tmp``, ``/dev/shm`` and IPC objects are emptied between shards.
- The launcher, and so every shard, is in a Landlock domain nested in the sandbox's (its own,
  ``runtime/member/landlock.py``): a shard can neither trace nor signal bwrap's init, which
  lives as long as the lane (traced, it could be made to hold a shard's folder open).

The launcher lives among the task's code, so nothing it says is believed beyond that lane: a
message that is not what was asked for, a descriptor that is no pidfd, or no answer in time
ends the sandbox. A shard's pid and its end come from the kernel: the pidfd the launcher
sends for a shard still running after ``STARTED_DELAY``, or the member's own of the launcher's
child when no answer comes (its shard stopped the launcher, or kept it from sending); and an
end is believed only once the kernel lists no child under the launcher (nothing of the shard
runs on). A launcher stopped by its shard cannot hold a runner past the shard's end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import functools
import logging
import os
import select
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

if sys.platform != "win32":  # lanes are Linux's; the executor imports this file everywhere
    import fcntl
    import termios

from poolnet_desktop.runtime.member import sandbox_launcher as launcher
from poolnet_desktop.runtime.member.folders import empty_folder
from poolnet_desktop.runtime.member.landlock import spawn_scoped
from poolnet_desktop.runtime.member.sandbox import (
    SCRUBBED_PATH,
    Sandbox,
    listening_sockets,
    resolver_state,
    temporary_files_size,
)
from poolnet_desktop.runtime.member.seccomp_filter import program_pipe
from poolnet_desktop.runtime.member.process_table import ProcessTable
from poolnet_desktop.runtime.member.shard_process import READ_SIZE, OnData, ShardProcess, Stream, read_pipe

log = logging.getLogger(__name__)

# The launcher starts within this (a cold interpreter on a busy machine), and answers each
# request within it; past it, it is taken as broken.
ANSWER_TIMEOUT = 30.0
# How often a start with no answer yet is looked into (``_answer_late``).
_ANSWER_CHECK = 0.25
# After the kernel says a shard's main process ended, its exit code (sent once the launcher
# emptied the sandbox, at most ``launcher.CLEAN_UP_LIMIT``) must come within this.
EXIT_REPORT_TIMEOUT = launcher.CLEAN_UP_LIMIT + 3.0
# The largest message read from a launcher: its messages are a few dozen bytes.
_MAX_ANSWER = 4096
# Walks of a lane's processes to stop them all before it is taken as one that will not stop.
_STOP_WALKS = 10
# Room for as many descriptors as one message can carry (SCM_MAX_FD): any the buffer had no
# room for would be closed by the kernel in this thread, and a lingering socket's close blocks.
_MAX_DESCRIPTORS = 253
_TRUNCATED = int(socket.MSG_TRUNC | socket.MSG_CTRUNC)  # an int: flags of enum members are slow to combine


class SandboxEnded(OSError):
    """The lane's sandbox ended or broke; the shard cannot start in it."""


class RequestTooLarge(Exception):
    """The shard's command and environment do not fit in one request to the launcher."""


@dataclass(frozen=True)
class LauncherCommand:
    """How a lane's launcher is run: the build of ``sandbox_launcher.c`` where the member has
    one (``native``: ``lane_pool.launcher_command``), else its own interpreter (``python``) with
    the launcher's text."""

    python: tuple[str, ...]
    native: Path | None = None

    @contextlib.contextmanager
    def prepared(self, fds: Sequence[int]) -> Iterator[tuple[list[str], list[int]]]:
        """The launcher's argv, given its socket and the write ends of the lane's stdout and
        stderr (``fds``), and the descriptors bwrap must pass on besides those; they are
        closed here when the block ends (bwrap has them then).

        The build runs from a descriptor of its file (``/proc/self/fd/N``), which the sandbox
        needs no view of. The interpreter reads the launcher's text from a pipe, isolated
        from the folder it runs in (the task's files), from ``PYTHON*`` variables and from
        site-packages (it needs none, and starts 10 ms sooner); a frozen build runs its
        bundled module."""
        if self.native is not None:
            program = os.open(self.native, os.O_RDONLY | os.O_CLOEXEC)
            try:
                yield [f"/proc/self/fd/{program}", *map(str, fds)], [program]
            finally:
                os.close(program)
            return
        if getattr(sys, "frozen", False):
            yield [*self.python, "-m", launcher.__name__, *map(str, fds)], []
            return
        code_read, code_write = os.pipe()
        try:
            try:  # the text fits in the pipe's buffer (64 KiB): no reader needs to be waited for
                os.write(code_write, _launcher_source())
            finally:
                os.close(code_write)
            yield [*self.python, "-I", "-S", "-c", launcher.BOOTSTRAP, str(code_read), *map(str, fds)], [code_read]
        finally:
            os.close(code_read)


@functools.cache
def _launcher_source() -> bytes:
    return Path(launcher.__file__).read_bytes()


def _status(process: psutil.Process) -> str | None:
    """Its state ('T' stopped, 'Z' zombie...), or None once it is gone."""
    try:
        status = process.status()
    except psutil.Error:
        return None
    return None if status == psutil.STATUS_ZOMBIE else str(status)


def is_pidfd(fd: int) -> bool:
    """Whether ``fd`` is a pidfd (the kernel names its file so, old pidfds and pidfs alike)."""
    return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"


@functools.cache
def _closer() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="poolnet-discard")


def _discard(fd: int) -> None:
    """Close a descriptor a launcher should not have sent, on a thread of its own: the last
    close of a socket set to linger waits for its unsent data (hours, if a peer never reads),
    and a Unix socket may carry such sockets in flight."""
    _closer().submit(os.close, fd)


def _made(folder: Path) -> tuple[object, ...]:
    """What a folder's next user inherits besides its entries: its type, mode, owner and
    extended attributes (no link followed)."""
    info = os.lstat(folder)
    return info.st_mode, info.st_uid, info.st_gid, tuple(sorted(os.listxattr(folder, follow_symlinks=False)))


def pid_of_pidfd(pidfd: int) -> int:
    """The pid, in this process's namespace, of the process ``pidfd`` refers to; raises
    ``ValueError`` if that process was reaped already."""
    with open(f"/proc/self/fdinfo/{pidfd}", encoding="ascii") as info:
        for line in info:
            if line.startswith("Pid:"):
                pid = int(line.split()[1])
                if pid > 0:
                    return pid
    raise ValueError("a pidfd of no living process")


class LaneProcess(ShardProcess):
    """A shard started in a lane: its tree is everything under the lane's launcher, and its
    main process is known by a pidfd alone (the member never signals a pid a launcher gave).
    Its output comes through the lane's pipes, read to their end before its end is told."""

    def __init__(self, lane: TaskSandbox, pidfd: int) -> None:
        self.lane = lane
        self.exited = lane.loop.create_future()
        self.closed = lane.loop.create_future()
        self._returncode: int | None = None
        self._pidfd = pidfd  # -1: it ended before the launcher sent one
        self._late: asyncio.TimerHandle | None = None
        if pidfd >= 0:
            lane.loop.add_reader(pidfd, self._main_ended)

    @property
    def pid(self) -> int | None:
        """Its id here while it runs (read only when asked: nothing the member does needs
        it); None once it ended and the launcher reaped it."""
        if self._pidfd < 0:
            return None
        try:
            return pid_of_pidfd(self._pidfd)
        except (OSError, ValueError):
            return None

    @property
    def returncode(self) -> int | None:
        return self._returncode

    def main_ended(self) -> bool:
        """Whether the kernel says its main process ended (its pidfd is readable)."""
        if self._pidfd < 0:
            return True
        poller = select.poll()
        poller.register(self._pidfd, select.POLLIN)
        return bool(poller.poll(0))

    def _main_ended(self) -> None:
        """The kernel says the main process ended: the launcher's report must follow soon."""
        self._stop_watching()
        if not self.exited.done():
            self._late = self.lane.loop.call_later(EXIT_REPORT_TIMEOUT, self.lane.fail, "its end was not reported")

    def _stop_watching(self) -> None:
        if self._pidfd >= 0:
            self.lane.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    def ended(self, returncode: int) -> None:
        """It ended and its output was read (the lane drained its pipes first)."""
        if self._late is not None:
            self._late.cancel()
        self._stop_watching()
        if not self.exited.done():
            self._returncode = returncode
            self.exited.set_result(None)
        self.give_up_on_pipes(closed=True)

    def close(self) -> None:
        """Nothing to close: the pipes are the lane's."""

    def kill_tree(self) -> None:
        self.lane.fail("its shard was killed", quiet=True)

    def suspend_tree(self, suspend: bool) -> None:
        self.lane.suspend_contents(suspend)

    def tree_memory(self) -> int:
        return self.lane.contents_memory()

    def tree_threads(self, table: ProcessTable) -> int:
        return self.lane.contents_threads(table)

    def end_group(self) -> None:
        """Nothing to do: the launcher emptied the sandbox before it reported the end."""

    async def settle(self, workdir: Path, keep_files: bool = True) -> tuple[Path, str]:
        return await self.lane.seal(keep_files)

    def abandon(self) -> None:
        """A start given up: the whole lane goes (never a signal to a pid that may be stale)."""
        self.lane.fail("a shard's start was given up", quiet=True)


class TaskSandbox:
    """A lane: a running sandbox with its launcher, for one shard at a time in ``workdir``."""

    def __init__(
        self, folder: Path, popen: subprocess.Popen[bytes], sock: socket.socket, outputs: Mapping[Stream, int],
        take_folder: Callable[[], Path],
    ) -> None:
        self.folder = folder
        self.workdir = folder / "work"
        # The sockets bound when it was made, whose folders it hides (``Sandbox.wrap``), and
        # the resolver configuration it shows (``resolver_state``).
        self.sockets_seen: frozenset[Path] = frozenset()
        self.resolver_seen: tuple[object, ...] = ()
        self.loop = asyncio.get_running_loop()
        self._popen = popen
        self._sock = sock
        self._take_folder = take_folder
        self._ready: asyncio.Future[None] = self.loop.create_future()
        self._pending: dict[int, asyncio.Future[LaneProcess]] = {}
        self._shards: dict[int, LaneProcess] = {}
        self._next_id = 0
        self._launcher = 0  # its pid here, once ready
        self._children_listing = -1  # /proc's listing of the launcher's children, once ready
        self._init_gone: asyncio.Future[None] = self.loop.create_future()
        self.ended = ""  # why it ended; empty while it runs
        self._kept_clean = False  # the last shard left ``work`` empty, and it stays for the next
        self._made: tuple[object, ...] = ()  # ``work`` as the member made it (``_made``)
        # The read ends of the pipes every shard here writes to, and who hears what comes next:
        # the last shard asked for (one at a time), until its end was told.
        self._outputs = dict(outputs)
        self._on_data: OnData | None = None
        self._bwrap_pidfd = os.pidfd_open(popen.pid)
        self.loop.add_reader(self._bwrap_pidfd, self._ended_within, "it exited")
        self.loop.add_reader(sock.fileno(), self._readable)
        for stream, fd in self._outputs.items():
            os.set_blocking(fd, False)
            self.loop.add_reader(fd, self._read_output, stream, fd)

    @classmethod
    async def open(
        cls, sandbox: Sandbox, folder: Path, command: LauncherCommand, gpus: Sequence[int],
        visible: Sequence[Path], take_folder: Callable[[], Path],
    ) -> TaskSandbox:
        """Make a lane in ``folder`` (empty) and wait for its launcher to be ready."""
        # What its sandbox hides and shows, read before it is made (``LanePool`` looks for newer).
        sockets_seen, resolver_seen = listening_sockets(), resolver_state()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        (out_read, out_write), (err_read, err_write) = os.pipe(), os.pipe()
        theirs_fds = [theirs.fileno(), out_write, err_write]
        try:
            with program_pipe() as seccomp, command.prepared(theirs_fds) as (launcher_argv, launcher_fds):
                argv = sandbox.wrap(launcher_argv, folder, gpus, visible, seccomp, sockets_seen)
                passed = [*theirs_fds, *launcher_fds, *([seccomp] if seccomp is not None else [])]

                def spawn() -> subprocess.Popen[bytes]:
                    return subprocess.Popen(
                        argv, cwd=folder, env={"PATH": SCRUBBED_PATH}, stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        pass_fds=passed, start_new_session=True,
                    )

                popen = spawn_scoped(spawn)  # its own Landlock domain: runtime/member/landlock.py
        except BaseException:
            ours.close()
            os.close(out_read)
            os.close(err_read)
            raise
        finally:
            theirs.close()
            for fd in (out_write, err_write):
                os.close(fd)
        ours.setblocking(False)
        lane = cls(folder, popen, ours, {"stdout": out_read, "stderr": err_read}, take_folder)
        lane.sockets_seen, lane.resolver_seen = frozenset(sockets_seen), resolver_seen
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT):
                await lane._ready
            lane._make_workdir()
        except BaseException:
            lane.close()
            raise
        return lane

    # ---- a shard ---------------------------------------------------------------------------

    async def start(
        self, argv: Sequence[str], env: Mapping[str, str], on_data: OnData, pin_to: Sequence[int] | None,
    ) -> LaneProcess:
        """Start ``argv`` in ``workdir`` in a new session; what it writes goes to ``on_data``.

        Raises ``SandboxEnded`` if the sandbox is gone, ``RequestTooLarge`` if the request does
        not fit in a message, ``OSError`` (the launcher's errno) if it could not start."""
        if self.ended:
            raise SandboxEnded(errno.ESRCH, f"the task's sandbox ended: {self.ended}")
        self._next_id += 1
        request_id = self._next_id
        try:
            request = launcher.encode_start(request_id, argv, str(self.workdir), env, pin_to)
        except ValueError as exc:  # what exec would refuse, refused as the launcher would
            raise OSError(errno.EINVAL, str(exc)) from None
        if len(request) > launcher.MAX_MESSAGE:
            raise RequestTooLarge
        answer: asyncio.Future[LaneProcess] = self.loop.create_future()
        self._pending[request_id] = answer
        self._on_data = on_data  # it may write before its start is answered
        check: asyncio.TimerHandle | None = None
        try:
            await self._send(request)
            check = self.loop.call_later(_ANSWER_CHECK, self._answer_late, request_id, self.loop.time())
            return await answer
        except RequestTooLarge:
            self._pending.pop(request_id, None)
            raise
        except BaseException:
            self._pending.pop(request_id, None)
            if answer.done() and not answer.cancelled() and not answer.exception():
                answer.result().abandon()  # started, but nobody waits for it any more
            elif answer.cancelled() or not answer.done():  # it may run: no free lane may hold it
                self.fail("a shard's start was given up", quiet=True)
            raise
        finally:
            if check is not None:
                check.cancel()

    def _answer_late(self, request_id: int, asked: float) -> None:
        """A start has had no answer for a while, where most come within the launcher's
        ``STARTED_DELAY``: its shard may have stopped the launcher, or made its ``started``
        fail (too many descriptors in flight). If the launcher has a child, that is the shard
        (the children that came to it as orphans are younger), and the member watches it by a
        pidfd of its own, as if the launcher had sent it: its timeout, memory limit, pause and
        cancel apply. No answer and no child within ``ANSWER_TIMEOUT`` ends the lane."""
        answer = self._pending.get(request_id)
        if answer is None or answer.done() or self.ended:
            return
        pidfd = self._launchers_first_child()
        if pidfd >= 0:
            self._started(request_id, pidfd)
            return
        if self.loop.time() - asked > ANSWER_TIMEOUT:
            self.fail("it did not answer a start request")
            return
        self.loop.call_later(_ANSWER_CHECK, self._answer_late, request_id, asked)

    def _launchers_children(self) -> list[int]:
        """The launcher's children, oldest first (pids here; the first few thousand), read
        from its listing kept open (20 times cheaper than opening it per shard)."""
        return [int(pid) for pid in os.pread(self._children_listing, 65536, 0).split()]

    def _launcher_has_children(self) -> bool:
        """Whether anything runs under the launcher (True if that cannot be read: it could
        when the lane was made)."""
        try:
            return bool(self._launchers_children())
        except (OSError, ValueError):
            return True

    def _launchers_first_child(self) -> int:
        """A pidfd of the launcher's oldest child, or -1 if it has none."""
        try:
            children = self._launchers_children()
            return os.pidfd_open(children[0]) if children else -1
        except (OSError, ValueError):
            return -1

    async def seal(self, keep_files: bool = True) -> tuple[Path, str]:
        """The shard ended: once nothing runs in the sandbox, move its folder out to one that
        no sandbox binds, and return that (and a note if the shard had replaced it). A shard
        whose files nobody wants (its task names no outputs) and that left its folder empty
        leaves it in place, for the next shard (a move and a new folder cost this machine's
        file system 0.08 ms, a sixth of a small shard's cost to the member)."""
        if self.ended:
            await self.gone()
        elif not keep_files and self._left_clean():
            self._kept_clean = True
            return self.workdir, ""
        destination = self._take_folder()
        try:
            info = os.lstat(self.workdir)
        except FileNotFoundError:
            return destination, "the shard removed its working folder"
        if not stat.S_ISDIR(info.st_mode):
            return destination, "the shard replaced its working folder; its files were not kept"
        os.rename(self.workdir, destination)  # over an empty folder: allowed, and atomic
        return destination, ""

    def _left_clean(self) -> bool:
        """Whether the lane holds nothing but its ``work`` folder, as the member made it (a
        real folder, no link in its place, with the same owner, mode and extended attributes:
        a setgid bit, an ACL or a note left on it would pass on to the next shard) and empty.
        Asked once nothing runs in the lane, so the answer holds."""
        try:
            if os.listdir(self.folder) != [self.workdir.name] or _made(self.workdir) != self._made:
                return False
            with os.scandir(self.workdir) as entries:
                return next(entries, None) is None
        except OSError:
            return False

    async def renew(self) -> None:
        """Make the lane as new for the next shard: its folder emptied (what the shard left
        there, off the loop: it may be a huge tree), a fresh ``work``. Only while no shard
        runs in it (after ``seal``). Raises ``OSError`` if the folder cannot be emptied."""
        if self._kept_clean:
            self._kept_clean = False
            return
        with os.scandir(self.folder) as entries:
            left = next(entries, None) is not None
        if left:
            await asyncio.to_thread(empty_folder, self.folder)
        self._make_workdir()

    def _make_workdir(self) -> None:
        self.workdir.mkdir(mode=0o700)
        self._made = _made(self.workdir)

    # ---- what runs in it -------------------------------------------------------------------

    def _contents(self) -> list[psutil.Process]:
        """Every process in the sandbox under the launcher: the shard's whole tree."""
        if not self._launcher or self.ended:
            return []
        try:
            return psutil.Process(self._launcher).children(recursive=True)
        except psutil.Error:
            return []

    def suspend_contents(self, suspend: bool) -> None:
        """SIGSTOP (SIGCONT) everything under the launcher (which keeps running). Stopping
        walks again until a walk finds nothing running: a process that forks and exits over
        and over outruns any fixed number of walks. One that will not be stopped ends the lane."""
        if not suspend:
            for process in self._contents():
                with contextlib.suppress(psutil.Error):
                    process.resume()
            return
        for _ in range(_STOP_WALKS):
            running = [p for p in self._contents() if _status(p) not in (psutil.STATUS_STOPPED, None)]
            if not running:
                return
            for process in running:
                with contextlib.suppress(psutil.Error):
                    process.suspend()
        self.fail("its shard would not be suspended")

    def contents_threads(self, table: ProcessTable) -> int:
        """How many threads run under the launcher, as ``table`` has them: the shard's whole
        tree."""
        if not self._launcher or self.ended:
            return 0
        return table.tree_threads(self._launcher, with_root=False)

    def contents_memory(self) -> int:
        """Resident bytes of everything under the launcher, and what the temporary folders hold
        (emptied after each shard: the running shard's)."""
        total = temporary_files_size(self._launcher) if self._launcher and not self.ended else 0
        for process in self._contents():
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total

    # ---- the launcher's messages -----------------------------------------------------------

    async def _send(self, message: bytes) -> None:
        """Send without ever blocking the loop: a launcher that stops reading fills the
        socket, and is then given ``ANSWER_TIMEOUT`` before it is taken as broken."""
        while True:
            try:
                self._sock.send(message)
                return
            except BlockingIOError:
                writable = self.loop.create_future()
                self.loop.add_writer(self._sock.fileno(), writable.set_result, None)
                try:
                    async with asyncio.timeout(ANSWER_TIMEOUT):
                        await writable
                finally:
                    self.loop.remove_writer(self._sock.fileno())
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    raise RequestTooLarge from None
                self.fail(f"its socket failed: {exc}")
                raise SandboxEnded(exc.errno or errno.EPIPE, f"the task's sandbox ended: {exc}") from None

    def _readable(self) -> None:
        """Read and act on one message (the loop calls again while another waits: a read
        that finds none costs more than that)."""
        if self.ended:
            return
        try:
            data, fds, flags, _ = socket.recv_fds(self._sock, _MAX_ANSWER, _MAX_DESCRIPTORS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.fail(f"its socket failed: {exc}")
            return
        pidfd = -1
        try:
            if len(fds) > 1 or (fds and not is_pidfd(fds[0])):
                for fd in fds:
                    _discard(fd)
                raise ValueError("descriptors that are no pidfd")
            if fds:
                pidfd = fds[0]
            if not data:
                self._ended_within("its launcher ended")
                return
            if flags & _TRUNCATED:
                raise ValueError("an oversized message")
            if self._answer(launcher.decode(data), pidfd):
                pidfd = -1  # a shard's process owns it now
        except (ValueError, TypeError, KeyError) as exc:
            self.fail(f"its launcher sent a bad message ({exc})")
        finally:
            if pidfd >= 0:
                os.close(pidfd)

    def _answer(self, message: object, pidfd: int) -> bool:
        """Act on one message; True if it took ``pidfd`` over. Raises ``ValueError`` or
        ``TypeError`` for one that is not what was asked for (the caller then ends the
        sandbox)."""
        if not isinstance(message, dict):
            raise ValueError("not a JSON object")
        op, request_id = message.get("op"), message.get("id")
        if op == launcher.READY and not self._ready.done() and pidfd >= 0:
            self._ready_with(pid_of_pidfd(pidfd))
            return False
        if not isinstance(request_id, int):
            raise ValueError(f"an unexpected message: {op!r}")
        answer = self._pending.get(request_id)
        if op == launcher.EXITED:
            return self._exited(request_id, answer, message.get("code"), message.get("last"))
        if op == launcher.STARTED and request_id in self._shards:
            return False  # stopped before it told, then let go by its shard: watched already
        if answer is None:
            raise ValueError(f"an answer nobody asked for: {op!r}")
        if op == launcher.FAILED:
            code = message.get("errno")
            del self._pending[request_id]
            answer.set_exception(OSError(code if isinstance(code, int) else errno.EIO,
                                         str(message.get("error", "could not start"))))
            return False
        if op == launcher.STARTED and pidfd >= 0:
            self._started(request_id, pidfd)
            return True
        raise ValueError(f"an unexpected answer: {op!r}")

    def _started(self, request_id: int, pidfd: int) -> None:
        """Answer a start: its shard runs, watched by ``pidfd`` (-1: none, it ended)."""
        answer = self._pending.pop(request_id)
        self._shards[request_id] = LaneProcess(self, pidfd)
        answer.set_result(self._shards[request_id])

    def _exited(self, request_id: int, answer: asyncio.Future[LaneProcess] | None, code: object,
                last: object) -> bool:
        """The launcher says a shard ended, and that nothing of it runs any more: a running
        one, or one that ended before it was worth a ``started``."""
        if not isinstance(code, int):
            raise TypeError("an exit code that is no integer")
        if answer is not None:  # never told started: it started all the same
            self._started(request_id, -1)
        process = self._shards.get(request_id)
        if process is None:
            raise ValueError("the end of a shard nobody asked for")
        # The kernel must say it ended (by its pidfd, where one was sent) and that nothing of it
        # runs: the launcher has no child left (a leftover process that kept the launcher's
        # clean-up from seeing it must not run on into the next shard).
        if not process.main_ended() or self._launcher_has_children():
            raise ValueError("the end of a shard still running")
        self._drain()  # all it wrote is in the pipes: every process of it is gone
        self._on_data = None
        del self._shards[request_id]
        process.ended(code)
        if last:
            self.fail(f"it cannot be made as new: {last}", quiet=True)
        return False

    def _ready_with(self, launcher_pid: int) -> None:
        """The launcher is up: learn its pid, and its parent's (the sandbox's init, a child of
        our bwrap), whose end means the sandbox's PID namespace is empty."""
        try:
            init = psutil.Process(launcher_pid).ppid()
            if psutil.Process(init).ppid() != self._popen.pid:
                raise ValueError("a launcher outside its sandbox")
            init_pidfd = os.pidfd_open(init)
        except (psutil.Error, OSError) as exc:
            raise ValueError(f"no sandbox around its launcher: {exc}") from None
        try:  # how a shard's end told by one message is checked (a kernel with CONFIG_PROC_CHILDREN)
            self._children_listing = os.open(f"/proc/{launcher_pid}/task/{launcher_pid}/children", os.O_RDONLY)
        except OSError as exc:
            os.close(init_pidfd)
            raise ValueError(f"its launcher's children cannot be listed: {exc}") from None
        self._launcher = launcher_pid
        self.loop.add_reader(init_pidfd, self._init_ended, init_pidfd)
        self._ready.set_result(None)

    def _init_ended(self, init_pidfd: int) -> None:
        self.loop.remove_reader(init_pidfd)
        os.close(init_pidfd)
        if not self._init_gone.done():
            self._init_gone.set_result(None)
        self._ended_within("its init ended")

    # ---- what its shards write ------------------------------------------------------------

    def _read_output(self, stream: Stream, fd: int) -> None:
        """Hand on what came on one pipe. What comes when no shard is started (the launcher's
        own writes) goes nowhere."""
        data = self._read_once(fd, READ_SIZE)
        if data and self._on_data is not None:
            self._on_data(stream, data)

    def _read_once(self, fd: int, size: int) -> bytes:
        """Up to ``size`` bytes, or none; at the pipe's end (every write end closed: the
        launcher is gone, and the lane with it) the pipe is no longer watched."""
        data = read_pipe(fd, size)
        if data == b"":
            self.loop.remove_reader(fd)
        return data or b""

    def _drain(self) -> None:
        """Read what is in both pipes now, and no more: their writers are gone (unless the
        launcher lies), and the loop must not be held by a pipe that is written on and on."""
        for stream, fd in self._outputs.items():
            waiting = int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, bytes(4)), sys.byteorder)
            while waiting > 0 and (data := self._read_once(fd, min(waiting, READ_SIZE))):
                waiting -= len(data)
                if self._on_data is not None:
                    self._on_data(stream, data)

    def _close_outputs(self) -> None:
        for fd in self._outputs.values():
            self.loop.remove_reader(fd)
            os.close(fd)
        self._outputs.clear()

    # ---- its end ---------------------------------------------------------------------------

    def fail(self, why: str, quiet: bool = False) -> None:
        """End the sandbox and everything in it; shards waiting to start get
        ``SandboxEnded``, running ones end as killed."""
        if not self.ended and self._ready.done() and not quiet:
            log.warning("a task's sandbox ended: %s", why)
        self.close(why)

    def _ended_within(self, why: str) -> None:
        """Its launcher or its sandbox ended by itself. A start not answered yet most likely
        started its shard, and that shard ended them (nothing else in the lane can; the kernel's
        OOM killer or a local root could): it ends as killed, not as never started."""
        if self._ready.done():
            for request_id, answer in list(self._pending.items()):
                if not answer.done():
                    self._started(request_id, -1)
        self.fail(why)

    def close(self, why: str = "closed") -> None:
        """Kill the sandbox and everything in it (bwrap's init dies with bwrap, and the kernel
        then kills the rest of its PID namespace), and reap bwrap."""
        if self.ended:
            return
        self.ended = why
        self.loop.remove_reader(self._sock.fileno())
        self._sock.close()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, signal.SIGKILL)
        self.loop.remove_reader(self._bwrap_pidfd)
        os.close(self._bwrap_pidfd)
        if self._children_listing >= 0:
            os.close(self._children_listing)
            self._children_listing = -1
        with contextlib.suppress(ChildProcessError):
            self._popen.wait()  # SIGKILLed just now: returns at once
        if not self._ready.done():
            self._ready.set_exception(SandboxEnded(errno.ESRCH, f"the task's sandbox ended: {why}"))
            self._ready.exception()  # retrieved here: open() may be gone already
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(SandboxEnded(errno.ESRCH, f"the task's sandbox ended: {why}"))
        self._pending.clear()
        self._drain()  # what its shard wrote before the kill
        self._close_outputs()
        self._on_data = None
        for process in self._shards.values():
            process.ended(-signal.SIGKILL)
        self._shards.clear()

    async def gone(self) -> None:
        """Wait until nothing runs in the ended sandbox any more (its init has ended, and an
        init ends only once every other process of its PID namespace has)."""
        if self._launcher:
            await asyncio.wait_for(asyncio.shield(self._init_gone), ANSWER_TIMEOUT)
