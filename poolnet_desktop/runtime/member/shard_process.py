"""Start a shard's process and learn when it ends, at the same cost on every event loop.

Each event loop brings its own process machinery, and their costs differ a lot: uvloop spawns
through libuv, which cost a member 1.6-2.0 ms of its own CPU per shard against 0.5 ms on
asyncio with a pidfd child watcher (issue 14), and asyncio on Python 3.11 needs a child watcher
that is bound to one loop. So on Linux the shard is started with what every loop offers alike:
``subprocess.Popen`` (vfork and exec, in a new session), its two pipes and its exit (a
pidfd) watched with ``loop.add_reader``, the pipes read with ``os.read`` and the process
reaped with ``waitpid`` at once. (A loop's pipe transports cost a member more per shard than
the reads they make, asyncio's most: they are Python.) Where pidfds do not exist (Windows, macOS, kernels before
5.3) the loop's own ``subprocess_exec`` is used.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import os
import signal
import subprocess
from collections.abc import Callable, Coroutine, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import psutil

from poolnet_desktop.runtime.member.landlock import spawn_scoped
from poolnet_desktop.runtime.member.process_table import ProcessTable

Stream = Literal["stdout", "stderr"]
# Called from the loop for each chunk read from the shard's stdout or stderr, in arrival order.
OnData = Callable[[Stream, bytes], None]
# The most one read of a shard's pipe takes: a pipe holds 64 KiB unless made bigger, and a
# larger buffer would be mapped and unmapped for every read.
READ_SIZE = 64 * 1024


def read_pipe(fd: int, size: int = READ_SIZE) -> bytes | None:
    """Up to ``size`` bytes of a non-blocking pipe: ``b""`` at its end (every write end closed,
    or the read failed), None when nothing is there yet."""
    try:
        return os.read(fd, size)
    except BlockingIOError:
        return None
    except OSError:
        return b""


class PinError(Exception):
    """The requested CPU cores cannot be used on this machine."""


class ShardProcess(abc.ABC):
    """A started shard: its main process's id, its end and its pipes' end.

    ``exited`` is set once the main process has ended and was reaped; ``closed`` is True once
    both pipes reached end of file, or False if ``give_up_on_pipes`` came first (an escaped
    descendant may hold them open forever).
    """

    _pid: int
    exited: asyncio.Future[None]
    closed: asyncio.Future[bool]

    @property
    def pid(self) -> int | None:
        """The main process's id (its process group's too, on POSIX)."""
        return self._pid

    @property
    @abc.abstractmethod
    def returncode(self) -> int | None:
        """The exit code once ended (negative: killed by that signal), else None."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop reading the pipes; a process still running is reaped whenever it ends."""

    def give_up_on_pipes(self, closed: bool = False) -> None:
        if not self.closed.done():
            self.closed.set_result(closed)

    def kill_tree(self) -> None:
        """Kill the shard's process group and every descendant still linked to it."""
        kill_tree(self._pid)

    def suspend_tree(self, suspend: bool) -> None:
        """Stop (SIGSTOP) or continue (SIGCONT) the shard and every descendant."""
        suspend_tree(self._pid, suspend=suspend)

    def tree_memory(self) -> int:
        """Resident bytes of the shard and its descendants (blocking: call it off the loop)."""
        return tree_memory(self._pid)

    def tree_threads(self, table: ProcessTable) -> int:
        """How many threads the shard and its descendants run, as ``table`` has them."""
        return table.tree_threads(self._pid)

    def end_group(self) -> None:
        """The main process ended: kill what it left running in its group (POSIX)."""
        if os.name != "nt":
            signal_group(self._pid)

    async def settle(self, workdir: Path, keep_files: bool = True) -> tuple[Path, str]:
        """Once it ended: the folder that holds its files, now out of every process's reach,
        and a note if something was wrong with it. Here that is ``workdir`` itself.
        ``keep_files`` False: nobody will read them (a lane may then keep its folder)."""
        return workdir, ""


