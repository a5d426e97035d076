"""Output already shown, so that a replay after a reconnect shows only what is new.

``poolnet logs --follow`` that lost its pool (the host restarted) asks again from the start:
the pool replays each shard's stored output, then goes on live. Each stream (a shard
attempt's stdout or stderr) is one ordered text, so knowing how much of it was shown is
enough to cut what the replay repeats. Pure.
"""

from __future__ import annotations

from collections.abc import Hashable


class OutputReplay:
    """Call ``new_part(stream, text)`` for every chunk, and ``restart()`` when the pool starts
    its replay again; what comes back is the part of the chunk not shown before."""

    def __init__(self) -> None:
        self._shown: dict[Hashable, int] = {}
        self._replayed: dict[Hashable, int] = {}

    def restart(self) -> None:
        self._replayed = {}

    def new_part(self, stream: Hashable, text: str) -> str:
        start = self._replayed.get(stream, 0)
        shown = self._shown.get(stream, 0)
        self._replayed[stream] = start + len(text)
        self._shown[stream] = max(shown, start + len(text))
        return text[max(0, shown - start):]
