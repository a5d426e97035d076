"""The scheduler: fit, spreading, priorities, GPUs, members coming and going, and the
never-over-commit invariant under random operations (hypothesis)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from poolnet_desktop.core.platforms import ANY_PLATFORM, POSIX, WINDOWS, PlatformNeed
from poolnet_desktop.core.resources import (
    Resources,
    ResourceVector,
    SharingLimits,
    shared_capacity,
)
from poolnet_desktop.core.scheduler import (
    LONG_SHARD,
    Placement,
    Scheduler,
    Unschedulable,
    ahead_for,
    describe,
)

ONE_CORE = ResourceVector(cpu=1.0)


def cores(n: float, memory_mb: float = 8192, gpus: int = 0) -> ResourceVector:
    return ResourceVector(cpu=n, memory_mb=memory_mb, storage_mb=10_000, gpus=gpus)


def per_member(placements: list[Placement]) -> Counter[str]:
    return Counter(p.device_id for p in placements)


def test_spreads_over_least_loaded_members() -> None:
    sched = Scheduler()
    sched.set_member("a", cores(4))
    sched.set_member("b", cores(4))
    sched.submit("t", ONE_CORE, range(6))
    placements = sched.place()
    assert per_member(placements) == {"a": 3, "b": 3}
    assert sorted(p.shard for p in placements) == list(range(6))
    assert sched.member_usage("a") == (cores(4), ResourceVector(cpu=3.0))
    # One more member joins: the next shards go to it first.
    sched.set_member("c", cores(4))
    sched.submit("u", ONE_CORE, range(3))
    assert per_member(sched.place()) == {"c": 3}


def test_priority_then_submission_order() -> None:
    sched = Scheduler()
    sched.submit("low", ONE_CORE, [0], priority=0)
    sched.submit("first", ONE_CORE, [0], priority=5)
    sched.submit("second", ONE_CORE, [0], priority=5)
    sched.set_member("a", cores(2))
    assert [p.task_id for p in sched.place()] == ["first", "second"]
    busy = "waiting: needs 1 CPU core, every member's share is in use"
    assert sched.waiting_reason("low") == busy
    sched.release("first", 0)
    assert [p.task_id for p in sched.place()] == ["low"]
    assert sched.waiting_reason("low") is None


def test_retried_shard_goes_first_within_its_task() -> None:
    sched = Scheduler()
    sched.set_member("a", cores(1))
    sched.submit("t", ONE_CORE, range(3))
    assert [p.shard for p in sched.place()] == [0]
    sched.release("t", 0)
    sched.requeue("t", 0)
    assert [p.shard for p in sched.place()] == [0]
    with pytest.raises(ValueError, match="release it first"):
        sched.requeue("t", 0)
    with pytest.raises(ValueError, match="already queued"):
        sched.requeue("t", 2)
    with pytest.raises(ValueError, match="unknown task"):
        sched.requeue("nope", 0)


def test_gpu_shards_pinned_to_free_gpus() -> None:
    sched = Scheduler()
    sched.set_member("gpu-box", cores(8, gpus=2), gpu_indices=[2, 5])
    sched.set_member("cpu-box", cores(8))
    gpu_demand = ResourceVector(cpu=1.0, gpus=1)
    sched.submit("train", gpu_demand, range(3))
    placements = sched.place()
    assert [(p.device_id, p.gpu_indices) for p in placements] == [
        ("gpu-box", (2,)),
        ("gpu-box", (5,)),
    ]
    assert sched.waiting_reason("train") == "waiting: needs 1 GPU, none free"
    sched.submit("cpu", ONE_CORE, [0])
    cpu_placement = sched.place()
    assert cpu_placement[0].gpu_indices == ()
    sched.release("train", 0)
    assert [(p.shard, p.gpu_indices) for p in sched.place()] == [(2, (2,))]


def test_refused_at_submission_when_it_fits_nowhere() -> None:
    sched = Scheduler()
    with pytest.raises(Unschedulable, match="no member shares resources"):
        sched.check_fits_somewhere(ONE_CORE)
    sched.set_member("small", cores(2))
    sched.set_member("mid", cores(6.4, memory_mb=4096))
    sched.check_fits_somewhere(cores(6.4, memory_mb=4096))
    with pytest.raises(Unschedulable) as caught:
        sched.check_fits_somewhere(ResourceVector(cpu=64, memory_mb=1024, gpus=1))
    message = str(caught.value)
    assert "each shard needs 64 CPU cores, 1024 MB memory, 1 GPU" in message
    assert "more than any member shares" in message
    assert "cannot give 64 CPU cores (shares 2.0), 1 GPU (shares 0)" in message
    with pytest.raises(ValueError, match="some CPU"):
        sched.check_fits_somewhere(ResourceVector(cpu=0.0))


def test_member_leaving_returns_its_shards_for_requeue() -> None:
    sched = Scheduler()
    sched.set_member("a", cores(2))
    sched.set_member("b", cores(2))
    sched.submit("t", ONE_CORE, range(4))
    on_a = [(p.task_id, p.shard) for p in sched.place() if p.device_id == "a"]
    assert sched.running_on("a") == sorted(on_a)
    lost = sched.remove_member("a")
    assert lost == sorted(on_a)
    assert sched.remove_member("a") == []
    for task_id, shard in lost:
        assert not sched.release(task_id, shard)  # already released by remove_member
        sched.requeue(task_id, shard)
    assert sched.place() == []
    assert sched.pending("t") == 2
    sched.release("t", sched.running_on("b")[0][1])
    assert [p.device_id for p in sched.place()] == ["b"]


def test_shrinking_share_keeps_running_shards_but_places_nothing_new() -> None:
    sched = Scheduler()
    sched.set_member("a", cores(4))
    sched.submit("t", ONE_CORE, range(6))
    assert len(sched.place()) == 4
    sched.set_member("a", cores(1))
    assert sched.running_on("a") == [("t", i) for i in range(4)]
    for shard in range(3):
        sched.release("t", shard)
        assert sched.place() == []
    sched.release("t", 3)
    assert len(sched.place()) == 1
    sched.set_member("a", ResourceVector())  # the owner stopped sharing
    sched.release("t", 4)
    assert sched.place() == []
    assert sched.waiting_reason("t") == "waiting: no member is sharing resources"


def test_big_blocked_shard_is_not_starved_by_small_ones() -> None:
    sched = Scheduler()
    sched.set_member("a", cores(4))
    sched.submit("small", ONE_CORE, range(100))
    assert len(sched.place()) == 4
    sched.submit("big", cores(4, memory_mb=0), [0], priority=1)
    for shard in range(4):
        sched.release("small", shard)
        placed = sched.place()
        assert all(p.task_id == "big" for p in placed)
    assert [p.task_id for p in placed] == ["big"]
    assert sched.pending("small") == 96


def test_waiting_reasons() -> None:
    sched = Scheduler()
    sched.submit("t", ONE_CORE, [0])
    assert sched.waiting_reason("t") == "waiting: no member is sharing resources"
    sched.set_member("tiny", cores(0.5))
    assert sched.waiting_reason("t") == (
        "waiting: needs 1 CPU core, more than any member shares now"
    )
    assert sched.waiting_reason("unknown") is None
    assert describe(ResourceVector(2, 512, 100, 2)) == (
        "2 CPU cores, 512 MB memory, 100 MB storage, 2 GPUs"
    )


def test_withdraw_remove_task_and_adopt() -> None:
    sched = Scheduler()
    sched.set_member("a", cores(2))
    sched.submit("t", ONE_CORE, range(5))
    assert sched.withdraw("t", 4)
    assert not sched.withdraw("t", 4)
    sched.adopt("t", 0, "a")  # found running on "a" after a restart
    assert sched.member_usage("a")[1] == ONE_CORE
    assert [p.shard for p in sched.place()] == [1]
    assert sched.remove_task("t") == [2, 3]
    assert sched.place() == []
    assert sched.release("t", 0) and sched.release("t", 1)
    assert not sched.release("t", 1)
    assert sched.member_usage("a")[1] == ResourceVector()
    with pytest.raises(ValueError, match="unknown task"):
        sched.adopt("t", 2, "a")


def test_bad_input_refused() -> None:
    sched = Scheduler()
    with pytest.raises(ValueError, match="distinct indices"):
        sched.set_member("a", cores(2, gpus=2), gpu_indices=[0])
    with pytest.raises(ValueError, match="distinct indices"):
        sched.set_member("a", cores(2, gpus=2), gpu_indices=[1, 1])
    with pytest.raises(ValueError, match="negative capacity"):
        sched.set_member("a", ResourceVector(cpu=-1))
    with pytest.raises(ValueError, match="some CPU"):
        sched.submit("t", ResourceVector(memory_mb=10), [0])
    sched.submit("t", ONE_CORE, [0])
    with pytest.raises(ValueError, match="already submitted"):
        sched.submit("t", ONE_CORE, [1])


def test_two_thousand_true_shards_on_two_members_of_a_two_core_machine() -> None:
    """The benchmark's shape: each member shares 80 % of 2 cores, so one shard at a time each."""
    machine = Resources(cpu_cores=2, memory_total=4096, storage_available=10_000)
    share = shared_capacity(machine, SharingLimits())
    sched = Scheduler()
    sched.set_member("m1", share)
    sched.set_member("m2", share)
    sched.check_fits_somewhere(ONE_CORE)
    sched.submit("batch", ONE_CORE, range(2000))
    running = sched.place()
    done: Counter[int] = Counter()
    most = 0
    while running:
        most = max(most, len(running))
        finished = running.pop(0)
        assert sched.release(finished.task_id, finished.shard)
        done[finished.shard] += 1
        running += sched.place()
    assert most == 2
    assert sorted(done) == list(range(2000))
    assert set(done.values()) == {1}
    assert sched.member_usage("m1")[1] == ResourceVector()


