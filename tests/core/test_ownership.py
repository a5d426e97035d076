"""Who may report on an attempt, what one submitter may hold, and which result transfers may
come in: the coordinator's decisions, tested with plain values."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from poolnet_desktop.core.manifest import TaskSpec
from poolnet_desktop.core.tasks import ACTIVE, ShardState, SubmitQuota, Task, quota_refusal
from poolnet_desktop.core.transfer import IncomingLimits, incoming_refusal, output_allowance

S = ShardState
DEVICES = ("dev-a", "dev-b", "dev-c")
MIB = 1024 * 1024


def make_task(shards: int = 2, retries: int = 3, submitter: str = "alice") -> Task:
    spec = TaskSpec(name="t", command=("true",), shards=shards, retries=retries)
    return Task(f"task-{submitter}-{shards}", spec, submitted_at=0.0, submitter=submitter)


def test_only_the_device_an_attempt_was_placed_on_may_report_it() -> None:
    task = make_task()
    assert not task.may_report(0, 1, "dev-a")  # queued: nobody's yet
    task.assign(0, "dev-a", (), now=1.0)
    assert task.may_report(0, 1, "dev-a")
    assert not task.may_report(0, 1, "dev-b")
    assert not task.may_report(0, 2, "dev-a")  # a made-up attempt
    assert not task.may_report(1, 1, "dev-a")  # another shard
    assert not task.may_report(5, 1, "dev-a")  # no such shard
    task.mark_lost(0, 2.0, "gone")
    task.assign(0, "dev-b", (), now=3.0)
    # The old attempt stays dev-a's (its late success counts), the new one is dev-b's.
    assert task.may_report(0, 1, "dev-a") and not task.may_report(0, 1, "dev-b")
    assert task.may_report(0, 2, "dev-b") and not task.may_report(0, 2, "dev-a")


def test_wants_result_says_what_record_result_would_do() -> None:
    task = make_task()
    task.assign(0, "dev-a", (), now=1.0)
    assert task.wants_result(0, 1, S.SUCCEEDED)
    assert not task.wants_result(0, 2, S.SUCCEEDED)
    task.record_result(0, 1, S.SUCCEEDED, now=2.0)
    assert not task.wants_result(0, 1, S.SUCCEEDED)  # a duplicate
    task.assign(1, "dev-a", (), now=3.0)
    task.mark_lost(1, 4.0, "gone")
    task.assign(1, "dev-b", (), now=5.0)
    assert task.wants_result(1, 1, S.SUCCEEDED)  # a late success still counts
    assert not task.wants_result(1, 1, S.FAILED)  # a late failure does not


class OwnershipMachine(RuleBasedStateMachine):
    """Any mix of placements, losses, retries and reports from any device: an attempt is
    only ever reported by the device it was placed on, and recorded at most once."""

    def __init__(self) -> None:
        super().__init__()
        self.task = make_task(shards=2, retries=2)
        self.owner: dict[tuple[int, int], str] = {}
        self.recorded: list[tuple[int, int]] = []
        self.now = 0.0

    def tick(self) -> float:
        self.now += 1.0
        return self.now

    @rule(index=st.integers(0, 1), device=st.sampled_from(DEVICES))
    def assign(self, index: int, device: str) -> None:
        if self.task.shards[index].state is S.QUEUED:
            attempt = self.task.assign(index, device, (), self.tick())
            self.owner[(index, attempt)] = device

    @rule(index=st.integers(0, 1))
    def lose(self, index: int) -> None:
        self.task.mark_lost(index, self.tick(), "gone")

    @rule()
    def retry(self) -> None:
        self.task.retry(self.tick())

    @rule(index=st.integers(0, 1), attempt=st.integers(0, 6), device=st.sampled_from(DEVICES),
          outcome=st.sampled_from([S.SUCCEEDED, S.FAILED, S.TIMED_OUT]))
    def report(self, index: int, attempt: int, device: str, outcome: ShardState) -> None:
        """What the coordinator does with a member's result: refuse it unless it is the
        attempt's device's, else record it (which may change nothing)."""
        allowed = self.task.may_report(index, attempt, device)
        assert allowed == (self.owner.get((index, attempt)) == device)
        if allowed and self.task.record_result(index, attempt, outcome, self.tick()).accepted:
            self.recorded.append((index, attempt))

    @invariant()
    def each_attempt_recorded_once_and_only_its_own(self) -> None:
        assert len(self.recorded) == len(set(self.recorded))
        for shard in self.task.shards:
            assert set(shard.placed) == set(range(1, shard.attempt + 1))
            assert shard.reported <= set(shard.placed)
            if shard.state in ACTIVE:
                assert shard.placed[shard.attempt] == shard.device_id


TestOwnership = OwnershipMachine.TestCase
TestOwnership.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)


def test_quota_counts_only_the_submitters_held_work() -> None:
    quota = SubmitQuota(max_tasks=2, max_shards=10)
    first, other = make_task(shards=4), make_task(shards=9, submitter="bob")
    assert quota_refusal([first, other], "alice", 6, quota) is None
    assert "shards held" in (quota_refusal([first, other], "alice", 7, quota) or "")
    second = make_task(shards=1)
    assert "2 tasks held" in (quota_refusal([first, second], "alice", 1, quota) or "")
    for index in range(4):  # an ended task holds nothing
        first.assign(index, "dev-a", (), now=1.0)
        first.record_result(index, 1, S.SUCCEEDED, now=2.0)
    assert quota_refusal([first, second], "alice", 9, quota) is None


LIMITS = IncomingLimits(per_member=100, total=150, disk_margin=50)


def test_output_allowance_follows_the_storage_request() -> None:
    assert output_allowance(0.0, 8 * MIB) == 8 * MIB  # no request: the pool's cap
    assert output_allowance(2.0, 8 * MIB) == 2 * MIB
    assert output_allowance(100.0, 8 * MIB) == 8 * MIB


def test_incoming_refusals() -> None:
    assert incoming_refusal(60, 80, 0, 0, 1000, LIMITS) is None
    assert "the task allows" in (incoming_refusal(90, 80, 0, 0, 1000, LIMITS) or "")
    assert "this member" in (incoming_refusal(60, 80, 50, 50, 1000, LIMITS) or "")
    assert "members already" in (incoming_refusal(60, 80, 0, 100, 1000, LIMITS) or "")
    assert "disk is short" in (incoming_refusal(60, 80, 0, 0, 100, LIMITS) or "")


@given(announced=st.integers(0, 300), member=st.integers(0, 200), others=st.integers(0, 200),
       free=st.integers(0, 500))
def test_an_accepted_transfer_never_breaks_a_bound(
    announced: int, member: int, others: int, free: int
) -> None:
    total = member + others
    if incoming_refusal(announced, 80, member, total, free, LIMITS) is None:
        assert announced <= 80
        assert member + announced <= LIMITS.per_member
        assert total + announced <= LIMITS.total
        assert free - total - announced >= LIMITS.disk_margin
