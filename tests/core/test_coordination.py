"""The coordination core's decisions, as plain values: crash recovery, lost members, first
result wins, who may report, forgetting. No sockets, no store: the effects are the answer."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from poolnet_desktop.core.coordination import Coordination, result_note
from poolnet_desktop.core.coordination_effects import (
    AckAfterCommit,
    DropFiles,
    Effect,
    Forgotten,
    KeepOutputs,
    PlaceSoon,
    SaveShard,
    SaveTask,
    Send,
    SendAfterCommit,
    TaskChanged,
    WakeAt,
)
from poolnet_desktop.core.manifest import TaskSpec
from poolnet_desktop.core.protocol import ErrorCode, ProtocolError, decode_server, encode
from poolnet_desktop.core.resources import ResourceVector
from poolnet_desktop.core.task_protocol import AssignShards, ShardCancel, ShardRef, ShardResult
from poolnet_desktop.core.tasks import Shard, ShardState, SubmitQuota, Task

S = ShardState
ONE_CORE = ResourceVector(cpu=1, memory_mb=1024, storage_mb=1024)
GRACE = 30.0


def pool(*members: str, ahead: int = 0) -> Coordination:
    core = Coordination(grace=GRACE, ahead=ahead)
    for device_id in members:
        core.member_reported(device_id, ONE_CORE, [], [], 0.0)
    return core


def submit(core: Coordination, shards: int = 1, retries: int = 1, outputs: tuple[str, ...] = (),
           submitter: str = "alice") -> Task:
    spec = TaskSpec(name="t", command=("true",), shards=shards, retries=retries, outputs=outputs)
    task = core.admit(spec, submitter, f"{len(core.tasks)}", 1.0, SubmitQuota())
    core.accept(task.id, files_ready=True)
    core.queue(task.id)
    return task


def sends(effects: list[Effect]) -> list[tuple[str, object]]:
    return [(e.device_id, e.message) for e in effects if isinstance(e, Send)]


def cancels(effects: list[Effect]) -> list[tuple[str, ShardRef]]:
    return [(device_id, message.shard) for device_id, message in sends(effects)
            if isinstance(message, ShardCancel)]


def place(core: Coordination, now: float = 2.0) -> list[tuple[str, ShardRef]]:
    """One pass, its commit, and the attempts sent: (member, attempt)."""
    effects = core.place(now)
    [batch] = [e for e in effects if isinstance(e, SendAfterCommit)]
    sent = []
    for device_id, message in sends(core.assignments_committed(batch.batches)):
        assert isinstance(message, AssignShards)
        sent += [(device_id, ShardRef(message.task_id, i.shard, i.attempt)) for i in message.items]
    return sent


def success(message: str = "") -> ShardResult:
    return ShardResult(reason="succeeded", exit_code=0, started=2.0, ended=3.0, message=message)


def test_a_member_learns_of_an_attempt_only_after_its_record_is_committed() -> None:
    core = pool("m1")
    task = submit(core)
    effects = core.place(2.0)
    assert not sends(effects)  # nothing goes out with the pass itself
    assert isinstance(effects[0], SaveShard) and effects[0].shard.placed == {1: "m1"}
    [batch] = [e for e in effects if isinstance(e, SendAfterCommit)]
    [(device_id, message)] = sends(core.assignments_committed(batch.batches))
    assert device_id == "m1" and isinstance(message, AssignShards)
    assert message.task_id == task.id and [i.attempt for i in message.items] == [1]


def test_members_learn_which_tasks_are_one_submitters_never_who_submitted_them() -> None:
    """A member's guards weigh one submitter's shards together (``core.shard_choice``): the tag
    is the same for all of a submitter's tasks, differs between submitters, and, keyed with
    this run's secret, cannot be matched to a device id by a member that knows them."""
    core = Coordination(grace=GRACE, tag_key=b"this run's secret")
    for device_id in ("m1", "m2", "m3"):
        core.member_reported(device_id, ONE_CORE, [], [], 0.0)
    mine, also_mine = submit(core, submitter="pn-alice"), submit(core, submitter="pn-alice")
    theirs = submit(core, submitter="pn-mallory")
    [batch] = [e for e in core.place(2.0) if isinstance(e, SendAfterCommit)]
    tags = {message.task_id: message.submitter_tag for _, message in sends(core.assignments_committed(batch.batches))
            if isinstance(message, AssignShards)}
    assert tags[mine.id] == tags[also_mine.id] != tags[theirs.id]
    assert tags[mine.id] != Coordination(grace=GRACE).submitter_tag("pn-alice")  # not a plain hash of the id
    assert all(len(tag) == 16 and "alice" not in tag for tag in tags.values())
    # Seed clients claim any id they like: one tag for all of them.
    assert core.submitter_tag("seed:first-name") == core.submitter_tag("seed:10.0.0.9") != tags[theirs.id]


