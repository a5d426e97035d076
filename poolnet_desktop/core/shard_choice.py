"""Which running shard a member's guards stop first, once its shards together hold too much
(memory, ``core.memory_share``; processes and threads, ``core.process_share``): the largest
shard of the submitter whose shards together hold the most. By submitter, not by shard: a
load spread over many shards (lanes), each of them small, would otherwise get a larger shard
of someone else stopped in its place, again and again; and not by task, since a submitter can
spread it over many tasks as easily. The host names each task's submitter by a tag that says
nothing of who it is (``AssignShards.submitter_tag``); where none is given, each task stands
alone. Pure."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

K = TypeVar("K")


def each_its_own(shard: object) -> object:
    """``submitter_of`` where nothing says which shards are one submitter's: each is its own."""
    return shard


def heaviest_submitters_largest(held: Mapping[K, int], submitter_of: Callable[[K], Hashable]) -> tuple[K, int]:
    """The largest shard of the submitter holding the most of ``held`` (each running shard's
    amount, not empty), and that submitter's total."""
    by_submitter: dict[Hashable, int] = {}
    for shard, amount in held.items():
        submitter = submitter_of(shard)
        by_submitter[submitter] = by_submitter.get(submitter, 0) + amount
    heaviest = max(by_submitter, key=by_submitter.__getitem__)
    largest = max((shard for shard in held if submitter_of(shard) == heaviest), key=held.__getitem__)
    return largest, by_submitter[heaviest]
