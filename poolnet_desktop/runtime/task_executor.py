"""The member's side of tasks: run assigned shards, stream their output, return their results.

Each shard runs with ``runtime.runner.ShardRunner`` in its own working folder under
``DATA/work/``, holding copies of its input files taken from a content-addressed cache
(``DATA/cache/SHA256``): a member fetches each input once (``fetch_blobs``), however many
shards use it. Copies rather than hard links, so a shard that rewrites an input in place
cannot corrupt the cache for the next one.

A finished shard's result and outputs are sent at once; its folder is kept until the
coordinator acknowledges them (``shard_ack``). When the link is down, or drops before the ack,
the result goes to the durable ``Spool`` and is sent again after the next ``welcome``, right
after a ``shards_report`` telling the coordinator what this member still runs or holds.
Delivery is at least once; the coordinator records each attempt once.

``shard_started`` is sent only for shards still running after ``STARTED_DELAY``: a quick shard
reports its result alone, which halves the messages for a stream of tiny shards.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from poolnet_desktop.core.manifest import FileEntry
from poolnet_desktop.core.task_protocol import (
    FetchBlobs,
    ShardAck,
    ShardAssign,
    ShardCancel,
    ShardFinished,
    ShardOutput,
    ShardRef,
    ShardResult,
    ShardsReport,
    ShardStarted,
    result_transfer_id,
)
from poolnet_desktop.core.transfer import TransferError, decode_chunk
from poolnet_desktop.core.units import BYTES_PER_MB
from poolnet_desktop.core.wire import ProtocolError
from poolnet_desktop.runtime.agent import Agent, AgentState
from poolnet_desktop.runtime.runner import ShardOutcome, ShardRunner, ShardSpec, Stream
from poolnet_desktop.runtime.sampler import ResourceSampler
from poolnet_desktop.runtime.spool import Spool, SpoolEntry
from poolnet_desktop.runtime.task_transfer import (
    FileReceiver,
    Outgoing,
    expected_files,
    send_files,
)

log = logging.getLogger(__name__)

STARTED_DELAY = 0.2
MAX_BLOB = 64 * 1024**3


@dataclass(slots=True)
class _Running:
    ref: ShardRef
    runner: ShardRunner | None = None
    cancelled: bool = False


@dataclass(slots=True)
class _Delivered:
    """A result sent but not yet acknowledged: its folder stays until then."""

    ref: ShardRef
    outcome: ShardOutcome
    workdir: Path


@dataclass(slots=True)
class _BlobFetch:
    receiver: FileReceiver
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def _key(ref: ShardRef) -> str:
    return result_transfer_id(ref.task_id, ref.shard, ref.attempt)


class TaskExecutor:
    """Attach to an ``Agent`` before it runs; ``stop()`` cancels running shards."""

    def __init__(self, agent: Agent, data_dir: Path, sampler: ResourceSampler) -> None:
        self.agent = agent
        self.sampler = sampler
        self.work = data_dir / "work"
        self.cache = data_dir / "cache"
        shutil.rmtree(self.work, ignore_errors=True)  # folders of shards a restart ended
        self.work.mkdir(parents=True, exist_ok=True)
        self.cache.mkdir(parents=True, exist_ok=True)
        self.spool = Spool(data_dir / "spool")
        self._running: dict[ShardRef, _Running] = {}
        self._delivered: dict[str, _Delivered] = {}
        self._blobs: dict[str, _BlobFetch] = {}
        self._own_cores = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()
        self._free_cores = set(self._own_cores)
        self._free_folders: list[Path] = []
        self._folder_seq = 0
        self._tasks: set[asyncio.Task[None]] = set()
        agent.add_handler(ShardAssign, self._on_assign)
        agent.add_handler(ShardCancel, self._on_cancel)
        agent.add_handler(ShardAck, self._on_ack)
        agent.add_handler(bytes, self._on_chunk)
        agent.state_listeners.append(self._on_state)

    @property
    def running(self) -> list[ShardRef]:
        return [r.ref for r in self._running.values()]

    async def stop(self) -> None:
        """Cancel every running shard and wait for them to end (their results are spooled)."""
        for running in self._running.values():
            running.cancelled = True
            if running.runner is not None:
                running.runner.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- the link ----------------------------------------------------------------------------

    def _on_state(self, state: str) -> None:
        if state == AgentState.CONNECTED:
            self._spawn(self._report())
        elif state == AgentState.DISCONNECTED:
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
        for entry in spooled:
            await self._send_result(_ref(entry), entry.outcome, entry.files_dir)
        for delivered in list(self._delivered.values()):
            await self._send_result(delivered.ref, delivered.outcome, delivered.workdir)

    async def _spool_delivered(self) -> None:
        """The link dropped: unacknowledged results go to the durable spool."""
        for key, delivered in list(self._delivered.items()):
            if self._delivered.pop(key, None) is not None:
                await self._park(delivered.ref, delivered.outcome, delivered.workdir)

    # ---- running shards ----------------------------------------------------------------------

    async def _on_assign(self, message: ShardAssign) -> None:
        ref = message.shard
        if ref in self._running:
            return
        self._running[ref] = _Running(ref)
        self._spawn(self._run(message))

    async def _on_cancel(self, message: ShardCancel) -> None:
        running = self._running.get(message.shard)
        if running is not None:
            running.cancelled = True
            if running.runner is not None:
                running.runner.cancel()

    async def _run(self, message: ShardAssign) -> None:
        ref = message.shard
        running = self._running[ref]
        workdir = self._take_folder()
        cores: list[int] = []
        try:
            if message.files:
                await self._place_files(message.files, workdir)
            cores = self._take_cores(message.resources.cpu)
            memory = message.resources.memory_mb
            spec = ShardSpec(
                command=message.command[0] if message.shell else message.command,
                workdir=workdir,
                shard=ref.shard,
                shards=message.shards,
                env=message.env,
                shell=message.shell,
                gpus=message.gpus,
                # A shard inherits this process's affinity: pin only to a smaller set.
                cpu_cores=cores if cores and set(cores) != self._own_cores else None,
                memory_limit=int(memory * BYTES_PER_MB) if memory > 0 else None,
                timeout=message.timeout,
                outputs=message.outputs,
            )
            runner = ShardRunner(spec, lambda stream, data: self._output(ref, stream, data))
            running.runner = runner
            if running.cancelled:
                runner.cancel()
            timer = asyncio.get_running_loop().call_later(STARTED_DELAY, self._started, ref)
            try:
                outcome = await runner.run()
            finally:
                timer.cancel()
        except (OSError, ValueError, ConnectionError, TransferError) as exc:
            outcome = _failure(f"could not prepare the shard: {exc}")
        finally:
            self._free_cores.update(cores)
            del self._running[ref]
        await self._finish(ref, outcome, workdir)

    def _take_folder(self) -> Path:
        """An empty working folder: a reused one, or a new one. Creating and removing a folder
        per shard cost about 2 ms here, more than starting the shard's process."""
        if self._free_folders:
            return self._free_folders.pop()
        self._folder_seq += 1
        folder = self.work / f"slot-{self._folder_seq}"
        folder.mkdir(exist_ok=True)
        return folder

    async def _give_back(self, folder: Path) -> None:
        """Keep an emptied folder for the next shard; one that holds files is removed."""
        with os.scandir(folder) as entries:
            empty = next(entries, None) is None
        if empty:
            self._free_folders.append(folder)
        else:
            await asyncio.to_thread(shutil.rmtree, folder, True)

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

    async def _finish(self, ref: ShardRef, outcome: ShardOutcome, workdir: Path) -> None:
        if self.agent.state == AgentState.CONNECTED:
            self._delivered[_key(ref)] = _Delivered(ref, outcome, workdir)
            await self._send_result(ref, outcome, workdir)
        else:
            await self._park(ref, outcome, workdir)

    async def _send_result(self, ref: ShardRef, outcome: ShardOutcome, folder: Path) -> None:
        result = _wire_result(outcome)
        if not await self.agent.send(ShardFinished(shard=ref, result=result)):
            return
        files = [Outgoing(e.path, folder / e.path, e.size, e.sha256) for e in outcome.outputs]
        try:
            await send_files(self._send_bytes, _key(ref), files)
        except (ConnectionError, OSError) as exc:
            log.info("sending the outputs of %s stopped: %s", _key(ref), exc)

    async def _send_bytes(self, frame: bytes) -> None:
        if not await self.agent.send_bytes(frame):
            raise ConnectionError("the pool link dropped")

    async def _park(self, ref: ShardRef, outcome: ShardOutcome, workdir: Path) -> None:
        key = _key(ref)
        meta = {"task": ref.task_id, "shard": str(ref.shard), "attempt": str(ref.attempt)}
        await asyncio.to_thread(self.spool.put, key, outcome, workdir, meta)
        await asyncio.to_thread(shutil.rmtree, workdir, True)

    async def _on_ack(self, message: ShardAck) -> None:
        for ref in message.shards:
            delivered = self._delivered.pop(_key(ref), None)
            if delivered is not None:
                await self._give_back(delivered.workdir)
            else:
                await asyncio.to_thread(self.spool.remove, _key(ref))

    # ---- input files -------------------------------------------------------------------------

    async def _place_files(self, files: list[FileEntry], workdir: Path) -> None:
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
        await asyncio.to_thread(_copy_inputs, self.cache, files, workdir)

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
        except TransferError as exc:
            del self._blobs[header.transfer_id]
            await fetch.receiver.discard()
            fetch.done.set_exception(exc)
            return
        if fetch.receiver.complete:
            del self._blobs[header.transfer_id]
            fetch.done.set_result(None)

    def _spawn(self, coroutine: object) -> None:
        task = asyncio.ensure_future(coroutine)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _ref(entry: SpoolEntry) -> ShardRef:
    meta = entry.meta
    return ShardRef(meta["task"], int(meta["shard"]), int(meta["attempt"]))


def _wire_result(outcome: ShardOutcome) -> ShardResult:
    """The runner's outcome as the wire's ``ShardResult`` (output paths re-checked)."""
    fields = {name: getattr(outcome, name) for name in outcome.__struct_fields__}
    fields["outputs"] = [FileEntry(path=e.path, size=e.size, sha256=e.sha256) for e in outcome.outputs]
    fields["message"] = outcome.message[:4000]
    return ShardResult(**fields)


def _failure(message: str) -> ShardOutcome:
    return ShardOutcome(reason="error", exit_code=None, started=0.0, ended=0.0, message=message)


def _copy_inputs(cache: Path, files: list[FileEntry], workdir: Path) -> None:
    for entry in files:
        target = workdir / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cache / entry.sha256, target)
