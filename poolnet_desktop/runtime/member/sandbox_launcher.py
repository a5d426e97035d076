"""The program that runs inside a sandbox a member keeps for a task, and starts the task's
shards there one after another.

Making a bubblewrap sandbox costs 2-3.5 ms of this machine's CPU (namespaces, mounts); a
shard of ``true`` costs 0.5 ms. So a member keeps a sandbox per task and per shard it runs
of that task at once (a lane: ``runtime/member/task_sandbox.py``), and asks the launcher in it
over a socket to start each shard: the sandbox is paid once per lane, not once per shard.

One shard at a time, and after each one the lane is as new: when the shard's main process
ends, the launcher (a child subreaper: every orphan in the sandbox comes to it) first kills and
reaps every other process in the sandbox (``kill(-1)``: no descriptor needed, whatever limits
a leftover process set on it), then sets back what a shard of the same uid may change on it
and every later shard would inherit (its resource limits; its scheduling: ``sched_attr``, I/O
priority, cores; the lane's pipes' modes; a root member's ``oom_score_adj`` and
``coredump_filter``), empties the private ``/tmp``, ``/var/tmp``, ``/dev/shm`` and
``/dev/mqueue`` and sets back their mode, notes and times (``/dev`` itself is read-only),
removes its System V IPC objects, and only then reports the exit; what it could not set back
ends the lane. Whatever the shard started, even with ``clone(CLONE_PARENT)`` or in a session of its own, belongs to that
one shard, and the member suspends, measures and kills the launcher's descendants as the
shard's tree.

Messages go on a ``SOCK_SEQPACKET`` socket. The member sends ``start`` as NUL-terminated
fields (``encode_start``: what exec takes, read in place by the launcher built from
``sandbox_launcher.c``, which the member runs where it was built: ``native_launcher.py``); the
launcher answers in JSON: ``failed`` with the errno, or ``exited`` with the exit code once the
shard ended (and ``last`` when the lane cannot be made as new again: the member then ends it). A shard still
running ``STARTED_DELAY`` after its start is told first with ``started`` and a pidfd of it:
most small shards end before that, and one message per shard instead of two spares the member
a wake-up (240 to 150 us of its CPU per shard of ``true``). On ``ready`` it sends a pidfd of
itself. Every shard of the lane writes to the same two pipes, given to the launcher when it
starts, each shard through a fresh opening of them (the flags, owner and size a shard sets on
its own die with it; its stdin is a fresh opening of ``/dev/null`` for the same reason): what
is in them when ``exited`` comes was written by that shard, whose processes are all gone by
then.

Every step of a shard's start and end is paid once per shard, on the shard's own core, so
each is the cheapest that does the job: ``posix_spawnp`` (vfork and exec, no Python in the
child, the PATH searched in C), a lane found empty by ``waitpid`` alone (no child left means no
process left: every process in the sandbox descends from this subreaper), a temporary folder
found empty and unchanged by one ``lstat`` and one listing of its notes' names (tmpfs counts
its entries in its size), and System V
IPC counted by one call per kind before any listing is read.

The launcher lives among the task's code: a shard may stop or kill it, and the member
believes nothing it says beyond that lane (``task_sandbox.py``). It cannot be ptraced (not
dumpable). Standard library only: the member's interpreter runs it isolated (``-I -S``) from
this file's text, read from a pipe (``BOOTSTRAP``), or as a module in a frozen build.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import errno
import functools
import json
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable, Mapping, Sequence

if sys.platform != "win32":  # the launcher runs on Linux; the member imports this file everywhere
    import fcntl
    import resource

READY = "ready"
START = "start"
STARTED = "started"
FAILED = "failed"
EXITED = "exited"
# Larger than any request the member sends (it checks); a bigger one is refused, not cut.
MAX_MESSAGE = 1 << 20
# How long a shard runs before the member is told of it (``started``, with its pidfd).
STARTED_DELAY = 0.02
# A shard's leftovers not gone by then (a process stuck in the kernel): the launcher gives up
# and exits, and the member ends the whole sandbox.
CLEAN_UP_LIMIT = 2.0

# ``python -I -S -c BOOTSTRAP CODE_FD SOCKET_FD STDOUT_FD STDERR_FD``: the launcher's text comes
# through a pipe, so that the sandbox needs no view of PoolNet's files and ``ps`` shows a short
# command.
BOOTSTRAP = (
    "import os,sys;f=os.fdopen(int(sys.argv[1]),encoding='utf-8');c=f.read();f.close();"
    "sys.argv=['poolnet-sandbox-launcher',*sys.argv[2:]];"
    "exec(compile(c,'sandbox_launcher.py','exec'),{'__name__':'__main__'})"
)

_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_SCOPES = 1 | 2  # abstract Unix sockets, signals
_PRIVATE_TEMP = ("/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue")  # POSIX queues: /dev/mqueue
_IPC_RMID = 0
# File systems whose folders grow by a fixed size per entry (tmpfs, mqueue): one of them whose
# size is back to what it was when empty holds nothing.
_SIZE_COUNTS_ENTRIES = {0x01021994, 0x19800202}
_F_SETPIPE_SZ = 1031
_RLIMIT_COUNT = 16  # RLIM_NLIMITS
_F_GETPIPE_SZ = 1032
# ``*ctl(0, *_INFO)``: how many objects of a kind this IPC namespace holds (SHM_INFO's
# used_ids, MSG_INFO's msgpool, SEM_INFO's semusz).
_SHM_INFO, _MSG_INFO, _SEM_INFO = 14, 12, 19


_NAMES_ENCODING, _NAMES_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()  # os.fsencode's
_ENCODER = json.JSONEncoder(separators=(",", ":"))  # made once: ``json.dumps`` with options makes one per call
_DECODER = json.JSONDecoder()  # ``json.loads`` of bytes first guesses their encoding


def encode_start(request_id: int, argv: Sequence[str], cwd: str, env: Mapping[str, str],
                 cores: Sequence[int] | None) -> bytes:
    """A start request: "start", the id, the working folder, the cores to pin to (comma
    separated; none: not pinned), the count of arguments, the arguments, then the environment's
    NAME=VALUE entries, each ended by a NUL, encoded as the file system's names are (one
    ``encode`` for all: one per string cost the member a tenth of its time per shard).
    ``ValueError`` for what exec cannot pass on: a NUL in a string, a name that is empty or
    holds "=", no command."""
    if not argv:
        raise ValueError("no command to run")
    for name in env:
        if not name or "=" in name:
            raise ValueError(f"illegal environment variable name: {name!r}")
    fields = [START, str(request_id), cwd, ",".join(map(str, cores)) if cores else "", str(len(argv)), *argv,
              *map("=".join, env.items())]
    request = ("\0".join(fields) + "\0").encode(_NAMES_ENCODING, _NAMES_ERRORS)
    if request.count(0) != len(fields):
        raise ValueError("embedded null byte")
    return request


class StartRequest:
    """A start request as ``encode_start`` made it, its strings as bytes (what exec takes)."""

    __slots__ = ("argv", "cores", "cwd", "env", "request_id")

    def __init__(self, data: bytes) -> None:
        """Raises ``ValueError`` for what ``encode_start`` does not make."""
        fields = data.split(b"\0")
        if len(fields) < 7 or fields[0] != START.encode() or fields.pop() != b"":
            raise ValueError("not a start request")
        count = int(fields[4])
        if not 0 < count <= len(fields) - 5:
            raise ValueError("a start request with too few arguments")
        self.request_id = int(fields[1])
        self.cwd = fields[2]
        self.cores = [int(core) for core in fields[3].split(b",")] if fields[3] else []
        self.argv = fields[5:5 + count]
        entries = fields[5 + count:]
        if not all(entry.find(b"=") > 0 for entry in entries):
            raise ValueError("an environment entry that is no NAME=VALUE")
        self.env = dict(entry.partition(b"=")[::2] for entry in entries)


def encode(message: dict[str, object]) -> bytes:
    return _ENCODER.encode(message).encode()


def decode(data: bytes | bytearray) -> object:
    """A message's JSON value; ``ValueError`` for one that is no UTF-8 JSON."""
    return _DECODER.decode(data.decode())


