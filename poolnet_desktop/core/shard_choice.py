"""Which running shard a member's guards stop first, once its shards together hold too much
(memory, ``core.memory_share``; processes and threads, ``core.process_share``): the largest
shard of the task whose shards together hold the most. By task, not by shard: a task spread
over many shards (lanes), each of them small, would otherwise get a larger shard of another
task stopped in its place, again and again. Pure."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

K = TypeVar("K")


def each_its_own(shard: object) -> object:
    """``task_of`` where nothing says which shards are one task's: each shard is its own."""
    return shard


def heaviest_tasks_largest(held: Mapping[K, int], task_of: Callable[[K], Hashable]) -> tuple[K, int]:
    """The largest shard of the task holding the most of ``held`` (each running shard's
    amount, not empty), and that task's total."""
    by_task: dict[Hashable, int] = {}
    for shard, amount in held.items():
        task = task_of(shard)
        by_task[task] = by_task.get(task, 0) + amount
    heaviest = max(by_task, key=by_task.__getitem__)
    largest = max((shard for shard in held if task_of(shard) == heaviest), key=held.__getitem__)
    return largest, by_task[heaviest]
