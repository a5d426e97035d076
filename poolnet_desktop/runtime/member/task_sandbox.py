"""One bubblewrap sandbox per task on this member, reused by the task's shards.

A sandbox costs 2-3.5 ms of CPU to make, several times what a small shard costs to run, so a
member that started one per shard ran 2,000 shards of ``true`` at a fifth of ``xargs -P 2``'s
rate (issue 14). ``TaskSandboxes`` keeps a sandbox for each task (and kind of shard) that has
shards here, with ``runtime/member/sandbox_launcher.py`` inside to start them, and closes it
once the task has had no shard here for a few seconds.

Who sees what is unchanged for anyone but the task itself: a sandbox binds only its own
folder, under which its shards' working folders lie; the shards of one task on one member share
its PID namespace and ``/tmp`` (each has a ``TMPDIR`` of its own) and see each other's folders.
They all run the same submitter's code.

The launcher lives among the task's code, so nothing it says is believed beyond that task: a
message that is not what was asked for, or no answer in time, ends the sandbox, and its shards
fail. A shard's pid comes from the pidfd the launcher sends (the kernel's word, not the
launcher's), and the member kills, suspends and watches it by that pid as any shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from poolnet_desktop.runtime.member import sandbox_launcher as launcher
from poolnet_desktop.runtime.member.sandbox import SCRUBBED_PATH, Sandbox
from poolnet_desktop.runtime.member.shard_process import OnData, PipedProcess
from poolnet_desktop.runtime.member.work_folders import WorkFolders

log = logging.getLogger(__name__)

# A task with no shard here for this long gives its sandbox back.
IDLE_CLOSE_AFTER = 10.0
# The launcher starts within this (a cold interpreter on a busy machine), and answers each
# request within it; past it, it is taken as broken.
ANSWER_TIMEOUT = 30.0
# The largest message read from a launcher: its messages are a few dozen bytes.
_MAX_ANSWER = 4096


class SandboxEnded(OSError):
    """The task's sandbox ended or broke; the shard cannot start in it."""


class RequestTooLarge(Exception):
    """The shard's command and environment do not fit in one request to the launcher."""


def launcher_argv(python: Sequence[str], code_fd: int, socket_fd: int) -> list[str]:
    """How the member's interpreter runs the launcher: from its text on ``code_fd``,
    isolated from the folder it runs in (the task's files), from ``PYTHON*`` variables and
    from site-packages (it needs none, and starts 10 ms sooner); a frozen build runs its
    bundled module."""
    if getattr(sys, "frozen", False):
        return [*python, "-m", launcher.__name__, str(socket_fd)]
    return [*python, "-I", "-S", "-c", launcher.BOOTSTRAP, str(code_fd), str(socket_fd)]


@functools.cache
def _launcher_source() -> bytes:
    return Path(launcher.__file__).read_bytes()


def pid_of_pidfd(pidfd: int) -> int:
    """The pid, in this process's namespace, of the process ``pidfd`` refers to; raises
    ``ValueError`` if ``pidfd`` is no pidfd of a living process."""
    with open(f"/proc/self/fdinfo/{pidfd}", encoding="ascii") as info:
        for line in info:
            if line.startswith("Pid:"):
                pid = int(line.split()[1])
                if pid > 0:
                    return pid
    raise ValueError("not a pidfd of a living process")


@dataclass
class _Pending:
    answer: asyncio.Future[PipedProcess]
    on_data: OnData
    stdout: int
    stderr: int