def test_a_submitter_tag_that_is_not_a_short_hex_digest_is_refused_by_the_member() -> None:
    """What a member decodes: a host cannot make a tag that reads as the member's own
    fallback for tasks without one (``task:<id>``)."""
    core = pool("m1")
    submit(core)
    [batch] = [e for e in core.place(2.0) if isinstance(e, SendAfterCommit)]
    [(_, message)] = sends(core.assignments_committed(batch.batches))
    assert decode_server(encode(message)) == message
    for forged in ("task:0", "A" * 16, "0" * 33):
        with pytest.raises(ProtocolError):
            decode_server(encode(msgspec.structs.replace(message, submitter_tag=forged)))


def test_a_task_cancelled_before_the_commit_has_its_attempts_cancelled_when_they_go_out() -> None:
    core = pool("m1")
    task = submit(core)
    [batch] = [e for e in core.place(2.0) if isinstance(e, SendAfterCommit)]
    core.cancel(task.id, "cancelled", 2.5)
    sent = core.assignments_committed(batch.batches)
    assert cancels(sent) == [("m1", ShardRef(task.id, 0, 1))]


def test_a_member_that_leaves_has_its_shards_queued_again_at_once() -> None:
    core = pool("m1", "m2")
    task = submit(core, shards=2)
    assert {d for d, _ in place(core)} == {"m1", "m2"}
    on_m1 = next(s for s in task.shards if s.device_id == "m1")
    effects = core.member_left("m1", 5.0)
    assert on_m1.state is S.QUEUED and on_m1.index in core.scheduler.queued(task.id)
    assert core.abandoned[(task.id, on_m1.index)] == [("m1", 1)]
    assert any(isinstance(e, PlaceSoon) for e in effects)
    assert any(isinstance(e, TaskChanged) and e.task_id == task.id for e in effects)


def test_the_first_result_wins_and_the_other_attempt_is_stopped_either_way() -> None:
    # The replacement finishes first: the old member's late result is acked and dropped.
    core = pool("m1")
    task = submit(core)
    place(core)
    core.member_overdue("m1", True, ONE_CORE, 4.0)
    core.member_reported("m2", ONE_CORE, [], [], 4.0)
    assert place(core) == [("m2", ShardRef(task.id, 0, 2))]
    effects = core.record("m2", ShardRef(task.id, 0, 2), success("second"), None, 5.0)
    assert cancels(effects) == [("m1", ShardRef(task.id, 0, 1))]  # the old attempt stops
    late = core.record("m1", ShardRef(task.id, 0, 1), success("first"), None, 6.0)
    assert [type(e) for e in late] == [AckAfterCommit]
    assert core.recorded[(task.id, 0)].message == "second"

    # The old member's late success comes first: it counts, the replacement is stopped.
    core = pool("m1")
    task = submit(core)
    place(core)
    core.member_left("m1", 4.0)
    core.member_reported("m2", ONE_CORE, [], [], 4.0)
    place(core)
    effects = core.record("m1", ShardRef(task.id, 0, 1), success("late"), None, 5.0)
    assert cancels(effects) == [("m2", ShardRef(task.id, 0, 2))]
    assert task.shards[0].state is S.SUCCEEDED
    assert core.recorded[(task.id, 0)].message == "late"