@functools.cache
def _libc() -> ctypes.CDLL:
    """Loaded when first needed: the member imports this module on every OS for its names."""
    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    if _libc().prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


class Launcher:
    """Serves one member's socket until it closes (the sandbox's init then kills what is left)."""

    def __init__(self, sock: socket.socket, stdout: int, stderr: int) -> None:
        self.sock = sock
        self.shard: _Shard | None = None
        self.outputs = {stdout: fcntl.fcntl(stdout, _F_GETPIPE_SZ), stderr: fcntl.fcntl(stderr, _F_GETPIPE_SZ)}
        self.limits = _limits()
        self.scheduling = _Scheduling()
        self.proc_settings = _proc_settings()
        # A shard may fchmod the lane's pipes (its uid owns them): no later opening would work.
        self.output_modes = {fd: stat.S_IMODE(os.fstat(fd).st_mode) for fd in self.outputs}
        self.buffer = bytearray(MAX_MESSAGE)
        self.fd_space = socket.CMSG_SPACE(4 * array.array("i").itemsize)
        self.ignored = _ignored_signals()
        self.temporary = _temporary_folders()
        # Heard with sigtimedwait while a shard runs, never by a handler: one system call per
        # wait, where a handler, a wakeup descriptor and epoll took four and Python's signal
        # machinery. Each shard starts with nothing blocked (``_spawn``).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})

    def serve(self) -> None:
        """One request at a time: while no shard runs, wait for the member's next; while one
        runs, for a child's end (and for ``tell_at``). The member sends nothing while a shard
        runs, and ends the whole sandbox if it stops wanting it."""
        me = os.pidfd_open(os.getpid())
        try:
            self._send({"op": READY}, [me])
        finally:
            os.close(me)
        while True:
            shard = self.shard
            if shard is None:
                if not self._request():
                    return
            elif shard.told:
                signal.sigwaitinfo({signal.SIGCHLD})
                if not self._children():
                    return
            elif signal.sigtimedwait({signal.SIGCHLD}, max(0.0, shard.tell_at - time.monotonic())) is None:
                self._tell_started(shard)
            elif not self._children():
                return

    def _request(self) -> bool:
        try:
            data, fds = self._receive()
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        for fd in fds:
            os.close(fd)  # no request carries any
        if not data:
            return False
        try:
            if fds:
                raise ValueError("not a start request")
            return self._start(StartRequest(bytes(data)))
        except ValueError as exc:
            self._send({"op": FAILED, "id": None, "errno": errno.EINVAL, "error": str(exc)})
        return True

    def _receive(self) -> tuple[bytearray, list[int]]:
        """One request and any descriptors it carries (none should), read into a buffer kept
        for the launcher's life: a buffer of ``MAX_MESSAGE`` made per request is mapped and
        unmapped each time, a tenth of a small shard's start."""
        size, ancillary, _, _ = self.sock.recvmsg_into([self.buffer], self.fd_space)
        fds = array.array("i")
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        return self.buffer[:size], list(fds)

    def _start(self, request: StartRequest) -> bool:
        """Start the shard asked for; only a shard that cannot start is answered now. False
        once this launcher must end: no shard's openings can be made (something the clean-up
        missed), so no later shard would start either."""
        stdio: list[int] = []
        try:  # each shard's own openings: flags, an owner or a lock one sets on them die with it
            stdio.append(os.open(os.devnull, os.O_RDONLY))
            stdio += (self._fresh_output(fd) for fd in self.outputs)
        except OSError as exc:
            self._send({"op": FAILED, "id": request.request_id, "errno": exc.errno or errno.EIO,
                        "error": exc.strerror or str(exc)})
            for fd in stdio:
                os.close(fd)
            return False
        try:
            with _pinned(request.cores) if request.cores else contextlib.nullcontext():
                pid = _spawn(request.argv, request.cwd, request.env, (stdio[0], stdio[1], stdio[2]), self.ignored)
        except OSError as exc:
            self._send({"op": FAILED, "id": request.request_id, "errno": exc.errno or errno.EIO,
                        "error": exc.strerror or str(exc)})
            return True
        finally:
            for fd in stdio:
                os.close(fd)
        # Its end, even one before this line, is pending: SIGCHLD is blocked, not lost.
        self.shard = _Shard(request.request_id, pid, time.monotonic() + STARTED_DELAY)
        return True

    def _tell_started(self, shard: _Shard) -> None:
        """The shard still runs: send the member a pidfd of it (not reaped yet: its pid is
        still its own). One the shard kept from being made or sent (it lowered this launcher's
        descriptor limit) is not retried: the member finds the shard itself when no answer
        comes."""
        shard.told = True
        try:
            pidfd = os.pidfd_open(shard.pid)
        except OSError:
            return
        try:
            self._send({"op": STARTED, "id": shard.request_id}, [pidfd])
        finally:
            os.close(pidfd)

    def _restore_outputs(self) -> list[str]:
        try:
            for fd, mode in self.output_modes.items():
                if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
                    os.fchmod(fd, mode)
        except OSError:
            return ["a shard changed the lane's pipes for good"]
        return []

    def _fresh_output(self, fd: int) -> int:
        """A new opening of the lane's pipe ``fd`` for one shard (its own file description:
        ``O_NONBLOCK``, ``O_ASYNC`` and an owner set on it end with the shard), at its size."""
        fresh = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY)
        if fcntl.fcntl(fresh, _F_GETPIPE_SZ) != self.outputs[fd]:
            fcntl.fcntl(fresh, _F_SETPIPE_SZ, self.outputs[fd])
        return fresh

    def _children(self) -> bool:
        """Reap every child that ended; once the shard has, clean the lane and report it."""
        shard = self.shard
        while True:
            try:  # which child ended, not reaping it yet: only the shard's status is wanted
                ended = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return True
            if ended is None:
                return True
            if shard is not None and ended.si_pid == shard.pid:
                break
            with contextlib.suppress(ChildProcessError):
                os.waitpid(ended.si_pid, 0)  # an orphan that came here and died
        _, status = os.waitpid(shard.pid, 0)
        self.shard = None
        # First: nothing of the shard may change what is set back next. The kill needs no
        # descriptor, whatever limits a leftover process set on this launcher.
        if not _kill_the_rest():
            return False  # exit, unreported: the member ends this sandbox, and waits for its end
        left = _restore_limits(self.limits)  # before the clean-up, which opens folders (a descriptor limit)
        left += self.scheduling.restore()
        left += _restore_proc_settings(self.proc_settings)
        left += self._restore_outputs()
        left += _clean_the_temporary_folders(self.temporary)
        message: dict[str, object] = {"op": EXITED, "id": shard.request_id, "code": os.waitstatus_to_exitcode(status)}
        if left:
            message["last"] = "; ".join(left)
        self._send(message)
        return not left

    def _send(self, message: dict[str, object], fds: list[int] | None = None) -> None:
        try:
            if fds:
                socket.send_fds(self.sock, [encode(message)], fds)
            else:
                self.sock.send(encode(message))
        except OSError:
            pass  # the member is gone; the next read sees it


