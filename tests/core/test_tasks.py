"""Task and shard states: the transition table, retries, and results recorded exactly once."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolnet_desktop.core.manifest import TaskSpec
from poolnet_desktop.core.task_protocol import task_summary
from poolnet_desktop.core.task_summary import ended_at
from poolnet_desktop.core.tasks import (
    ENDED,
    TRANSITIONS,
    Change,
    IllegalTransition,
    Shard,
    ShardState,
    Task,
    TaskState,
    transition,
)

S = ShardState


def make_task(shards: int = 3, retries: int = 2) -> Task:
    spec = TaskSpec(name="t", command=("true",), shards=shards, retries=retries)
    return Task("task-1", spec, submitted_at=100.0, submitter="alice")


def test_every_state_has_a_row_and_final_states_stay() -> None:
    assert set(TRANSITIONS) == set(ShardState)
    assert TRANSITIONS[S.SUCCEEDED] == frozenset()
    assert TRANSITIONS[S.CANCELLED] == frozenset({S.QUEUED})  # a person's retry only


@pytest.mark.parametrize(
    ("old", "new"),
    [(S.QUEUED, S.RUNNING), (S.RUNNING, S.QUEUED), (S.SUCCEEDED, S.QUEUED),
     (S.CANCELLED, S.RUNNING), (S.TIMED_OUT, S.FAILED), (S.QUEUED, S.LOST),
     (S.RUNNING, S.ASSIGNED)],
)
def test_illegal_moves_refused(old: ShardState, new: ShardState) -> None:
    with pytest.raises(IllegalTransition, match=f"from {old} to {new}"):
        transition(old, new)


def test_happy_path() -> None:
    task = make_task(shards=2)
    assert task.state is TaskState.QUEUED
    assert task.assign(0, "dev-a", (), now=101.0) == 1
    assert task.state is TaskState.RUNNING
    assert task.start(0, 1, now=102.0).accepted
    change = task.record_result(0, 1, S.SUCCEEDED, now=103.0, exit_code=0)
    assert (change.accepted, change.release, change.requeue) == (True, True, False)
    shard = task.shards[0]
    assert (shard.state, shard.exit_code, shard.device_id) == (S.SUCCEEDED, 0, "dev-a")
    assert (shard.assigned_at, shard.started_at, shard.finished_at) == (101.0, 102.0, 103.0)
    assert task.progress() == (1, 2)
    # The second shard reports its result without a separate start message.
    task.assign(1, "dev-b", (0,), now=104.0)
    task.record_result(1, 1, S.SUCCEEDED, now=105.0, exit_code=0)
    assert task.state is TaskState.SUCCEEDED
    assert task.progress() == (2, 2)


def test_failures_retry_within_retries_then_fail() -> None:
    task = make_task(shards=1, retries=2)
    for attempt in (1, 2):
        assert task.assign(0, "dev-a", (), now=float(attempt)) == attempt
        change = task.record_result(0, attempt, S.FAILED, now=float(attempt), exit_code=3,
                                    reason="exit code 3")
        assert (change.note, change.requeue, change.release) == ("retrying", True, True)
        assert task.shards[0].state is S.QUEUED
        assert task.shards[0].reason == f"attempt {attempt} failed: exit code 3; retrying"
    task.assign(0, "dev-a", (), now=3.0)
    change = task.record_result(0, 3, S.FAILED, now=3.0, exit_code=3)
    assert (change.note, change.requeue) == ("recorded", False)
    assert task.shards[0].state is S.FAILED
    assert task.state is TaskState.FAILED


def test_timeout_is_not_retried() -> None:
    task = make_task(shards=1)
    task.assign(0, "dev-a", (), now=1.0)
    change = task.record_result(0, 1, S.TIMED_OUT, now=2.0, reason="timeout after 10 s")
    assert not change.requeue
    assert task.state is TaskState.FAILED


def test_lost_shard_requeued_and_stale_loss_ignored() -> None:
    task = make_task(shards=1, retries=1)
    task.assign(0, "dev-a", (), now=1.0)
    change = task.mark_lost(0, now=2.0, reason="dev-a vanished")
    assert (change.accepted, change.requeue) == (True, True)
    assert task.shards[0].reason == "attempt 1 lost: dev-a vanished; retrying"
    assert not task.mark_lost(0, now=2.5, reason="again").accepted
    task.assign(0, "dev-b", (), now=3.0)
    assert not task.mark_lost(0, now=4.0, reason="old", attempt=1).accepted
    change = task.mark_lost(0, now=4.0, reason="dev-b vanished")
    assert (change.accepted, change.requeue, change.state) == (True, False, S.LOST)
    assert task.state is TaskState.FAILED


def test_duplicate_results_ignored() -> None:
    task = make_task(shards=1)
    task.assign(0, "dev-a", (), now=1.0)
    assert task.record_result(0, 1, S.SUCCEEDED, now=2.0).accepted
    change = task.record_result(0, 1, S.SUCCEEDED, now=3.0)
    assert (change.accepted, change.note) == (False, "duplicate")
    assert task.shards[0].finished_at == 2.0
    # A repeated failure of an attempt already retried changes nothing either.
    other = make_task(shards=1)
    other.assign(0, "dev-a", (), now=1.0)
    assert other.record_result(0, 1, S.FAILED, now=2.0).requeue
    assert other.record_result(0, 1, S.FAILED, now=3.0).note == "duplicate"
    # Nor does a contradicting success for that same attempt.
    assert other.record_result(0, 1, S.SUCCEEDED, now=3.0).note == "duplicate"
    other.assign(0, "dev-b", (), now=4.0)
    assert not other.record_result(0, 1, S.FAILED, now=5.0).accepted
    assert other.shards[0].state is S.ASSIGNED
    assert not other.record_result(0, 7, S.SUCCEEDED, now=5.0).accepted


def test_late_success_supersedes_running_retry() -> None:
    task = make_task(shards=1)
    task.assign(0, "dev-a", (), now=1.0)
    task.mark_lost(0, now=2.0, reason="cut off")
    task.assign(0, "dev-b", (1,), now=3.0)
    change = task.record_result(0, 1, S.SUCCEEDED, now=4.0, exit_code=0)
    assert (change.accepted, change.release, change.cancel) == (True, True, ("dev-b", 2))
    assert task.state is TaskState.SUCCEEDED
    assert task.shards[0].reason == "result of attempt 1, delivered late"
    # dev-b then reports its cancelled attempt: stale, the success stands.
    assert not task.record_result(0, 2, S.CANCELLED, now=5.0).accepted
    assert task.shards[0].state is S.SUCCEEDED


def test_late_success_while_queued_withdraws_retry() -> None:
    task = make_task(shards=1)
    task.assign(0, "dev-a", (), now=1.0)
    task.mark_lost(0, now=2.0, reason="cut off")
    change = task.record_result(0, 1, S.SUCCEEDED, now=3.0)
    assert (change.withdraw, change.release, change.cancel) == (True, False, None)
    assert task.state is TaskState.SUCCEEDED


def test_cancel() -> None:
    task = make_task(shards=3)
    task.assign(0, "dev-a", (), now=1.0)
    task.assign(1, "dev-b", (), now=1.0)
    task.record_result(1, 1, S.SUCCEEDED, now=2.0)
    assert task.cancel(now=3.0) == [(0, "dev-a", 1)]
    assert task.shards[2].state is S.CANCELLED
    assert task.state is TaskState.RUNNING
    # A loss while cancelling is not retried.
    assert not task.mark_lost(0, now=4.0, reason="gone").requeue
    assert task.state is TaskState.CANCELLED
    # Its result, delivered after all, is kept; the task stays cancelled.
    assert task.record_result(0, 1, S.SUCCEEDED, now=5.0).accepted
    assert task.shards[0].state is S.SUCCEEDED
    assert task.state is TaskState.CANCELLED


def test_late_success_after_cancel_is_ignored() -> None:
    task = make_task(shards=1)
    task.cancel(now=1.0)
    assert task.shards[0].state is S.CANCELLED
    assert not task.record_result(0, 0, S.SUCCEEDED, now=2.0).accepted
    assert task.state is TaskState.CANCELLED


def test_rebuild_from_records() -> None:
    spec = TaskSpec(name="t", command=("true",), shards=2)
    records = [
        Shard(1, S.RUNNING, attempt=1, device_id="dev-a"),
        Shard(0, S.SUCCEEDED, attempt=1, reported={1}),
    ]
    task = Task("t1", spec, submitted_at=0.0, shards=records)
    assert [shard.index for shard in task.shards] == [0, 1]
    assert task.state is TaskState.RUNNING
    assert task.record_result(1, 1, S.SUCCEEDED, now=9.0).accepted
    assert task.state is TaskState.SUCCEEDED
    assert task.record_result(0, 1, S.SUCCEEDED, now=9.0).note == "duplicate"
    with pytest.raises(ValueError, match="do not match"):
        Task("t2", spec, submitted_at=0.0, shards=[Shard(0)])


def test_bad_calls_are_errors() -> None:
    task = make_task(shards=1)
    with pytest.raises(ValueError, match="not a shard result"):
        task.record_result(0, 1, S.LOST, now=1.0)
    with pytest.raises(IndexError):
        task.assign(5, "dev-a", (), now=1.0)
    task.assign(0, "dev-a", (), now=1.0)
    with pytest.raises(IllegalTransition):
        task.assign(0, "dev-b", (), now=2.0)


_EVENT = st.tuples(
    st.sampled_from(["assign", "start", "result", "lost", "cancel", "retry"]),
    st.integers(0, 2),  # shard
    st.integers(0, 4),  # attempt as reported
    st.sampled_from([S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.CANCELLED]),
)


def _play(task: Task, event: tuple[str, int, int, ShardState], now: float) -> Change | None:
    """One member's (or person's) message to ``task``; the change a result or loss made."""
    kind, index, attempt, outcome = event
    if kind == "assign":
        if task.shards[index].state is S.QUEUED:
            task.assign(index, f"dev-{int(now) % 4}", (), now)
    elif kind == "cancel":
        task.cancel(now)
    elif kind == "retry":
        task.retry(now)
    elif kind == "start":
        task.start(index, attempt, now)
    elif kind == "result":
        return task.record_result(index, attempt, outcome, now)
    else:
        return task.mark_lost(index, now, "gone", attempt=attempt)
    return None


@given(st.lists(_EVENT, max_size=60), st.integers(0, 3))
def test_any_message_order_keeps_records_consistent(
    events: list[tuple[str, int, int, ShardState]], retries: int
) -> None:
    """Whatever members send, in whatever order and repetition: counts match the shards, a
    result is accepted at most once per (shard, attempt), and at most one success per shard."""
    task = make_task(shards=3, retries=retries)
    accepted: Counter[tuple[int, int]] = Counter()
    successes: Counter[int] = Counter()
    for step, event in enumerate(events, start=1):
        kind, index, attempt, _ = event
        change = _play(task, event, float(step))
        if change is not None and change.accepted and kind == "result":
            accepted[(index, attempt)] += 1
            successes[index] += change.state is S.SUCCEEDED
        shard = task.shards[index]
        assert shard.attempt - shard.retry_base <= retries + 1
    assert all(n == 1 for n in accepted.values())
    assert all(n <= 1 for n in successes.values())
    for state in ShardState:
        assert task.count(state) == sum(shard.state is state for shard in task.shards)


@given(st.lists(_EVENT, max_size=60), st.integers(0, 3))
def test_a_tasks_times_and_devices_are_what_its_shards_say(
    events: list[tuple[str, int, int, ShardState]], retries: int
) -> None:
    """Kept as shards move (a summary must not walk 100,000 shards), the devices used, the
    first start and the end are what a walk of the shards' records gives: the start is the
    earliest any attempt had (a shard placed again does not move it), the end an ended
    task's last finish. A task rebuilt from its records agrees."""
    task = make_task(shards=3, retries=retries)
    starts: set[float] = set()
    for step, event in enumerate(events, start=1):
        _play(task, event, float(step))
        for shard in task.shards:
            if shard.started_at is not None:
                starts.add(shard.started_at)
            elif shard.finished_at is not None and shard.assigned_at is not None:
                starts.add(shard.assigned_at)  # its result came before its start was heard
        assert task.devices == {device for shard in task.shards for device in shard.placed.values()}
        assert task.first_started_at == min(starts, default=None)
        finishes = [shard.finished_at for shard in task.shards if shard.finished_at is not None]
        if task.state in ENDED:
            assert ended_at(task) == max(finishes, default=task.submitted_at)
    rebuilt = Task(task.id, task.spec, submitted_at=task.submitted_at, shards=copy.deepcopy(task.shards))
    assert (rebuilt.devices, ended_at(rebuilt)) == (task.devices, ended_at(task))