class TaskSandbox:
    """A running sandbox with its launcher; ``start`` runs a shard inside it."""

    def __init__(self, folder: Path, popen: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.folder = folder
        self._popen = popen
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._pending: dict[int, _Pending] = {}
        self._shards: dict[int, PipedProcess] = {}
        self._next_id = 0
        self.ended = ""  # why it ended; empty while it runs
        self._pidfd = os.pidfd_open(popen.pid)
        self._loop.add_reader(self._pidfd, self._bwrap_exited)
        self._loop.add_reader(sock.fileno(), self._readable)

    @classmethod
    async def open(
        cls, sandbox: Sandbox, folder: Path, python: Sequence[str], gpus: Sequence[int],
        visible: Sequence[Path],
    ) -> TaskSandbox:
        """Make the sandbox for ``folder`` and wait for its launcher to be ready."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        code_read, code_write = os.pipe()
        try:
            try:  # the text fits in the pipe's buffer (64 KiB): no reader needs to be waited for
                os.write(code_write, _launcher_source())
            finally:
                os.close(code_write)
            argv = sandbox.wrap(
                launcher_argv(python, code_read, theirs.fileno()), folder, gpus, visible
            )
            popen = subprocess.Popen(
                argv, cwd=folder, env={"PATH": SCRUBBED_PATH}, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=[theirs.fileno(), code_read], start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
            os.close(code_read)
        ours.setblocking(False)
        box = cls(folder, popen, ours)
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT):
                await box._ready
        except BaseException:
            box.close()
            raise
        return box

    async def start(
        self, argv: Sequence[str], cwd: Path, env: Mapping[str, str], on_data: OnData,
        pin_to: Sequence[int] | None,
    ) -> PipedProcess:
        """Start ``argv`` in the sandbox in a new session, its pipes read through the loop.

        Raises ``SandboxEnded`` if the sandbox is gone, ``RequestTooLarge`` if the request does
        not fit in a message, ``OSError`` (the launcher's errno) if it could not start."""
        if self.ended:
            raise SandboxEnded(errno.ESRCH, f"the task's sandbox ended: {self.ended}")
        self._next_id += 1
        request_id = self._next_id
        request = launcher.encode({
            "op": launcher.START, "id": request_id, "argv": list(argv), "cwd": str(cwd),
            "env": dict(env), "cores": list(pin_to) if pin_to else None,
        })
        if len(request) > launcher.MAX_MESSAGE:
            raise RequestTooLarge
        (out_read, out_write), (err_read, err_write) = os.pipe(), os.pipe()
        pending = _Pending(self._loop.create_future(), on_data, out_read, err_read)
        self._pending[request_id] = pending
        try:
            try:
                await self._send(request, [out_write, err_write])
            finally:
                os.close(out_write)
                os.close(err_write)
            async with asyncio.timeout(ANSWER_TIMEOUT):
                process = await pending.answer
        except RequestTooLarge:
            self._drop_pending(request_id)
            raise
        except TimeoutError:
            self._fail("it did not answer a start request")
            raise SandboxEnded(errno.ETIMEDOUT, "the task's sandbox did not answer") from None
        except BaseException:
            if self._pending.pop(request_id, None) is not None:
                os.close(out_read)
                os.close(err_read)
            elif pending.answer.done() and not pending.answer.cancelled() and not pending.answer.exception():
                pending.answer.result().abandon()  # started, but nobody waits for it any more
            raise
        await process.connect_pipes()
        return process

    async def _send(self, message: bytes, fds: list[int]) -> None:
        """Send without ever blocking the loop: a launcher that stops reading fills the
        socket, and is then given ``ANSWER_TIMEOUT`` before it is taken as broken."""
        while True:
            try:
                socket.send_fds(self._sock, [message], fds)
                return
            except BlockingIOError:
                writable = self._loop.create_future()
                self._loop.add_writer(self._sock.fileno(), writable.set_result, None)
                try:
                    async with asyncio.timeout(ANSWER_TIMEOUT):
                        await writable
                finally:
                    self._loop.remove_writer(self._sock.fileno())
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    raise RequestTooLarge from None
                self._fail(f"its socket failed: {exc}")
                raise SandboxEnded(exc.errno or errno.EPIPE, f"the task's sandbox ended: {exc}") from None

    def _readable(self) -> None:
        while not self.ended:
            try:
                data, fds, flags, _ = socket.recv_fds(self._sock, _MAX_ANSWER, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._fail(f"its socket failed: {exc}")
                return
            try:
                if not data:
                    self._fail("its launcher ended")
                    return
                if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                    raise ValueError("an oversized message")
                self._answer(json.loads(data), fds)
            except (ValueError, TypeError, KeyError) as exc:
                self._fail(f"its launcher sent a bad message ({exc})")
            finally:
                for fd in fds:
                    os.close(fd)

    def _answer(self, message: object, fds: list[int]) -> None:
        """Act on one message; raises ``ValueError``/``TypeError`` for one that is not what
        was asked for (the caller then ends the sandbox, which closes every pipe pending)."""
        if not isinstance(message, dict):
            raise ValueError("not a JSON object")
        op, request_id = message.get("op"), message.get("id")
        if op == launcher.READY and not self._ready.done():
            self._ready.set_result(None)
            return
        if not isinstance(request_id, int):
            raise ValueError(f"an unexpected message: {op!r}")
        if op == launcher.EXITED and request_id in self._shards:
            code = message.get("code")
            if not isinstance(code, int):
                raise TypeError("an exit code that is no integer")
            self._shards.pop(request_id).ended(code)
            return
        pending = self._pending.get(request_id)
        if pending is None:
            raise ValueError(f"an answer nobody asked for: {op!r}")
        if op == launcher.FAILED:
            code = message.get("errno")
            self._drop_pending(request_id)
            pending.answer.set_exception(OSError(code if isinstance(code, int) else errno.EIO,
                                                 str(message.get("error", "could not start"))))
        elif op == launcher.STARTED and len(fds) == 1:
            pid = pid_of_pidfd(fds[0])
            del self._pending[request_id]
            process = PipedProcess(self._loop, pid, pending.on_data, pending.stdout, pending.stderr)
            self._shards[request_id] = process
            pending.answer.set_result(process)
            self._tell({"op": launcher.WATCHING, "id": request_id})
        else:
            raise ValueError(f"an unexpected answer: {op!r}")

    def _tell(self, message: dict[str, object]) -> None:
        """Send a short message from a callback; a launcher whose socket is full has stopped
        reading, and is taken as broken."""
        try:
            self._sock.send(launcher.encode(message))
        except OSError as exc:
            self._fail(f"it stopped reading: {exc}")

    def _drop_pending(self, request_id: int) -> None:
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            os.close(pending.stdout)
            os.close(pending.stderr)

    def _bwrap_exited(self) -> None:
        self._fail("it exited")

    def _fail(self, why: str) -> None:
        """The sandbox broke: end it and everything in it; shards waiting to start get
        ``SandboxEnded``, running ones end as killed."""
        if self.ended:
            return
        if self._ready.done():
            log.warning("a task's sandbox ended: %s", why)
        self.close(why)

    def close(self, why: str = "closed") -> None:
        """Kill the sandbox and everything in it (bwrap's init dies with bwrap, and the kernel
        then kills the rest of its PID namespace), and reap bwrap."""
        if self.ended:
            return
        self.ended = why
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, signal.SIGKILL)
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        with contextlib.suppress(ChildProcessError):
            self._popen.wait()  # SIGKILLed just now: returns at once
        if not self._ready.done():
            self._ready.set_exception(SandboxEnded(errno.ESRCH, f"the task's sandbox ended: {why}"))
            self._ready.exception()  # retrieved here: open() may be gone already
        for request_id in list(self._pending):
            pending = self._pending[request_id]
            self._drop_pending(request_id)
            if not pending.answer.done():
                pending.answer.set_exception(SandboxEnded(errno.ESRCH, f"the task's sandbox ended: {why}"))
        for process in self._shards.values():
            process.ended(-signal.SIGKILL)
        self._shards.clear()


SandboxKey = tuple[object, ...]


@dataclass
class _Held:
    box: TaskSandbox
    folders: WorkFolders
    users: int = 0
    closer: asyncio.TimerHandle | None = None


class TaskSandboxes:
    """The member's task sandboxes, by key (a task, and what its shards need bound in), each
    with the working folders of its shards; one idle for ``idle_after`` seconds is closed.

    A sandbox takes some 15-30 ms to make (its launcher is a Python interpreter): ``ready``
    never waits for one. Until the task's sandbox is ready, its shards run in sandboxes of
    their own, as do the shards of one-shard tasks, which would never reuse one."""

    def __init__(self, sandbox: Sandbox, root: Path, python: Sequence[str],
                 idle_after: float = IDLE_CLOSE_AFTER) -> None:
        self.sandbox = sandbox
        self.root = root
        self.python = list(python)
        self.idle_after = idle_after
        self._held: dict[SandboxKey, _Held] = {}
        self._opening: dict[SandboxKey, asyncio.Task[None]] = {}
        self._by_folder: dict[Path, _Held] = {}
        self._seq = 0
        self.broken = ""  # why none can be made here; then none is tried again

    def ready(self, key: SandboxKey, gpus: Sequence[int], visible: Sequence[Path]) -> TaskSandbox | None:
        """The sandbox for ``key`` if it is ready, held until ``release``; else None, and one
        is being made for the next shards."""
        held = self._held.get(key)
        if held is not None and held.box.ended:
            self._forget(key)
            held = None
        if held is None:
            if key not in self._opening and not self.broken:
                self._opening[key] = asyncio.ensure_future(self._open(key, gpus, visible))
            return None
        held.users += 1
        if held.closer is not None:
            held.closer.cancel()
            held.closer = None
        return held.box

    async def acquire(self, key: SandboxKey, gpus: Sequence[int], visible: Sequence[Path]) -> TaskSandbox:
        """The sandbox for ``key``, waited for; raises ``SandboxEnded`` if none can be made."""
        while (box := self.ready(key, gpus, visible)) is None:
            if self.broken:
                raise SandboxEnded(errno.ENOENT, f"no task sandbox can be made here: {self.broken}")
            await asyncio.shield(self._opening[key])
        return box

    async def _open(self, key: SandboxKey, gpus: Sequence[int], visible: Sequence[Path]) -> None:
        self._seq += 1
        folder = self.root / f"sandbox-{self._seq}"
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            box = await TaskSandbox.open(self.sandbox, folder, self.python, gpus, visible)
        except (OSError, TimeoutError) as exc:
            self.broken = str(exc) or type(exc).__name__
            log.warning("tasks' shards get a sandbox each: no sandbox for a whole task can be made (%s)",
                        self.broken)
            await asyncio.to_thread(shutil.rmtree, folder, True)
            return
        finally:
            self._opening.pop(key, None)
        held = _Held(box, WorkFolders(folder))
        self._held[key] = held
        self._by_folder[folder] = held
        held.closer = asyncio.get_running_loop().call_later(self.idle_after, self._close_idle, key)

    def release(self, key: SandboxKey, box: TaskSandbox) -> None:
        held = self._held.get(key)
        if held is None or held.box is not box:
            return
        held.users -= 1
        if held.users == 0:
            held.closer = asyncio.get_running_loop().call_later(self.idle_after, self._close_idle, key)

    def _close_idle(self, key: SandboxKey) -> None:
        held = self._held.get(key)
        if held is not None and held.users == 0:
            self._forget(key)

    def _forget(self, key: SandboxKey) -> None:
        held = self._held.pop(key)
        held.box.close("no shard of its task is left here")
        if held.closer is not None:
            held.closer.cancel()
        for folder in held.folders.drain():
            shutil.rmtree(folder, ignore_errors=True)
        self._remove_if_empty(held.box.folder)

    def take_folder(self, box: TaskSandbox) -> Path:
        """An empty working folder inside ``box``'s folder (reused where one is free)."""
        return self._by_folder[box.folder].folders.take()

    def owns(self, folder: Path) -> bool:
        return folder.parent in self._by_folder

    async def give_back(self, folder: Path, empty: bool) -> None:
        """A shard's folder is done with: kept for the next shard of a sandbox that still
        runs if it is empty, else removed (with its sandbox's folder once that is empty)."""
        held = self._by_folder.get(folder.parent)
        if held is not None and empty and not held.box.ended:
            held.folders.keep(folder)
            return
        await asyncio.to_thread(shutil.rmtree, folder, True)
        self._remove_if_empty(folder.parent)

    def _remove_if_empty(self, box_folder: Path) -> None:
        held = self._by_folder.get(box_folder)
        if held is None or not held.box.ended:
            return
        with contextlib.suppress(OSError):  # a shard's folder is still held for its result
            box_folder.rmdir()
            del self._by_folder[box_folder]

    def close_all(self) -> None:
        for opening in self._opening.values():
            opening.cancel()
        for key in list(self._held):
            self._forget(key)