class _Shard:
    """The running shard: its request, its pid, and when (and whether) the member was told
    that it started."""

    __slots__ = ("pid", "request_id", "tell_at", "told")

    def __init__(self, request_id: int, pid: int, tell_at: float) -> None:
        self.request_id = request_id
        self.pid = pid
        self.tell_at = tell_at
        self.told = False


def _spawn(argv: Sequence[bytes], cwd: bytes, env: Mapping[bytes, bytes], stdio: tuple[int, int, int],
           ignored: Sequence[int]) -> int:
    """Start ``argv`` in ``cwd``, in a session of its own, as ``subprocess`` would (its
    command looked up in ``env``'s PATH, no signal left ignored), with vfork and exec and no
    Python in between: 0.1 ms of the shard's core where ``Popen`` took 0.3. This launcher
    runs one thread, so its working folder is the child's to inherit (and is "/" again right
    after: the shard's folder is moved out of the lane once it ends), and so is its PATH,
    which glibc's ``posix_spawnp`` searches (in C: a search in Python cost a twentieth of
    the launcher's time per shard). Every other descriptor it holds is close-on-exec."""
    search_path = env.get(b"PATH", os.fsencode(os.defpath))
    if os.environb.get(b"PATH") != search_path:
        os.environb[b"PATH"] = search_path
    os.chdir(cwd)
    try:
        return os.posix_spawnp(
            argv[0], list(argv), env,
            file_actions=[(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)],
            setsid=True, setsigdef=ignored, setsigmask=(),
        )
    finally:
        with contextlib.suppress(OSError):  # a shard that started runs all the same
            os.chdir("/")


