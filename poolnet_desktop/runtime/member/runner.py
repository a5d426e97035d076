"""Run one shard on this member: a subprocess in its own folder, watched, capped and killable.

``ShardRunner(spec, on_output).run()`` starts the command, streams stdout and stderr to the
callback as they come, enforces the timeout and the memory limit, and returns a
``ShardResult`` that says how it ended and which output files it left. It never raises for
anything the shard did: a program that does not exist ends as reason ``"error"``.

Every shard runs in a new session (POSIX) or process group (Windows), so that killing it
kills its whole tree; when the main process exits, whatever it left running in its group is
killed too, so that no stray grandchild keeps the pipes (or the GPU) busy.

A running shard can be suspended and resumed (``suspend``/``resume``: SIGSTOP and SIGCONT to
its whole tree, the platform's suspend on Windows) when its owner's computer pauses sharing,
as BOINC does; its timeout does not count while it is suspended.

Per-shard overhead is kept low because a pool may push thousands of tiny shards: the timeout
is a loop timer, the memory watch runs only when a limit is set, and the process is started
and reaped the same cheap way on every event loop (see ``runtime/member/shard_process.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from poolnet_desktop.core.manifest import PYTHON_PLACEHOLDER, FileEntry
from poolnet_desktop.core.paths import UnsafePathError, safe_relative_path
from poolnet_desktop.core.task_protocol import Reason, ShardResult
from poolnet_desktop.runtime.member.landlock import scopes_supported
from poolnet_desktop.runtime.member.process_table import ProcessTable
from poolnet_desktop.runtime.member.sandbox import KEPT_LOCALE_VARIABLES, SCRUBBED_PATH, Sandbox, temporary_files_size
from poolnet_desktop.runtime.member.seccomp_filter import program_pipe
from poolnet_desktop.runtime.member.shard_process import (
    PinError,
    ShardProcess,
    Stream,
    start_shard_process,
)
from poolnet_desktop.runtime.member.task_sandbox import RequestTooLarge, SandboxEnded, TaskSandbox
from poolnet_desktop.runtime.net.task_transfer import file_sha256, open_beneath

OutputCallback = Callable[[Stream, bytes], Awaitable[None]]

# A frozen (PyInstaller) build has no separate interpreter: its own executable runs Python
# code when given this flag. The app's entry point must honour it before anything else.
FROZEN_PYTHON_FLAG = "--poolnet-run-python"
DEFAULT_OUTPUT_CAP = 1024 * 1024
# The wire caps a result's message; longer ones are cut here rather than refused there.
MAX_MESSAGE = 4000
# After the main process exits, how long its pipes may stay open (held by an escaped
# descendant) before the runner stops reading them.
_PIPE_GRACE = 2.0


@dataclass(frozen=True, slots=True)
class ShardSpec:
    """What to run. The caller has already placed the shard's files in ``workdir``.

    ``command`` is an argument list, or with ``shell=True`` one command line (a list is then
    joined with shell quoting). An argument that is exactly ``{python}`` becomes ``python``
    (a task's environment) or else ``python_command()``; in a shell line ``{python}`` is
    replaced by its quoted form.
    ``gpus`` are the GPU indices this shard may see (empty hides every GPU); ``cpu_cores``
    the cores it is pinned to (None: no pinning); ``memory_limit`` bytes of resident memory
    for the whole process tree; ``timeout`` seconds of wall time. With a ``sandbox`` the
    command runs inside it and inherits nothing of this process's environment: in a lane of
    its task (``task_sandbox``: made already, ``workdir`` is the lane's), else in a sandbox of
    its own.
    """

    command: Sequence[str] | str
    workdir: Path
    shard: int = 0
    shards: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    shell: bool = False
    gpus: Sequence[int] = ()
    cpu_cores: Sequence[int] | None = None
    memory_limit: int | None = None
    timeout: float | None = None
    outputs: Sequence[str] = ()
    output_cap: int = DEFAULT_OUTPUT_CAP
    memory_poll_interval: float = 0.1
    sandbox: Sandbox | None = None
    task_sandbox: TaskSandbox | None = None
    # The interpreter ``{python}`` means (a task's environment), and the folders it needs
    # bound read-only in the sandbox; None: PoolNet's own.
    python: Path | None = None
    python_visible: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.command, str) and not self.shell:
            raise ValueError("a command given as one string needs shell=True; else pass a list")
        if not self.command:
            raise ValueError("empty command")
        if not isinstance(self.command, str):
            for arg in self.command:
                if PYTHON_PLACEHOLDER in arg and arg != PYTHON_PLACEHOLDER and not self.shell:
                    raise ValueError(f"{PYTHON_PLACEHOLDER} must be a whole argument: {arg!r}")
        if not 0 <= self.shard < self.shards:
            raise ValueError(f"shard {self.shard} outside 0..{self.shards - 1}")
        for bad in ("timeout", "memory_limit"):
            value = getattr(self, bad)
            if value is not None and value <= 0:
                raise ValueError(f"{bad} must be positive, got {value!r}")
        if self.output_cap < 0 or self.memory_poll_interval <= 0:
            raise ValueError("output_cap must be >= 0 and memory_poll_interval > 0")
        if any(not isinstance(g, int) or g < 0 for g in self.gpus):
            raise ValueError(f"GPU indices must be non-negative integers: {list(self.gpus)!r}")
        for pattern in self.outputs:
            safe_relative_path(pattern)


def python_command() -> list[str]:
    """The argv prefix that runs a Python script with the interpreter PoolNet itself runs on.

    ``sys.executable`` is the real interpreter (a venv's python, never the pyenv shim that
    costs 0.1 s per start). In a frozen build the app's own executable is started with
    ``FROZEN_PYTHON_FLAG``, and its entry point must then act as ``python``.
    """
    if getattr(sys, "frozen", False):
        return [sys.executable, FROZEN_PYTHON_FLAG]
    return [sys.executable]


def build_argv(spec: ShardSpec) -> list[str]:
    """The shard's command as an argv: ``{python}`` expanded, a shell line wrapped in the
    platform shell. (A sandbox of its own wraps it when it starts: ``ShardRunner._start``.)"""
    python = [str(spec.python)] if spec.python is not None else python_command()
    if spec.shell:
        line = spec.command if isinstance(spec.command, str) else shlex.join(spec.command)
        line = line.replace(PYTHON_PLACEHOLDER, shlex.join(python))
        if os.name == "nt":
            return [os.environ.get("COMSPEC", "cmd.exe"), "/c", line]
        return ["/bin/sh", "-c", line]
    argv: list[str] = []
    for arg in spec.command:
        if arg == PYTHON_PLACEHOLDER:
            argv.extend(python)
        else:
            argv.append(arg)
    return argv


# A shard's memory is measured again after at least this many times the last measurement took.
MEASURING_SHARE_INVERSE = 10


@functools.cache
def _base_environment() -> dict[str, str]:
    """This process's environment, read once: copying ``os.environ`` decodes every variable,
    which cost a quarter of the runner's own time per shard. Shards therefore see the
    environment as it was at the first shard; per-task variables go in ``ShardSpec.env``."""
    return dict(os.environ)


def build_env(spec: ShardSpec, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The shard's environment: ``base`` (default: this process's), the task's, PoolNet's.

    PoolNet's variables come last so that a task cannot fake its shard number or unhide a GPU.
    ``PYTHONUNBUFFERED`` defaults to 1 so that a Python shard's prints stream live. A
    sandboxed shard's base is ``scrubbed_environment``: no token, key path or agent socket
    of the member's process leaks into untrusted code.
    """
    if base is None:
        base = _base_environment() if spec.sandbox is None else scrubbed_environment(spec.workdir)
    env = dict(base)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(spec.env)
    env["POOLNET_SHARD"] = str(spec.shard)
    env["POOLNET_SHARDS"] = str(spec.shards)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in spec.gpus)
    return env


def scrubbed_environment(workdir: Path) -> dict[str, str]:
    """The little a sandboxed shard inherits: a system PATH, its folder as HOME, the
    sandbox's private /tmp, and the locale."""
    base = _base_environment()
    env = {"PATH": SCRUBBED_PATH, "HOME": str(workdir), "TMPDIR": "/tmp"}
    env.update({name: base[name] for name in KEPT_LOCALE_VARIABLES if name in base})
    return env


class ShardRunner:
    """Runs one ``ShardSpec`` once. Call ``run()``; ``cancel()`` may come at any time.

    Output reaches ``on_output`` in the order it arrived, stdout and stderr interleaved, from
    one delivery task; ``run()`` returns only after the last chunk was delivered.
    """

    def __init__(
        self,
        spec: ShardSpec,
        on_output: OutputCallback | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        # Where the shard's files are once it ended (a lane's shard's are moved out of it).
        self.workdir = spec.workdir
        self._sealed_by: TaskSandbox | None = None  # a lane whose folder a shard ran in alone
        self._own_sandbox = False  # started in a sandbox of its own (no lane's)
        self._on_output = on_output
        self._clock = clock
        self._process: ShardProcess | None = None
        self._kill_reason: Reason | None = None
        self._message = ""
        self._cancel_requested = False
        self._ran = False
        self._counts = {"stdout": 0, "stderr": 0}
        self._truncated = False
        self._peak_memory = 0
        self._queue: asyncio.Queue[tuple[Stream, bytes] | None] | None = None
        self._deliverer: asyncio.Task[None] | None = None
        self._output_error = ""
        self._suspended = False
        self._timer: asyncio.TimerHandle | None = None
        self._timeout_left = spec.timeout

    @property
    def pid(self) -> int | None:
        """The main process's id once started (its process group id too, on POSIX); None
        before, and for a lane's shard once it ended."""
        return self._process.pid if self._process is not None else None

    def cancel(self) -> None:
        """Kill the shard's whole tree now; ``run()`` then returns reason ``"cancelled"``.

        Safe before the start (the shard then never starts) and after the end (no effect).
        """
        self._cancel_requested = True
        self._kill("cancelled", "cancelled on request")

    def stop_for_memory(self, message: str) -> None:
        """Kill the shard's whole tree now; ``run()`` then returns reason ``"memory"`` with
        ``message`` (its machine ran short: ``runtime/member/memory_guard.py``)."""
        self._kill("memory", message)

    def stop_for_processes(self, message: str) -> None:
        """Kill the shard's whole tree now; ``run()`` then returns reason ``"error"`` with
        ``message`` (it crowded the machine's processes: ``runtime/member/process_guard.py``)."""
        self._kill("error", message)

    def threads_in_use(self, table: ProcessTable | None = None) -> int:
        """How many processes and threads the shard's tree runs (each process is at least
        one thread: the kernel counts both against a process limit), as ``table`` has them,
        else as /proc has them now (Linux; blocking: call it off the loop); 0 before its
        start and after its end."""
        process = self._process
        if process is None or process.returncode is not None:
            return 0
        return process.tree_threads(table or ProcessTable.read())

    def memory_in_use(self) -> int:
        """Resident bytes of the shard's tree now; 0 before its start and after its end.
        Blocking (it reads /proc): call it off the loop."""
        process = self._process
        if process is None or process.returncode is not None:
            return 0
        return self._memory_of(process)

    def _memory_of(self, process: ShardProcess) -> int:
        """The tree's resident bytes and, in a sandbox of its own, what its temporary folders
        hold (a lane's process counts its lane's itself). Blocking."""
        used = process.tree_memory()
        if self._own_sandbox and process.pid is not None:
            with contextlib.suppress(psutil.Error, IndexError):  # bwrap's child: the sandbox's init
                used += temporary_files_size(psutil.Process(process.pid).children()[0].pid)
        return used

    def suspend(self) -> None:
        """Stop the shard's whole tree where it stands, and its timeout with it; a shard not
        started yet is suspended as soon as it starts. ``resume()`` undoes it."""
        if self._suspended:
            return
        self._suspended = True
        process = self._process
        if process is not None and process.returncode is None:
            process.suspend_tree(True)
            self._hold_timeout()

    def resume(self) -> None:
        """Let a suspended shard run on; its timeout counts again from where it stopped."""
        if not self._suspended:
            return
        self._suspended = False
        process = self._process
        if process is not None and process.returncode is None:
            process.suspend_tree(False)
            self._arm_timeout()

    def _arm_timeout(self) -> None:
        if self._timeout_left is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + self._timeout_left, self._timed_out)

    def _hold_timeout(self) -> None:
        """Keep what is left of the timeout while the shard does not run."""
        if self._timer is not None:
            self._timeout_left = max(0.0, self._timer.when() - asyncio.get_running_loop().time())
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._kill("timeout", f"timed out after {self.spec.timeout} s")

    async def run(self) -> ShardResult:
        """Start, watch and reap the shard; always returns an outcome (runs once only)."""
        if self._ran:
            raise RuntimeError("a ShardRunner runs once; make a new one")
        self._ran = True
        started = self._clock()
        if self._cancel_requested:
            return self._outcome("cancelled", None, started, message="cancelled before start")
        asked = asyncio.get_running_loop().time()
        try:
            process = await self._start()
        except PinError as exc:
            return self._outcome("error", None, started, message=str(exc))
        except SandboxEnded as exc:
            return self._outcome("error", None, started, message=exc.strerror or str(exc))
        except (OSError, ValueError) as exc:
            return self._outcome("error", None, started, message=_start_error(self.spec, exc))
        self._process = process
        if self._timeout_left is not None and not self._suspended:
            # The timeout counts from the start request: a lane answers it only once the shard
            # has run for a while (its launcher's STARTED_DELAY), or later if the shard hinders it.
            self._timeout_left = max(0.0, self._timeout_left - (asyncio.get_running_loop().time() - asked))
        try:
            return await self._watch(process, started)
        finally:
            if process.returncode is None:  # run() itself was cancelled
                process.kill_tree()
            process.close()
            if self._deliverer is not None and not self._deliverer.done():
                self._deliverer.cancel()

    async def _start(self) -> ShardProcess:
        spec = self.spec
        cores = spec.cpu_cores if hasattr(os, "sched_setaffinity") else None
        env = build_env(spec)
        if spec.task_sandbox is not None:
            try:
                return await spec.task_sandbox.start(build_argv(spec), env, self._received, cores)
            except RequestTooLarge:  # a huge command line: a sandbox of its own, in the lane's folder
                self._sealed_by = spec.task_sandbox
        if spec.sandbox is None:
            return await start_shard_process(build_argv(spec), spec.workdir, env, self._received, cores)
        self._own_sandbox = True
        with program_pipe() as seccomp:
            argv = spec.sandbox.wrap(build_argv(spec), spec.workdir, spec.gpus, spec.python_visible, seccomp)
            return await start_shard_process(argv, spec.workdir, env, self._received, cores, scopes_supported(),
                                             pass_fds=() if seccomp is None else (seccomp,))

    async def _watch(self, process: ShardProcess, started: float) -> ShardResult:
        if self._cancel_requested:  # cancel() arrived while the process was being created
            self._kill("cancelled", "cancelled on request")
        if self.spec.cpu_cores is not None and not hasattr(os, "sched_setaffinity") and process.pid:
            self._pin_after_start(process.pid, self.spec.cpu_cores)
        if self._suspended:  # suspend() arrived before the process existed
            process.suspend_tree(True)
        else:
            self._arm_timeout()
        watcher = None
        if self.spec.memory_limit is not None:
            watcher = asyncio.ensure_future(self._watch_memory(process, self.spec.memory_limit))
        try:
            await process.exited
        finally:
            if self._timer is not None:
                self._timer.cancel()
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
        process.end_group()  # what the shard left running dies with it (and frees the pipes)
        if not process.closed.done():
            # A timer, not wait_for: this runs for every shard and wait_for costs a task.
            grace = asyncio.get_running_loop().call_later(_PIPE_GRACE, process.give_up_on_pipes)
            if not await process.closed:
                self._message = self._message or "a descendant kept the output pipes open"
            grace.cancel()
        if self._queue is not None:
            self._queue.put_nowait(None)
            assert self._deliverer is not None
            await self._deliverer
        exit_code = process.returncode
        reason: Reason
        if self._kill_reason is not None:
            reason = self._kill_reason
        else:
            reason = "succeeded" if exit_code == 0 else "failed"
        outputs: list[FileEntry] = []
        refused: list[str] = []
        if self._sealed_by is not None:
            self.workdir, note = await self._sealed_by.seal()
        else:
            self.workdir, note = await process.settle(self.workdir, keep_files=bool(self.spec.outputs))
        self._message = "; ".join(m for m in (self._message, note) if m)
        if self.spec.outputs:
            outputs, refused = await asyncio.to_thread(collect_outputs, self.workdir, self.spec.outputs)
        # Said in the message too: it is what the submitter sees of the shard (poolnet tasks ID).
        not_kept = f"outputs not kept: {', '.join(refused)}" if refused else ""
        message = "; ".join(m for m in (self._message, self._output_error, not_kept) if m)
        return self._outcome(
            reason, exit_code, started, outputs=outputs, refused=refused, message=message
        )

    def _outcome(
        self, reason: Reason, exit_code: int | None, started: float, **extra: Any
    ) -> ShardResult:
        if len(extra.get("message", "")) > MAX_MESSAGE:
            extra["message"] = extra["message"][: MAX_MESSAGE - 1] + "…"
        return ShardResult(
            reason=reason,
            exit_code=exit_code,
            started=started,
            ended=self._clock(),
            stdout_bytes=self._counts["stdout"],
            stderr_bytes=self._counts["stderr"],
            truncated=self._truncated,
            peak_memory=self._peak_memory,
            **extra,
        )

    def _kill(self, reason: Reason, message: str) -> None:
        """Record why (the first reason wins) and kill the tree, if it is still running."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        if self._kill_reason is None:
            self._kill_reason = reason
            self._message = message
        process.kill_tree()

    def _pin_after_start(self, pid: int, cores: Sequence[int]) -> None:
        """Where affinity cannot be inherited from the spawning thread (Windows: psutil),
        pin the main process right after its start; where the OS has no affinity (macOS),
        run unpinned and say so."""
        if not hasattr(psutil.Process, "cpu_affinity"):
            self._message = "CPU pinning is not supported on this OS; ran unpinned"
            return
        try:
            psutil.Process(pid).cpu_affinity(list(cores))
        except psutil.NoSuchProcess:
            pass  # already finished: nothing left to pin
        except (OSError, ValueError, psutil.Error) as exc:
            self._kill("error", f"cannot pin to CPU cores {list(cores)}: {exc}")

    def _received(self, name: Stream, chunk: bytes) -> None:
        """Count a chunk from a pipe and queue what is under the cap (then one marker)."""
        seen = self._counts[name]
        self._counts[name] = seen + len(chunk)
        cap = self.spec.output_cap
        if seen >= cap or self._on_output is None:
            return  # keep draining, so the shard never blocks on a full pipe
        if seen + len(chunk) > cap:
            self._truncated = True
            chunk = chunk[: cap - seen] + (
                f"\n[poolnet: output truncated after {cap} bytes]\n".encode()
            )
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._deliverer = asyncio.ensure_future(self._deliver(self._queue, self._on_output))
        self._queue.put_nowait((name, chunk))

    async def _deliver(
        self, queue: asyncio.Queue[tuple[Stream, bytes] | None], callback: OutputCallback
    ) -> None:
        """Await the callback for each chunk in arrival order (memory bounded by the caps).

        A failing callback (say, the coordinator link dropped) must not fail the shard: the
        rest of the output is dropped and the outcome's message says why.
        """
        failed = False
        while (item := await queue.get()) is not None:
            if failed:
                continue
            try:
                await callback(*item)
            except Exception as exc:  # noqa: BLE001 - any callback failure ends delivery only
                failed = True
                self._output_error = f"output delivery stopped: {exc!r}"

    async def _watch_memory(self, process: ShardProcess, limit: int) -> None:
        """Sum the tree's resident memory a few times a second; kill it past ``limit``. A tree
        of thousands of processes takes a while to walk: the member then spends at most a
        tenth of a core on it (an attacker's review: 3,000 processes, 0.22 s a walk)."""
        clock = asyncio.get_running_loop().time
        while True:
            began = clock()
            used = await asyncio.to_thread(self._memory_of, process)
            self._peak_memory = max(self._peak_memory, used)
            if used > limit:
                self._kill("memory", f"used {used} bytes of memory, over the limit of {limit}")
                return
            await asyncio.sleep(max(self.spec.memory_poll_interval, MEASURING_SHARE_INVERSE * (clock() - began)))


def _start_error(spec: ShardSpec, exc: Exception) -> str:
    if not spec.workdir.is_dir():
        return f"working folder {spec.workdir} does not exist"
    program = "bwrap" if spec.sandbox is not None and spec.task_sandbox is None else build_argv(spec)[0]
    if isinstance(exc, FileNotFoundError):
        return f"cannot start {program!r}: program not found"
    if isinstance(exc, PermissionError):
        return f"cannot start {program!r}: permission denied"
    return f"cannot start {program!r}: {exc}"


def collect_outputs(workdir: Path, patterns: Sequence[str]) -> tuple[list[FileEntry], list[str]]:
    """Files under ``workdir`` matching ``patterns``, hashed; and why others were refused.

    Only regular files count, reached with no link on the way (``open_beneath``: what is sent
    later is read the same way): a symlink, or a symlinked folder on the way, is refused,
    never read. Blocking: call it off the loop.
    """
    root = workdir.resolve()
    found: dict[str, FileEntry] = {}
    refused: list[str] = []
    for pattern in patterns:
        for match in sorted(workdir.glob(str(safe_relative_path(pattern)))):
            rel = match.relative_to(workdir).as_posix()
            if rel in found:
                continue
            try:
                safe_relative_path(rel)
                opened = open_beneath(workdir, rel)
            except UnsafePathError as exc:
                refused.append(f"{rel}: {exc}")
                continue
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    inside = match.resolve().is_relative_to(root)
                    refused.append(f"{rel}: " + ("is a link; outputs are files" if inside
                                                  else "points outside the working folder"))
                continue  # a folder, a device, or gone meanwhile
            size, digest = file_sha256(opened)
            found[rel] = FileEntry(path=rel, size=size, sha256=digest)
    return list(found.values()), refused
