"""Whole, labelled lines from interleaved chunks of several shards."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from poolnet_desktop.core.log_lines import LineJoiner, ShardLine


def test_a_line_split_across_chunks_comes_out_whole_after_another_shards_line() -> None:
    joiner = LineJoiner()
    assert joiner.feed(0, "stdout", "hel") == []
    assert joiner.feed(1, "stdout", "other\nhalf") == [ShardLine(1, "stdout", "other")]
    assert joiner.feed(0, "stdout", "lo\n") == [ShardLine(0, "stdout", "hello")]
    assert joiner.feed(0, "stderr", "warn\n")[0].labelled() == "[0] warn\n"
    assert joiner.rest() == [ShardLine(1, "stdout", "half")]
    assert joiner.rest() == []


@given(st.lists(st.tuples(st.integers(0, 3), st.text(alphabet="ab\n", max_size=8)), max_size=40))
def test_each_shards_text_is_kept_whole_and_in_order(chunks: list[tuple[int, str]]) -> None:
    joiner = LineJoiner()
    lines = [line for shard, data in chunks for line in joiner.feed(shard, "stdout", data)]
    tails = joiner.rest()
    for shard in range(4):
        sent = "".join(data for s, data in chunks if s == shard)
        whole = "".join(line.text + "\n" for line in lines if line.shard == shard)
        tail = "".join(line.text for line in tails if line.shard == shard)
        assert whole + tail == sent
        assert "\n" not in tail
