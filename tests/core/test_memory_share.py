"""Which shard a member stops to keep its owner's memory (pure decisions)."""

from __future__ import annotations

from poolnet_desktop.core.memory_share import (
    MIN_FLOOR,
    MIN_WORTH_STOPPING,
    memory_floor,
    shard_to_stop,
    worth_measuring,
)

GB, MB = 1024**3, 1024**2
TOTAL = 16 * GB
FLOOR = memory_floor(TOTAL)


def test_the_floor_is_a_twentieth_of_the_memory_and_never_less_than_256_mib_on_a_real_machine() -> None:
    assert FLOOR == int(0.8 * GB)
    assert memory_floor(2 * GB) == MIN_FLOOR
    assert memory_floor(512 * MB) == 128 * MB  # a quarter of a tiny machine's, not all of it


def test_shards_over_the_share_their_owner_lends_lose_the_largest_of_them() -> None:
    used = {"a": 6 * GB, "b": 8 * GB}  # 14 GB together, 80 % is 12.8 GB
    key, why = shard_to_stop(TOTAL, 2 * GB, 80.0, FLOOR, used)
    assert key == "b" and "14336 MB together, more than the 13107 MB (80 %) its owner lends" in why
    assert "this shard's submitter the most (8192 MB)" in why
    assert shard_to_stop(TOTAL, 2 * GB, 90.0, FLOOR, used) is None  # 90 % is 14.4 GB


def test_many_small_shards_over_the_share_still_lose_the_largest() -> None:
    used = {n: 20 * MB + n for n in range(100)}  # each under MIN_WORTH_STOPPING, 2 GB together
    key, _ = shard_to_stop(TOTAL, 8 * GB, 10.0, FLOOR, used)
    assert key == 99


def test_a_machine_under_its_floor_loses_the_largest_shard_if_it_is_worth_stopping() -> None:
    used = {"small": 10 * MB, "big": MIN_WORTH_STOPPING}
    key, why = shard_to_stop(TOTAL, FLOOR - 1, 80.0, FLOOR, used)
    assert key == "big" and "give this machine's owner memory back" in why
    assert shard_to_stop(TOTAL, FLOOR, 80.0, FLOOR, used) is None  # at the floor: nothing to do
    # The owner's own programs took the memory: stopping a small shard would give nothing back.
    assert shard_to_stop(TOTAL, FLOOR - 1, 80.0, FLOOR, {"small": 10 * MB}) is None
    assert shard_to_stop(TOTAL, FLOOR - 1, 80.0, FLOOR, {}) is None


def test_the_shards_are_measured_only_when_the_machine_says_they_may_be_over() -> None:
    assert not worth_measuring(TOTAL, 8 * GB, 80.0, FLOOR)  # 8 GB used by everyone: under 12.8
    assert worth_measuring(TOTAL, 3 * GB, 80.0, FLOOR)  # 13 GB used
    assert worth_measuring(TOTAL, FLOOR - 1, 100.0, FLOOR)


def test_the_submitter_whose_shards_use_the_most_loses_its_largest_not_anothers_larger_shard() -> None:
    """A load spread over many lanes (or tasks), each shard small, must not get a larger shard
    of another submitter stopped in its place (a review of 25ff887, which found the same in
    the process guard)."""
    used = {("victim", 0): 6 * GB, ("spread", 0): 3 * GB, ("spread", 1): 3 * GB, ("spread", 2): 2 * GB}
    key, why = shard_to_stop(TOTAL, 2 * GB, 80.0, FLOOR, used, submitter_of=lambda shard: shard[0])
    assert key == ("spread", 0) and "this shard's submitter the most (8192 MB)" in why
    key, _ = shard_to_stop(TOTAL, FLOOR - 1, 100.0, FLOOR, used, submitter_of=lambda shard: shard[0])
    assert key == ("spread", 0)


def test_a_submitter_who_spreads_a_load_over_many_tasks_loses_its_own_shard() -> None:
    """The attack on weighing by task: three tasks of 3 GB each from one submitter beside
    another's single 6 GB task. By task, the other's would be the heaviest and lose its shard;
    by submitter (the host's tag), the spreader's 9 GB are."""
    used = {("victim", "t1", 0): 6 * GB, ("spreader", "t2", 0): 3 * GB, ("spreader", "t3", 0): 3 * GB,
            ("spreader", "t4", 0): 3 * GB}
    by_task, _ = shard_to_stop(TOTAL, 2 * GB, 80.0, FLOOR, used, submitter_of=lambda shard: shard[1]) or ((), "")
    assert by_task[0] == "victim"  # what weighing by task did
    key, why = shard_to_stop(TOTAL, 2 * GB, 80.0, FLOOR, used, submitter_of=lambda shard: shard[0]) or ((), "")
    assert key[0] == "spreader" and "this shard's submitter the most (9216 MB)" in why


def test_under_the_floor_a_submitter_of_many_small_shards_loses_one_not_anothers_larger_shard() -> None:
    used = {("victim", 0): 500 * MB, **{("spread", n): 20 * MB for n in range(100)}}
    key, why = shard_to_stop(TOTAL, FLOOR - 1, 100.0, FLOOR, used, submitter_of=lambda shard: shard[0])
    assert key[0] == "spread" and "this shard's submitter used the most (2000 MB)" in why