_DEMANDS = st.builds(
    ResourceVector,
    cpu=st.sampled_from([0.25, 0.5, 1.0, 1.5, 3.0]),
    memory_mb=st.sampled_from([0.0, 100.0, 700.0]),
    storage_mb=st.sampled_from([0.0, 50.0]),
    gpus=st.integers(0, 2),
)
_CAPACITIES = st.builds(
    ResourceVector,
    cpu=st.sampled_from([0.0, 1.0, 1.6, 4.0, 6.4]),
    memory_mb=st.sampled_from([0.0, 1000.0, 4000.0]),
    storage_mb=st.sampled_from([0.0, 100.0, 1000.0]),
    gpus=st.integers(0, 3),
)


class SchedulerMachine(RuleBasedStateMachine):
    """Random joins, leaves, share changes, submissions, placements and releases. After every
    ``place()``, no member that received a shard holds more than its share in any dimension
    those shards use, GPUs are never given twice, no shard lands on a member of a platform
    its task does not run on, and every shard is in exactly one place.

    With ``AHEAD`` > 0 shards may also wait behind running ones; the model follows the chains
    the way a member does (a waiting shard starts when the one it follows ends) and checks
    that a waiting shard never asks more than the one it follows, so that what runs stays
    within the share."""

    AHEAD = 0

    def __init__(self) -> None:
        super().__init__()
        self.sched = Scheduler(ahead=self.AHEAD)
        self.demands: dict[str, ResourceVector] = {}
        self.queued: set[tuple[str, int]] = set()
        self.running: dict[tuple[str, int], Placement] = {}
        self.waiting: dict[tuple[str, int], Placement] = {}
        self.behind: dict[tuple[str, int], tuple[str, int]] = {}  # shard -> its successor
        self.aheads: dict[str, int] = {}
        self.members: dict[str, ResourceVector] = {}
        self.platforms: dict[str, str] = {}
        self.needs: dict[str, PlatformNeed] = {}

    @rule(name=st.sampled_from(["m1", "m2", "m3"]), capacity=_CAPACITIES,
          platform=st.sampled_from(["linux", "windows"]))
    def set_member(self, name: str, capacity: ResourceVector, platform: str) -> None:
        self.sched.set_member(name, capacity, platform=platform)
        self.members[name] = capacity
        self.platforms[name] = platform

    @precondition(lambda self: self.members)
    @rule(data=st.data())
    def remove_member(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.members)))
        lost = self.sched.remove_member(name)
        placed = {**self.running, **self.waiting}
        assert sorted(k for k, p in placed.items() if p.device_id == name) == lost
        del self.members[name]
        for key in lost:
            self.running.pop(key, None)
            self.waiting.pop(key, None)
            self.behind.pop(key, None)
            self.sched.requeue(*key)
            self.queued.add(key)

    @rule(demand=_DEMANDS, shards=st.integers(1, 6), priority=st.integers(-1, 1),
          need=st.sampled_from([ANY_PLATFORM, PlatformNeed(POSIX), PlatformNeed(WINDOWS)]))
    def submit(self, demand: ResourceVector, shards: int, priority: int, need: PlatformNeed) -> None:
        task_id = f"t{len(self.demands)}"
        self.demands[task_id] = demand
        self.needs[task_id] = need
        self.sched.submit(task_id, demand, range(shards), priority, need)
        self.queued.update((task_id, i) for i in range(shards))
        self.aheads[task_id] = min(1, self.AHEAD)

    @precondition(lambda self: self.demands and self.AHEAD)
    @rule(data=st.data(), depth=st.integers(0, 4))
    def set_ahead(self, data: st.DataObject, depth: int) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.demands)))
        self.sched.set_ahead(task_id, depth)
        self.aheads[task_id] = min(depth, self.AHEAD)

    @rule()
    def place(self) -> None:
        placements = self.sched.place()
        for p in placements:
            key = (p.task_id, p.shard)
            assert key in self.queued and key not in self.running and key not in self.waiting
            self.queued.remove(key)
            assert len(p.gpu_indices) == self.demands[p.task_id].gpus
            assert self.needs[p.task_id].allows(self.platforms[p.device_id])
            if p.after is None:
                self.running[key] = p
                assert set(p.gpu_indices) <= set(range(self.members[p.device_id].gpus))
                continue
            before = self.running.get(p.after) or self.waiting[p.after]
            assert before.device_id == p.device_id and p.after not in self.behind
            assert self.demands[p.task_id].fits_in(self.demands[before.task_id])
            assert set(p.gpu_indices) <= set(before.gpu_indices)
            assert self._depth(p.after) < self.aheads[p.task_id]
            self.waiting[key] = p
            self.behind[p.after] = key
        for name in {p.device_id for p in placements if p.after is None}:
            capacity, used = self.sched.member_usage(name)
            asked = [self.demands[p.task_id] for p in placements if p.device_id == name]
            # A share that shrank under running shards may stay over in some dimension, but
            # no new shard may lean on a dimension that is over its share.
            for dim in ("cpu", "memory_mb", "storage_mb", "gpus"):
                if any(getattr(demand, dim) > 0 for demand in asked):
                    assert getattr(used, dim) <= getattr(capacity, dim) + 1e-9, (
                        f"{name} over-committed in {dim}: {used} > {capacity}"
                    )

    def _depth(self, key: tuple[str, int]) -> int:
        """How many shards wait in front of ``key``'s successor slot (0 for a running one)."""
        before = {successor: shard for shard, successor in self.behind.items()}
        depth = 0
        while key in before:
            key, depth = before[key], depth + 1
        return depth

    @precondition(lambda self: self.running or self.waiting)
    @rule(data=st.data(), retry=st.booleans())
    def release(self, data: st.DataObject, retry: bool) -> None:
        key = data.draw(st.sampled_from(sorted({*self.running, *self.waiting})))
        assert self.sched.release(*key)
        before = {successor: shard for shard, successor in self.behind.items()}
        successor = self.behind.pop(key, None)
        if key in self.running:
            del self.running[key]
            if successor is not None:  # the member starts it in the ended shard's place
                self.running[successor] = self.waiting.pop(successor)
        else:
            del self.waiting[key]
            if successor is not None:
                self.behind[before[key]] = successor
            else:
                del self.behind[before[key]]
        if retry:
            self.sched.requeue(*key)
            self.queued.add(key)

    @invariant()
    def accounts_add_up(self) -> None:
        for name in self.members:
            held = [p for p in self.running.values() if p.device_id == name]
            _, used = self.sched.member_usage(name)
            assert used.cpu == pytest.approx(sum(self.demands[p.task_id].cpu for p in held))
            assert used.gpus == sum(len(p.gpu_indices) for p in held)
            gpus = [g for p in held for g in p.gpu_indices]
            assert len(gpus) == len(set(gpus))
            placed = {k for k, p in {**self.running, **self.waiting}.items() if p.device_id == name}
            assert self.sched.placed_on(name) == placed
        for task_id in self.demands:
            assert self.sched.pending(task_id) == sum(1 for t, _ in self.queued if t == task_id)


