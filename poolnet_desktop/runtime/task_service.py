"""The coordinator's task service: accepts tasks, places shards, gathers results, persists all.

Everything happens on events, never on a schedule: a submission, a result, a member's report,
a member leaving, falling silent or its share changing (the coordinator's ``left_listeners``,
``overdue_listeners`` and ``share_listeners``) changes the records (``core.tasks``) and asks for
one placement pass (``core.scheduler``), coalesced to one per loop iteration. The only timers
are the grace deadlines of shards whose member has not come back since a host restart.

Recovery takes seconds: when a member's connection ends, or it misses two heartbeats, its
shards are lost at once and run again elsewhere as soon as there is room. The attempts it may
still hold are not trusted blindly but not thrown away either: a result it delivers later
counts if it is the shard's first (``Task.may_report`` and the late-success rule), and any
attempt left over once the shard has its result is cancelled, so every result is recorded once.

Nothing is lost: every change is queued to ``TaskStore`` (SQLite, one writer thread), and a
member is told to forget a result (``shard_ack``) only once it is committed. After a restart,
queued shards are queued again and shards that were on members wait for those members to
report (``shards_report``); whatever a member does not report, or a member that does not come
back within ``grace`` seconds, is lost and retried within the task's ``retries``.

Members report only their own work: a member's start, output, result or result files for an
attempt are taken only if the records placed that attempt on it (``Task.may_report``), and a
member is sent an attempt only once that placement is committed, so even after a crash no
member holds an attempt without a recorded owner. Result files are checked before a byte is
written (``core.transfer.incoming_refusal``: the task's ``storage``, bytes in flight per member
and in all, the free disk) and deleted when their transfer fails or their member leaves.

Files: inputs land in a content-addressed blob folder (``tasks/blobs/SHA256``) that members
fetch from; accepted outputs in ``tasks/results/TASK/SHARD/``.

This module holds the records, the uploads, placement and the members' side; what people ask
(list, cancel, retry, watch, results, the seed's ``task_submit``) and the updates watchers get
are in ``runtime.task_requests``, which calls back through the public methods here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poolnet_desktop.core.manifest import FileEntry, TaskSpec
from poolnet_desktop.core.permissions import Action
from poolnet_desktop.core.protocol import (
    ErrorCode,
    ProtocolError,
    encode,
)
from poolnet_desktop.core.scheduler import (
    Placement,
    Scheduler,
    ShardKey,
    Unschedulable,
    ahead_for,
)
from poolnet_desktop.core.task_protocol import (
    OUTCOME_STATES,
    Assignment,
    AssignShards,
    FetchBlobs,
    ShardAck,
    ShardCancel,
    ShardOutput,
    ShardRef,
    ShardResult,
    ShardsFinished,
    ShardsReport,
    ShardStarted,
    SubmitTask,
    TaskAccepted,
    new_task_id,
    result_transfer_id,
)
from poolnet_desktop.core.tasks import (
    ACTIVE,
    ENDED,
    RESULT_STATES,
    Change,
    ShardState,
    SubmitQuota,
    Task,
    held_ahead,
    quota_refusal,
)
from poolnet_desktop.core.transfer import (
    IncomingLimits,
    TransferError,
    decode_chunk,
    incoming_refusal,
    output_allowance,
)
from poolnet_desktop.runtime.coordinator import Coordinator
from poolnet_desktop.runtime.server import PoolServer
from poolnet_desktop.runtime.session import Session
from poolnet_desktop.runtime.task_requests import TaskRequests
from poolnet_desktop.runtime.task_store import TaskStore
from poolnet_desktop.runtime.task_transfer import (
    FileReceiver,
    Outgoing,
    expected_files,
    replace_folder,
    send_files,
)

log = logging.getLogger(__name__)

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
    are further bounded by its ``storage`` request (``core.transfer.output_allowance``)."""

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


@dataclass(slots=True)
class _Upload:
    session: Session
    receiver: FileReceiver
    task: Task