async def start_shard_process(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    on_data: OnData,
    pin_to: Sequence[int] | None = None,
    scoped: bool = False,
    pass_fds: Sequence[int] = (),
) -> ShardProcess:
    """Start ``argv`` in a new session (Windows: process group) with stdin from the null device.

    ``pin_to`` (needs ``os.sched_setaffinity``) pins the spawning thread to those cores while
    the child is created, so the child inherits the pin from its first instruction. ``scoped``
    (a sandbox, where the kernel can) starts it in a Landlock domain of its own
    (``runtime/member/landlock.py``). ``pass_fds`` are inherited as they are numbered here
    (a sandbox's seccomp program). Raises ``PinError`` for cores that cannot be used,
    ``OSError``/``ValueError`` when it cannot start.
    """
    loop = asyncio.get_running_loop()
    if not pidfd_supported():
        return await _LoopSubprocess.start(loop, argv, cwd, env, on_data, pin_to, pass_fds)
    (out_read, out_write), (err_read, err_write) = os.pipe(), os.pipe()

    def spawn() -> subprocess.Popen[bytes]:
        with _pinned(pin_to):
            return subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out_write,
                stderr=err_write,
                start_new_session=True,
                pass_fds=pass_fds,
            )

    try:
        popen = spawn_scoped(spawn) if scoped else spawn()
    except BaseException:
        os.close(out_read)
        os.close(err_read)
        raise
    finally:
        os.close(out_write)
        os.close(err_write)
    try:
        return _PidfdProcess(loop, popen, on_data, out_read, err_read)
    except OSError:  # no pidfd to be had (descriptors exhausted): end what was started
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
        os.close(out_read)
        os.close(err_read)
        raise


@functools.cache
def pidfd_supported() -> bool:
    """True where this kernel and Python give pidfds (Linux 5.3+, Python 3.9+)."""
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False  # an old kernel, or a sandbox that forbids the call
    return True


@contextlib.contextmanager
def _pinned(cores: Sequence[int] | None) -> Iterator[None]:
    """Pin this thread to ``cores`` for the block, then restore its affinity."""
    if cores is None:
        yield
        return
    previous = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, cores)
    except (OSError, ValueError) as exc:
        raise PinError(f"cannot pin to CPU cores {list(cores)}: {exc}") from None
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


class PipedProcess(ShardProcess):
    """A started process whose stdout and stderr pipes are read as the loop finds them
    readable; whoever learns of its end calls ``ended``. Subclasses differ in how that is
    learnt."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, pid: int, on_data: OnData, stdout: int, stderr: int
    ) -> None:
        self._loop = loop
        self._pid = pid
        self.on_data = on_data
        self.exited = loop.create_future()
        self.closed = loop.create_future()
        self._returncode: int | None = None
        self._pipes: dict[int, Stream] = {stdout: "stdout", stderr: "stderr"}  # open, watched
        for fd in self._pipes:
            os.set_blocking(fd, False)
            loop.add_reader(fd, self._readable, fd)

    @property
    def returncode(self) -> int | None:
        return self._returncode

    def ended(self, returncode: int) -> None:
        """The process ended with ``returncode`` (and was reaped)."""
        if not self.exited.done():
            self._returncode = returncode
            self.exited.set_result(None)

    def _readable(self, fd: int) -> None:
        data = read_pipe(fd)
        if data is None:
            return
        if data:
            self.on_data(self._pipes[fd], data)
            return
        self._close_pipe(fd)  # its end: every write end is closed
        if not self._pipes:
            self.give_up_on_pipes(closed=True)

    def _close_pipe(self, fd: int) -> None:
        self._loop.remove_reader(fd)
        os.close(fd)
        del self._pipes[fd]

    def close(self) -> None:
        for fd in list(self._pipes):
            self._close_pipe(fd)


class _PidfdProcess(PipedProcess):
    """A ``Popen`` child whose end is seen through a pidfd."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        popen: subprocess.Popen[bytes],
        on_data: OnData,
        stdout: int,
        stderr: int,
    ) -> None:
        self._pidfd = os.pidfd_open(popen.pid)  # first: if none is to be had, nothing is watched yet
        super().__init__(loop, popen.pid, on_data, stdout, stderr)
        self._popen = popen
        loop.add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        """The pidfd is readable: the process ended. Reap it now, so no zombie stays."""
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        try:
            _, status = os.waitpid(self._pid, 0)
            returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            returncode = 255  # reaped elsewhere; asyncio's own watchers report 255 too
        # Setting it also keeps Popen from ever waiting for this pid again.
        self._popen.returncode = returncode
        self.ended(returncode)