def _ignored_signals() -> tuple[int, ...]:
    """The signals this launcher ignores (Python ignores SIGPIPE and SIGXFSZ), which a shard
    must not start with ignored. (glibc's ``posix_spawn`` before 2.38 leaves its own two
    internal signals, 32 and 33, ignored in the child, and refuses to be told otherwise; a
    program that uses them, through glibc or musl, sets their handlers itself.)"""
    return tuple(s for s in sorted(signal.valid_signals()) if s not in (signal.SIGKILL, signal.SIGSTOP)
                 and signal.getsignal(s) == signal.SIG_IGN)


@contextlib.contextmanager
def _pinned(cores: list[int]):  # type: ignore[no-untyped-def]
    """Pin this thread to ``cores`` while the shard is created: it inherits the pin."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # failing, the clean-up after the shard sets it back or ends the lane
            os.sched_setaffinity(0, previous)


def _has_children() -> bool:
    """Whether a child of this launcher is left, reaping those that ended. None left means
    nothing else runs in the sandbox: orphans come to this subreaper, so every process here
    but init is a child of it or a descendant of one."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def _kill_the_rest() -> bool:
    """SIGKILL and reap every other process in the sandbox: ``kill(-1)`` reaches all of them
    but init and this launcher, with no descriptor needed (a leftover process may keep this
    launcher's descriptor limit at 0, where a listing of ``/proc`` fails). False if some would
    not go in time (stuck in the kernel)."""
    deadline = time.monotonic() + CLEAN_UP_LIMIT
    while _has_children():
        if time.monotonic() > deadline:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)
        time.sleep(0.001)
    return True


