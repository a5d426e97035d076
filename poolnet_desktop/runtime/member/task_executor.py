"""The member's side of tasks: run assigned shards, stream their output, return their results.

Each shard runs with ``runtime.member.runner.ShardRunner`` in its own working folder under the
member's work root (``runtime.datadir.work_root``: in the user's cache, outside the data
folder, so a shard never sits next to the keys). A sandboxed shard of a task of several shards
runs in a lane when one is free (``runtime.member.task_sandbox``: a sandbox kept for the task
and reused by its shards one at a time), and its folder is moved out of the lane when it ends.
The folder holds copies of its input files taken
from a content-addressed cache (``DATA/cache/SHA256``): a member fetches each input once (``fetch_blobs``), however many
shards use it. Copies rather than hard links, so a shard that rewrites an input in place
cannot corrupt the cache for the next one.

Shards may be assigned ahead: one that names another (``Assignment.after``) waits until that
one ends and then runs in its place (``core.scheduler`` keeps it within what that one held),
so the next shard starts without waiting for the coordinator.

Results go out in batches (``shards_finished``): at once when no shard waits here any more
(the coordinator must refill this member, or a submitter is waiting for the last result),
otherwise once as many results are unsent as shards still wait, or after ``RESULT_DELAY``.
A result's folder is kept until the coordinator acknowledges it (``shard_ack``). When the link
is down, or drops before the ack, the result goes to the durable ``Spool`` and is sent again
after the next ``welcome``, right after a ``shards_report`` telling the coordinator what this
member still runs or holds. Delivery is at least once; the coordinator records each attempt
once.

``shard_started`` is sent only for shards still running after ``STARTED_DELAY``: a quick shard
reports its result alone, which halves the messages for a stream of tiny shards.

When the owner's computer pauses sharing (``set_paused``), running shards are suspended where
they stand and resumed after, as BOINC does; the member keeps its link and heartbeats, so the
coordinator keeps them placed here rather than taking them as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poolnet_desktop.core.environment import DEFAULT_CACHE_LIMIT, is_wheel_path
from poolnet_desktop.core.manifest import FileEntry, expand_command
from poolnet_desktop.core.matrix import param_env, shard_values
from poolnet_desktop.core.sandbox_state import (
    SandboxState,
    describe,
    sandbox_state,
    takes_tasks,
)
from poolnet_desktop.core.task_protocol import (
    AssignShards,
    FetchBlobs,
    FinishedShard,
    Reason,
    ShardAck,
    ShardCancel,
    ShardOutput,
    ShardRef,
    ShardResult,
    ShardsFinished,
    ShardsReport,
    ShardStarted,
    result_transfer_id,
)
from poolnet_desktop.core.transfer import TransferError, decode_chunk
from poolnet_desktop.core.units import BYTES_PER_MB
from poolnet_desktop.core.wire import ProtocolError
from poolnet_desktop.runtime.datadir import environments_root, work_root
from poolnet_desktop.runtime.member.agent import Agent, AgentState
from poolnet_desktop.runtime.member.environments import (
    EnvironmentCache,
    ReadyEnvironment,
)
from poolnet_desktop.runtime.member.folders import remove_tree
from poolnet_desktop.runtime.member.landlock import scopes_supported
from poolnet_desktop.runtime.member.lane_pool import LanePool, launcher_command
from poolnet_desktop.runtime.member.memory_guard import MemoryGuard
from poolnet_desktop.runtime.member.orphans import RUN_VARIABLE, reap_and_stamp
from poolnet_desktop.runtime.member.process_guard import ProcessGuard
from poolnet_desktop.runtime.member.runner import (
    ShardRunner,
    ShardSpec,
    Stream,
)
from poolnet_desktop.runtime.member.sampler import ResourceSampler
from poolnet_desktop.runtime.member.sandbox import (
    Sandbox,
    SandboxSettings,
    hidden_folders,
    probe,
    process_limit,
    process_room,
)
from poolnet_desktop.runtime.member.shard_watch import ShardGuard
from poolnet_desktop.runtime.member.spool import Spool, SpoolEntry, SpoolError
from poolnet_desktop.runtime.member.task_sandbox import TaskSandbox
from poolnet_desktop.runtime.net.task_transfer import (
    FileReceiver,
    Outgoing,
    expected_files,
    send_files,
)

log = logging.getLogger(__name__)

STARTED_DELAY = 0.2
RESULT_DELAY = 0.05
MAX_BLOB = 64 * 1024**3
# Results per ``shards_finished``, well under the coordinator's 1 MiB message cap.
RESULT_BATCH_BYTES = 256 * 1024


@dataclass(slots=True)
class _Job:
    """An attempt this member holds: waiting behind ``after``, or running."""

    ref: ShardRef
    assign: AssignShards
    gpus: list[int]
    after: ShardRef | None = None
    runner: ShardRunner | None = None
    cancelled: bool = False


@dataclass(slots=True)
class _Delivered:
    """A result sent but not yet acknowledged: its folder stays until then."""

    ref: ShardRef
    outcome: ShardResult
    workdir: Path


@dataclass(slots=True)
class _BlobFetch:
    receiver: FileReceiver
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def _key(ref: ShardRef) -> str:
    return result_transfer_id(ref.task_id, ref.shard, ref.attempt)


class TaskExecutor:
    """Attach to an ``Agent`` before it runs, ``await prepare()`` before the agent connects;
    ``stop()`` cancels running shards."""

    def __init__(
        self, agent: Agent, data_dir: Path, sampler: ResourceSampler,
        sandbox: SandboxSettings = SandboxSettings(),
        env_cache_limit: int = DEFAULT_CACHE_LIMIT,
    ) -> None:
        self.agent = agent
        self.sandbox_settings = sandbox
        self.sandbox: Sandbox | None = None
        self.lanes: LanePool | None = None
        self.sandbox_state: SandboxState | None = None  # known once prepared
        self.sandbox_why_not = ""
        self.sampler = sampler
        self.data_dir = data_dir
        self.work = work_root(data_dir)
        self.cache = data_dir / "cache"
        self.environments = EnvironmentCache(environments_root(data_dir), self.cache, env_cache_limit)
        self._env: dict[str, str] = {}
        self.spool = Spool(data_dir / "spool")
        self._jobs: dict[ShardRef, _Job] = {}
        self._next: dict[ShardRef, ShardRef] = {}  # a job -> the waiting job behind it
        self._stopping = False
        self._paused = False
        self._delivered: dict[str, _Delivered] = {}
        self._outbox: list[_Delivered] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flush_soon = False
        self._blobs: dict[str, _BlobFetch] = {}
        self._own_cores = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()
        self._free_cores = set(self._own_cores)
        self._folder_seq = 0
        self._free_folders: list[Path] = []
        # A folder a sandbox saw may be reachable still where the kernel has no Landlock scopes
        # and sandboxes share the network (a descriptor of it handed over an abstract socket):
        # the next shard's inputs would be written into it. There, each shard gets a new one.
        self._reuse_folders = True
        self._tasks: set[asyncio.Task[object]] = set()
        # Watches while shards run; the process guard joins on Linux (``prepare``): the kernel
        # bounds each sandbox's processes, not the shards together.
        self.guards: list[ShardGuard] = [
            MemoryGuard(self._runners, lambda: agent.config.limits.memory_percent, submitter_of=self.submitter_of)]
        self._watches: dict[ShardGuard, asyncio.Task[None]] = {}
        agent.add_handler(AssignShards, self._on_assign)
        agent.add_handler(ShardCancel, self._on_cancel)
        agent.add_handler(ShardAck, self._on_ack)
        agent.add_handler(bytes, self._on_chunk)
        agent.state_listeners.append(self._on_state)

    async def prepare(self) -> None:
        """Kill the shards an earlier run left behind (it was killed), clear their folders and
        stamp this run. It scans every process, so it runs off the event loop (in the app,
        the Qt thread)."""
        self._env = {RUN_VARIABLE: await asyncio.to_thread(self._clean_up_last_run)}
        available, self.sandbox_why_not = await asyncio.to_thread(probe)
        self.sandbox_state = sandbox_state(available, self.sandbox_settings.allow_unsandboxed)
        if available:
            # Every environment is hidden; a shard sees its own one, bound back read-only.
            hidden = (hidden_folders(self.data_dir, self.work) + (self.environments.root,)
                      + self.sandbox_settings.hidden)
            self.sandbox = Sandbox(self.sandbox_settings.network, hidden)
            if scopes_supported():  # else a lane's long-lived folder could be reached from outside
                command = await asyncio.to_thread(launcher_command)  # it tries the C launcher's build once
                if not self._stopping:  # stopped while it probed: no lane may outlive it
                    self.lanes = LanePool(self.sandbox, self.work, command, self._take_folder)
                    self.lanes.keep_spare()
            elif self.sandbox_settings.network:
                self._reuse_folders = False
                log.warning("this kernel has no Landlock scopes (Linux 6.12+): while tasks may use the "
                            "network, shards can reach the desktop's abstract sockets (an X server) and "
                            "hand each other descriptors of their folders (to read and change them while "
                            "in use); turn the network off for tasks you do not trust")
        if sys.platform.startswith("linux"):  # the kernel bounds each sandbox, not the shards together
            room = process_room()
            self.guards.append(ProcessGuard(self._runners, room, process_limit(room), submitter_of=self.submitter_of))
        self.agent.config.sandbox = self.sandbox_state
        if not takes_tasks(self.sandbox_state):
            self.agent.config.accept_tasks = False

    @property
    def may_take_tasks(self) -> bool:
        """False once the probe found no sandbox and the owner did not allow running without."""
        return self.sandbox_state is None or takes_tasks(self.sandbox_state)

    def _clean_up_last_run(self) -> str:
        run_id = reap_and_stamp(self.data_dir)
        remove_tree(self.work)
        self.work.mkdir(parents=True, mode=0o700)
        self.cache.mkdir(parents=True, exist_ok=True)
        self.environments.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.environments.remove_unfinished()
        return run_id

    @property
    def running(self) -> list[ShardRef]:
        """Every attempt held here: running, or waiting to run behind another."""
        return list(self._jobs)

    def set_paused(self, paused: bool) -> None:
        """Suspend every running shard (and each that starts from now on), or resume them."""
        self._paused = paused
        for job in self._jobs.values():
            if job.runner is not None:
                if paused:
                    job.runner.suspend()
                else:
                    job.runner.resume()

    async def stop(self) -> None:
        """Cancel every running shard and wait for them to end (their results are spooled).
        Shards waiting to run are dropped unreported: the coordinator retries them."""
        self._stopping = True
        for ref in list(self._next.values()):
            self._drop(ref)
        for job in self._jobs.values():
            job.cancelled = True
            if job.runner is not None:
                job.runner.cancel()
        for watch in self._watches.values():
            watch.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.lanes is not None:
            await self.lanes.close_all()
        await asyncio.to_thread(self._leave_no_scratch)

    def _leave_no_scratch(self) -> None:
        """Blocking: nothing in the work root outlives this run (the next start empties it
        anyway), and a data folder that never runs again (a test's, a benchmark's) left it in
        the user's cache for good. Built environments stay: only an empty root goes."""
        if self.work.exists():
            remove_tree(self.work)
        with contextlib.suppress(OSError):
            self.environments.root.rmdir()

    # ---- the link ----------------------------------------------------------------------------

    def _on_state(self, state: str) -> None:
        if state == AgentState.CONNECTED:
            self._spawn(self._report())
        elif state == AgentState.DISCONNECTED:
            self._outbox.clear()  # what they hold is in _delivered, spooled right below
            for fetch in self._blobs.values():
                if not fetch.done.done():
                    fetch.done.set_exception(ConnectionError("the pool link dropped"))
            self._blobs.clear()
            self._spawn(self._spool_delivered())

    async def _report(self) -> None:
        """Tell the (new) coordinator what this member runs and holds, then resend results."""
        resources = await asyncio.to_thread(self.sampler.sample, self.agent.config.limits)
        spooled = await asyncio.to_thread(self.spool.pending)
        refs = [_ref(entry) for entry in spooled]
        refs += [d.ref for d in self._delivered.values()]
        report = ShardsReport(running=self.running, spooled=refs, resources=resources)
        if not await self.agent.send(report):
            return
        again = [_Delivered(_ref(entry), entry.outcome, entry.files_dir) for entry in spooled]
        await self._send_results([*again, *self._delivered.values()])

    async def _spool_delivered(self) -> None:
        """The link dropped: unacknowledged results go to the durable spool."""
        for key, delivered in list(self._delivered.items()):
            if self._delivered.pop(key, None) is not None:
                await self._park(delivered.ref, delivered.outcome, delivered.workdir)

    # ---- running shards ----------------------------------------------------------------------

    async def _on_assign(self, message: AssignShards) -> None:
        for ref, item in zip(message.refs(), message.items):
            if ref in self._jobs:
                continue
            job = _Job(ref, message, item.gpus)
            self._jobs[ref] = job
            if item.after in self._jobs and not self._stopping:
                tail = item.after
                while tail in self._next:  # never two behind one: they would run together
                    tail = self._next[tail]
                job.after = tail
                self._next[tail] = ref
            else:  # it follows nothing, or a shard that already ended here
                self._spawn(self._run(job))

    async def _on_cancel(self, message: ShardCancel) -> None:
        job = self._jobs.get(message.shard)
        if job is None:
            return
        job.cancelled = True
        if job.after is not None:  # never started: it ends here, cancelled
            self._drop(job.ref)
            outcome = _failure("cancelled before it started", reason="cancelled")
            await self._finish(job.ref, outcome, self._take_folder())
        elif job.runner is not None:
            job.runner.cancel()

    def _runners(self) -> dict[ShardRef, ShardRunner]:
        return {ref: job.runner for ref, job in self._jobs.items() if job.runner is not None}

    def submitter_of(self, ref: ShardRef) -> str:
        """Whose shards the guards weigh together: the host's tag for the task's submitter,
        else (a host that sends none) the task alone."""
        job = self._jobs.get(ref)
        return (job.assign.submitter_tag if job is not None else "") or f"task:{ref.task_id}"

    def _drop(self, ref: ShardRef) -> None:
        """Forget a waiting job; the one behind it follows the one before it instead."""
        job = self._jobs.pop(ref)
        assert job.after is not None
        behind = self._next.pop(ref, None)
        if behind is None:
            del self._next[job.after]
        else:
            self._next[job.after] = behind
            self._jobs[behind].after = job.after

    def _ended(self, ref: ShardRef) -> None:
        """A job ran and ended: the one waiting behind it starts in its place."""
        del self._jobs[ref]
        behind = self._next.pop(ref, None)
        if behind is not None:
            follower = self._jobs[behind]
            follower.after = None
            self._spawn(self._run(follower))

    async def _run(self, job: _Job) -> None:
        ref, message = job.ref, job.assign
        workdir: Path | None = None
        cores: list[int] = []
        environment: ReadyEnvironment | None = None
        lane: TaskSandbox | None = None
        lane_key: tuple[object, ...] = ()
        try:
            if self.sandbox_state is None or not takes_tasks(self.sandbox_state):
                raise ValueError(describe(self.sandbox_state or "none", self.sandbox_why_not))
            if message.environment is not None:
                environment = await self.environments.acquire(
                    message.environment, message.files, self._fetch_blobs
                )
            visible = environment.visible if environment else ()
            if self.lanes is not None and message.shards > 1:  # one shard would never reuse a lane
                lane_key = (ref.task_id, bool(job.gpus), environment.key if environment else None)
                lane = self.lanes.ready(lane_key, job.gpus, visible)
            workdir = lane.workdir if lane is not None else self._take_folder()
            if message.files:
                await self._place_files(message.files, workdir)
            cores = self._take_cores(message.resources.cpu)
            memory = message.resources.memory_mb
            values = shard_values(message.matrix, ref.shard) if message.matrix else {}
            command = expand_command(message.command, ref.shard, message.shards, values)
            spec = ShardSpec(
                command=command[0] if message.shell else command,
                workdir=workdir,
                shard=ref.shard,
                shards=message.shards,
                env={**message.env, **param_env(values), **self._env},
                shell=message.shell,
                gpus=job.gpus,
                # A shard inherits this process's affinity: pin only to a smaller set.
                cpu_cores=cores if cores and set(cores) != self._own_cores else None,
                memory_limit=int(memory * BYTES_PER_MB) if memory > 0 else None,
                timeout=message.timeout,
                outputs=message.outputs,
                sandbox=self.sandbox,
                task_sandbox=lane,
                python=environment.interpreter if environment else None,
                python_visible=visible,
            )
            runner = ShardRunner(spec, lambda stream, data: self._output(ref, stream, data))
            job.runner = runner
            self._keep_watching()
            if self._paused:
                runner.suspend()
            if job.cancelled:
                runner.cancel()
            timer = asyncio.get_running_loop().call_later(STARTED_DELAY, self._started, ref)
            try:
                outcome = await runner.run()
            finally:
                timer.cancel()
            workdir = runner.workdir
        except (OSError, ValueError, ConnectionError, TransferError) as exc:
            outcome = _failure(f"could not prepare the shard: {exc}")
        finally:
            self._free_cores.update(cores)
            if lane is not None and self.lanes is not None:
                await self.lanes.release(lane_key, lane)
            if environment is not None:
                self.environments.release(environment.key)
            if not self._stopping:
                self._ended(ref)
        if workdir is None or (lane is not None and workdir == lane.workdir):
            workdir = self._take_folder()  # it never ran, or never left its lane: nothing to keep
        await self._finish(ref, outcome, workdir)

    def _keep_watching(self) -> None:
        """Start each guard's watch that is not running (a watch ends when no shard runs)."""
        for guard in self.guards:
            watch = self._watches.get(guard)
            if watch is None or watch.done():
                self._watches[guard] = asyncio.ensure_future(guard.watch())

    def _take_folder(self) -> Path:
        """An empty working folder: a reused one where that is safe, or a new one. Creating
        and removing a folder per shard costs a member 0.07 ms, 12 % of the throughput of tiny
        unsandboxed shards here."""
        if self._free_folders:
            return self._free_folders.pop()
        self._folder_seq += 1
        folder = self.work / f"slot-{self._folder_seq}"
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder

    async def _give_back(self, folder: Path) -> None:
        """A shard's folder is done with (its result was acknowledged): kept for the next
        shard if it is empty and reuse is safe (``_reuse_folders``), else removed."""
        try:
            with os.scandir(folder) as entries:
                empty = next(entries, None) is None
        except OSError:  # a shard made it unreadable
            empty = False
        if empty and self._reuse_folders:
            self._free_folders.append(folder)
        else:
            await asyncio.to_thread(remove_tree, folder)

    def _take_cores(self, cpu: float) -> list[int]:
        """Whole free cores of this process's own set for the shard, or none (unpinned)."""
        wanted = max(1, math.ceil(cpu))
        if len(self._free_cores) < wanted:
            return []
        cores = sorted(self._free_cores)[:wanted]
        self._free_cores.difference_update(cores)
        return cores

    def _started(self, ref: ShardRef) -> None:
        self._spawn(self.agent.send(ShardStarted(shard=ref)))

    async def _output(self, ref: ShardRef, stream: Stream, data: bytes) -> None:
        text = data.decode("utf-8", errors="replace")
        await self.agent.send(ShardOutput(shard=ref, stream=stream, data=text))

    async def _finish(self, ref: ShardRef, outcome: ShardResult, workdir: Path) -> None:
        if self.agent.state != AgentState.CONNECTED:
            await self._park(ref, outcome, workdir)
            return
        delivered = _Delivered(ref, outcome, workdir)
        self._delivered[_key(ref)] = delivered
        self._outbox.append(delivered)
        loop = asyncio.get_running_loop()
        if len(self._outbox) >= len(self._next):
            if not self._flush_soon:  # once per loop turn: results ending together go together
                self._flush_soon = True
                loop.call_soon(self._flush)
        elif self._flush_timer is None:
            self._flush_timer = loop.call_later(RESULT_DELAY, self._flush)

    def _flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        self._flush_soon = False
        outbox, self._outbox = self._outbox, []
        if outbox:
            self._spawn(self._send_results(outbox))

    async def _send_results(self, results: list[_Delivered]) -> None:
        """Send results in batches, each followed by its results' output files."""
        for batch in _batches(results):
            finished = [FinishedShard(d.ref, d.outcome) for d in batch]
            if not await self.agent.send(ShardsFinished(results=finished)):
                return
            for delivered in batch:
                await self._send_outputs(delivered)

    async def _send_outputs(self, delivered: _Delivered) -> None:
        folder, key = delivered.workdir, _key(delivered.ref)
        files = [
            Outgoing(e.path, folder / e.path, e.size, e.sha256, beneath=folder) for e in delivered.outcome.outputs
        ]
        try:
            await send_files(self._send_bytes, key, files)
        except (ConnectionError, OSError) as exc:
            log.info("sending the outputs of %s stopped: %s", key, exc)

    async def _send_bytes(self, frame: bytes) -> None:
        if not await self.agent.send_bytes(frame):
            raise ConnectionError("the pool link dropped")

    async def _park(self, ref: ShardRef, outcome: ShardResult, workdir: Path) -> None:
        key = _key(ref)
        meta = {"task": ref.task_id, "shard": str(ref.shard), "attempt": str(ref.attempt)}
        try:
            await asyncio.to_thread(self.spool.put, key, outcome, workdir, meta)
        except SpoolError as exc:
            # Not kept: the coordinator hears nothing of this attempt when the member is back
            # and runs the shard again (within its retries), so only this result is lost.
            log.error("result of %s lost: %s", key, exc)
        await asyncio.to_thread(remove_tree, workdir)

    async def _on_ack(self, message: ShardAck) -> None:
        for ref in message.shards:
            delivered = self._delivered.pop(_key(ref), None)
            if delivered is not None:
                await self._give_back(delivered.workdir)
            else:
                await asyncio.to_thread(self.spool.remove, _key(ref))

    # ---- input files -------------------------------------------------------------------------

    async def _place_files(self, files: list[FileEntry], workdir: Path) -> None:
        """Fetch the shard's inputs and copy them into its folder; a task's wheels stay in
        the cache (its environment was built from them)."""
        inputs = [entry for entry in files if not is_wheel_path(entry.path)]
        await self._fetch_blobs(inputs)
        await asyncio.to_thread(_copy_inputs, self.cache, inputs, workdir)

    async def _fetch_blobs(self, files: Sequence[FileEntry]) -> None:
        """Bring the files this member lacks into its content-addressed cache."""
        missing = {f.sha256: f for f in files if not (self.cache / f.sha256).is_file()}
        wanted = [sha for sha in missing if sha not in self._blobs]
        for sha in wanted:
            entry = missing[sha]
            receiver = FileReceiver(
                sha, self.cache, expected_files([(sha, entry.size, sha)]),
                max_file_size=MAX_BLOB, max_transfer_size=MAX_BLOB,
            )
            self._blobs[sha] = _BlobFetch(receiver)
        if wanted and not await self.agent.send(FetchBlobs(sha256=wanted)):
            raise ConnectionError("the pool link is down")
        for sha in missing:
            fetch = self._blobs.get(sha)
            if fetch is not None:
                await asyncio.shield(fetch.done)

    async def _on_chunk(self, frame: bytes) -> None:
        try:
            header, data = decode_chunk(frame)
        except ProtocolError as exc:
            log.warning("ignored a bad file chunk from the pool: %s", exc.message)
            return
        fetch = self._blobs.get(header.transfer_id)
        if fetch is None:
            return
        try:
            await fetch.receiver.accept(header, data)
        except (TransferError, OSError) as exc:  # a bad chunk, or this disk is full
            del self._blobs[header.transfer_id]
            await fetch.receiver.discard()
            fetch.done.set_exception(exc)
            return
        if fetch.receiver.complete:
            del self._blobs[header.transfer_id]
            fetch.done.set_result(None)

    def _spawn(self, coroutine: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _ref(entry: SpoolEntry) -> ShardRef:
    meta = entry.meta
    return ShardRef(meta["task"], int(meta["shard"]), int(meta["attempt"]))


def _failure(message: str, reason: Reason = "error") -> ShardResult:
    return ShardResult(reason=reason, exit_code=None, started=0.0, ended=0.0, message=message)


def _batches(results: list[_Delivered]) -> list[list[_Delivered]]:
    """Split results so that no ``shards_finished`` nears the message cap (a result's size
    is bounded by its message and its list of output files)."""
    batches: list[list[_Delivered]] = [[]]
    size = 0
    for delivered in results:
        outcome = delivered.outcome
        weight = 512 + len(outcome.message) + sum(len(e.path) + 96 for e in outcome.outputs)
        if batches[-1] and size + weight > RESULT_BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(delivered)
        size += weight
    return [batch for batch in batches if batch]


def _copy_inputs(cache: Path, files: list[FileEntry], workdir: Path) -> None:
    for entry in files:
        target = workdir / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cache / entry.sha256, target)
