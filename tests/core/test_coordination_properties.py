"""Invariants of the coordination core, held over random histories (hypothesis stateful).

A small simulated pool drives one ``Coordination``: members with a number of slots join,
leave, crash, fall silent and come back; they start, finish and deliver the attempts they
were sent (a result finished while cut off is spooled and delivered later); people submit,
cancel, retry and forget tasks; time passes; and the host restarts from what its store
committed. The store is simulated too, and lags as the real one does: the records the core
asks it to save are committed only at a ``commit`` step, and what waits for a commit (sending
assignments, acknowledging results) happens only then. A host restart loses whatever was not
committed and rebuilds the core from the committed snapshots alone.

Whatever the history:

* a result is recorded at most once per attempt, across member and host restarts;
* the first success of a shard wins and stays (a later result of another attempt changes
  nothing), and any other attempt still running on a connected member is stopped;
* no shard is both queued and placed; every shard the records say runs is held on its member
  (or awaits that member after a host restart);
* a member never holds more than its share;
* only the device an attempt was placed on can report it, and no member holds an attempt the
  committed records do not give it;
* a member that leaves or falls silent has none of its shards left running in the records:
  they are queued again at once (or end, when no retry is left).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from poolnet_desktop.core.coordination import Coordination
from poolnet_desktop.core.coordination_effects import (
    AckAfterCommit,
    Effect,
    Forgotten,
    SaveShard,
    SaveTask,
    Send,
    SendAfterCommit,
)
from poolnet_desktop.core.manifest import TaskSpec
from poolnet_desktop.core.protocol import ErrorCode, ProtocolError
from poolnet_desktop.core.resources import ResourceVector
from poolnet_desktop.core.task_protocol import AssignShards, ShardCancel, ShardRef, ShardResult
from poolnet_desktop.core.tasks import ACTIVE, ENDED, RESULT_STATES, Shard, ShardState, SubmitQuota, Task

SLOTS = {"m0": 1, "m1": 2, "m2": 1}
MEMBERS = st.sampled_from(sorted(SLOTS))
GRACE = 30.0
QUOTA = SubmitQuota()


def capacity(device_id: str) -> ResourceVector:
    return ResourceVector(cpu=SLOTS[device_id], memory_mb=4096, storage_mb=4096)


@dataclass
class SimMember:
    """What a member holds: attempts it runs (or waits to run) and results not yet acked."""

    connected: bool = False
    overdue: bool = False
    running: set[ShardRef] = field(default_factory=set)
    spool: dict[ShardRef, ShardResult] = field(default_factory=dict)


@dataclass
class StoredTask:
    spec: TaskSpec
    submitter: str
    submitted_at: float
    cancel_requested: bool
    files_ready: bool


def ref_order(ref: ShardRef) -> tuple[str, int, int]:
    return ref.task_id, ref.shard, ref.attempt


def snapshot(shard: Shard) -> Shard:
    return dataclasses.replace(shard, reported=set(shard.reported), placed=dict(shard.placed),
                               gpu_indices=tuple(shard.gpu_indices))


def result(reason: str, device_id: str, ref: ShardRef, now: float) -> ShardResult:
    """A result that names who produced it, so the one kept can be told apart."""
    return ShardResult(reason=reason, exit_code=0 if reason == "succeeded" else 1,  # type: ignore[arg-type]
                       started=now - 1, ended=now, message=f"{device_id}/{ref.attempt}")


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.members = {device_id: SimMember() for device_id in SLOTS}
        self.stored_tasks: dict[str, StoredTask] = {}
        self.stored_shards: dict[tuple[str, int], tuple[Shard, ShardResult | None]] = {}
        self.uncommitted: list[Callable[[], None]] = []  # queued store writes
        self.after_commit: list[Callable[[], None]] = []  # what waits for them
        self.recorded_once: dict[tuple[str, int, int], int] = {}  # by this host, since it started
        self.first_success: dict[tuple[str, int], ShardResult] = {}  # committed
        self.forgotten: set[str] = set()  # tasks whose forgetting was committed
        self.core = Coordination(grace=GRACE, ahead=2)
        self.submitted = 0

    # ---- carrying out effects as the runtime would, with members that obey ------------------

    def apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                self.deliver_to_member(effect.device_id, effect.message)
            elif isinstance(effect, SaveTask):
                task = effect.task
                stored = StoredTask(task.spec, task.submitter, task.submitted_at,
                                    task.cancel_requested, effect.files_ready)
                self.uncommitted.append(partial(self.stored_tasks.__setitem__, task.id, stored))
            elif isinstance(effect, SaveShard):
                key = (effect.task_id, effect.shard.index)
                self.uncommitted.append(partial(self.store_shard, key, snapshot(effect.shard),
                                                effect.result))
            elif isinstance(effect, Forgotten):
                self.uncommitted.append(partial(self.drop_stored, effect.task_id))
            elif isinstance(effect, SendAfterCommit):
                core, batches = self.core, effect.batches
                self.after_commit.append(
                    lambda: self.apply(core.assignments_committed(batches)))
            elif isinstance(effect, AckAfterCommit):
                self.after_commit.append(partial(self.ack, effect.device_id, effect.ref))

    def store_shard(self, key: tuple[str, int], shard: Shard, outcome: ShardResult | None) -> None:
        self.stored_shards[key] = (shard, outcome)
        if shard.state is ShardState.SUCCEEDED:
            assert outcome is not None
            assert self.first_success.setdefault(key, outcome) == outcome, \
                f"{key}: a second success was stored over the first"

    def drop_stored(self, task_id: str) -> None:
        self.forgotten.add(task_id)
        self.stored_tasks.pop(task_id)
        for key in [key for key in self.stored_shards if key[0] == task_id]:
            del self.stored_shards[key]
            self.first_success.pop(key, None)

    def ack(self, device_id: str, ref: ShardRef) -> None:
        member = self.members[device_id]
        if member.connected:
            member.spool.pop(ref, None)

    def deliver_to_member(self, device_id: str, message: AssignShards | ShardCancel) -> None:
        member = self.members[device_id]
        if not member.connected:
            return  # a message to a closed link is lost
        if isinstance(message, AssignShards):
            for item in message.items:
                member.running.add(ShardRef(message.task_id, item.shard, item.attempt))
        elif message.shard in member.running:
            member.running.discard(message.shard)
            member.spool[message.shard] = result("cancelled", device_id, message.shard, self.now)

    def tick(self) -> None:
        self.now += 0.5

    def task_ids(self) -> list[str]:
        return sorted(self.core.tasks)

    # ---- rules --------------------------------------------------------------------------------

    @initialize()
    def first_member(self) -> None:
        self.join("m0")

    @rule(shards=st.integers(1, 4), retries=st.integers(0, 2))
    def submit(self, shards: int, retries: int) -> None:
        self.tick()
        spec = TaskSpec(name="t", command=("true",), shards=shards, retries=retries)
        self.submitted += 1
        try:
            task = self.core.admit(spec, "alice", f"{self.submitted:04d}", self.now, QUOTA)
        except ProtocolError as exc:
            assert exc.code is ErrorCode.UNFIT
            return
        self.apply(self.core.accept(task.id, files_ready=True))
        self.apply(self.core.queue(task.id))

    @rule()
    def place(self) -> None:
        """A placement pass never takes a member past its share. (Shards adopted after a host
        restart may: the member already runs them, and one waiting ahead is counted as
        running until it ends.)"""
        self.tick()
        before = {device_id: self.usage(device_id) for device_id in SLOTS}
        self.apply(self.core.place(self.now))
        for device_id in SLOTS:
            used = self.usage(device_id)
            if used > before[device_id]:
                assert used <= SLOTS[device_id], f"{device_id} given {used} of {SLOTS[device_id]}"

    def usage(self, device_id: str) -> float:
        try:
            return self.core.scheduler.member_usage(device_id)[1].cpu
        except KeyError:
            return 0.0

    @rule(device_id=MEMBERS)
    def join(self, device_id: str) -> None:
        member = self.members[device_id]
        if member.connected:
            return
        self.tick()
        member.connected, member.overdue = True, False
        self.apply(self.core.member_reported(device_id, capacity(device_id),
                                             sorted(member.running, key=ref_order), sorted(member.spool, key=ref_order),
                                             self.now))

    @rule(device_id=MEMBERS)
    def leave(self, device_id: str) -> None:
        member = self.members[device_id]
        if not member.connected:
            return
        self.tick()
        member.connected = False
        self.apply(self.core.member_left(device_id, self.now))
        self.assert_nothing_runs_on(device_id)

    @rule(device_id=MEMBERS)
    def crash_member(self, device_id: str) -> None:
        """The member's process dies: what ran is gone, its spool (on disk) stays."""
        self.leave(device_id)
        self.members[device_id].running.clear()

    @rule(device_id=MEMBERS)
    def fall_silent(self, device_id: str) -> None:
        member = self.members[device_id]
        if not member.connected or member.overdue:
            return
        self.tick()
        member.overdue = True
        self.apply(self.core.member_overdue(device_id, True, capacity(device_id), self.now))
        self.assert_nothing_runs_on(device_id)

    @rule(device_id=MEMBERS)
    def heard_again(self, device_id: str) -> None:
        member = self.members[device_id]
        if not member.overdue:
            return
        self.tick()
        member.overdue = False
        self.apply(self.core.member_overdue(device_id, False, capacity(device_id), self.now))

    @rule(device_id=MEMBERS, data=st.data())
    def start(self, device_id: str, data: st.DataObject) -> None:
        member = self.members[device_id]
        if not member.connected or not member.running:
            return
        ref = data.draw(st.sampled_from(sorted(member.running, key=ref_order)))
        self.tick()
        self.apply(self.core.started(device_id, ref, self.now))

    @rule(device_id=MEMBERS, data=st.data(), succeeded=st.booleans())
    def finish(self, device_id: str, data: st.DataObject, succeeded: bool) -> None:
        """An attempt ends on the member, connected or not; its result is spooled."""
        member = self.members[device_id]
        if not member.running:
            return
        ref = data.draw(st.sampled_from(sorted(member.running, key=ref_order)))
        self.tick()
        member.running.discard(ref)
        member.spool[ref] = result("succeeded" if succeeded else "error", device_id, ref, self.now)

    @rule(device_id=MEMBERS)
    def deliver(self, device_id: str) -> None:
        """The member sends every spooled result (again, if it was not acked)."""
        member = self.members[device_id]
        if not member.connected:
            return
        for ref, outcome in sorted(member.spool.items(), key=lambda item: ref_order(item[0])):
            self.tick()
            try:
                task = self.core.reporter_task(device_id, ref)
            except ProtocolError as exc:
                assert exc.code is ErrorCode.NOT_FOUND  # its task was forgotten
                member.spool.pop(ref)
                continue
            shard = task.shards[ref.shard]
            assert shard.placed[ref.attempt] == device_id
            before = set(shard.reported)
            self.apply(self.core.record(device_id, ref, outcome, None, self.now))
            if ref.attempt in shard.reported - before:
                key = (ref.task_id, ref.shard, ref.attempt)
                self.recorded_once[key] = self.recorded_once.get(key, 0) + 1
                assert self.recorded_once[key] == 1, f"{key} recorded twice"
                stored = self.stored_shards.get((ref.task_id, ref.shard))
                assert stored is None or ref.attempt not in stored[0].reported, \
                    f"{key} recorded again after a host restart"

    @rule(device_id=MEMBERS, data=st.data())
    def impostor_reports(self, device_id: str, data: st.DataObject) -> None:
        """A member reports on an attempt placed on another device: always refused."""
        others = [ShardRef(task.id, shard.index, attempt)
                  for task in self.core.tasks.values() for shard in task.shards
                  for attempt, owner in shard.placed.items() if owner != device_id]
        if not others:
            return
        ref = data.draw(st.sampled_from(others))
        try:
            self.core.reporter_task(device_id, ref)
        except ProtocolError as exc:
            assert exc.code is ErrorCode.FORBIDDEN
        else:
            raise AssertionError(f"{device_id} may report {ref}, placed elsewhere")

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        if not self.core.tasks:
            return
        task_id = data.draw(st.sampled_from(self.task_ids()))
        self.tick()
        self.apply(self.core.cancel(task_id, "cancelled", self.now))

    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        if not self.core.tasks:
            return
        task_id = data.draw(st.sampled_from(self.task_ids()))
        self.tick()
        self.apply(self.core.retry(task_id, self.now, None))

    @rule(data=st.data())
    def forget(self, data: st.DataObject) -> None:
        if not self.core.tasks:
            return
        task_id = data.draw(st.sampled_from(self.task_ids()))
        ended = self.core.tasks[task_id].state in ENDED
        try:
            self.apply(self.core.forget(task_id))
        except ProtocolError as exc:
            assert not ended and exc.code is ErrorCode.FORBIDDEN
            return
        assert ended
        assert not any(key[0] == task_id for key in self.core.abandoned)
        assert not any(key[0] == task_id for key in self.core.recorded)

    @rule()
    def commit(self) -> None:
        """The store's writer commits what is queued; what waited for it goes ahead."""
        writes, self.uncommitted = self.uncommitted, []
        for write in writes:
            write()
        waiting, self.after_commit = self.after_commit, []
        for then in waiting:
            then()

    @rule(seconds=st.sampled_from([1.0, GRACE + 1]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        self.apply(self.core.expire(self.now))

    @rule()
    def host_restarts(self) -> None:
        """The host stops and starts again from its store; every link closes."""
        self.tick()
        for member in self.members.values():
            member.connected = member.overdue = False
        self.uncommitted.clear()
        self.after_commit.clear()
        self.recorded_once.clear()
        self.core = Coordination(grace=GRACE, ahead=2)
        for task_id, stored in sorted(self.stored_tasks.items()):
            shards = [snapshot(shard) for (tid, _), (shard, _) in self.stored_shards.items()
                      if tid == task_id]
            results = {index: res for (tid, index), (_, res) in self.stored_shards.items()
                       if tid == task_id and res is not None}
            task = Task(task_id, stored.spec, submitted_at=stored.submitted_at,
                        submitter=stored.submitter, shards=shards,
                        cancel_requested=stored.cancel_requested)
            self.apply(self.core.resume(task, stored.files_ready, results, self.now))

    # ---- invariants ---------------------------------------------------------------------------

    def assert_nothing_runs_on(self, device_id: str) -> None:
        """A member that left or fell silent keeps no shard in the records: each is queued
        again at once (or ended: no retry left, or its task is being cancelled)."""
        for task in self.core.tasks.values():
            for shard in task.shards:
                if (task.id, shard.index) in self.core.unconfirmed:
                    continue
                assert not (shard.state in ACTIVE and shard.device_id == device_id), \
                    f"{task.id}/{shard.index} still runs on {device_id}"

    @invariant()
    def no_shard_both_queued_and_placed(self) -> None:
        scheduler = self.core.scheduler
        placed = set().union(*(scheduler.placed_on(device_id) for device_id in SLOTS))
        for task in self.core.tasks.values():
            queued = set(scheduler.queued(task.id))
            assert not {(task.id, index) for index in queued} & placed
            if task.state not in ENDED:
                assert queued == {s.index for s in task.shards if s.state is ShardState.QUEUED}
            for shard in task.shards:
                key = (task.id, shard.index)
                if shard.state in ACTIVE:
                    assert shard.device_id is not None
                    assert key in scheduler.placed_on(shard.device_id) or key in self.core.unconfirmed
                else:
                    assert key not in placed

    @invariant()
    def a_tasks_kept_counts_are_its_shards_states(self) -> None:
        """Summaries read the counts a task keeps as its shards move, never the shards."""
        for task in self.core.tasks.values():
            assert task.counts() == dict(Counter(shard.state for shard in task.shards))

    @invariant()
    def members_hold_only_attempts_the_committed_records_give_them(self) -> None:
        """A member is sent an attempt only once its placement is committed: whatever crashes,
        no member holds an attempt without a recorded owner."""
        for device_id, member in self.members.items():
            for ref in member.running:
                if ref.task_id in self.forgotten:
                    continue
                stored = self.stored_shards[(ref.task_id, ref.shard)][0]
                assert stored.placed.get(ref.attempt) == device_id, f"{device_id} holds {ref}"

    @invariant()
    def first_success_stays(self) -> None:
        for (task_id, index), outcome in self.first_success.items():
            task = self.core.tasks.get(task_id)
            if task is None:
                continue  # forgotten, and that is not committed yet
            assert task.shards[index].state is ShardState.SUCCEEDED
            assert self.core.recorded[(task_id, index)] == outcome

    @invariant()
    def no_useless_attempt_runs_on_a_connected_member(self) -> None:
        """Once a shard has its result, no other attempt of it keeps running where the
        coordinator can reach: it was told to stop (or is stopped when its member rejoins)."""
        for device_id, member in self.members.items():
            if not member.connected:
                continue
            for ref in member.running:
                task = self.core.tasks.get(ref.task_id)
                if task is None:
                    continue
                state = task.shards[ref.shard].state
                assert state not in RESULT_STATES, f"{device_id} still runs {ref}: shard {state}"


PoolMachine.TestCase.settings = settings(
    max_examples=800, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPool = PoolMachine.TestCase


def test_an_attempt_given_up_before_its_placement_was_committed_is_never_sent() -> None:
    """Found by the machine above: a placement waits for its commit; meanwhile its member
    crashes and comes back, and the task is retried and cancelled. The commit then sent the old
    attempt to the member, which ran it with nobody waiting for it: the cancel that came next
    reached no one, and the member ran a cancelled shard."""
    machine = PoolMachine()
    machine.first_member()
    machine.submit(shards=1, retries=0)
    machine.place()
    machine.crash_member("m0")
    machine.join("m0")
    core = machine.core
    for step in ("retry", "cancel", "retry", "commit", "cancel"):
        machine.tick()
        if step == "retry":
            machine.apply(core.retry("t-0001", machine.now, None))
        elif step == "cancel":
            machine.apply(core.cancel("t-0001", "cancelled", machine.now))
        else:
            machine.commit()
    machine.no_useless_attempt_runs_on_a_connected_member()
    assert machine.members["m0"].running == set()
