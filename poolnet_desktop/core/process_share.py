"""Which shard a member stops when shards crowd the machine's process table.

A sandbox's processes are bounded by the kernel (``RLIMIT_NPROC`` in its user namespace,
``runtime/member/sandbox.py``), except on a member run as root: the kernel exempts root's
own user id, and there a shard that forks without end takes every process id the machine
has. So such a member reads the machine's count of tasks once a second, and when they fill
more than a quarter of its room, counts each shard's processes and stops one that holds more
than a sandbox may. Pure: the caller reads the machine and counts the shards.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

K = TypeVar("K")


def crowded(tasks: int, room: int) -> bool:
    """Whether the machine's ``tasks`` (processes and threads) fill more than a quarter of
    its ``room``: worth counting each shard's processes (a walk of each one's tree)."""
    return tasks > room // 4


def shard_to_stop(counts: Mapping[K, int], limit: int) -> tuple[K, str] | None:
    """The shard to stop and why: the one with the most processes, if it has more than
    ``limit``; else None. ``counts``: each running shard's processes."""
    if not counts:
        return None
    largest = max(counts, key=lambda shard: counts[shard])
    if counts[largest] <= limit:
        return None
    return largest, (f"stopped: it ran {counts[largest]} processes, more than the {limit} a shard may run "
                     f"here (it would have left this machine's owner none to start)")
