"""Tasks and their shards: states, the one table of legal moves, and results recorded once.

A ``Task`` owns its ``Shard`` records and derives its own state from them. Every change goes
through a method that takes the time (``now``) as an argument and returns a ``Change`` telling
the caller what to do next with the scheduler and the members (release, requeue, withdraw,
cancel an attempt elsewhere). Pure: no clock, no I/O; the coordinator persists the records.

Attempts: each assignment of a shard to a member is a new attempt (1, 2, ...), and every message
about a shard names its attempt. Each shard remembers which attempts' results it recorded
(``Shard.reported``; persist it with the shard), so a result is recorded once per
(task, shard, attempt) and any second one is ignored as a duplicate.

Ownership: each shard also remembers which device every attempt was placed on
(``Shard.placed``, persisted too). Only that device may report on that attempt
(``Task.may_report``): its start, its output, its result and its result's files. Another
member cannot adopt, finish or write logs for an attempt it was never given, old or new.
Beyond that:

* a result is accepted for the attempt now assigned or running;
* a success from an older attempt (a member that finished while cut off and delivers its
  spooled result later) is accepted as long as the shard has not succeeded or been cancelled;
  any newer attempt still running becomes useless and the caller is told to cancel it;
* a failure from an older attempt is ignored: the shard has already moved on.

A person may ask for a task's unsuccessful shards to run again (``Task.retry``): failed,
timed-out, cancelled and lost shards go back to the queue with a fresh ``retries`` budget.
That is the only way out of ``CANCELLED`` and the only way from ``TIMED_OUT`` back to
``QUEUED``; no member's message takes a shard there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from poolnet_desktop.core.manifest import MAX_SHARDS, TaskSpec


class ShardState(StrEnum):
    QUEUED = "queued"
    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    LOST = "lost"


class TaskState(StrEnum):
    """Derived from the shards (``Task.state``), never stored on its own."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


S = ShardState
# The one table of legal moves. A success may arrive late from an earlier attempt (see the
# module docstring), hence SUCCEEDED is reachable from every state but itself and CANCELLED.
TRANSITIONS: dict[ShardState, frozenset[ShardState]] = {
    S.QUEUED: frozenset({S.ASSIGNED, S.CANCELLED, S.SUCCEEDED}),
    # A quick shard may report its result without a separate "started" message.
    S.ASSIGNED: frozenset({S.RUNNING, S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.CANCELLED, S.LOST}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.CANCELLED, S.LOST}),
    S.FAILED: frozenset({S.QUEUED, S.SUCCEEDED}),
    S.LOST: frozenset({S.QUEUED, S.SUCCEEDED}),
    S.TIMED_OUT: frozenset({S.SUCCEEDED, S.QUEUED}),
    S.SUCCEEDED: frozenset(),
    S.CANCELLED: frozenset({S.QUEUED}),  # a person's retry only
}
ACTIVE = frozenset({S.ASSIGNED, S.RUNNING})
# Task states nothing more happens in (barring a person's retry). A ``TaskSummary.state`` is
# the same string, so its membership can be tested here as well.
ENDED = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})
# Where a shard rests when nothing more will happen to it (barring a late success).
FINAL = frozenset({S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.CANCELLED, S.LOST})
RESULT_STATES = frozenset({S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.CANCELLED})
# Failures worth another attempt elsewhere; a timeout or a cancel would only repeat itself.
RETRYABLE = frozenset({S.FAILED, S.LOST})
# What a person's retry runs again: every way a shard can end without success.
UNSUCCESSFUL = frozenset({S.FAILED, S.TIMED_OUT, S.CANCELLED, S.LOST})


class IllegalTransition(ValueError):
    """A move the table does not allow: a bug in the caller, never a network event."""


def transition(current: ShardState, new: ShardState) -> ShardState:
    """Return ``new`` if ``current -> new`` is legal, else raise ``IllegalTransition``."""
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"a shard cannot go from {current} to {new}")
    return new


