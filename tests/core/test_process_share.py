"""When a member counts its shards' processes, and which shard it stops."""

from __future__ import annotations

from poolnet_desktop.core.process_share import crowded, shard_to_stop


def test_shards_are_counted_once_the_machines_tasks_fill_a_quarter_of_its_room() -> None:
    assert not crowded(800, 32768)  # a desktop at rest
    assert not crowded(8192, 32768)
    assert crowded(8193, 32768)


def test_the_shard_with_the_most_processes_is_stopped_only_past_the_limit() -> None:
    assert shard_to_stop({"a": 4096, "b": 12}, limit=4096) is None
    key, why = shard_to_stop({"a": 30000, "b": 5000}, limit=4096) or ("", "")
    assert key == "a" and "30000 processes, more than the 4096" in why
    assert shard_to_stop({}, limit=4096) is None