@dataclass(slots=True)
class _IncomingResult:
    device_id: str
    ref: ShardRef
    result: ShardResult
    receiver: FileReceiver
    size: int  # the announced total, counted against the caps until it ends


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
        self.grace = self.config.grace or coordinator.config.heartbeat_timeout
        root = data_dir / "tasks"
        self.blobs = root / "blobs"
        self.results = root / "results"
        self.incoming = root / "incoming"
        self._db_path = root / "tasks.sqlite3"
        self.store: TaskStore | None = None
        self.scheduler = Scheduler(ahead=self.config.ahead)
        self.tasks: dict[str, Task] = {}
        self.recorded: dict[tuple[str, int], ShardResult] = {}
        self._durations: dict[str, float] = {}  # per task: its shards' mean run time (EWMA)
        self.clock = clock
        self._members: dict[str, Session] = {}
        self._unconfirmed: dict[ShardKey, tuple[str, float]] = {}
        # Attempts taken from a member that left or fell silent, which it may still run or
        # deliver: (device, attempt) per shard, cancelled once the shard has its result.
        self._abandoned: dict[ShardKey, list[tuple[str, int]]] = {}
        self._uploads: dict[str, _Upload] = {}
        self._incoming: dict[str, _IncomingResult] = {}
        # Per member: result transfers it announced that were refused or failed; their
        # chunks still on the way are dropped quietly, not counted as invalid messages.
        self._dropping: dict[str, set[str]] = {}
        self._acks: dict[str, list[ShardRef]] = {}
        self._pass_pending = False
        self._grace_timer: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.requests = TaskRequests(self)

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, resume stored tasks, and take over the task messages."""
        for folder in (self.blobs, self.results):
            folder.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(shutil.rmtree, self.incoming, True)
        self.store = await asyncio.to_thread(TaskStore, self._db_path)
        for stored in await asyncio.to_thread(self.store.load):
            self._resume(stored.task, stored.files_ready)
            for index, result in stored.results.items():
                self.recorded[(stored.task.id, index)] = result
        handlers: dict[type, Callable[[Session, Any], Any]] = {
            SubmitTask: self._on_submit,
            ShardsReport: self._on_report,
            ShardStarted: self._on_started,
            ShardOutput: self._on_output,
            ShardsFinished: self._on_finished,
            FetchBlobs: self._on_fetch_blobs,
            **self.requests.handlers(),
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
        self._arm_grace()

    async def stop(self) -> None:
        """Stop listening and sending, then commit what is queued. Safe to call twice."""
        for listeners, listener in ((self.coordinator.left_listeners, self._on_left),
                                    (self.coordinator.share_listeners, self._on_share),
                                    (self.coordinator.overdue_listeners, self._on_overdue)):
            if listener in listeners:
                listeners.remove(listener)
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        self.requests.stop()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.store is not None:
            await self.store.close()

    def _resume(self, task: Task, files_ready: bool) -> None:
        """Take a stored task back: queued shards queue again, shards on members wait for
        those members' reports (``grace`` seconds)."""
        self.tasks[task.id] = task
        if task.state in ENDED:
            return
        if not files_ready:
            task.cancel(self.clock(), "its files were still uploading when the pool stopped")
            self.save_all(task, files_ready=False)
        self._hand_over(task)
        deadline = self.clock() + self.grace
        for shard in task.shards:
            if shard.state in ACTIVE and shard.device_id is not None:
                self._unconfirmed[(task.id, shard.index)] = (shard.device_id, deadline)

    # ---- submitting --------------------------------------------------------------------------

    async def _on_submit(self, session: Session, message: SubmitTask) -> None:
        if session.dialect != "poolnet":
            raise ProtocolError(ErrorCode.FORBIDDEN, "submit tasks over a PoolNet connection")
        session.require(Action.SUBMIT)
        task = self.admit(message.spec, submitter=self.submitter_of(session))
        missing = await asyncio.to_thread(self.missing_blobs, task.spec)
        ready = not missing
        self.save_all(task, files_ready=ready)
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
        """A new task, or ``ProtocolError(unfit)`` if no member could ever hold one shard."""
        try:
            self.scheduler.check_fits_somewhere(spec.resources.vector())
        except Unschedulable as exc:
            raise ProtocolError(ErrorCode.UNFIT, f"task {spec.name!r} refused: {exc}") from None
        over = quota_refusal(self.tasks.values(), submitter, spec.shards, self.config.quota)
        if over is not None:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"task {spec.name!r} refused: {over}")
        task_id = new_task_id(spec.name, uuid.uuid4().hex[:10])
        task = Task(task_id, spec, submitted_at=self.clock(), submitter=submitter)
        self.tasks[task_id] = task
        return task

    def uploading(self, task_id: str) -> bool:
        """Whether the task's input files are still arriving (it cannot run yet)."""
        return task_id in self._uploads

    def missing_blobs(self, spec: TaskSpec) -> list[str]:
        return [f.path for f in spec.files if not (self.blobs / f.sha256).is_file()]

    def queue(self, task: Task) -> None:
        """Hand a task whose files are here (new, or run again) to the scheduler and place it."""
        self._hand_over(task)
        self.requests.changed(task)
        self.schedule()

    def _hand_over(self, task: Task) -> None:
        """Make the scheduler hold exactly the task's queued shards. A task with shards still
        on members stays held even with none queued, so that a member coming back can have
        them adopted; an ended one is forgotten. Shards on members keep their holds either
        way, so this is also how a retry queues shards while others of the task still run."""
        self.scheduler.remove_task(task.id)
        if task.state in ENDED:
            self._durations.pop(task.id, None)
            return
        queued = [s.index for s in task.shards if s.state is ShardState.QUEUED]
        self.scheduler.submit(task.id, task.spec.resources.vector(), queued, task.spec.priority)
        mean = self._durations.get(task.id)
        if mean is not None:
            self.scheduler.set_ahead(task.id, ahead_for(mean))

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
        incoming = self._incoming.get(header.transfer_id)
        if incoming is not None and incoming.device_id == session.device_id:
            await self._result_chunk(incoming, header, data)
            return
        if header.transfer_id in self._dropping.get(session.device_id or "", ()):
            return
        self.coordinator.refuse(
            session, ProtocolError(ErrorCode.FORBIDDEN, f"no transfer {header.transfer_id!r} here")
        )

    async def _upload_chunk(self, upload: _Upload, header: Any, data: bytes) -> None:
        task = upload.task
        try:
            done = await upload.receiver.accept(header, data)
        except TransferError as exc:
            self.cancel(task, f"upload refused: {exc.message}")
            del self._uploads[task.id]
            await upload.receiver.discard()
            self.coordinator.refuse(upload.session, exc)
            return
        if done is not None:
            sha256 = upload.receiver.expected[str(done)].sha256
            await asyncio.to_thread(os.replace, upload.receiver.target / done, self.blobs / sha256)
        if upload.receiver.complete:
            del self._uploads[task.id]
            self.store_or_fail().save_task(task, files_ready=True)
            self.queue(task)

    def cancel(self, task: Task, reason: str = "cancelled") -> None:
        """Stop a task (a person asked, or its upload failed or stopped): its queued shards
        end at once and the members running the others are told to kill them; those report
        back as usual. Saved with its files not ready while its upload is still registered,
        so drop an abandoned upload after this."""
        for index, device_id, attempt in task.cancel(self.clock(), reason):
            self.post(device_id, ShardCancel(shard=ShardRef(task.id, index, attempt)))
        self._hand_over(task)
        self.save_all(task, files_ready=not self.uploading(task.id))
        self.requests.changed(task)

    # ---- placing -----------------------------------------------------------------------------

    def schedule(self) -> None:
        """Ask for one placement pass at the end of this loop iteration, if any shard waits:
        every member report asks, thousands a second in a large pool."""
        if not self._pass_pending and self.scheduler.has_queued:
            self._pass_pending = True
            asyncio.get_running_loop().call_soon(self._place)

    def _place(self) -> None:
        """One placement pass; each member gets one message per task it was given."""
        self._pass_pending = False
        now = self.clock()
        store = self.store_or_fail()
        batches: dict[tuple[str, str], list[Assignment]] = {}
        for placement in self.scheduler.place():
            task = self.tasks[placement.task_id]
            attempt = task.assign(placement.shard, placement.device_id, placement.gpu_indices, now,
                                  self._held_ahead(placement))
            store.save_shard(task.id, task.shards[placement.shard])
            batch = batches.setdefault((placement.device_id, task.id), [])
            batch.append(Assignment(placement.shard, attempt, list(placement.gpu_indices),
                                    self._after(placement)))
        if batches:
            # A member learns of an attempt only once the records say it is the member's:
            # after a crash, no member holds an attempt the coordinator has no owner for.
            committed = store.committed(urgent=True)
            committed.add_done_callback(lambda _: self._send_batches(batches))

    def _send_batches(self, batches: dict[tuple[str, str], list[Assignment]]) -> None:
        """Send each member the shards placed on it (their records are committed). A task
        cancelled meanwhile is told again to cancel them: its first cancel came before them."""
        for (device_id, task_id), items in batches.items():
            task = self.tasks[task_id]
            spec = task.spec
            self.post(device_id, AssignShards(
                task_id=task_id,
                shards=spec.shards,
                command=list(spec.command),
                env=dict(spec.env),
                shell=spec.shell,
                timeout=spec.timeout,
                resources=spec.resources,
                outputs=list(spec.outputs),
                files=list(spec.files),
                items=items,
            ))
            if task.cancel_requested:
                for item in items:
                    self.post(device_id, ShardCancel(shard=ShardRef(task_id, item.shard,
                                                                    item.attempt)))
            self.requests.changed(task)
        for device_id in {device_id for device_id, _ in batches}:
            self._count_running(device_id)

    def _held_ahead(self, placement: Placement) -> str:
        """What a shard placed ahead waits for, as people read it ("" if it starts at once)."""
        if placement.after is None:
            return ""
        task_id, index = placement.after
        device = self.coordinator.registry.get(placement.device_id)
        return held_ahead(device.name if device else placement.device_id, self.tasks[task_id].spec.name or task_id,
                          index)

    def _after(self, placement: Placement) -> ShardRef | None:
        """The attempt a shard placed ahead waits for, as the member knows it."""
        if placement.after is None:
            return None
        task_id, index = placement.after
        return ShardRef(task_id, index, self.tasks[task_id].shards[index].attempt)

    def post(self, device_id: str, message: Any) -> None:
        """Queue a message to a member without waiting (a closed link is reported by
        ``_on_left``)."""
        session = self._members.get(device_id)
        if session is not None:
            session.post(encode(message))

    def _refresh_member(self, device_id: str) -> None:
        device = self.coordinator.registry.get(device_id)
        if device is not None:
            self.scheduler.set_member(device_id, device.capacity())

    def _count_running(self, device_id: str) -> None:
        count = len(self.scheduler.running_on(device_id))
        self.coordinator.registry.set_running_shards(device_id, count)

    # ---- members -----------------------------------------------------------------------------

    async def _on_report(self, session: Session, message: ShardsReport) -> None:
        """A member (re)joined: take its share, keep what it still runs or holds, and lose
        whatever the records place on it but it does not mention."""
        device_id = self._member_id(session)
        self.coordinator.registry.update_resources(device_id, message.resources)
        self._members[device_id] = session
        self._refresh_member(device_id)
        held = {
            (ref.task_id, ref.shard): ref.attempt for ref in [*message.running, *message.spooled]
        }
        placed = self.scheduler.placed_on(device_id)
        mine = placed | {key for key, (owner, _) in self._unconfirmed.items() if owner == device_id}
        now = self.clock()
        for key in sorted(mine):
            task = self.tasks[key[0]]
            shard = task.shards[key[1]]
            self._unconfirmed.pop(key, None)
            if held.get(key) == shard.attempt and shard.state in ACTIVE:
                if key not in placed:
                    self.scheduler.adopt(key[0], key[1], device_id, shard.gpu_indices)
            else:
                self.scheduler.release(*key)
                self._apply(task, key[1], task.mark_lost(key[1], now, "its member lost it"))
        running = set(message.running)
        for ref in [*message.running, *message.spooled]:
            self._take_back(device_id, ref, running=ref in running)
        self._count_running(device_id)
        self.schedule()

    def _take_back(self, device_id: str, ref: ShardRef, running: bool) -> None:
        """An attempt a member runs or holds. The records own every attempt a member was
        ever sent (``_place`` commits before it sends), so one they do not place on this
        member is never adopted: whatever the member claims, it is refused and, if it
        runs, cancelled. Its own current attempt was kept by ``_on_report``."""
        task = self.tasks.get(ref.task_id)
        if task is not None and task.may_report(ref.shard, ref.attempt, device_id):
            shard = task.shards[ref.shard]
            if shard.attempt == ref.attempt and shard.state in ACTIVE:
                return
        else:
            log.warning("member %s reported %s, an attempt it was never given", device_id, ref)
        if running:
            self.post(device_id, ShardCancel(shard=ref))

    def _member_id(self, session: Session) -> str:
        if session.dialect != "poolnet" or session.role != "member" or session.device_id is None:
            raise ProtocolError(ErrorCode.FORBIDDEN, "only PoolNet members run shards")
        return session.device_id

    def _current(self, session: Session, ref: ShardRef) -> Task:
        """The task a member's message is about; refuses attempts it was never given, old
        or current (``Task.may_report``), and logs the refusal."""
        device_id = self._member_id(session)
        task = self.tasks.get(ref.task_id)
        if task is None or ref.shard >= len(task.shards):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no shard {ref.shard} of {ref.task_id}")
        if not task.may_report(ref.shard, ref.attempt, device_id):
            log.warning("member %s reported on %s, an attempt it was never given",
                        device_id, ref)
            raise ProtocolError(ErrorCode.FORBIDDEN,
                                f"attempt {ref.attempt} of shard {ref.shard} is not yours")
        return task

    async def _on_started(self, session: Session, message: ShardStarted) -> None:
        ref = message.shard
        task = self._current(session, ref)
        if task.start(ref.shard, ref.attempt, self.clock()).accepted:
            self.store_or_fail().save_shard(task.id, task.shards[ref.shard])
            self.requests.changed(task)

    async def _on_output(self, session: Session, message: ShardOutput) -> None:
        ref = message.shard
        task = self._current(session, ref)
        self.store_or_fail().append_log(task.id, ref.shard, ref.attempt, message.stream, message.data)
        self.requests.relay(message)

    async def _on_finished(self, session: Session, message: ShardsFinished) -> None:
        """Take every result of the batch that is this member's; refuse the first one that
        is not (after the others, so one bad entry loses no good result)."""
        device_id = self._member_id(session)
        refused: ProtocolError | None = None
        for finished in message.results:
            try:
                self._current(session, finished.shard)
            except ProtocolError as exc:
                refused = refused or exc
                continue
            await self._finished(device_id, finished.shard, finished.result)
        if refused is not None:
            raise refused

    async def _finished(self, device_id: str, ref: ShardRef, result: ShardResult) -> None:
        """Record a result at once, or once its output files have arrived. A transfer is
        checked before its receiver opens: a result the records would not take has its files
        dropped unread, and one whose files would break a cap is recorded as failed."""
        outputs = result.outputs
        transfer = result_transfer_id(ref.task_id, ref.shard, ref.attempt)
        previous = self._incoming.pop(transfer, None)
        if previous is not None:  # a resend after a reconnect replaces the half-received one
            await self._drop_incoming(previous)
        if not outputs:
            await self._record(device_id, ref, result, None)
            return
        task = self.tasks[ref.task_id]
        if not task.wants_result(ref.shard, ref.attempt, OUTCOME_STATES[result.reason]):
            self._dropping.setdefault(device_id, set()).add(transfer)
            await self._record(device_id, ref, result, None)  # a duplicate or stale: acked
            return
        refusal = await self._incoming_refusal(device_id, task, outputs)
        if refusal is not None:
            log.warning("refused the outputs of %s from %s: %s", ref, device_id, refusal)
            self._dropping.setdefault(device_id, set()).add(transfer)
            await self._record(device_id, ref, _refused(result, refusal), None)
            return
        self._dropping.get(device_id, set()).discard(transfer)
        receiver = FileReceiver(
            transfer,
            self.incoming / transfer,
            expected_files((f.path, f.size, f.sha256) for f in outputs),
            max_file_size=self.config.max_file_size,
            max_transfer_size=self.config.max_output_bytes,
        )
        size = sum(f.size for f in outputs)
        self._incoming[transfer] = _IncomingResult(device_id, ref, result, receiver, size)

    async def _incoming_refusal(
        self, device_id: str, task: Task, outputs: list[FileEntry]
    ) -> str | None:
        """Why these announced outputs may not come in (``core.transfer.incoming_refusal``).
        The transfers in flight are counted after the one await, so that the caller opens
        this one before any other result is checked against the same counts."""
        usage = await asyncio.to_thread(shutil.disk_usage, self.results)
        member = sum(i.size for i in self._incoming.values() if i.device_id == device_id)
        total = sum(i.size for i in self._incoming.values())
        storage = task.spec.resources.storage_mb
        allowance = output_allowance(storage, self.config.max_output_bytes)
        return incoming_refusal(sum(f.size for f in outputs), allowance, member, total,
                                usage.free, self.config.incoming)

    async def _drop_incoming(self, incoming: _IncomingResult) -> None:
        """Delete whatever arrived of a result transfer that will not complete."""
        await incoming.receiver.discard()
        await asyncio.to_thread(shutil.rmtree, incoming.receiver.target, True)

    async def _result_chunk(self, incoming: _IncomingResult, header: Any, data: bytes) -> None:
        transfer = header.transfer_id
        try:
            await incoming.receiver.accept(header, data)
        except TransferError as exc:
            del self._incoming[transfer]
            self._dropping.setdefault(incoming.device_id, set()).add(transfer)
            await self._drop_incoming(incoming)
            refused = _refused(incoming.result, exc.message)
            await self._record(incoming.device_id, incoming.ref, refused, None)
            return
        if incoming.receiver.complete:
            del self._incoming[transfer]
            await self._record(
                incoming.device_id, incoming.ref, incoming.result, incoming.receiver.target
            )

    async def _record(
        self, device_id: str, ref: ShardRef, result: ShardResult, files: Path | None
    ) -> None:
        """Record one attempt's result (once), keep its files if accepted, and acknowledge it
        to the member as soon as the record is committed."""
        task = self.tasks[ref.task_id]
        outcome = OUTCOME_STATES[result.reason]
        reason = result.message or ("" if outcome is ShardState.SUCCEEDED else result.reason)
        change = task.record_result(
            ref.shard, ref.attempt, outcome, self.clock(), exit_code=result.exit_code,
            reason=reason,
        )
        key = (task.id, ref.shard)
        if change.accepted:
            self._observe_duration(task.id, result)
            self.recorded[key] = result
            if files is not None or task.spec.outputs:
                await asyncio.to_thread(self._keep_outputs, task.id, ref.shard, files)
            self._unconfirmed.pop(key, None)
            self._apply(task, ref.shard, change, result)
        elif files is not None:
            await asyncio.to_thread(shutil.rmtree, files, True)
        self._acknowledge(device_id, ref)

    def _observe_duration(self, task_id: str, result: ShardResult) -> None:
        """Follow how long the task's shards run, and hold as many ahead as that calls for."""
        seconds = max(0.0, result.ended - result.started)
        mean = self._durations.get(task_id)
        mean = seconds if mean is None else 0.8 * mean + 0.2 * seconds
        self._durations[task_id] = mean
        self.scheduler.set_ahead(task_id, ahead_for(mean))

    def _keep_outputs(self, task_id: str, shard: int, files: Path | None) -> None:
        destination = self.results / task_id / str(shard)
        if files is not None:
            replace_folder(files, destination)
        elif destination.exists():
            shutil.rmtree(destination)

    def _apply(self, task: Task, index: int, change: Change, result: ShardResult | None = None) -> None:
        """Carry out what a record change asks of the scheduler and the members, and save."""
        if not change.accepted:
            return
        if change.release:
            self.scheduler.release(task.id, index)
        if change.requeue:
            self.scheduler.requeue(task.id, index)
        if change.withdraw:
            self.scheduler.withdraw(task.id, index)
        if change.cancel is not None:
            device_id, attempt = change.cancel
            self.post(device_id, ShardCancel(shard=ShardRef(task.id, index, attempt)))
        shard = task.shards[index]
        if shard.state in RESULT_STATES:
            for device_id, attempt in self._abandoned.pop((task.id, index), ()):
                if attempt not in shard.reported:
                    self.post(device_id, ShardCancel(shard=ShardRef(task.id, index, attempt)))
        self.store_or_fail().save_shard(task.id, shard, result or self.recorded.get((task.id, index)))
        if shard.device_id is not None:
            self._count_running(shard.device_id)
        if task.state in ENDED:
            self._hand_over(task)
        self.requests.changed(task)
        self.schedule()

    def _acknowledge(self, device_id: str, ref: ShardRef) -> None:
        """Batch acks per member; send them when everything recorded so far is committed."""
        pending = self._acks.setdefault(device_id, [])
        pending.append(ref)
        if len(pending) == 1:
            self.store_or_fail().committed().add_done_callback(
                lambda future: self._send_acks(device_id, future)
            )

    def _send_acks(self, device_id: str, committed: asyncio.Future[None]) -> None:
        refs = self._acks.pop(device_id, [])
        if committed.cancelled() or committed.exception() is not None:
            return  # not stored: the member keeps them and sends them again
        self.post(device_id, ShardAck(shards=refs))

    async def _on_fetch_blobs(self, session: Session, message: FetchBlobs) -> None:
        """Send a member the input files of the shards placed on it, and nothing else: another
        task's inputs are its submitter's data, whatever hash a member may know or guess."""
        device_id = self._member_id(session)
        held = {task_id for task_id, _ in self.scheduler.placed_on(device_id)}
        mine = {entry.sha256 for task_id in held for entry in self.tasks[task_id].spec.files}
        if stranger := [sha for sha in message.sha256 if sha not in mine]:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"{stranger[0][:12]}… is not an input of a shard placed on this member")
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
        they are first); an upload it was sending ends its task."""
        if device_id is not None and self._members.get(device_id) is session:
            del self._members[device_id]
            self._dropping.pop(device_id, None)
            for transfer, incoming in list(self._incoming.items()):
                if incoming.device_id == device_id:
                    del self._incoming[transfer]
                    self.spawn(self._drop_incoming(incoming))
            self._lose_shards_of(device_id, f"its member {device_id} left")
        for task_id, upload in list(self._uploads.items()):
            if upload.session is session:
                self.cancel(upload.task, "the submitter left before its files arrived")
                del self._uploads[task_id]
                self.spawn(upload.receiver.discard())

    def _on_overdue(self, device_id: str, overdue: bool) -> None:
        """A member missed its heartbeats (stopped, or its machine asleep): its shards run
        again elsewhere now, not at the heartbeat timeout; it keeps its session and gets work
        again once it is heard from."""
        if device_id not in self._members:
            return
        if overdue:
            self._lose_shards_of(device_id, f"its member {device_id} stopped answering")
        else:
            self._refresh_member(device_id)
            self.schedule()

    def _lose_shards_of(self, device_id: str, reason: str) -> None:
        """Take a member's shards from it and queue them again; remember the attempts it may
        still hold, to stop them once their shard has a result from elsewhere."""
        now = self.clock()
        for key in self.scheduler.remove_member(device_id):
            task = self.tasks[key[0]]
            attempt = task.shards[key[1]].attempt
            change = task.mark_lost(key[1], now, reason)
            if change.accepted:
                self._abandoned.setdefault(key, []).append((device_id, attempt))
            self._apply(task, key[1], change)
        self.schedule()

    def _on_share(self, device_id: str) -> None:
        """A member's resources or accept-tasks changed: re-read its share, place again."""
        if device_id in self._members:
            self._refresh_member(device_id)
            self.schedule()

    def _arm_grace(self) -> None:
        """One timer, at the earliest deadline of the shards waiting for their member."""
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None
        if self._unconfirmed:
            earliest = min(deadline for _, deadline in self._unconfirmed.values())
            delay = max(0.0, earliest - self.clock()) + 0.01
            self._grace_timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        """Shards whose member did not report them back by their deadline are lost (and
        retried within their task's ``retries``)."""
        self._grace_timer = None
        now = self.clock()
        for key, (device_id, deadline) in list(self._unconfirmed.items()):
            if now >= deadline:
                del self._unconfirmed[key]
                task = self.tasks[key[0]]
                change = task.mark_lost(key[1], now, f"member {device_id} did not come back")
                self._apply(task, key[1], change)
        self._arm_grace()

    def shard_counts(self) -> dict[str, int]:
        """Shards by state over every task held, for ``/metrics``."""
        counts: Counter[str] = Counter()
        for task in self.tasks.values():
            counts.update(shard.state.value for shard in task.shards)
        return dict(counts)

    def counts(self) -> dict[str, int]:
        """Tasks by state, for ``pool_state`` and ``/api/stats``."""
        counts: dict[str, int] = {}
        for task in self.tasks.values():
            state = task.state.value
            counts[state] = counts.get(state, 0) + 1
        return counts

    # ---- helpers -----------------------------------------------------------------------------

    def store_or_fail(self) -> TaskStore:
        if self.store is None:
            raise RuntimeError("the task service is not started")
        return self.store

    def save_all(self, task: Task, files_ready: bool) -> None:
        store = self.store_or_fail()
        store.save_task(task, files_ready)
        for shard in task.shards:
            store.save_shard(task.id, shard, self.recorded.get((task.id, shard.index)))

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)



def _refused(result: ShardResult, why: str) -> ShardResult:
    """The failed result recorded for an attempt whose outputs the coordinator refused."""
    return ShardResult(reason="error", exit_code=result.exit_code, started=result.started,
                       ended=result.ended, message=f"its outputs were refused: {why}")
