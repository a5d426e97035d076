"""A replay after a reconnect shows only the output not shown before."""

from __future__ import annotations

from poolnet_desktop.core.output_replay import OutputReplay


def test_a_replay_cuts_what_was_shown_per_stream_even_mid_chunk() -> None:
    replay = OutputReplay()
    assert replay.new_part("0/out", "hello ") == "hello "
    assert replay.new_part("0/out", "wor") == "wor"
    assert replay.new_part("1/out", "other") == "other"

    replay.restart()  # the pool replays each stream from its start, in larger chunks
    assert replay.new_part("1/out", "other") == ""
    assert replay.new_part("0/out", "hello world\n") == "ld\n"
    assert replay.new_part("0/err", "oops\n") == "oops\n"  # a stream not seen before
    assert replay.new_part("0/out", "more\n") == "more\n"