class _Scheduling:
    """How the launcher is scheduled (its ``sched_attr``: policy, nice value, a fair task's time
    slice, clamps; its I/O priority and cores), which a shard may change too (the same uid) and
    every later shard would inherit."""

    __slots__ = ("attributes", "cores", "io_priority")

    def __init__(self) -> None:
        self.attributes = _scheduling_attributes()
        self.io_priority = _io_priority()
        self.cores = os.sched_getaffinity(0)

    def restore(self) -> list[str]:
        """Set back each that changed; one that cannot be (a nice value raised past what this
        uid may lower again) is named."""
        now, left = _Scheduling(), []
        if now.attributes != self.attributes:
            _set_scheduling_attributes_back(self.attributes)
            if _scheduling_attributes() != self.attributes:
                left.append("a shard changed how the launcher is scheduled for good")
        for changed, set_back, what in (
            (now.io_priority != self.io_priority, lambda: _set_io_priority(self.io_priority), "I/O priority"),
            (now.cores != self.cores, lambda: os.sched_setaffinity(0, self.cores), "cores"),
        ):
            if changed:
                try:
                    set_back()
                except OSError:
                    left.append(f"a shard changed the launcher's {what} for good")
        return left


class _SchedulingAttributes(ctypes.Structure):
    """The kernel's ``struct sched_attr`` (version 1)."""

    _fields_ = [("size", ctypes.c_uint32), ("policy", ctypes.c_uint32), ("flags", ctypes.c_uint64),
                ("nice", ctypes.c_int32), ("priority", ctypes.c_uint32), ("runtime", ctypes.c_uint64),
                ("deadline", ctypes.c_uint64), ("period", ctypes.c_uint64), ("util_min", ctypes.c_uint32),
                ("util_max", ctypes.c_uint32)]


# ``sched_getattr`` and ``sched_setattr``, ``ioprio_get`` and ``ioprio_set`` by machine (glibc
# has no wrappers); elsewhere these are not looked at.
_SCHED_ATTR_CALLS = {"x86_64": (315, 314), "aarch64": (275, 274)}
_IOPRIO_CALLS = {"x86_64": (252, 251), "aarch64": (31, 30)}
_IOPRIO_WHO_PROCESS = 1
_SCHED_FLAG_UTIL_CLAMP = 0x60
_FAIR_POLICIES = (os.SCHED_OTHER, os.SCHED_BATCH, os.SCHED_IDLE) if sys.platform == "linux" else ()


def _scheduling_attributes() -> bytes:
    """The launcher's ``sched_attr`` as bytes, its size field cleared (empty where unknown)."""
    calls = _SCHED_ATTR_CALLS.get(os.uname().machine)
    if calls is None:
        return b""
    attributes = _SchedulingAttributes()
    if _libc().syscall(calls[0], 0, ctypes.byref(attributes), ctypes.sizeof(attributes), 0) != 0:
        raise OSError(ctypes.get_errno(), "sched_getattr failed")
    attributes.size = 0
    return bytes(attributes)


def _set_scheduling_attributes_back(saved: bytes) -> None:
    """Set ``saved`` back: the clamps only with their flags, a fair task's slice as the default
    one (0), which is what the launcher started with. (Checked by reading them again.)"""
    wanted = _SchedulingAttributes.from_buffer_copy(saved)
    wanted.size = ctypes.sizeof(wanted)
    wanted.flags |= _SCHED_FLAG_UTIL_CLAMP
    if wanted.policy in _FAIR_POLICIES:
        wanted.runtime = 0
    call = _SCHED_ATTR_CALLS[os.uname().machine][1]
    if _libc().syscall(call, 0, ctypes.byref(wanted), 0) != 0:
        wanted.flags &= ~_SCHED_FLAG_UTIL_CLAMP  # a kernel without clamps
        _libc().syscall(call, 0, ctypes.byref(wanted), 0)