def test_retry_queues_every_unsuccessful_shard_with_a_fresh_budget() -> None:
    task = make_task(shards=5, retries=1)
    for index in range(5):
        task.assign(index, "dev", (), now=1.0)
    task.record_result(0, 1, S.SUCCEEDED, now=2.0)
    task.record_result(1, 1, S.TIMED_OUT, now=2.0)
    task.mark_lost(2, now=2.0, reason="gone")  # retried automatically: attempt 2 next
    task.assign(2, "dev", (), now=3.0)
    task.record_result(2, 2, S.FAILED, now=4.0)  # budget spent: failed for good
    assert task.cancel(now=5.0) == [(3, "dev", 1), (4, "dev", 1)]
    task.record_result(3, 1, S.CANCELLED, now=6.0)
    task.record_result(4, 1, S.FAILED, now=6.0)  # still on its member when cancelled
    assert task.state is TaskState.CANCELLED

    assert task.retry(now=7.0) == [1, 2, 3, 4]
    assert not task.cancel_requested and task.state is TaskState.RUNNING
    assert [s.state for s in task.shards] == [S.SUCCEEDED] + [S.QUEUED] * 4
    assert task.retry(now=7.5) == []  # nothing left to run again
    assert task.assign(2, "dev", (), now=8.0) == 3  # a new attempt number, never reused
    change = task.record_result(2, 3, S.FAILED, now=9.0)
    assert change.requeue and task.shards[2].state is S.QUEUED  # one automatic retry again
    task.assign(2, "dev", (), now=10.0)
    assert not task.record_result(2, 4, S.FAILED, now=11.0).requeue
    # A late result of an attempt from before the retry still counts once.
    assert task.record_result(1, 1, S.SUCCEEDED, now=12.0).accepted is False  # already reported
    assert task.assign(1, "dev", (), now=12.0) == 2
    assert task.record_result(1, 2, S.SUCCEEDED, now=13.0).accepted


def test_a_summary_counts_shards_held_on_a_member_as_waiting_not_running() -> None:
    """A shard held ahead behind a long one used to show as running for as long as it waited."""
    task = make_task(shards=3)
    first = task.assign(0, "desk2", (), now=1.0)
    task.start(0, first, now=1.1)
    task.assign(1, "desk2", (), now=1.2)  # held on desk2 until shard 0 ends
    summary = task_summary(task)
    assert (summary.running, summary.waiting, summary.queued) == (1, 1, 1)