class SchedulerAheadMachine(SchedulerMachine):
    AHEAD = 2


TestSchedulerMachine = SchedulerMachine.TestCase
# Bounded so that a loaded CI machine stays far from the suite's per-test timeout (a timeout
# inside Hypothesis surfaces as a confusing FlakyStrategyDefinition).
TestSchedulerMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestSchedulerAheadMachine = SchedulerAheadMachine.TestCase
TestSchedulerAheadMachine.settings = settings(max_examples=80, stateful_step_count=30, deadline=None)


def test_shards_wait_ahead_behind_running_ones_and_take_over_their_hold() -> None:
    sched = Scheduler(ahead=2)
    sched.set_member("a", cores(1, memory_mb=0, gpus=1), gpu_indices=[3])
    gpu_shard = ResourceVector(cpu=1.0, gpus=1)
    sched.submit("t", gpu_shard, range(5))
    sched.set_ahead("t", 5)  # capped at the scheduler's 2
    placed = sched.place()
    assert [(p.shard, p.after, p.gpu_indices) for p in placed] == [
        (0, None, (3,)), (1, ("t", 0), (3,)), (2, ("t", 1), (3,)),
    ]
    assert sched.place() == [] and sched.pending("t") == 2
    sched.release("t", 1)  # a waiting shard ended (say, cancelled): 2 now follows 0
    assert [(p.shard, p.after) for p in sched.place()] == [(3, ("t", 2))]
    sched.release("t", 0)  # 2 takes over 0's hold; nothing more than the share runs
    assert sched.running_on("a") == [("t", 2)]
    assert sched.placed_on("a") == {("t", 2), ("t", 3)}
    assert sched.member_usage("a")[1] == gpu_shard
    assert [(p.shard, p.after) for p in sched.place()] == [(4, ("t", 3))]
    sched.submit("bigger", cores(1, memory_mb=1, gpus=1), [0], priority=1)
    sched.set_ahead("bigger", 2)
    assert sched.place() == []  # never behind a shard that asks less
    assert sched.remove_member("a") == [("t", 2), ("t", 3), ("t", 4)]


