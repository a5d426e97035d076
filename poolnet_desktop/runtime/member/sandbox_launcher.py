"""The program that runs inside a task's sandbox and starts that task's shards there.

Making a bubblewrap sandbox costs 2-3.5 ms of this machine's CPU (namespaces, mounts); a
shard of ``true`` costs 0.5 ms. So a member makes one sandbox per task it runs (see
``runtime/member/task_sandbox.py``), with this launcher inside, and asks it over a socket
to start each shard: the sandbox is paid once per task, not once per shard.

The member sends ``start`` requests on a ``SOCK_SEQPACKET`` socket (one JSON message each, the
shard's stdout and stderr write ends attached); the launcher answers ``started`` with a pidfd
of the shard (the member learns its pid from it, and watches and kills it as any shard),
``failed`` with the errno when it could not start, and ``exited`` with its exit code. A shard
is reaped only after the member said ``watching`` (it has read the pid): the pidfd of a reaped
process names no pid any more.

Each shard is a child subreaper: whatever it starts, even a daemon that forks twice and
leaves its session, stays in its process tree while it runs, so the member's suspend, memory
watch and kill reach all of it, as they did in a sandbox of its own. What it leaves behind
when it ends is reparented to the launcher (a subreaper too), which kills it. Each shard gets
a private ``TMPDIR`` under the sandbox's ``/tmp``, removed when it ends.

The launcher is not trusted by the member: a shard of the same task may kill or tamper with it,
which affects that task's shards only (the member validates every message and fails them).
It cannot be ptraced (not dumpable). Standard library only: the member's interpreter runs it
isolated (``-I``) from this file's text, read from a pipe (``BOOTSTRAP``), or as a module in a
frozen build.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import selectors
import shutil
import signal
import socket
import sys

READY = "ready"
START = "start"
STARTED = "started"
WATCHING = "watching"
FAILED = "failed"
EXITED = "exited"
# Larger than any request the member sends (it checks); a bigger one is refused, not cut.
MAX_MESSAGE = 1 << 20

_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
_SHARD_TEMP_ROOT = "/tmp"


# ``python -I -c BOOTSTRAP CODE_FD SOCKET_FD``: the launcher's text comes through a pipe, so that
# the sandbox needs no view of PoolNet's files and ``ps`` shows a short command.
BOOTSTRAP = (
    "import os,sys;f=os.fdopen(int(sys.argv[1]),encoding='utf-8');c=f.read();f.close();"
    "sys.argv=['poolnet-sandbox-launcher',sys.argv[2]];"
    "exec(compile(c,'sandbox_launcher.py','exec'),{'__name__':'__main__'})"
)


def encode(message: dict[str, object]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


class Launcher:
    """Serves one member's socket until it closes; then every shard still running is killed
    (the sandbox's init kills what is left once the launcher is gone)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.shards: dict[int, _Shard] = {}  # by pid
        self.selector = selectors.DefaultSelector()
        self.wake_read, wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(wake_write, False)
        # A handler, so that the wakeup fd hears of each child's end (the children reset it).
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_write)

    def serve(self) -> None:
        self.selector.register(self.sock, selectors.EVENT_READ, self._request)
        self.selector.register(self.wake_read, selectors.EVENT_READ, self._children)
        self._send({"op": READY})
        while True:
            for key, _ in self.selector.select():
                if key.data() is False:
                    return

    def _request(self) -> bool:
        try:
            data, fds, flags, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 2)
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
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            request_id = request.get("id") if isinstance(request, dict) else None
            self._send({"op": FAILED, "id": request_id, "errno": errno.EINVAL, "error": str(exc)})
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def _start(self, request: dict[str, object], stdout: int, stderr: int) -> None:
        request_id = int(request["id"])  # type: ignore[call-overload]
        argv = [str(a) for a in request["argv"]]  # type: ignore[attr-defined]
        env = {str(k): str(v) for k, v in request["env"].items()}  # type: ignore[attr-defined]
        cwd = str(request["cwd"])
        cores = request.get("cores")
        if not argv:
            raise ValueError("an empty command")
        temp = os.path.join(_SHARD_TEMP_ROOT, f"shard-{request_id}")
        try:
            os.makedirs(temp, mode=0o700, exist_ok=True)
            env["TMPDIR"] = temp
            pid = _spawn(argv, cwd, env, stdout, stderr, cores if isinstance(cores, list) else None)
        except OSError as exc:
            shutil.rmtree(temp, ignore_errors=True)
            self._send({"op": FAILED, "id": request_id, "errno": exc.errno or errno.EIO,
                        "error": exc.strerror or str(exc)})
            return
        self.shards[pid] = _Shard(request_id, temp)
        pidfd = os.pidfd_open(pid)
        try:
            self._send({"op": STARTED, "id": request_id}, [pidfd])
        finally:
            os.close(pidfd)

    def _watched(self, request_id: int) -> None:
        for pid, shard in self.shards.items():
            if shard.request_id == request_id:
                shard.watched = True
                self._reap(pid)
                return

    def _children(self) -> bool:
        """A child ended: report the shards that did, kill what ended shards left behind."""
        while True:
            try:
                os.read(self.wake_read, 4096)
            except BlockingIOError:
                break
        for pid in [pid for pid, shard in self.shards.items() if shard.watched]:
            self._reap(pid)
        self._kill_left_behind()
        return True

    def _reap(self, pid: int) -> None:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 255 << 8
        if done == 0:
            return
        shard = self.shards.pop(pid)
        shutil.rmtree(shard.temp, ignore_errors=True)
        self._send({"op": EXITED, "id": shard.request_id, "code": os.waitstatus_to_exitcode(status)})

    def _kill_left_behind(self) -> None:
        """SIGKILL and reap this launcher's children that are not shards: what an ended shard
        left running was reparented here. Their own children come here in turn, and go too."""
        me = os.getpid()
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) in self.shards:
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as stat:
                    parent = int(stat.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent == me:
                try:
                    os.kill(int(name), signal.SIGKILL)
                    os.waitpid(int(name), os.WNOHANG)
                except (ProcessLookupError, ChildProcessError):
                    pass

    def _send(self, message: dict[str, object], fds: list[int] | None = None) -> None:
        try:
            socket.send_fds(self.sock, [encode(message)], fds or [])
        except OSError:
            pass  # the member is gone; the next read sees it


class _Shard:
    """A running shard: its request, its private temporary folder, and whether the member
    has its pid (only then may it be reaped)."""

    __slots__ = ("request_id", "temp", "watched")

    def __init__(self, request_id: int, temp: str) -> None:
        self.request_id = request_id
        self.temp = temp
        self.watched = False


def _spawn(
    argv: list[str], cwd: str, env: dict[str, str], stdout: int, stderr: int, cores: list[int] | None
) -> int:
    """Fork and exec a shard; returns its pid once it runs the program, raises ``OSError``
    if it could not. A plain fork, not ``subprocess`` (whose ``preexec_fn`` cost 1.2 ms more
    per shard): the child must make itself a subreaper between fork and exec."""
    report_read, report_write = os.pipe()  # close-on-exec: EOF at exec, else why it failed
    pid = os.fork()
    if pid == 0:  # the child: only async-signal-safe enough steps, then exec or _exit
        try:
            os.close(report_read)
            _prctl(_PR_SET_CHILD_SUBREAPER, 1)
            os.setsid()
            if cores:
                os.sched_setaffinity(0, cores)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(stdout, 1)
            os.dup2(stderr, 2)
            os.chdir(cwd)
            os.execvpe(argv[0], argv, env)
        except OSError as exc:
            os.write(report_write, f"{exc.errno or errno.EIO}:{exc.strerror or exc}".encode())
        except BaseException as exc:  # noqa: BLE001 - anything else still ends this child
            os.write(report_write, f"{errno.EINVAL}:{exc}".encode())
        finally:
            os._exit(127)
    os.close(report_write)
    with os.fdopen(report_read, "rb") as report:
        failure = report.read()
    if failure:
        os.waitpid(pid, 0)
        code, _, why = failure.decode(errors="replace").partition(":")
        raise OSError(int(code) if code.isdigit() else errno.EIO, why)
    return pid


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: sandbox_launcher SOCKET_FD", file=sys.stderr)
        return 2
    _prctl(_PR_SET_DUMPABLE, 0)  # no shard may ptrace it or read its memory
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    sock = socket.socket(fileno=int(argv[0]))
    sock.set_inheritable(False)
    Launcher(sock).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