# What a root shard may change in /proc/2 (root owns the files of a launcher that is not dumpable),
# and every later shard would inherit; another uid's shards cannot write them.
_PROC_SETTINGS = ("/proc/self/oom_score_adj", "/proc/self/coredump_filter")


def _proc_settings() -> dict[str, bytes]:
    if os.geteuid() != 0:
        return {}
    settings = {}
    for path in _PROC_SETTINGS:
        with contextlib.suppress(OSError), open(path, "rb") as setting:
            settings[path] = setting.read()
    return settings


def _restore_proc_settings(saved: dict[str, bytes]) -> list[str]:
    left = []
    for path, value in saved.items():
        try:
            with open(path, "rb") as setting:
                if setting.read() == value:
                    continue
            with open(path, "wb") as setting:  # coredump_filter reads as hex digits, read back as octal without 0x
                setting.write(b"0x" + value if path.endswith("coredump_filter") else value)
        except OSError:
            left.append(f"a shard changed the launcher's {os.path.basename(path)} for good")
    return left


def _io_priority() -> int:
    calls = _IOPRIO_CALLS.get(os.uname().machine)
    if calls is None:
        return -1
    value = _libc().syscall(calls[0], _IOPRIO_WHO_PROCESS, 0)
    if value < 0:
        raise OSError(ctypes.get_errno(), "ioprio_get failed")
    return int(value)


def _set_io_priority(value: int) -> None:
    if _libc().syscall(_IOPRIO_CALLS[os.uname().machine][1], _IOPRIO_WHO_PROCESS, 0, value) != 0:
        raise OSError(ctypes.get_errno(), "ioprio_set failed")


class _TemporaryFolder:
    """One of the lane's private temporary folders, the folders in it that lead to a folder
    bound in from the host (a work root under ``/tmp``: bwrap makes them), what each was when
    the lane began (the mode, times and extended attributes each shard must find again), and
    the ``lstat`` of each as the last clean-up left it.

    On a file system whose folders grow with each entry (tmpfs, mqueue), one that held only
    those folders when the lane began, and whose folders ``lstat`` finds just as the
    clean-up left them, holds nothing and carries nothing: any entry made, in it or in a
    folder on the way to a bound folder, grows that folder and changes its times, and a
    folder read changes its access time. Listing the four took a tenth of the launcher's
    time per shard, and walking the way to a work root under ``/tmp`` a quarter. (Setting a
    note or a time changes a folder's ctime; on tmpfs since Linux 6.13 a change right after
    it was read always does, before that within the same tick it may not.) A folder on the
    way can be moved, never removed (a bound folder is in it): when the way after a clean-up
    is not the one the lane began with, no clean-up can put it back, and the lane ends. Each
    temporary folder is a mount point, so a shard cannot swap it for another folder, a file
    or a link."""

    __slots__ = ("cleaned", "folders", "path", "skippable", "way_known")

    def __init__(self, path: str) -> None:
        self.path = path
        self.folders = [_Folder(path)]
        way = _ways_to_bound_folders(path, self.folders[0].start.st_dev)
        self.way_known = way is not None  # it held nothing but the way to bound folders
        self.skippable = self.way_known and _file_system(path) in _SIZE_COUNTS_ENTRIES
        self.folders += [_Folder(folder) for folder in way or ()]
        self.cleaned = self._signatures()

    def _signatures(self) -> list[tuple[object, ...]]:
        """Each folder's ``lstat`` and its notes' names: setting a note changes only a
        folder's ctime, which on tmpfs before Linux 6.13 may stay the same within a tick."""
        return [(_signature(os.lstat(folder.path)), os.listxattr(folder.path, follow_symlinks=False))
                for folder in self.folders]

    def clean(self) -> str | None:
        """Make it as it began, after a shard; what could not be done is said."""
        if self.skippable:
            with contextlib.suppress(OSError):  # a folder on the way made unsearchable
                if self._signatures() == self.cleaned:
                    return None
        info = os.lstat(self.path)
        if not self.folders[0].is_itself(info) or not stat.S_ISDIR(info.st_mode):
            return f"{self.path} was replaced"
        try:
            if not _empty(self.path):
                return f"{self.path} could not be emptied"
        except RecursionError:
            return f"{self.path} holds a tree too deep to remove"
        if self.way_known and not self._way_as_it_began():
            return f"the folders in {self.path} that lead to the lane's own were moved"
        for folder in self.folders:
            folder.set_back()
        self.cleaned = self._signatures()
        return None

    def _way_as_it_began(self) -> bool:
        way = _ways_to_bound_folders(self.path, self.folders[0].start.st_dev)
        if way is None or sorted(way) != sorted(folder.path for folder in self.folders[1:]):
            return False
        return all(folder.is_itself(os.lstat(folder.path)) for folder in self.folders[1:])