def test_nothing_waits_ahead_on_a_member_that_stopped_sharing() -> None:
    """A paused member (share zero) or one whose share shrank under its running shards gets
    no shard queued behind them: it would inherit a hold the member no longer lends."""
    sched = Scheduler(ahead=2)
    sched.set_member("a", cores(1))
    sched.submit("t", ONE_CORE, range(5))
    sched.set_ahead("t", 2)
    assert [p.after for p in sched.place()] == [None, ("t", 0), ("t", 1)]
    sched.set_member("a", ResourceVector())  # paused
    sched.release("t", 1)  # a waiting shard ended: the chain behind 0 has room again
    assert sched.place() == []
    sched.set_member("a", cores(0.5))  # shrank under the running shard
    assert sched.place() == []
    sched.set_member("a", cores(1))
    assert [(p.shard, p.after) for p in sched.place()] == [(3, ("t", 2))]


def test_how_deep_shards_wait_ahead_follows_how_long_they_take() -> None:
    assert ahead_for(None) == 1  # not known yet: one, so the first round trips overlap
    assert ahead_for(0.002) == 25 and ahead_for(0.05) == 1
    assert ahead_for(LONG_SHARD) == 0  # long shards stay free for whichever member frees up
    sched = Scheduler(ahead=3)
    sched.set_member("a", cores(1))
    sched.submit("long", ONE_CORE, range(4))
    sched.set_ahead("long", 0)
    assert [p.after for p in sched.place()] == [None]
    sched.set_ahead("long", ahead_for(0.001))
    assert [p.after for p in sched.place()] == [("long", 0), ("long", 1), ("long", 2)]
