"""The coordinator's task state as one object: every decision, no I/O, time passed in.

``Coordination`` holds the task records (``core.tasks``), the placement queue and the members'
shares (``core.scheduler``), the results recorded, the shards that wait for their member to
come back after a host restart, and the attempts taken from members that left. Each method
takes one message (a submission, a member's report, start, output or result, a member
leaving or falling silent, a person's cancel, retry or forget, a deadline passing) and returns
the effects to carry out (``core.coordination_effects``), in order. The runtime
(``runtime.host.task_service``) carries them out: it sends, stores, moves files and keeps timers.
Refusals are raised as ``ProtocolError``, to be sent back to whoever asked.

Recovery: when a member leaves or misses its heartbeats its shards are lost at once and
queued again. The attempts it may still hold are remembered (``abandoned``): a result it
delivers later counts if it is the shard's first (the late-success rule of ``core.tasks``),
and any attempt still out once the shard has its result is cancelled, so every result is
recorded once. After a host restart, shards that were on members wait ``grace`` seconds for
those members to report them (``unconfirmed``); whatever is not reported is lost.

Ownership: a member may report only on attempts the records placed on it
(``Task.may_report``), and a member is sent an attempt only once that placement is committed
(``SendAfterCommit``), so even after a crash no member holds an attempt without a recorded
owner.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from poolnet_desktop.core.coordination_effects import (
    PLACE_SOON,
    AckAfterCommit,
    AppendLog,
    Batches,
    DropFiles,
    Effect,
    Forgotten,
    KeepOutputs,
    RunningShards,
    SaveShard,
    SaveTask,
    Send,
    SendAfterCommit,
    TaskChanged,
    WakeAt,
)
from poolnet_desktop.core.manifest import TaskSpec
from poolnet_desktop.core.protocol import ErrorCode, ProtocolError
from poolnet_desktop.core.resources import ResourceVector
from poolnet_desktop.core.scheduler import Placement, Scheduler, ShardKey, Unschedulable, ahead_for
from poolnet_desktop.core.task_protocol import (
    OUTCOME_STATES,
    Assignment,
    AssignShards,
    ShardCancel,
    ShardRef,
    ShardResult,
    new_task_id,
)
from poolnet_desktop.core.tasks import (
    ACTIVE,
    ENDED,
    RESULT_STATES,
    Change,
    Shard,
    ShardState,
    SubmitQuota,
    Task,
    held_ahead,
    quota_refusal,
)


class Coordination:
    """The task state of one coordinator. ``grace``: how long a shard that was on a member
    before a host restart waits for that member to report it. ``ahead``: the most shards
    that may wait on a member behind each running one (``core.scheduler``). ``tag_key``:
    this run's secret for ``submitter_tag``."""

    def __init__(self, *, grace: float, ahead: int = 16, tag_key: bytes = b"") -> None:
        self._tag_key = tag_key
        self._tags: dict[str, str] = {}
        self.grace = grace
        self.scheduler = Scheduler(ahead=ahead)
        self.tasks: dict[str, Task] = {}
        self.recorded: dict[ShardKey, ShardResult] = {}
        self.members: set[str] = set()  # members that reported since they joined
        self.uploading: set[str] = set()  # tasks whose input files are still arriving
        # After a host restart: shards on members, until their member reports them.
        self.unconfirmed: dict[ShardKey, tuple[str, float]] = {}
        # Attempts taken from a member that left or fell silent, which it may still run or
        # deliver: (device, attempt) per shard, cancelled once the shard has its result.
        self.abandoned: dict[ShardKey, list[tuple[str, int]]] = {}
        self._durations: dict[str, float] = {}  # per task: its shards' mean run time (EWMA)

    # ---- restoring ----------------------------------------------------------------------------

    def resume(self, task: Task, files_ready: bool, results: dict[int, ShardResult],
               now: float) -> list[Effect]:
        """Take a stored task back: queued shards queue again, shards on members wait for
        those members' reports (``grace`` seconds); a task whose files had not all arrived
        is cancelled."""
        self.tasks[task.id] = task
        for index, result in results.items():
            self.recorded[(task.id, index)] = result
        if task.state in ENDED:
            return []
        effects: list[Effect] = []
        if not files_ready:
            task.cancel(now, "its files were still uploading when the pool stopped")
            self._save_all(task, False, effects)
        self._hand_over(task)
        deadline = now + self.grace
        for shard in task.shards:
            if shard.state in ACTIVE and shard.device_id is not None:
                self.unconfirmed[(task.id, shard.index)] = (shard.device_id, deadline)
        effects.append(WakeAt(self.next_deadline()))
        return effects

    # ---- submitting ---------------------------------------------------------------------------

    def admit(self, spec: TaskSpec, submitter: str, suffix: str, now: float,
              quota: SubmitQuota) -> Task:
        """A new task (``suffix`` makes its id unique), or ``ProtocolError``: unfit if no
        member could ever hold one shard, forbidden over the submitter's ``quota``."""
        try:
            self.scheduler.check_fits_somewhere(spec.resources.vector(), spec.platform_need())
        except Unschedulable as exc:
            raise ProtocolError(ErrorCode.UNFIT, f"task {spec.name!r} refused: {exc}") from None
        over = quota_refusal(self.tasks.values(), submitter, spec.shards, quota)
        if over is not None:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"task {spec.name!r} refused: {over}")
        task = Task(new_task_id(spec.name, suffix), spec, submitted_at=now, submitter=submitter)
        self.tasks[task.id] = task
        return task

    def accept(self, task_id: str, files_ready: bool) -> list[Effect]:
        """Store an admitted task; one whose files must still arrive waits for them
        (``files_arrived``), the others are queued by ``queue``."""
        task = self.tasks[task_id]
        if not files_ready:
            self.uploading.add(task_id)
        effects: list[Effect] = []
        self._save_all(task, files_ready, effects)
        effects.append(TaskChanged(task_id, False))
        return effects

    def files_arrived(self, task_id: str) -> list[Effect]:
        """Every input file of an uploading task is here: it may run."""
        self.uploading.discard(task_id)
        task = self.tasks[task_id]
        return [SaveTask(task, True), *self.queue(task_id)]

    def upload_abandoned(self, task_id: str, reason: str, now: float) -> list[Effect]:
        """The upload of a task's files failed or its submitter left: the task is cancelled
        (stored with its files not ready)."""
        effects = self.cancel(task_id, reason, now)
        self.uploading.discard(task_id)
        return effects

    def queue(self, task_id: str) -> list[Effect]:
        """Hand a task whose files are here (new, or run again) to the scheduler."""
        task = self.tasks[task_id]
        self._hand_over(task)
        effects: list[Effect] = [TaskChanged(task.id, task.state in ENDED)]
        self._schedule(effects)
        return effects

    # ---- what people ask ---------------------------------------------------------------------

    def cancel(self, task_id: str, reason: str, now: float) -> list[Effect]:
        """Stop a task: its queued shards end at once and the members running the others are
        told to kill them; those report back as usual."""
        task = self.tasks[task_id]
        effects: list[Effect] = [
            Send(device_id, ShardCancel(shard=ShardRef(task.id, index, attempt)))
            for index, device_id, attempt in task.cancel(now, reason)
        ]
        for shard in task.shards:
            if shard.state in RESULT_STATES:
                self._stop_abandoned(task, shard.index, effects)
        self._hand_over(task)
        self._save_all(task, task_id not in self.uploading, effects)
        effects.append(TaskChanged(task.id, task.state in ENDED))
        return effects

    def retry(self, task_id: str, now: float, missing_input: str | None) -> list[Effect]:
        """Run the task's unsuccessful shards again (``Task.retry``). Refused while its files
        are still uploading, or when one of its inputs (``missing_input``) is gone."""
        task = self.tasks[task_id]
        if task_id in self.uploading:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"task {task.id}: its files are still uploading")
        if missing_input is not None:
            raise ProtocolError(
                ErrorCode.NOT_FOUND,
                f"task {task.id} cannot run again: its input {missing_input!r} is gone; submit it again",
            )
        if not task.retry(now):
            return []
        effects: list[Effect] = []
        self._save_all(task, True, effects)
        effects.extend(self.queue(task_id))
        return effects

    def forget(self, task_id: str) -> list[Effect]:
        """Drop an ended task from the records, with everything kept for it (results,
        abandoned attempts, deadlines); attempts of it that members may still run are
        stopped. Refused for a task that has not ended: cancel it first."""
        task = self.tasks.get(task_id)
        if task is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no task {task_id!r}")
        if task.state not in ENDED or task_id in self.uploading:
            raise ProtocolError(ErrorCode.FORBIDDEN,
                                f"task {task_id} is {task.state}: cancel it before forgetting it")
        effects: list[Effect] = []
        for shard in task.shards:
            self._stop_abandoned(task, shard.index, effects)
        del self.tasks[task_id]
        self.scheduler.remove_task(task_id)
        self._durations.pop(task_id, None)
        for shard in task.shards:
            key = (task_id, shard.index)
            self.recorded.pop(key, None)
            self.unconfirmed.pop(key, None)
        effects += [Forgotten(task_id), TaskChanged(task_id, True)]
        return effects

    # ---- placing ------------------------------------------------------------------------------

    def place(self, now: float, device_name: Callable[[str], str] = str) -> list[Effect]:
        """One placement pass: records of the attempts placed, then their sending once those
        records are committed (one message per member and task). ``device_name`` names a
        member for people: a shard placed ahead says whom it waits on."""
        effects: list[Effect] = []
        batches: Batches = {}
        for placement in self.scheduler.place():
            task = self.tasks[placement.task_id]
            attempt = task.assign(placement.shard, placement.device_id, placement.gpu_indices, now,
                                  self._held_ahead(placement, device_name))
            effects.append(SaveShard(task.id, task.shards[placement.shard]))
            batch = batches.setdefault((placement.device_id, task.id), [])
            batch.append(Assignment(placement.shard, attempt, list(placement.gpu_indices),
                                    self._after(placement)))
        if batches:
            effects.append(SendAfterCommit(batches))
        return effects

    def assignments_committed(self, batches: Batches) -> list[Effect]:
        """Send each member the shards placed on it that are still its to run. A task
        cancelled since is told again to cancel them: its first cancel came before them. An
        attempt given up meanwhile (its member left and came back, the task was retried) is
        not sent at all: that member would run a shard nobody waits for any more."""
        effects: list[Effect] = []
        for (device_id, task_id), placed in batches.items():
            task = self.tasks.get(task_id)
            if task is None:
                continue
            items = [item for item in placed if _still_placed(task.shards[item.shard], item.attempt, device_id)]
            if not items:
                continue
            spec = task.spec
            effects.append(Send(device_id, AssignShards(
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
                matrix=list(spec.matrix),
                environment=spec.environment,
                submitter_tag=self.submitter_tag(task.submitter),
            )))
            if task.cancel_requested:
                effects.extend(
                    Send(device_id, ShardCancel(shard=ShardRef(task_id, item.shard, item.attempt)))
                    for item in items
                )
            effects.append(TaskChanged(task_id, task.state in ENDED))
        for device_id in {device_id for device_id, _ in batches}:
            effects.append(self._running(device_id))
        return effects

    def submitter_tag(self, submitter: str) -> str:
        """What members are told of a task's submitter: keyed with this run's secret, it
        shows which tasks are one submitter's, never whose they are. Seed clients name
        themselves (``seed:<the id each claims>``): all of them are one submitter, or one
        could spread a load over as many names as it likes."""
        if submitter.startswith("seed:"):
            submitter = "seed:"
        tag = self._tags.get(submitter)
        if tag is None:
            tag = self._tags[submitter] = hashlib.blake2b(
                submitter.encode(), key=self._tag_key, digest_size=8).hexdigest()
        return tag

    # ---- members ------------------------------------------------------------------------------

    def member_reported(
        self, device_id: str, capacity: ResourceVector | None,
        running: Iterable[ShardRef], spooled: Iterable[ShardRef], now: float, platform: str = "",
    ) -> list[Effect]:
        """A member (re)joined and says what it runs and holds: keep its current attempts,
        lose whatever the records place on it that it does not mention, and cancel any
        attempt it runs that is not its current one (or was never given to it). ``platform``
        is the one its hello named (``core.platforms``)."""
        self.members.add(device_id)
        self._reshare(device_id, capacity, platform)
        running, spooled = list(running), list(spooled)
        held = {(ref.task_id, ref.shard): ref.attempt for ref in [*running, *spooled]}
        placed = self.scheduler.placed_on(device_id)
        mine = placed | {key for key, (owner, _) in self.unconfirmed.items() if owner == device_id}
        effects: list[Effect] = []
        for key in sorted(mine):
            task = self.tasks[key[0]]
            shard = task.shards[key[1]]
            self.unconfirmed.pop(key, None)
            if held.get(key) == shard.attempt and shard.state in ACTIVE:
                if key not in placed:
                    self.scheduler.adopt(key[0], key[1], device_id, shard.gpu_indices)
            else:
                self.scheduler.release(*key)
                self._apply(task, key[1], task.mark_lost(key[1], now, "its member lost it"),
                            effects)
        for ref in running:
            if not self._is_current(device_id, ref):
                effects.append(Send(device_id, ShardCancel(shard=ref)))
        effects.append(self._running(device_id))
        self._schedule(effects)
        return effects

    def _is_current(self, device_id: str, ref: ShardRef) -> bool:
        """Whether ``ref`` is the member's own current attempt (anything else it runs is
        stopped: superseded, or never given to it whatever it claims)."""
        if not self.was_given(device_id, ref):
            return False
        shard = self.tasks[ref.task_id].shards[ref.shard]
        return shard.attempt == ref.attempt and shard.state in ACTIVE

    def was_given(self, device_id: str, ref: ShardRef) -> bool:
        """Whether the records ever placed this attempt on this member."""
        task = self.tasks.get(ref.task_id)
        return task is not None and task.may_report(ref.shard, ref.attempt, device_id)

    def member_left(self, device_id: str, now: float) -> list[Effect]:
        """A member's connection ended: its shards run again elsewhere now."""
        self.members.discard(device_id)
        return self._lose_shards_of(device_id, f"its member {device_id} left", now)

    def member_overdue(self, device_id: str, overdue: bool, capacity: ResourceVector | None,
                       now: float, platform: str = "") -> list[Effect]:
        """A member missed its heartbeats (``overdue``): its shards run again elsewhere now;
        it keeps its place and gets work again once it is heard from."""
        if device_id not in self.members:
            return []
        if overdue:
            return self._lose_shards_of(device_id, f"its member {device_id} stopped answering", now)
        return self.share_changed(device_id, capacity, platform)

    def share_changed(self, device_id: str, capacity: ResourceVector | None, platform: str = "") -> list[Effect]:
        """A member's resources or accept-tasks changed: take its new share, place again."""
        if device_id not in self.members:
            return []
        self._reshare(device_id, capacity, platform)
        effects: list[Effect] = []
        self._schedule(effects)
        return effects

    def _lose_shards_of(self, device_id: str, reason: str, now: float) -> list[Effect]:
        """Take a member's shards from it and queue them again; remember the attempts it may
        still hold, to stop them once their shard has a result from elsewhere."""
        effects: list[Effect] = []
        for key in self.scheduler.remove_member(device_id):
            task = self.tasks[key[0]]
            attempt = task.shards[key[1]].attempt
            change = task.mark_lost(key[1], now, reason)
            if change.accepted:
                self.abandoned.setdefault(key, []).append((device_id, attempt))
            self._apply(task, key[1], change, effects)
        self._schedule(effects)
        return effects

    def expire(self, now: float) -> list[Effect]:
        """Shards whose member did not report them back by their deadline are lost (and
        retried within their task's ``retries``)."""
        effects: list[Effect] = []
        for key, (device_id, deadline) in list(self.unconfirmed.items()):
            if now >= deadline:
                del self.unconfirmed[key]
                task = self.tasks[key[0]]
                change = task.mark_lost(key[1], now, f"member {device_id} did not come back")
                self._apply(task, key[1], change, effects)
        effects.append(WakeAt(self.next_deadline()))
        return effects

    def next_deadline(self) -> float | None:
        """When the earliest shard waiting for its member after a restart is lost."""
        if not self.unconfirmed:
            return None
        return min(deadline for _, deadline in self.unconfirmed.values())

    # ---- what members report ------------------------------------------------------------------

    def reporter_task(self, device_id: str, ref: ShardRef) -> Task:
        """The task a member's message is about; ``ProtocolError`` for an attempt this member
        was never given, old or current (``Task.may_report``)."""
        task = self.tasks.get(ref.task_id)
        if task is None or not 0 <= ref.shard < len(task.shards):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no shard {ref.shard} of {ref.task_id}")
        if not task.may_report(ref.shard, ref.attempt, device_id):
            raise ProtocolError(ErrorCode.FORBIDDEN,
                                f"attempt {ref.attempt} of shard {ref.shard} is not yours")
        return task

    def started(self, device_id: str, ref: ShardRef, now: float) -> list[Effect]:
        """The member says the attempt's process started."""
        task = self.reporter_task(device_id, ref)
        if not task.start(ref.shard, ref.attempt, now).accepted:
            return []
        return [SaveShard(task.id, task.shards[ref.shard]), TaskChanged(task.id, False)]

    def output(self, device_id: str, ref: ShardRef, stream: str, data: str) -> list[Effect]:
        """A line of the attempt's live output, kept with the task's logs."""
        self.reporter_task(device_id, ref)
        return [AppendLog(ref, stream, data)]

    def wants_result(self, ref: ShardRef, result: ShardResult) -> bool:
        """Whether this result would be recorded now (not a duplicate, not stale): only then
        are its files taken, checked before a byte arrives."""
        task = self.tasks.get(ref.task_id)
        return task is not None and task.wants_result(ref.shard, ref.attempt,
                                                      OUTCOME_STATES[result.reason])

    def may_fetch(self, device_id: str, sha256: Iterable[str]) -> None:
        """Refuse a member the input files of any task it holds no shard of: another task's
        inputs are its submitter's data, whatever hash a member may know or guess."""
        held = {task_id for task_id, _ in self.scheduler.placed_on(device_id)}
        mine = {entry.sha256 for task_id in held for entry in self.tasks[task_id].spec.files}
        if stranger := [sha for sha in sha256 if sha not in mine]:
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"{stranger[0][:12]}… is not an input of a shard placed on this member")

    def record(self, device_id: str, ref: ShardRef, result: ShardResult, files: Path | None,
               now: float) -> list[Effect]:
        """Record one attempt's result (once), keep its files if it is taken, and acknowledge
        it to the member once the record is committed (a duplicate is acknowledged too: the
        member may forget it)."""
        effects: list[Effect] = []
        task = self.tasks.get(ref.task_id)
        change = None
        if task is not None:
            outcome = OUTCOME_STATES[result.reason]
            change = task.record_result(ref.shard, ref.attempt, outcome, now,
                                        exit_code=result.exit_code, reason=result_note(result))
        if task is not None and change is not None and change.accepted:
            key = (task.id, ref.shard)
            self._observe_duration(task.id, result)
            self.recorded[key] = result
            if files is not None or task.spec.outputs:
                effects.append(KeepOutputs(task.id, ref.shard, files))
            self.unconfirmed.pop(key, None)
            self._apply(task, ref.shard, change, effects, result)
        elif files is not None:
            effects.append(DropFiles(files))
        effects.append(AckAfterCommit(device_id, ref))
        return effects

    # ---- reading ------------------------------------------------------------------------------

    def waiting_reason(self, task_id: str) -> str:
        """Why the task's shards are not running, for its summary."""
        if task_id in self.uploading:
            return "waiting for its files to arrive"
        return self.scheduler.waiting_reason(task_id) or ""

    def shard_counts(self) -> dict[str, int]:
        """Shards by state over every task held, for ``/metrics``."""
        counts: Counter[str] = Counter()
        for task in self.tasks.values():
            counts.update({state.value: n for state, n in task.counts().items()})  # kept, not walked
        return dict(counts)

    def task_counts(self) -> dict[str, int]:
        """Tasks by state, for ``pool_state`` and ``/api/stats``."""
        counts: Counter[str] = Counter(task.state.value for task in self.tasks.values())
        return dict(counts)

    # ---- internals ----------------------------------------------------------------------------

    def _apply(self, task: Task, index: int, change: Change, effects: list[Effect],
               result: ShardResult | None = None) -> None:
        """Carry out what a record change asks of the scheduler, and say what the members,
        the store and the followers must hear."""
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
            effects.append(Send(device_id, ShardCancel(shard=ShardRef(task.id, index, attempt))))
        shard = task.shards[index]
        key = (task.id, index)
        if shard.state in RESULT_STATES:
            self._stop_abandoned(task, index, effects)
        effects.append(SaveShard(task.id, shard, result or self.recorded.get(key)))
        if shard.device_id is not None:
            effects.append(self._running(shard.device_id))
        ended = task.state in ENDED
        if ended:
            self._hand_over(task)
        effects.append(TaskChanged(task.id, ended))
        self._schedule(effects)

    def _stop_abandoned(self, task: Task, index: int, effects: list[Effect]) -> None:
        """The shard needs no other attempt (it has its result, or it is cancelled or
        forgotten): tell the members that may still run one taken from them to stop it."""
        shard = task.shards[index]
        for device_id, attempt in self.abandoned.pop((task.id, index), ()):
            if attempt not in shard.reported:
                effects.append(Send(device_id, ShardCancel(shard=ShardRef(task.id, index, attempt))))

    def _hand_over(self, task: Task) -> None:
        """Make the scheduler hold exactly the task's queued shards. A task with shards still
        on members stays held even with none queued, so that a member coming back can have
        them adopted; an ended one is dropped. Shards on members keep their holds either
        way, so this is also how a retry queues shards while others of the task still run."""
        self.scheduler.remove_task(task.id)
        if task.state in ENDED:
            self._durations.pop(task.id, None)
            return
        queued = [s.index for s in task.shards if s.state is ShardState.QUEUED]
        self.scheduler.submit(task.id, task.spec.resources.vector(), queued, task.spec.priority,
                              task.spec.platform_need())
        mean = self._durations.get(task.id)
        if mean is not None:
            self.scheduler.set_ahead(task.id, ahead_for(mean))

    def _observe_duration(self, task_id: str, result: ShardResult) -> None:
        """Follow how long the task's shards run, and hold as many ahead as that calls for."""
        seconds = max(0.0, result.ended - result.started)
        mean = self._durations.get(task_id)
        mean = seconds if mean is None else 0.8 * mean + 0.2 * seconds
        self._durations[task_id] = mean
        self.scheduler.set_ahead(task_id, ahead_for(mean))

    def _held_ahead(self, placement: Placement, device_name: Callable[[str], str]) -> str:
        """What a shard placed ahead waits for, as people read it ("" if it starts at once)."""
        if placement.after is None:
            return ""
        task_id, index = placement.after
        return held_ahead(device_name(placement.device_id), self.tasks[task_id].spec.name or task_id, index)

    def _after(self, placement: Placement) -> ShardRef | None:
        """The attempt a shard placed ahead waits for, as the member knows it."""
        if placement.after is None:
            return None
        task_id, index = placement.after
        return ShardRef(task_id, index, self.tasks[task_id].shards[index].attempt)

    def _reshare(self, device_id: str, capacity: ResourceVector | None, platform: str) -> None:
        if capacity is not None:
            self.scheduler.set_member(device_id, capacity, platform=platform)

    def _running(self, device_id: str) -> RunningShards:
        return RunningShards(device_id, len(self.scheduler.running_on(device_id)))

    def _schedule(self, effects: list[Effect]) -> None:
        if self.scheduler.has_queued:
            effects.append(PLACE_SOON)

    def _save_all(self, task: Task, files_ready: bool, effects: list[Effect]) -> None:
        effects.append(SaveTask(task, files_ready))
        effects.extend(SaveShard(task.id, shard, self.recorded.get((task.id, shard.index)))
                       for shard in task.shards)