class _Folder:
    """A folder as the lane began: its ``lstat`` and the names of its extended attributes."""

    __slots__ = ("notes", "path", "start")

    def __init__(self, path: str) -> None:
        self.path = path
        self.start = os.lstat(path)
        self.notes = frozenset(os.listxattr(path, follow_symlinks=False))

    def is_itself(self, info: os.stat_result) -> bool:
        return (info.st_dev, info.st_ino) == (self.start.st_dev, self.start.st_ino)

    def set_back(self) -> None:
        """Its mode, notes and times as the lane began (a clean-up reads it, and may have
        made it searchable)."""
        if stat.S_IMODE(os.lstat(self.path).st_mode) != stat.S_IMODE(self.start.st_mode):
            os.chmod(self.path, stat.S_IMODE(self.start.st_mode))
        for note in set(os.listxattr(self.path, follow_symlinks=False)) - self.notes:
            os.removexattr(self.path, note, follow_symlinks=False)
        os.utime(self.path, ns=(self.start.st_atime_ns, self.start.st_mtime_ns), follow_symlinks=False)


def _ways_to_bound_folders(folder: str, device: int, nested: bool = False) -> list[str] | None:
    """The folders under ``folder``, on its own file system, that lead to a folder bound in
    from another; None if it holds anything else (an empty folder among them included: a
    clean-up would remove it)."""
    entries = _entries(folder)
    if nested and not entries:
        return None
    way: list[str] = []
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            return None
        if entry.stat(follow_symlinks=False).st_dev != device:
            continue  # bound in: not this folder's to clean
        below = _ways_to_bound_folders(entry.path, device, nested=True)
        if below is None:
            return None
        way += [entry.path, *below]
    return way


def _signature(info: os.stat_result) -> tuple[int, ...]:
    return (info.st_dev, info.st_ino, info.st_mode, info.st_uid, info.st_gid, info.st_size,
            info.st_atime_ns, info.st_mtime_ns, info.st_ctime_ns)


def _temporary_folders() -> list[_TemporaryFolder]:
    """The private temporary folders this sandbox has, as they are at the lane's start."""
    return [_TemporaryFolder(path) for path in _PRIVATE_TEMP if os.path.lexists(path)]


def _file_system(path: str) -> int:
    """The kind of file system ``path`` is on (``statfs``'s ``f_type``)."""
    answer = (ctypes.c_long * 16)()  # struct statfs, f_type first
    if _libc().statfs(path.encode(), ctypes.byref(answer)) != 0:
        raise OSError(ctypes.get_errno(), f"statfs({path}) failed")
    return answer[0]


def _clean_the_temporary_folders(folders: Sequence[_TemporaryFolder]) -> list[str]:
    """Make the private temporary folders as they began, and empty the IPC namespace; what
    could not be done (a tree nested too deep, a path too long, a note that stays) is said."""
    left = []
    for folder in folders:
        try:
            problem = folder.clean()
        except OSError as exc:
            problem = f"{folder.path} could not be made as new: {exc.strerror or exc}"
        if problem:
            left.append(problem)
    return left + _remove_ipc()


def _limits() -> dict[int, tuple[int, int]]:
    """Every resource limit this launcher has (read once, when it starts): all the kernel's,
    ``RLIMIT_LOCKS`` too, which Python's ``resource`` does not name."""
    return {limit: resource.getrlimit(limit) for limit in range(_RLIMIT_COUNT)}


def _restore_limits(saved: dict[int, tuple[int, int]]) -> list[str]:
    """Set back the resource limits a shard changed on this launcher (the next shard would
    inherit them); one lowered for good (a hard limit) is named."""
    left = []
    for limit, values in saved.items():
        if resource.getrlimit(limit) != values:
            try:
                resource.setrlimit(limit, values)
            except (OSError, ValueError):
                left.append(f"a shard lowered resource limit {limit} for good")
    return left


