"""Which shard a member stops to keep its owner's memory: the owner comes first.

A shard whose task declares no memory has no limit of its own, and once the machine is out of
memory the kernel's OOM killer ends whatever it picks: the owner's browser, the desktop, the
member itself. So a member running shards stops one at a time, the largest of the submitter
whose shards use the most (``core.shard_choice``), while either
- its shards together use more than the share of memory its owner lends (Settings' memory
  slider, ``SharingLimits.memory_percent``, 80 % unless changed), or
- the machine has less than its floor available (5 % of its memory, at least 256 MiB): then
  only a shard of a submitter worth stopping (its shards here use 64 MiB or more) is stopped,
  since stopping a small one alone would give the owner nothing back, and its retry would land
  here again; a submitter of many small shards loses one at each check.
The shard fails with reason ``memory`` and is retried elsewhere within its task's retries.
Pure: the caller reads the machine and measures the shards.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

from poolnet_desktop.core.shard_choice import each_its_own, heaviest_submitters_largest

FLOOR_SHARE = 0.05
MIN_FLOOR = 256 * 1024**2
MIN_WORTH_STOPPING = 64 * 1024**2
_MB = 1024**2

K = TypeVar("K")


def memory_floor(total: int) -> int:
    """The bytes a machine with ``total`` bytes keeps available for its owner (never more
    than a quarter of a very small machine's)."""
    return max(int(total * FLOOR_SHARE), min(MIN_FLOOR, total // 4))


def lent_memory(total: int, percent: float) -> int:
    """The bytes the owner lends the pool's shards, all together."""
    return int(total * percent / 100)


def worth_measuring(total: int, available: int, percent: float, floor: int) -> bool:
    """Whether the shards may be over their share or the machine under its floor: its used
    memory (shards' and everyone else's) is over the share, or what is available under the
    floor. Measuring each shard costs a walk of its processes; this is one read."""
    return total - available > lent_memory(total, percent) or available < floor


def shard_to_stop(total: int, available: int, percent: float, floor: int, used: Mapping[K, int],
                  submitter_of: Callable[[K], Hashable] = each_its_own) -> tuple[K, str] | None:
    """The shard to stop now and why, or None: the largest of the submitter whose shards use
    the most (``core.shard_choice``; ``submitter_of`` names a shard's submitter). ``used``:
    each running shard's bytes."""
    if not used:
        return None
    largest, theirs = heaviest_submitters_largest(used, submitter_of)
    together, lent = sum(used.values()), lent_memory(total, percent)
    if together > lent:
        return largest, (f"stopped: this member's shards used {together // _MB} MB together, more than the "
                         f"{lent // _MB} MB ({percent:g} %) its owner lends, and this shard's submitter the most "
                         f"({theirs // _MB} MB)")
    if available < floor and theirs >= MIN_WORTH_STOPPING:
        return largest, (f"stopped to give this machine's owner memory back: {available // _MB} MB of "
                         f"{total // _MB} MB were available, and this shard's submitter used the most "
                         f"({theirs // _MB} MB)")
    return None