def _still_placed(shard: Shard, attempt: int, device_id: str) -> bool:
    """Whether ``attempt`` is the shard's current one, placed on ``device_id`` and not ended."""
    return shard.attempt == attempt and shard.device_id == device_id and shard.state in ACTIVE


# What the shell, and the programs that start another (prlimit in a sandbox, env, nice), exit
# with when the program they were to start could not be.
_EXEC_FAILURES = {126: " (the command could not be executed)", 127: " (command not found)"}


def result_note(result: ShardResult) -> str:
    """What a shard's record says of how an attempt ended: the member's message, else for one
    that failed how its program ended (what ``poolnet tasks ID`` and ``poolnet run`` show),
    else its outcome; nothing for a success."""
    if result.message:
        return result.message
    if result.reason == "succeeded":
        return ""
    if result.reason == "failed" and result.exit_code is not None:
        if result.exit_code < 0:
            return f"killed by signal {-result.exit_code}"
        return f"exited with code {result.exit_code}" + _EXEC_FAILURES.get(result.exit_code, "")
    return result.reason


def failed_result(result: ShardResult, message: str) -> ShardResult:
    """The failed result recorded for an attempt whose outputs the coordinator refused or
    could not store (its disk full, say): the shard fails with ``message``, and its retries
    decide what follows."""
    return ShardResult(reason="error", exit_code=result.exit_code, started=result.started,
                       ended=result.ended, message=message)