@dataclass(slots=True)
class Shard:
    """One shard's record. ``attempt`` counts assignments (0 = never assigned); ``device_id``
    and ``gpu_indices`` belong to the current attempt; ``reason`` says why it waits or ended;
    ``reported`` holds the attempts whose result has been recorded; ``retry_base`` is the
    attempt a person's retry started from (the automatic ``retries`` count from there);
    ``placed`` maps every attempt to the device it was placed on, the only one that may
    report on it."""

    index: int
    state: ShardState = ShardState.QUEUED
    attempt: int = 0
    device_id: str | None = None
    gpu_indices: tuple[int, ...] = ()
    exit_code: int | None = None
    reason: str = ""
    queued_at: float | None = None
    reported: set[int] = field(default_factory=set)
    assigned_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    retry_base: int = 0
    placed: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Change:
    """What a task method did, and what the caller must do about it.

    ``accepted`` is False when the message was a duplicate or stale and changed nothing
    (``note`` says which). ``release``: the shard no longer holds its member's resources, call
    ``Scheduler.release``. ``requeue``: it is queued for another attempt, call
    ``Scheduler.requeue``. ``withdraw``: a queued retry became unnecessary, call
    ``Scheduler.withdraw``. ``cancel``: ``(device_id, attempt)`` still running a now useless
    attempt; tell that member to stop it.
    """

    accepted: bool
    note: str
    state: ShardState
    release: bool = False
    requeue: bool = False
    withdraw: bool = False
    cancel: tuple[str, int] | None = None


def held_ahead(device_name: str, task_name: str, shard: int) -> str:
    """Why a shard placed ahead on a member does not run yet: it waits there for another
    shard to end (``core.scheduler``'s ``ahead``), which may belong to another task."""
    return f"waiting on {device_name} behind {task_name} (shard {shard})"


def shard_note(state: str, reason: str) -> str:
    """A shard's state as people read it: one placed on a member but not started is waiting
    (and says on what), never "running"."""
    if state == ShardState.ASSIGNED:
        return reason or "waiting to start on its member"
    return f"{state}: {reason}" if reason else state