def test_a_failed_attempts_record_says_how_its_program_ended() -> None:
    """What ``poolnet tasks ID`` and ``poolnet run`` show of a failed shard: its exit code or
    signal (it said only "failed"), the member's message where there is one."""
    core = pool("m1")
    task = submit(core, retries=2)
    ended = []
    for attempt, (code, message) in enumerate([(3, ""), (-9, ""), (1, "outputs not kept: x")], start=1):
        place(core, now=2.0 + attempt)
        result = ShardResult(reason="failed", exit_code=code, started=2.0, ended=3.0, message=message)
        core.record("m1", ShardRef(task.id, 0, attempt), result, None, 3.0 + attempt)
        ended.append(task.shards[0].reason)
    assert ended == ["attempt 1 failed: exited with code 3; retrying",
                     "attempt 2 failed: killed by signal 9; retrying", "outputs not kept: x"]
    assert result_note(ShardResult(reason="timeout", exit_code=None, started=0, ended=1)) == "timeout"
    assert result_note(ShardResult(reason="failed", exit_code=127, started=0, ended=1)) == \
        "exited with code 127 (command not found)"
    assert result_note(success()) == ""


def test_a_result_is_recorded_once_and_every_copy_is_acknowledged() -> None:
    core = pool("m1")
    task = submit(core, outputs=("out/*",))
    place(core)
    ref = ShardRef(task.id, 0, 1)
    first = core.record("m1", ref, success(), None, 3.0)
    assert [type(e) for e in first][0] is KeepOutputs and AckAfterCommit in map(type, first)
    again = core.record("m1", ref, success(), None, 4.0)
    assert again == [AckAfterCommit("m1", ref)]
    assert task.shards[0].reported == {1}


def test_files_of_a_result_not_taken_are_dropped() -> None:
    core = pool("m1")
    task = submit(core)
    place(core)
    ref = ShardRef(task.id, 0, 1)
    core.record("m1", ref, success(), None, 3.0)
    assert not core.wants_result(ref, success())
    effects = core.record("m1", ref, success(), Path("/incoming/x"), 4.0)
    assert DropFiles(Path("/incoming/x")) in effects


def test_only_the_attempts_device_may_report_it() -> None:
    core = pool("m1", "m2")
    task = submit(core)
    [(owner, ref)] = place(core)
    stranger = "m2" if owner == "m1" else "m1"
    with pytest.raises(ProtocolError) as refused:
        core.reporter_task(stranger, ref)
    assert refused.value.code is ErrorCode.FORBIDDEN
    with pytest.raises(ProtocolError) as unknown:
        core.reporter_task(owner, ShardRef(task.id, 5, 1))
    assert unknown.value.code is ErrorCode.NOT_FOUND
    assert core.reporter_task(owner, ref) is task
    for report in (lambda: core.started(stranger, ref, 3.0),
                   lambda: core.output(stranger, ref, "stdout", "forged")):
        with pytest.raises(ProtocolError):
            report()
    assert task.shards[0].state is S.ASSIGNED


def test_a_member_running_an_attempt_it_was_never_given_is_told_to_stop_it() -> None:
    core = pool("m1")
    task = submit(core)
    place(core)
    claimed = ShardRef(task.id, 0, 1)  # placed on m1, claimed by m2
    effects = core.member_reported("m2", ONE_CORE, [claimed], [], 3.0)
    assert cancels(effects) == [("m2", claimed)]
    assert task.shards[0].device_id == "m1" and task.shards[0].state is S.ASSIGNED


def restarted(core: Coordination, now: float) -> Coordination:
    """A new core from the records the old one holds (as if committed and loaded)."""
    fresh = Coordination(grace=GRACE)
    for task in core.tasks.values():
        shards = [Shard(**{slot: getattr(s, slot) for slot in Shard.__slots__}) for s in task.shards]
        copy = Task(task.id, task.spec, submitted_at=task.submitted_at, submitter=task.submitter,
                    shards=shards, cancel_requested=task.cancel_requested)
        results = {i: r for (tid, i), r in core.recorded.items() if tid == task.id}
        fresh.resume(copy, True, results, now)
    return fresh


def test_after_a_host_restart_a_member_that_reports_its_shard_keeps_it() -> None:
    core = pool("m1")
    task = submit(core)
    [(_, ref)] = place(core)
    core = restarted(core, 10.0)
    assert core.unconfirmed == {(task.id, 0): ("m1", 10.0 + GRACE)}
    assert core.next_deadline() == 10.0 + GRACE
    effects = core.member_reported("m1", ONE_CORE, [ref], [], 11.0)
    assert not cancels(effects) and not core.unconfirmed
    assert (task.id, 0) in core.scheduler.placed_on("m1")
    assert core.tasks[task.id].shards[0].state is S.ASSIGNED


