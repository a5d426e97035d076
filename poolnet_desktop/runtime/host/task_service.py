"""The coordinator's task service: carries out what the coordination core decides.

Every decision about tasks (placement, a member's shards lost when it leaves or falls silent,
first result wins, who may report an attempt, retries, abandoned attempts to cancel, when a
task ends) is made by ``core.coordination.Coordination``, which takes each message with the
time and returns effects. This module turns the network's messages into calls on it and
carries the effects out: it sends to members, queues writes to ``TaskStore`` (SQLite, one
writer thread), moves result files, coalesces placement passes to one per loop iteration and
keeps the one timer (the grace deadline of shards whose member has not come back since a
host restart). It also holds what is I/O only: the members' sessions, a submitter's uploads
in flight, and members' result files in flight (``runtime.host.result_intake``).

Nothing is lost: a member is told to forget a result (``shard_ack``) only once it is
committed, and a member is sent an attempt only once its placement is committed.

Files: inputs land in a content-addressed blob folder (``tasks/blobs/SHA256``) that members
fetch from; accepted outputs in ``tasks/results/TASK/SHARD/``.

What people ask (list, cancel, retry, watch, results, the seed's ``task_submit``) and the
updates watchers get are in ``runtime.host.task_requests``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from poolnet_desktop.core.coordination import Coordination, failed_result
from poolnet_desktop.core.coordination_effects import (
    AckAfterCommit,
    AppendLog,
    Batches,
    DropFiles,
    Effect,
    Forgotten,
    KeepOutputs,
    PlaceSoon,
    RunningShards,
    SaveShard,
    SaveTask,
    Send,
    SendAfterCommit,
    TaskChanged,
    WakeAt,
)
from poolnet_desktop.core.manifest import TaskSpec
from poolnet_desktop.core.permissions import Action
from poolnet_desktop.core.protocol import (
    Error,
    ErrorCode,
    ProtocolError,
    encode,
)
from poolnet_desktop.core.resources import ResourceVector
from poolnet_desktop.core.retention import RetentionPolicy
from poolnet_desktop.core.scheduler import Scheduler, ShardKey
from poolnet_desktop.core.task_protocol import (
    FetchBlobs,
    ShardAck,
    ShardOutput,
    ShardRef,
    ShardResult,
    ShardsFinished,
    ShardsReport,
    ShardStarted,
    SubmitTask,
    TaskAccepted,
)
from poolnet_desktop.core.tasks import SubmitQuota, Task
from poolnet_desktop.core.transfer import (
    IncomingLimits,
    TransferError,
    decode_chunk,
)
from poolnet_desktop.runtime.host.coordinator import Coordinator
from poolnet_desktop.runtime.host.result_intake import ResultIntake, unstored
from poolnet_desktop.runtime.host.server import PoolServer
from poolnet_desktop.runtime.host.session import Session
from poolnet_desktop.runtime.host.task_changes import TaskChanges
from poolnet_desktop.runtime.host.task_requests import TaskRequests
from poolnet_desktop.runtime.host.task_retention import TaskRetention
from poolnet_desktop.runtime.host.task_store import TaskStore
from poolnet_desktop.runtime.net.task_transfer import (
    FileReceiver,
    Outgoing,
    expected_files,
    replace_folder,
    send_files,
)

log = logging.getLogger(__name__)

Listener = TypeVar("Listener")

GIB = 1024**3


@dataclass
class TaskServiceConfig:
    """Caps and timings. ``grace``: how long a vanished member's shards wait for it (None:
    the coordinator's heartbeat timeout). ``ahead``: how many shards may wait on a member
    behind each running one, at most, so that it never idles for a round trip between tiny
    shards; each task's depth follows how long its shards take (``core.scheduler.ahead_for``:
    none for shards of a second or more). A priority task may wait behind that many.
    ``quota``: what one submitting device may hold at once. ``incoming``: result bytes in
    flight per member and in all, and the free disk space always left; one shard's outputs
    are further bounded by its ``storage`` request (``core.transfer.output_allowance``).
    ``retention``: which ended tasks are kept (``core.retention``)."""

    max_file_size: int = 8 * GIB
    max_task_bytes: int = 32 * GIB
    max_output_bytes: int = 8 * GIB
    grace: float | None = None
    ahead: int = 16
    quota: SubmitQuota = field(default_factory=SubmitQuota)
    incoming: IncomingLimits = field(
        default_factory=lambda: IncomingLimits(per_member=16 * GIB, total=64 * GIB,
                                               disk_margin=GIB)
    )
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)


@dataclass(slots=True)
class _Upload:
    session: Session
    receiver: FileReceiver
    task: Task


class TaskService:
    """Call ``start()`` after the server started and ``stop()`` before it stops."""

    def __init__(
        self,
        coordinator: Coordinator,
        server: PoolServer,
        data_dir: Path,
        config: TaskServiceConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.coordinator = coordinator
        self.server = server
        self.config = config or TaskServiceConfig()
        root = data_dir / "tasks"
        self.blobs = root / "blobs"
        self.results = root / "results"
        self.incoming = root / "incoming"
        self._db_path = root / "tasks.sqlite3"
        self.store: TaskStore | None = None
        self.core = Coordination(grace=self.config.grace or coordinator.config.heartbeat_timeout,
                                 ahead=self.config.ahead, tag_key=os.urandom(16))
        self.clock = clock
        self._members: dict[str, Session] = {}
        self._uploads: dict[str, _Upload] = {}
        self.intake = ResultIntake(self.core, self.config, self.incoming, self.results,
                                   self._record, self.spawn)
        self._acks: dict[str, list[ShardRef]] = {}
        self._moves: dict[str, set[asyncio.Future[None]]] = {}  # result files being moved, by task
        self._pass_pending = False
        self._grace_timer: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._carriers: dict[type, Callable[[Any], None]] = {
            Send: self._send,
            SaveTask: self._save_task,
            SaveShard: self._save_shard,
            AppendLog: self._append_log,
            SendAfterCommit: self._send_after_commit,
            AckAfterCommit: self._acknowledge,
            KeepOutputs: lambda effect: self.spawn(self._keep_outputs(effect)),
            DropFiles: lambda effect: self.spawn(self._drop_files(effect)),
            TaskChanged: self._task_changed,
            RunningShards: self._running_shards,
            PlaceSoon: lambda _: self.schedule(),
            WakeAt: self._wake_at,
            Forgotten: self._forgotten,
        }
        self.requests = TaskRequests(self)
        self.changes = TaskChanges(self)
        self.retention = TaskRetention(self, self.config.retention)

    # The core's state, read by the requests, the metrics and tests.
    @property
    def tasks(self) -> dict[str, Task]:
        return self.core.tasks

    @property
    def recorded(self) -> dict[ShardKey, ShardResult]:
        return self.core.recorded

    @property
    def scheduler(self) -> Scheduler:
        return self.core.scheduler

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, resume stored tasks, and take over the task messages."""
        for folder in (self.blobs, self.results):
            folder.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(shutil.rmtree, self.incoming, True)
        self.store = await asyncio.to_thread(TaskStore, self._db_path)
        now = self.clock()
        for stored in await asyncio.to_thread(self.store.load):
            self._carry_out(self.core.resume(stored.task, stored.files_ready, stored.results, now))
        handlers: dict[type, Callable[[Session, Any], Any]] = {
            SubmitTask: self._on_submit,
            ShardsReport: self._on_report,
            ShardStarted: self._on_started,
            ShardOutput: self._on_output,
            ShardsFinished: self._on_finished,
            FetchBlobs: self._on_fetch_blobs,
            **self.requests.handlers(),
            **self.changes.handlers(),
        }
        for message_type, handler in handlers.items():
            self.coordinator.add_handler(message_type, handler)
        self.server.binary_handler = self._on_chunk
        self.server.rest.extend("/api/tasks", self.requests.rest_tasks)
        self.coordinator.task_counts = self.counts
        self.coordinator.shard_counts = self.shard_counts
        self.coordinator.left_listeners.append(self._on_left)
        self.coordinator.share_listeners.append(self._on_share)
        self.coordinator.overdue_listeners.append(self._on_overdue)
        self.changes.start()
        self.retention.start()

    async def stop(self) -> None:
        """Stop listening and sending, then commit what is queued. Safe to call twice."""
        _unlisten(self.coordinator.left_listeners, self._on_left)
        _unlisten(self.coordinator.share_listeners, self._on_share)
        _unlisten(self.coordinator.overdue_listeners, self._on_overdue)
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        self.requests.stop()
        self.changes.stop()
        self.retention.stop()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.store is not None:
            await self.store.close()

    # ---- carrying out the core's effects -----------------------------------------------------

    def _carry_out(self, effects: list[Effect]) -> None:
        """Carry out effects in order; file moves run in the background."""
        carriers = self._carriers
        for effect in effects:
            carriers[type(effect)](effect)

    async def _carry_out_in_order(self, effects: list[Effect]) -> None:
        """Carry out effects in order, waiting for file moves: an accepted result's files
        are in place before its record is stored."""
        for effect in effects:
            if isinstance(effect, KeepOutputs):
                await self._keep_outputs(effect)
            elif isinstance(effect, DropFiles):
                await self._drop_files(effect)
            else:
                self._carriers[type(effect)](effect)

    def _send(self, effect: Send) -> None:
        self.post(effect.device_id, effect.message)

    def _save_task(self, effect: SaveTask) -> None:
        self.store_or_fail().save_task(effect.task, effect.files_ready)

    def _save_shard(self, effect: SaveShard) -> None:
        self.store_or_fail().save_shard(effect.task_id, effect.shard, effect.result)

    def _append_log(self, effect: AppendLog) -> None:
        ref = effect.ref
        self.store_or_fail().append_log(ref.task_id, ref.shard, ref.attempt, effect.stream,
                                        effect.data)

    def _send_after_commit(self, effect: SendAfterCommit) -> None:
        committed = self.store_or_fail().committed(urgent=True, patient=True)
        committed.add_done_callback(lambda done: self._send_batches(effect.batches, done))

    def _send_batches(self, batches: Batches, committed: asyncio.Future[None]) -> None:
        """Send the placements once their records are committed (never, if the store closed
        without writing them)."""
        if _stored(committed):
            self._carry_out(self.core.assignments_committed(batches))

    def _acknowledge(self, effect: AckAfterCommit) -> None:
        """Batch acks per member; send them when everything recorded so far is committed."""
        device_id = effect.device_id
        pending = self._acks.setdefault(device_id, [])
        pending.append(effect.ref)
        if len(pending) == 1:
            self.store_or_fail().committed(patient=True).add_done_callback(
                lambda future: self._send_acks(device_id, future)
            )

    def _send_acks(self, device_id: str, committed: asyncio.Future[None]) -> None:
        refs = self._acks.pop(device_id, [])
        if not _stored(committed):
            return  # not stored: the member keeps them and sends them again
        self.post(device_id, ShardAck(shards=refs))

    async def _keep_outputs(self, effect: KeepOutputs) -> None:
        move = asyncio.ensure_future(asyncio.to_thread(self._move_outputs, effect.task_id, effect.shard, effect.files))
        moves = self._moves.setdefault(effect.task_id, set())
        moves.add(move)
        try:
            await move
        finally:
            moves.discard(move)
            if not moves:
                self._moves.pop(effect.task_id, None)

    async def outputs_in_place(self, task_id: str) -> None:
        """Wait for the task's result files still being moved into place. A result is
        recorded, and its task may end and its submitter be told, while its files are moved
        in a thread: a fetch right then found a file missing."""
        moves = self._moves.get(task_id)
        if moves:
            await asyncio.gather(*moves, return_exceptions=True)

    def _move_outputs(self, task_id: str, shard: int, files: Path | None) -> None:
        destination = self.results / task_id / str(shard)
        if files is not None:
            replace_folder(files, destination)
        elif destination.exists():
            shutil.rmtree(destination)

    async def _drop_files(self, effect: DropFiles) -> None:
        await asyncio.to_thread(shutil.rmtree, effect.files, True)

    def _task_changed(self, effect: TaskChanged) -> None:
        task = self.core.tasks.get(effect.task_id)
        if task is not None:
            self.requests.changed(task)
            self.changes.changed(task.id)  # subscribers hear it on the next batch

    def _running_shards(self, effect: RunningShards) -> None:
        self.coordinator.registry.set_running_shards(effect.device_id, effect.count)

    def _wake_at(self, effect: WakeAt) -> None:
        """One timer, at the earliest deadline of the shards waiting for their member."""
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None
        if effect.when is not None:
            delay = max(0.0, effect.when - self.clock()) + 0.01
            self._grace_timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        self._grace_timer = None
        self._carry_out(self.core.expire(self.clock()))

    def _forgotten(self, effect: Forgotten) -> None:
        """A task is gone: its stored rows and logs; watchers and subscribers are told (its
        result folder: ``forget``; its input files no other task names: ``TaskRetention``)."""
        self.requests.forget(effect.task_id)
        self.changes.removed(effect.task_id)
        self.store_or_fail().forget([effect.task_id])

    # ---- submitting --------------------------------------------------------------------------

    async def _on_submit(self, session: Session, message: SubmitTask) -> None:
        if session.dialect != "poolnet":
            raise ProtocolError(ErrorCode.FORBIDDEN, "submit tasks over a PoolNet connection")
        session.require(Action.SUBMIT)
        task = self.admit(message.spec, submitter=self.submitter_of(session))
        missing = await asyncio.to_thread(self.missing_blobs, task.spec)
        ready = not missing
        self._carry_out(self.core.accept(task.id, files_ready=ready))
        await session.send(
            TaskAccepted(request_id=message.request_id, task_id=task.id, missing=missing)
        )
        if ready:
            self.queue(task)
            return
        absent = set(missing)
        wanted = [f for f in task.spec.files if f.path in absent]
        receiver = FileReceiver(
            task.id,
            self.incoming / task.id,
            expected_files((f.path, f.size, f.sha256) for f in wanted),
            max_file_size=self.config.max_file_size,
            max_transfer_size=self.config.max_task_bytes,
        )
        self._uploads[task.id] = _Upload(session, receiver, task)

    @staticmethod
    def submitter_of(session: Session) -> str:
        """Who a task belongs to: the authenticated device, whatever role it joined in (a CLI
        is an observer); a seed client's claimed id is kept apart under ``seed:``, so it can
        never be taken for a PoolNet device's own task."""
        device_id = session.caller.device_id
        return device_id if device_id is not None else f"seed:{session.device_id or session.address}"

    def admit(self, spec: TaskSpec, submitter: str) -> Task:
        """A new task, or ``ProtocolError`` (``Coordination.admit``)."""
        return self.core.admit(spec, submitter, uuid.uuid4().hex[:10], self.clock(),
                               self.config.quota)

    def missing_blobs(self, spec: TaskSpec) -> list[str]:
        return [f.path for f in spec.files if not (self.blobs / f.sha256).is_file()]

    def queue(self, task: Task) -> None:
        """Hand a task whose files are here (new, or run again) to the scheduler and place it."""
        self._carry_out(self.core.queue(task.id))

    def save_all(self, task: Task, files_ready: bool) -> None:
        """Store a task admitted outside ``_on_submit`` (the seed's ``task_submit``)."""
        self._carry_out(self.core.accept(task.id, files_ready))

    def cancel(self, task: Task, reason: str = "cancelled") -> None:
        """Stop a task (a person asked, or its upload failed or stopped)."""
        self._carry_out(self.core.cancel(task.id, reason, self.clock()))

    async def retry(self, task: Task) -> None:
        """Run the task's unsuccessful shards again, if its inputs are still here."""
        missing = await asyncio.to_thread(self.missing_blobs, task.spec)
        self._carry_out(self.core.retry(task.id, self.clock(), missing[0] if missing else None))

    async def forget(self, task_id: str) -> None:
        """Drop an ended task (``Coordination.forget``; ``ProtocolError`` if it has not), and
        then its result folder."""
        self._carry_out(self.core.forget(task_id))
        await asyncio.to_thread(shutil.rmtree, self.results / task_id, True)

    async def _on_chunk(self, session: Session, frame: bytes) -> None:
        try:
            header, data = decode_chunk(frame)
        except ProtocolError as exc:
            self.coordinator.refuse(session, exc)
            return
        upload = self._uploads.get(header.transfer_id)
        if upload is not None and upload.session is session:
            await self._upload_chunk(upload, header, data)
            return
        if await self.intake.chunk(session.device_id, header, data):
            return
        self.coordinator.refuse(
            session, ProtocolError(ErrorCode.FORBIDDEN, f"no transfer {header.transfer_id!r} here")
        )

    async def _upload_chunk(self, upload: _Upload, header: Any, data: bytes) -> None:
        task = upload.task
        try:
            done = await upload.receiver.accept(header, data)
            if done is not None:
                sha256 = upload.receiver.expected[str(done)].sha256
                await asyncio.to_thread(os.replace, upload.receiver.target / done, self.blobs / sha256)
        except TransferError as exc:
            self._abandon_upload(task.id, f"upload refused: {exc.message}")
            await upload.receiver.discard()
            self.coordinator.refuse(upload.session, exc)
            return
        except OSError as exc:  # the host's disk (full, say): the submitter did nothing wrong
            why = f"the host could not store its files: {exc.strerror or exc}"
            log.warning("task %s: %s", task.id, why)
            self._abandon_upload(task.id, why)
            await upload.receiver.discard()
            self.intake.drop_quietly(upload.session.device_id or "", task.id)
            upload.session.post(encode(Error(code=ErrorCode.STORAGE_FAILED, message=why)))
            return
        if upload.receiver.complete:
            del self._uploads[task.id]
            self._carry_out(self.core.files_arrived(task.id))

    def _abandon_upload(self, task_id: str, reason: str) -> None:
        del self._uploads[task_id]
        self._carry_out(self.core.upload_abandoned(task_id, reason, self.clock()))

    # ---- placing -----------------------------------------------------------------------------

    def schedule(self) -> None:
        """Ask for one placement pass at the end of this loop iteration: every member report
        asks, thousands a second in a large pool."""
        if not self._pass_pending:
            self._pass_pending = True
            asyncio.get_running_loop().call_soon(self._place)

    def _place(self) -> None:
        self._pass_pending = False
        self._carry_out(self.core.place(self.clock(), self._device_name))

    def post(self, device_id: str, message: Any) -> None:
        """Queue a message to a member without waiting (a closed link is reported by
        ``_on_left``)."""
        session = self._members.get(device_id)
        if session is not None:
            session.post(encode(message))

    def is_connected(self, session: Session) -> bool:
        return self.coordinator.is_connected(session)

    def _capacity(self, device_id: str) -> ResourceVector | None:
        device = self.coordinator.registry.get(device_id)
        return None if device is None else device.capacity()

    def _device_name(self, device_id: str) -> str:
        device = self.coordinator.registry.get(device_id)
        return device.name if device is not None else device_id

    def _platform(self, device_id: str) -> str:
        """The platform the member's hello named (``core.platforms``), "" if unknown."""
        device = self.coordinator.registry.get(device_id)
        return "" if device is None else device.platform

    # ---- members -----------------------------------------------------------------------------

    async def _on_report(self, session: Session, message: ShardsReport) -> None:
        """A member (re)joined: take its share, keep what it still runs or holds, and lose
        whatever the records place on it but it does not mention (``Coordination``)."""
        device_id = self._member_id(session)
        self.coordinator.registry.update_resources(device_id, message.resources)
        self._members[device_id] = session
        for ref in [*message.running, *message.spooled]:
            if not self.core.was_given(device_id, ref):
                log.warning("member %s reported %s, an attempt it was never given", device_id, ref)
        self._carry_out(self.core.member_reported(
            device_id, self._capacity(device_id), message.running, message.spooled, self.clock(),
            self._platform(device_id)))

    def _member_id(self, session: Session) -> str:
        if session.dialect != "poolnet" or session.role != "member" or session.device_id is None:
            raise ProtocolError(ErrorCode.FORBIDDEN, "only PoolNet members run shards")
        return session.device_id

    def _reporter(self, device_id: str, ref: ShardRef) -> None:
        """Refuse (and log) a member's message on an attempt it was never given."""
        try:
            self.core.reporter_task(device_id, ref)
        except ProtocolError as exc:
            if exc.code == ErrorCode.FORBIDDEN:
                log.warning("member %s reported on %s, an attempt it was never given",
                            device_id, ref)
            raise

    async def _on_started(self, session: Session, message: ShardStarted) -> None:
        device_id = self._member_id(session)
        self._reporter(device_id, message.shard)
        self._carry_out(self.core.started(device_id, message.shard, self.clock()))

    async def _on_output(self, session: Session, message: ShardOutput) -> None:
        device_id = self._member_id(session)
        self._reporter(device_id, message.shard)
        self._carry_out(self.core.output(device_id, message.shard, message.stream, message.data))
        self.requests.relay(message)

    async def _on_finished(self, session: Session, message: ShardsFinished) -> None:
        """Take every result of the batch that is this member's; refuse the first one that
        is not (after the others, so one bad entry loses no good result)."""
        device_id = self._member_id(session)
        refused: ProtocolError | None = None
        for finished in message.results:
            try:
                self._reporter(device_id, finished.shard)
            except ProtocolError as exc:
                refused = refused or exc
                continue
            await self.intake.announced(device_id, finished.shard, finished.result)
        if refused is not None:
            raise refused

    async def _record(
        self, device_id: str, ref: ShardRef, result: ShardResult, files: Path | None
    ) -> None:
        if files is not None:
            try:  # the one step of keeping them that needs room, before the record
                await asyncio.to_thread((self.results / ref.task_id).mkdir, exist_ok=True)
            except OSError as exc:
                log.warning("could not keep the outputs of %s: %s", ref, exc)
                await asyncio.to_thread(shutil.rmtree, files, True)
                result, files = failed_result(result, unstored(exc)), None
        await self._carry_out_in_order(self.core.record(device_id, ref, result, files,
                                                        self.clock()))

    async def _on_fetch_blobs(self, session: Session, message: FetchBlobs) -> None:
        """Send a member the input files of the shards placed on it, and nothing else
        (``Coordination.may_fetch``)."""
        device_id = self._member_id(session)
        self.core.may_fetch(device_id, message.sha256)
        files = []
        for sha in message.sha256:
            path = self.blobs / sha
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise ProtocolError(ErrorCode.NOT_FOUND, f"no file with sha256 {sha}") from None
            files.append(Outgoing(sha, path, size, sha))
        for item in files:
            self.spawn(send_files(session.connection.send, item.sha256, [item]))

    # ---- members that vanish -----------------------------------------------------------------

    def _on_left(self, session: Session, device_id: str | None) -> None:
        """A session ended. A member's shards run again elsewhere now, and the result files it
        was sending are deleted (it sends them again when it comes back, and they count if
        they are first); an upload it was sending ends its task; what it watched is let go."""
        self.requests.session_left(session)
        if device_id is not None and self._members.get(device_id) is session:
            del self._members[device_id]
            self.intake.member_left(device_id)
            self._carry_out(self.core.member_left(device_id, self.clock()))
        for task_id, upload in list(self._uploads.items()):
            if upload.session is session:
                self._abandon_upload(task_id, "the submitter left before its files arrived")
                self.spawn(upload.receiver.discard())

    def _on_overdue(self, device_id: str, overdue: bool) -> None:
        """A member missed its heartbeats, or is heard from again (``Coordination``)."""
        self._carry_out(self.core.member_overdue(device_id, overdue, self._capacity(device_id),
                                                 self.clock(), self._platform(device_id)))

    def _on_share(self, device_id: str) -> None:
        """A member's resources or accept-tasks changed: re-read its share, place again."""
        self._carry_out(self.core.share_changed(device_id, self._capacity(device_id), self._platform(device_id)))

    def shard_counts(self) -> dict[str, int]:
        """Shards by state over every task held, for ``/metrics``."""
        return self.core.shard_counts()

    def counts(self) -> dict[str, int]:
        """Tasks by state, for ``pool_state`` and ``/api/stats``."""
        return self.core.task_counts()

    # ---- helpers -----------------------------------------------------------------------------

    def store_or_fail(self) -> TaskStore:
        if self.store is None:
            raise RuntimeError("the task service is not started")
        return self.store

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _unlisten(listeners: list[Listener], listener: Listener) -> None:
    if listener in listeners:
        listeners.remove(listener)


def _stored(committed: asyncio.Future[None]) -> bool:
    """Whether a ``TaskStore.committed`` future says the writes are on disk (a patient one
    fails only when the store closed with them unwritten)."""
    return not committed.cancelled() and committed.exception() is None