def _remove_ipc() -> list[str]:
    """Remove the System V shared memory, queues and semaphores left in this IPC namespace;
    what could not be is said."""
    left = []
    for table, count, remove in _ipc_kinds():
        if count() == 0:
            continue
        try:
            with open(f"/proc/sysvipc/{table}", encoding="ascii") as listing:
                rows = listing.read().splitlines()[1:]
        except OSError:
            left.append(f"its System V IPC objects ({table}) could not be listed")
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 1 and fields[1].isdigit():
                remove(int(fields[1]))
        if count() > 0:
            left.append(f"its System V IPC objects ({table}) could not be removed")
    return left


@functools.cache
def _ipc_kinds() -> tuple[tuple[str, Callable[[], int], Callable[[int], object]], ...]:
    """For each kind of System V IPC object: its ``/proc/sysvipc`` table, how many this
    namespace holds (-1 where the kernel will not say: ``*ctl(0, *_INFO)``), and how to remove
    one. Made once: they run after every shard."""
    libc = _libc()
    answer = (ctypes.c_int * 32)()  # the *_INFO struct's int fields
    where = ctypes.byref(answer)

    def counter(call: Callable[[], int], field: int) -> Callable[[], int]:
        return lambda: -1 if call() < 0 else answer[field]

    return (
        ("shm", counter(lambda: libc.shmctl(0, _SHM_INFO, where), 0), lambda i: libc.shmctl(i, _IPC_RMID, None)),
        ("msg", counter(lambda: libc.msgctl(0, _MSG_INFO, where), 0), lambda i: libc.msgctl(i, _IPC_RMID, None)),
        ("sem", counter(lambda: libc.semctl(0, 0, _SEM_INFO, where), 7), lambda i: libc.semctl(i, 0, _IPC_RMID)),
    )


def _empty(folder: str) -> bool:
    """Remove what ``folder`` holds on its own file system; a folder bound in from the host (a
    lane's own folder, a Python environment) is another mount, and is left alone, as are the
    folders that lead to one. A folder a shard made unreadable or unwritable is made its
    owner's again. False if something is left that should not be."""
    try:
        device = os.lstat(folder).st_dev
        entries = _entries(folder)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    emptied = True
    for entry in entries:
        try:
            info = _lstat(folder, entry.path)
            if stat.S_ISDIR(info.st_mode):
                if info.st_dev == device:
                    emptied = _empty(entry.path) and emptied
                    emptied = _remove_folder(folder, entry.path) and emptied
            else:
                _unlink(folder, entry.path)
        except FileNotFoundError:
            continue
        except OSError:
            emptied = False
    return emptied


def _lstat(folder: str, path: str) -> os.stat_result:
    """``lstat(path)``, ``folder`` made searchable first if a shard locked it."""
    try:
        return os.lstat(path)
    except PermissionError:
        os.chmod(folder, 0o700)
        return os.lstat(path)


def _remove_folder(folder: str, path: str) -> bool:
    """Remove the emptied folder ``path`` from ``folder`` (made writable first if a shard
    locked it); one that leads to a mount stays, as it must."""
    try:
        try:
            os.rmdir(path)
        except PermissionError:
            os.chmod(folder, 0o700)
            os.rmdir(path)
    except OSError as exc:
        return exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY)
    return True


def _entries(folder: str) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(folder))
    except PermissionError:
        os.chmod(folder, 0o700)
        return list(os.scandir(folder))


def _unlink(folder: str, path: str) -> None:
    try:
        os.unlink(path)
    except PermissionError:
        os.chmod(folder, 0o700)
        os.unlink(path)


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
    if len(argv) != 3 or not all(arg.isdigit() for arg in argv):
        print("usage: sandbox_launcher SOCKET_FD STDOUT_FD STDERR_FD", file=sys.stderr)
        return 2
    if (os.getpid(), os.getppid()) != (2, 1):
        # Outside a sandbox's own PID namespace (bwrap's init is 1, its command 2), the
        # clean-up after a shard would empty this machine's /tmp and kill what it can.
        print("sandbox_launcher runs only as the command of a sandbox a member made", file=sys.stderr)
        return 2
    _prctl(_PR_SET_DUMPABLE, 0)  # no shard may ptrace it or read its memory
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    _enter_a_nested_domain()
    sock = socket.socket(fileno=int(argv[0]))
    sock.set_inheritable(False)
    stdout, stderr = int(argv[1]), int(argv[2])
    for fd in (stdout, stderr):
        os.set_inheritable(fd, False)  # a shard gets them as its stdout and stderr only
    Launcher(sock, stdout, stderr).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