def test_after_a_host_restart_a_shard_its_member_does_not_report_is_lost_and_retried() -> None:
    core = pool("m1")
    task = submit(core, retries=1)
    place(core)
    core = restarted(core, 10.0)
    core.member_reported("m1", ONE_CORE, [], [], 11.0)  # it lost it (it restarted too)
    shard = core.tasks[task.id].shards[0]
    assert shard.state is S.QUEUED and shard.reason.startswith("attempt 1 lost")


def test_after_a_host_restart_a_member_that_never_comes_back_loses_its_shards_at_the_deadline() -> None:
    core = pool("m1")
    task = submit(core, retries=0)
    place(core)
    core = restarted(core, 10.0)
    assert core.expire(10.0 + GRACE - 1) == [WakeAt(10.0 + GRACE)]
    effects = core.expire(10.0 + GRACE)
    assert core.tasks[task.id].shards[0].state is S.LOST
    assert effects[-1] == WakeAt(None)
    assert any(isinstance(e, TaskChanged) and e.ended for e in effects)


def test_a_result_spooled_across_a_host_restart_is_recorded_once() -> None:
    core = pool("m1")
    task = submit(core)
    [(_, ref)] = place(core)
    core.record("m1", ref, success(), None, 3.0)
    core = restarted(core, 10.0)
    assert core.tasks[task.id].shards[0].reported == {1}
    core.member_reported("m1", ONE_CORE, [], [ref], 11.0)  # the ack never reached it
    assert core.record("m1", ref, success(), None, 12.0) == [AckAfterCommit("m1", ref)]


def test_cancel_stops_attempts_taken_from_a_silent_member() -> None:
    """A member that fell silent keeps its session: an attempt taken from it is stopped
    when its shard is cancelled, not left running there."""
    core = pool("m1")
    task = submit(core, retries=0)
    place(core)
    core.member_overdue("m1", True, ONE_CORE, 4.0)
    assert task.shards[0].state is S.LOST
    core.retry(task.id, 5.0, None)
    effects = core.cancel(task.id, "cancelled", 6.0)
    assert cancels(effects) == [("m1", ShardRef(task.id, 0, 1))]
    assert not core.abandoned


def test_forget_refuses_a_task_not_ended_and_prunes_an_ended_one() -> None:
    core = pool("m1")
    task = submit(core, retries=0)
    place(core)
    with pytest.raises(ProtocolError) as refused:
        core.forget(task.id)
    assert refused.value.code is ErrorCode.FORBIDDEN
    core.member_overdue("m1", True, ONE_CORE, 4.0)  # lost, no retry left: the task ends
    assert (task.id, 0) in core.abandoned
    effects = core.forget(task.id)
    assert cancels(effects) == [("m1", ShardRef(task.id, 0, 1))]
    assert Forgotten(task.id) in effects
    assert task.id not in core.tasks and not core.abandoned and not core.recorded
    with pytest.raises(ProtocolError) as gone:
        core.forget(task.id)
    assert gone.value.code is ErrorCode.NOT_FOUND


def test_retry_is_refused_while_files_upload_or_when_an_input_is_gone() -> None:
    core = pool("m1")
    spec = TaskSpec(name="t", command=("true",))
    task = core.admit(spec, "alice", "x", 1.0, SubmitQuota())
    assert SaveTask(task, False) in core.accept(task.id, files_ready=False)
    assert core.waiting_reason(task.id) == "waiting for its files to arrive"
    with pytest.raises(ProtocolError, match="still uploading"):
        core.retry(task.id, 2.0, None)
    core.files_arrived(task.id)
    with pytest.raises(ProtocolError, match="input 'data.bin' is gone"):
        core.retry(task.id, 3.0, "data.bin")


def test_a_silent_member_gets_work_again_once_heard_from() -> None:
    core = pool("m1")
    submit(core, shards=2)
    place(core)
    core.member_overdue("m1", True, ONE_CORE, 4.0)
    assert core.scheduler.placed_on("m1") == set()
    effects = core.member_overdue("m1", False, ONE_CORE, 5.0)
    assert effects == [PlaceSoon()]
    assert [d for d, _ in place(core, 6.0)] == ["m1"]
