"""Which ended tasks the pool keeps: 30 days or the last 1,000, whichever keeps more."""

from __future__ import annotations

import pytest

from poolnet_desktop.core.retention import DAY, RetentionPolicy, tasks_to_prune

NOW = 1_000 * DAY


def test_young_tasks_stay_however_many_there_are() -> None:
    ended = [(f"t{i}", NOW - 0.5 * DAY) for i in range(5)]
    assert tasks_to_prune(ended, NOW, RetentionPolicy(keep_days=1, keep_last=2)) == []


def test_old_tasks_beyond_the_last_n_go_oldest_first() -> None:
    ended = [("a", NOW - 40 * DAY), ("b", NOW - 50 * DAY), ("c", NOW - 31 * DAY), ("d", NOW - 1 * DAY)]
    # The last 2 ended are d (young anyway) and c (old, but among the last 2): a and b go.
    assert tasks_to_prune(ended, NOW, RetentionPolicy(keep_days=30, keep_last=2)) == ["b", "a"]


def test_a_quiet_pool_keeps_its_last_runs_however_old() -> None:
    ended = [(f"t{i}", NOW - (400 + i) * DAY) for i in range(3)]
    assert tasks_to_prune(ended, NOW, RetentionPolicy(keep_days=30, keep_last=1000)) == []


def test_the_defaults_are_thirty_days_or_the_last_thousand() -> None:
    policy = RetentionPolicy()
    assert (policy.keep_days, policy.keep_last) == (30.0, 1000)
    old = [(f"old{i:04}", NOW - 31 * DAY - i) for i in range(1200)]
    doomed = tasks_to_prune(old, NOW, policy)
    assert len(doomed) == 200
    assert doomed[0] == "old1199" and doomed[-1] == "old1000"  # the oldest 200, oldest first


def test_the_boundary_and_ties_do_not_depend_on_order() -> None:
    policy = RetentionPolicy(keep_days=30, keep_last=1)
    exactly = [("x", NOW - 30 * DAY), ("y", NOW - 30 * DAY - 1)]
    # x ended exactly 30 days ago (kept, and the last one anyway); y a second before: gone.
    assert tasks_to_prune(exactly, NOW, policy) == ["y"]
    assert tasks_to_prune([("x", NOW - 30 * DAY), ("z", NOW)], NOW, policy) == []
    tied = [("p", NOW - 90 * DAY), ("q", NOW - 90 * DAY)]
    assert tasks_to_prune(tied, NOW, policy) == tasks_to_prune(list(reversed(tied)), NOW, policy) == ["p"]


def test_keeping_nothing_prunes_every_ended_task() -> None:
    ended = [("a", NOW), ("b", NOW - 1)]
    assert sorted(tasks_to_prune(ended, NOW + 1, RetentionPolicy(keep_days=0, keep_last=0))) == ["a", "b"]


def test_a_negative_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        RetentionPolicy(keep_days=-1)