class Task:
    """A submitted task and its shards.

    Build it fresh with ``Task(task_id, spec, submitted_at=now)`` or from stored records by
    passing ``shards`` and ``cancel_requested``. Shard indices run 0..shards-1.
    """

    def __init__(
        self,
        task_id: str,
        spec: TaskSpec,
        *,
        submitted_at: float,
        submitter: str = "",
        shards: Iterable[Shard] | None = None,
        cancel_requested: bool = False,
    ) -> None:
        self.id = task_id
        self.spec = spec
        self.submitted_at = submitted_at
        self.submitter = submitter
        self.cancel_requested = cancel_requested
        if shards is None:
            self.shards = [Shard(i, queued_at=submitted_at) for i in range(spec.shards)]
        else:
            self.shards = sorted(shards, key=lambda shard: shard.index)
            if [shard.index for shard in self.shards] != list(range(spec.shards)):
                raise ValueError(f"task {task_id}: shard records do not match {spec.shards} shards")
        self._counts: Counter[ShardState] = Counter(shard.state for shard in self.shards)
        # Kept as shards move, like the counts: a summary of a task of 100,000 shards, made
        # for every watcher several times a second, must not walk them (6.8 ms each here).
        self._devices = {device for shard in self.shards for device in shard.placed.values()}
        self._first_start = min((t for t in map(_start_of, self.shards) if t is not None), default=None)
        self._last_finish = max((s.finished_at for s in self.shards if s.finished_at is not None), default=None)

    # --- derived views ---

    @property
    def devices(self) -> frozenset[str]:
        """Every device an attempt of the task was placed on."""
        return frozenset(self._devices)

    @property
    def first_started_at(self) -> float | None:
        """When its first shard started running, if one did: the earliest start of any
        attempt, which a later attempt of that shard does not move. A shard whose result came
        without its start ever being heard of (a member reports tiny shards' starts late or
        not at all) counts from when it was placed."""
        return self._first_start

    @property
    def last_finished_at(self) -> float | None:
        """When a shard last finished (succeeded, failed, was lost or cancelled), if one did."""
        return self._last_finish

    @property
    def state(self) -> TaskState:
        total = len(self.shards)
        counts = self._counts
        if counts[S.SUCCEEDED] == total:
            return TaskState.SUCCEEDED
        if sum(map(counts.__getitem__, FINAL)) == total:  # no generator: read for every result
            return TaskState.CANCELLED if self.cancel_requested else TaskState.FAILED
        if counts[S.QUEUED] == total:
            return TaskState.QUEUED
        return TaskState.RUNNING

    def count(self, state: ShardState) -> int:
        return self._counts[state]

    def counts(self) -> dict[ShardState, int]:
        """Shards by state, only the states some shard is in (kept as shards move: a summary
        of a task of 100,000 shards must not walk them)."""
        return {state: n for state, n in self._counts.items() if n}

    def progress(self) -> tuple[int, int]:
        """(shards that will not run again, all shards): what a progress bar shows."""
        return sum(map(self._counts.__getitem__, FINAL)), len(self.shards)

    def may_report(self, index: int, attempt: int, device_id: str) -> bool:
        """Whether ``device_id`` may report on this attempt (started, output, result, files):
        only the device the attempt was placed on, whichever attempt is current now."""
        if not 0 <= index < len(self.shards):
            return False
        return self.shards[index].placed.get(attempt) == device_id

    def wants_result(self, index: int, attempt: int, outcome: ShardState) -> bool:
        """Whether ``record_result`` would record this result now (not a duplicate, not
        stale): a result's files are taken only then, checked before any byte arrives."""
        shard = self._shard(index)
        return self._verdict(shard, attempt, outcome) in ("current", "late success")

    # --- changes ---

    def assign(
        self, index: int, device_id: str, gpu_indices: tuple[int, ...], now: float, reason: str = ""
    ) -> int:
        """A queued shard placed on a member; returns the new attempt number to send along.
        ``reason`` says why it does not run at once (``held_ahead``), until it starts."""
        shard = self._shard(index)
        self._move(shard, S.ASSIGNED)
        shard.attempt += 1
        shard.placed[shard.attempt] = device_id
        self._devices.add(device_id)
        shard.device_id = device_id
        shard.gpu_indices = gpu_indices
        shard.exit_code = None
        shard.reason = reason
        shard.assigned_at = now
        shard.started_at = shard.finished_at = None
        return shard.attempt

    def start(self, index: int, attempt: int, now: float) -> Change:
        """The member says the attempt's process started."""
        shard = self._shard(index)
        if attempt != shard.attempt or shard.state is not S.ASSIGNED:
            return Change(False, "stale", shard.state)
        self._move(shard, S.RUNNING)
        shard.started_at = now
        self._started(now)
        shard.reason = ""
        return Change(True, "started", shard.state)

    def record_result(
        self,
        index: int,
        attempt: int,
        outcome: ShardState,
        now: float,
        *,
        exit_code: int | None = None,
        reason: str = "",
    ) -> Change:
        """A member's result for one attempt: succeeded, failed, timed_out or cancelled.

        Safe to call with duplicates and late deliveries: see the module docstring.
        """
        if outcome not in RESULT_STATES:
            raise ValueError(f"{outcome} is not a shard result")
        shard = self._shard(index)
        verdict = self._verdict(shard, attempt, outcome)
        if verdict == "current":
            shard.reported.add(attempt)
            return self._finish(shard, outcome, now, exit_code, reason)
        if verdict == "late success":
            shard.reported.add(attempt)
            return self._late_success(shard, attempt, now, exit_code, reason)
        return Change(False, verdict, shard.state)

    def mark_lost(
        self, index: int, now: float, reason: str, *, attempt: int | None = None
    ) -> Change:
        """The member running the shard vanished (or lost it); ``attempt`` defaults to the
        current one. Requeued while retries remain and the task is not being cancelled."""
        shard = self._shard(index)
        if attempt not in (None, shard.attempt) or shard.state not in ACTIVE:
            return Change(False, "stale", shard.state)
        return self._finish(shard, S.LOST, now, None, reason)

    def cancel(self, now: float, reason: str = "cancelled") -> list[tuple[int, str, int]]:
        """Stop the task: queued shards are cancelled at once (take them out of the
        scheduler, and the task too once it has ended); returns ``(index, device_id,
        attempt)`` for each shard still on a member, which the caller must ask to kill it and
        later reports with ``record_result(..., CANCELLED)`` or ``mark_lost``."""
        self.cancel_requested = True
        to_kill = []
        for shard in self.shards:
            if shard.state is S.QUEUED:
                self._move(shard, S.CANCELLED)
                shard.reason = reason
                self._finished(shard, now)
            elif shard.state in ACTIVE and shard.device_id is not None:
                to_kill.append((shard.index, shard.device_id, shard.attempt))
        return to_kill

    def retry(self, now: float) -> list[int]:
        """Queue every failed, timed-out, cancelled or lost shard again, with new attempt
        numbers and a fresh ``retries`` budget, and lift a cancel. Returns their indices: the
        caller queues them in the scheduler, which may still hold the task (other shards
        of it run). Late results of their old attempts count as always."""
        self.cancel_requested = False
        again = []
        for shard in self.shards:
            if shard.state in UNSUCCESSFUL:
                self._move(shard, S.QUEUED)
                shard.retry_base = shard.attempt
                shard.exit_code = None
                shard.reason = "run again on request"
                shard.queued_at = now
                shard.finished_at = None
                again.append(shard.index)
        return again

    # --- internals ---

    def _shard(self, index: int) -> Shard:
        if not 0 <= index < len(self.shards):
            raise IndexError(f"task {self.id} has no shard {index}")
        return self.shards[index]

    @staticmethod
    def _verdict(shard: Shard, attempt: int, outcome: ShardState) -> str:
        """What a result of ``attempt`` would be: "current", "late success", or why it
        changes nothing (the module docstring gives the rules)."""
        if not 1 <= attempt <= shard.attempt:
            return f"unknown attempt {attempt}"
        if attempt in shard.reported:
            return "duplicate"
        if attempt == shard.attempt and shard.state in ACTIVE:
            return "current"
        if outcome is S.SUCCEEDED and shard.state not in (S.SUCCEEDED, S.CANCELLED):
            return "late success"
        return "stale"

    def _started(self, at: float) -> None:
        if self._first_start is None or at < self._first_start:
            self._first_start = at

    def _finished(self, shard: Shard, now: float) -> None:
        shard.finished_at = now
        if (start := _start_of(shard)) is not None:
            self._started(start)
        if self._last_finish is None or now > self._last_finish:
            self._last_finish = now

    def _move(self, shard: Shard, new: ShardState) -> None:
        old = shard.state
        shard.state = transition(old, new)
        self._counts[old] -= 1
        self._counts[new] += 1

    def _finish(
        self, shard: Shard, outcome: ShardState, now: float, exit_code: int | None, reason: str
    ) -> Change:
        self._move(shard, outcome)
        shard.exit_code = exit_code
        shard.reason = reason
        self._finished(shard, now)
        retry = outcome in RETRYABLE and shard.attempt - shard.retry_base <= self.spec.retries
        if retry and not self.cancel_requested:
            self._move(shard, S.QUEUED)
            detail = f": {reason}" if reason else ""
            shard.reason = f"attempt {shard.attempt} {outcome}{detail}; retrying"
            shard.queued_at = now
            return Change(True, "retrying", shard.state, release=True, requeue=True)
        return Change(True, "recorded", shard.state, release=True)

    def _late_success(
        self, shard: Shard, attempt: int, now: float, exit_code: int | None, reason: str
    ) -> Change:
        was = shard.state
        superseded = None
        if was in ACTIVE and shard.device_id is not None:
            superseded = (shard.device_id, shard.attempt)
        self._move(shard, S.SUCCEEDED)
        shard.exit_code = exit_code
        shard.reason = reason or f"result of attempt {attempt}, delivered late"
        self._finished(shard, now)
        return Change(
            True,
            "late success",
            shard.state,
            release=was in ACTIVE,
            withdraw=was is S.QUEUED,
            cancel=superseded,
        )