class _LoopSubprocess(ShardProcess, asyncio.SubprocessProtocol):
    """The loop's own ``subprocess_exec``, where there are no pidfds.

    ``asyncio.subprocess.Process.wait()`` on 3.11 also waits for the pipes to close, which a
    background grandchild can hold open forever; the runner needs the exit on its own, so this
    protocol reports exit and pipe closure separately.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_data: OnData) -> None:
        self._on_data = on_data
        self._transport: asyncio.SubprocessTransport | None = None
        self.exited = loop.create_future()
        self.closed = loop.create_future()

    @classmethod
    async def start(
        cls,
        loop: asyncio.AbstractEventLoop,
        argv: Sequence[str],
        cwd: Path,
        env: Mapping[str, str],
        on_data: OnData,
        pin_to: Sequence[int] | None,
        pass_fds: Sequence[int],
    ) -> _LoopSubprocess:
        process = cls(loop, on_data)
        spawn = loop.subprocess_exec(
            lambda: process,
            *argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=pass_fds,
            **_new_group(),
        )
        transport, _ = await (_PinnedFirstStep(spawn, pin_to) if pin_to is not None else spawn)
        process._transport = transport
        process._pid = transport.get_pid()
        return process

    @property
    def returncode(self) -> int | None:
        assert self._transport is not None
        return self._transport.get_returncode()

    def close(self) -> None:
        assert self._transport is not None
        self._transport.close()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        assert isinstance(data, bytes)
        self._on_data("stdout" if fd == 1 else "stderr", data)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.give_up_on_pipes(closed=True)


def _new_group() -> dict[str, Any]:
    """Start the shard as the head of its own process group, so its tree can be killed."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
    return {"start_new_session": True}


class _PinnedFirstStep:
    """Await a ``loop.subprocess_exec`` coroutine with this thread pinned to ``cores`` during
    its first step only.

    That first step forks the child synchronously (the coroutine suspends only afterwards,
    to wait for its pipes), and a child inherits the forking thread's affinity. So the shard
    is pinned from its first instruction: nothing it forks can escape the pin, no extra
    ``taskset`` exec is paid, and no unsafe ``preexec_fn`` is needed. The thread's own
    affinity is restored before the loop runs anything else, so no other shard is affected.
    """

    def __init__(self, coro: Coroutine[Any, Any, Any], cores: Sequence[int]) -> None:
        self._coro = coro
        self._cores = cores

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self._coro
        try:
            with _pinned(self._cores):
                step = coro.send(None)
        except StopIteration as done:
            return done.value
        except PinError:
            coro.close()
            raise
        # From here on, behave exactly as ``yield from coro`` would.
        while True:
            try:
                sent = yield step
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - forwarded into the coroutine
                try:
                    step = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    step = coro.send(sent)
                except StopIteration as done:
                    return done.value


def signal_group(pgid: int) -> None:
    """SIGKILL a process group; a group that no longer exists is fine."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_tree(pid: int) -> None:
    """Kill the shard's process group, and every descendant still linked to it.

    The group catches what the shard forked; the psutil walk (done first, before the kill
    orphans them) catches descendants that moved to a session of their own.
    """
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    if os.name == "nt":
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
    else:
        signal_group(pid)
    for child in descendants:
        try:
            child.kill()
        except psutil.Error:
            pass


def suspend_tree(pid: int, *, suspend: bool) -> None:
    """Stop (SIGSTOP) or continue (SIGCONT) the shard's process group and every descendant.

    A sandboxed shard runs in a session of its own inside bwrap (``--new-session``), out of
    reach of the group's signal, so the descendants are walked too; a second walk after
    stopping catches what was forked meanwhile. Windows suspends each process's threads.
    """
    if os.name != "nt":
        try:
            os.killpg(pid, signal.SIGSTOP if suspend else signal.SIGCONT)
        except (ProcessLookupError, PermissionError):
            pass
    done: set[int] = set()
    for _ in range(2 if suspend else 1):
        try:
            root = psutil.Process(pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        for process in processes:
            if process.pid in done:
                continue
            try:
                if suspend:
                    process.suspend()
                else:
                    process.resume()
            except psutil.Error:
                continue
            done.add(process.pid)


def tree_memory(pid: int) -> int:
    """Resident bytes of a process and all its descendants (0 once it is gone).

    RSS counts shared pages once per process, so this errs on the high side: safe for a limit.
    """
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total
