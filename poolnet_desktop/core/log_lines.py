"""A task's output as whole lines labelled by shard, from chunks that arrive in any order.

Shards stream their stdout and stderr in chunks that split lines anywhere, and the chunks of
several shards interleave. Shown as they come, one shard's text lands in the middle of
another's line. ``LineJoiner`` keeps each (shard, stream)'s unfinished tail until its newline
comes, so every reader (the window's log, ``poolnet logs``) shows whole lines, each with the
shard it came from.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ShardLine:
    """One line (without its newline) of one shard's ``stream``."""

    shard: int
    stream: str
    text: str

    def labelled(self) -> str:
        return f"[{self.shard}] {self.text}\n"


class LineJoiner:
    """Feed chunks with ``feed``; at the end, ``rest`` gives the tails that had no newline."""

    def __init__(self) -> None:
        self._partial: dict[tuple[int, str], str] = {}

    def feed(self, shard: int, stream: str, data: str) -> list[ShardLine]:
        key = (shard, stream)
        *lines, self._partial[key] = (self._partial.get(key, "") + data).split("\n")
        return [ShardLine(shard, stream, line) for line in lines]

    def rest(self, shard: int | None = None) -> list[ShardLine]:
        """The unfinished tails, of every shard or of ``shard`` alone (its attempt ended: the
        next one's text starts a line of its own)."""
        keys = [key for key in self._partial if shard is None or key[0] == shard]
        return [ShardLine(key[0], key[1], text) for key in keys if (text := self._partial.pop(key))]