def _start_of(shard: Shard) -> float | None:
    """When the shard's current attempt started, as far as is known: its start, or its
    placement if it finished without its start being heard of."""
    if shard.started_at is not None:
        return shard.started_at
    return shard.assigned_at if shard.finished_at is not None else None


@dataclass(frozen=True, slots=True)
class SubmitQuota:
    """How much one submitting device may have held in the pool at once: tasks not ended,
    and their shards queued or on members. Keeps one device from crowding out the rest."""

    max_tasks: int = 64
    max_shards: int = 2 * MAX_SHARDS  # two of the largest tasks a manifest may ask for


def quota_refusal(
    tasks: Iterable[Task], submitter: str, new_shards: int, quota: SubmitQuota
) -> str | None:
    """Why a new task of ``new_shards`` shards from ``submitter`` is refused, or None."""
    held_tasks = held_shards = 0
    for task in tasks:
        if task.submitter != submitter or task.state in ENDED:
            continue
        held_tasks += 1
        held_shards += task.count(S.QUEUED) + sum(task.count(state) for state in ACTIVE)
    if held_tasks + 1 > quota.max_tasks:
        return f"this device already has {held_tasks} tasks held (at most {quota.max_tasks})"
    if held_shards + new_shards > quota.max_shards:
        return (f"this device already has {held_shards} shards held and asks for {new_shards} "
                f"more (at most {quota.max_shards})")
    return None
