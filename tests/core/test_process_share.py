"""When a member counts its shards' processes and threads, and which shard it stops."""

from __future__ import annotations

from poolnet_desktop.core.process_share import crowded, shard_to_stop, shards_share


def test_shards_are_counted_once_the_machines_tasks_fill_a_quarter_of_its_room() -> None:
    assert not crowded(800, 32768)  # a desktop at rest
    assert not crowded(8192, 32768)
    assert crowded(8193, 32768)


def test_the_shard_with_the_most_processes_is_stopped_only_past_the_limit() -> None:
    assert shard_to_stop({"a": 4096, "b": 12}, limit=4096, share=8192) is None
    key, why = shard_to_stop({"a": 30000, "b": 5000}, limit=4096, share=8192) or ("", "")
    assert key == "a" and "30000 processes and threads, more than the 4096" in why
    assert shard_to_stop({}, limit=4096, share=8192) is None


def test_shards_each_within_the_limit_are_stopped_largest_first_once_together_past_the_members_share() -> None:
    """A task's lanes are sandboxes of their own, each with its own kernel limit: eight of
    them at the limit are the machine's every process id."""
    share = shards_share(32768)
    assert share == 8192
    assert shard_to_stop({"a": 4096, "b": 4096}, limit=4096, share=share) is None
    key, why = shard_to_stop({"a": 4000, "b": 4096, "c": 200}, limit=4096, share=share) or ("", "")
    assert key == "b" and "8296 processes and threads together, more than the 8192" in why


def test_past_the_share_the_submitter_holding_the_most_loses_a_shard_not_the_largest_of_another() -> None:
    """A load spread over many lanes (or tasks), each shard within the limit, must not get a
    larger shard of another submitter stopped in its place (a review of 25ff887)."""
    counts = {("victim", 0): 4000, ("spread", 0): 1500, ("spread", 1): 1500, ("spread", 2): 1600}
    key, why = shard_to_stop(counts, limit=4096, share=8192, submitter_of=lambda shard: shard[0]) or (("", 0), "")
    assert key == ("spread", 2) and "8600 processes and threads together" in why and "the most (4600)" in why
