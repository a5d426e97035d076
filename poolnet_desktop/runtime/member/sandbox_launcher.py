"""The program that runs inside a sandbox a member keeps for a task, and starts the task's
shards there one after another.

Making a bubblewrap sandbox costs 2-3.5 ms of this machine's CPU (namespaces, mounts); a
shard of ``true`` costs 0.5 ms. So a member keeps a sandbox per task and per shard it runs
of that task at once (a lane: ``runtime/member/task_sandbox.py``), and asks the launcher in it
over a socket to start each shard: the sandbox is paid once per lane, not once per shard.

One shard at a time, and after each one the lane is as new: when the shard's main process
ends, the launcher (a child subreaper: every orphan in the sandbox comes to it) kills and
reaps every other process in the sandbox, empties the private ``/tmp``, ``/var/tmp`` and
``/dev/shm``, removes its System V IPC objects, and only then reports the exit. Whatever the
shard started, even with ``clone(CLONE_PARENT)`` or in a session of its own, belongs to that
one shard, and the member suspends, measures and kills the launcher's descendants as the
shard's tree.

Messages are JSON on a ``SOCK_SEQPACKET`` socket. The member sends ``start`` (the shard's
stdout and stderr write ends attached); the launcher answers ``started`` with a pidfd of the
shard, ``failed`` with the errno, and ``exited`` with its exit code. It reaps the shard only
after the member said ``watching`` (it has read the pid: a reaped process's pidfd names none).
On ``ready`` it sends a pidfd of itself.

The launcher lives among the task's code: a shard may stop or kill it, and the member
believes nothing it says beyond that lane (``task_sandbox.py``). It cannot be ptraced (not
dumpable). Standard library only: the member's interpreter runs it isolated (``-I -S``) from
this file's text, read from a pipe (``BOOTSTRAP``), or as a module in a frozen build.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

READY = "ready"
START = "start"
STARTED = "started"
WATCHING = "watching"
FAILED = "failed"
EXITED = "exited"
# Larger than any request the member sends (it checks); a bigger one is refused, not cut.
MAX_MESSAGE = 1 << 20
# A shard's leftovers not gone by then (a process stuck in the kernel): the launcher gives up
# and exits, and the member ends the whole sandbox.
CLEAN_UP_LIMIT = 2.0

# ``python -I -S -c BOOTSTRAP CODE_FD SOCKET_FD``: the launcher's text comes through a pipe, so
# that the sandbox needs no view of PoolNet's files and ``ps`` shows a short command.
BOOTSTRAP = (
    "import os,sys;f=os.fdopen(int(sys.argv[1]),encoding='utf-8');c=f.read();f.close();"
    "sys.argv=['poolnet-sandbox-launcher',sys.argv[2]];"
    "exec(compile(c,'sandbox_launcher.py','exec'),{'__name__':'__main__'})"
)

_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_SCOPES = 1 | 2  # abstract Unix sockets, signals
_PRIVATE_TEMP = ("/tmp", "/var/tmp", "/dev/shm")
_IPC_RMID = 0


def encode(message: dict[str, object]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


@functools.cache
def _libc() -> ctypes.CDLL:
    """Loaded when first needed: the member imports this module on every OS for its names."""
    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    if _libc().prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


class Launcher:
    """Serves one member's socket until it closes (the sandbox's init then kills what is left)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.shard: _Shard | None = None
        self.selector = selectors.DefaultSelector()
        self.wake_read, wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(wake_write, False)
        # A handler, so that the wakeup fd hears of each child's end (exec resets it).
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_write)

    def serve(self) -> None:
        self.selector.register(self.sock, selectors.EVENT_READ, self._request)
        self.selector.register(self.wake_read, selectors.EVENT_READ, self._children)
        me = os.pidfd_open(os.getpid())
        try:
            self._send({"op": READY}, [me])
        finally:
            os.close(me)
        while True:
            for key, _ in self.selector.select():
                if key.data() is False:
                    return

    def _request(self) -> bool:
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 2)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        for fd in fds:
            os.set_inheritable(fd, False)  # a shard gets them as its stdout and stderr only
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        request: object = None
        try:
            request = json.loads(data)
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
            if request.get("op") == WATCHING:
                self._watched(int(request["id"]))
            elif request.get("op") != START or len(fds) != 2:
                raise ValueError("not a start request with two pipes")
            else:
                self._start(request, fds[0], fds[1])
        except (ValueError, TypeError, KeyError) as exc:
            request_id = request.get("id") if isinstance(request, dict) else None
            self._send({"op": FAILED, "id": request_id, "errno": errno.EINVAL, "error": str(exc)})
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def _start(self, request: dict[str, object], stdout: int, stderr: int) -> None:
        request_id = int(request["id"])  # type: ignore[call-overload]
        if self.shard is not None:
            self._send({"op": FAILED, "id": request_id, "errno": errno.EBUSY, "error": "a shard runs here"})
            return
        argv = [str(a) for a in request["argv"]]  # type: ignore[attr-defined]
        env = {str(k): str(v) for k, v in request["env"].items()}  # type: ignore[attr-defined]
        cores = request.get("cores")
        try:
            with _pinned(cores if isinstance(cores, list) and cores else None):
                # vfork and exec (no preexec_fn): 0.6 ms here, against 1.7 ms with one.
                process = subprocess.Popen(
                    argv, cwd=str(request["cwd"]), env=env, stdin=subprocess.DEVNULL,
                    stdout=stdout, stderr=stderr, start_new_session=True,
                )
        except (OSError, subprocess.SubprocessError) as exc:
            code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EIO
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._send({"op": FAILED, "id": request_id, "errno": code, "error": why})
            return
        process.returncode = 0  # reaped by this loop, never by Popen
        self.shard = _Shard(request_id, process.pid)
        pidfd = os.pidfd_open(process.pid)
        try:
            self._send({"op": STARTED, "id": request_id}, [pidfd])
        finally:
            os.close(pidfd)

    def _watched(self, request_id: int) -> None:
        if self.shard is not None and self.shard.request_id == request_id:
            self.shard.watched = True
            self._children()

    def _children(self) -> bool:
        """A child ended: if it was the (watched) shard, clean the lane and report it."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_read, 4096):
                pass
        shard = self.shard
        if shard is None or not shard.watched:
            _reap_any_but(shard.pid if shard else None)
            return True
        try:
            done, status = os.waitpid(shard.pid, os.WNOHANG)
        except ChildProcessError:
            done, status = shard.pid, 255 << 8
        if done == 0:
            _reap_any_but(shard.pid)
            return True
        self.shard = None
        if not _empty_the_sandbox():
            return False  # exit: the member ends this sandbox
        self._send({"op": EXITED, "id": shard.request_id, "code": os.waitstatus_to_exitcode(status)})
        return True

    def _send(self, message: dict[str, object], fds: list[int] | None = None) -> None:
        try:
            socket.send_fds(self.sock, [encode(message)], fds or [])
        except OSError:
            pass  # the member is gone; the next read sees it


class _Shard:
    """The running shard: its request, its pid, and whether the member has its pid (only then
    may it be reaped)."""

    __slots__ = ("request_id", "pid", "watched")

    def __init__(self, request_id: int, pid: int) -> None:
        self.request_id = request_id
        self.pid = pid
        self.watched = False


@contextlib.contextmanager
def _pinned(cores: list[int] | None):  # type: ignore[no-untyped-def]
    """Pin this thread to ``cores`` while the shard is created: it inherits the pin."""
    if cores is None:
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def _reap_any_but(keep: int | None) -> None:
    """Reap ended children other than ``keep`` (orphans that came here and died)."""
    for pid in _others():
        if pid != keep:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def _others() -> list[int]:
    """Every process in this sandbox but its init (1) and this launcher."""
    me = os.getpid()
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and int(name) not in (1, me)]


def _empty_the_sandbox() -> bool:
    """SIGKILL and reap every other process in the sandbox (orphans come here: a subreaper),
    then empty the private temporary folders and IPC namespace. False if something would not
    go in time, or a tree was nested too deep to remove."""
    deadline = time.monotonic() + CLEAN_UP_LIMIT
    while others := _others():
        if time.monotonic() > deadline:
            return False
        for pid in others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in others:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.001)
    try:
        for folder in _PRIVATE_TEMP:
            _empty(folder)
    except RecursionError:
        return False
    _remove_ipc()
    return True


def _remove_ipc() -> None:
    """Remove the System V shared memory, queues and semaphores left in this IPC namespace."""
    libc = _libc()
    removers = {"shm": lambda i: libc.shmctl(i, _IPC_RMID, None),
                "msg": lambda i: libc.msgctl(i, _IPC_RMID, None),
                "sem": lambda i: libc.semctl(i, 0, _IPC_RMID)}
    for table, remove in removers.items():
        try:
            with open(f"/proc/sysvipc/{table}", encoding="ascii") as listing:
                rows = listing.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 1 and fields[1].isdigit():
                remove(int(fields[1]))


def _empty(folder: str) -> None:
    """Remove what ``folder`` holds on its own file system; a folder bound in from the host (a
    lane's own folder, a Python environment) is another mount, and is left alone."""
    try:
        device = os.lstat(folder).st_dev
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                if entry.stat(follow_symlinks=False).st_dev != device:
                    continue
                _empty(entry.path)
                os.rmdir(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            continue  # a folder that holds a mount, or one just removed


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


def _enter_a_nested_domain() -> None:
    """Put this launcher, and so every shard it starts, in a Landlock domain nested in the
    sandbox's: Landlock lets no process trace one of an outer domain, so a shard cannot
    ptrace bwrap's init (dumpable, and alive for the lane's whole life) into holding a
    descriptor of a shard's folder past the shard's end; scoped, it cannot signal init either.
    The member makes lanes only where the kernel has these scopes. (Landlock's few calls are
    repeated from ``runtime/member/landlock.py``: this file runs on its own.)"""
    libc = _libc()
    attr = _RulesetAttr(0, 0, _LANDLOCK_SCOPES)
    ruleset = libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
        if libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: sandbox_launcher SOCKET_FD", file=sys.stderr)
        return 2
    _prctl(_PR_SET_DUMPABLE, 0)  # no shard may ptrace it or read its memory
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    _enter_a_nested_domain()
    sock = socket.socket(fileno=int(argv[0]))
    sock.set_inheritable(False)
    Launcher(sock).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
