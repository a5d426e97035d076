"""Which shard a member stops when shards crowd the machine's process table.

The kernel bounds each sandbox's processes and threads (``RLIMIT_NPROC`` in its user
namespace, ``runtime/member/sandbox.py``), but not a member's shards together: each lane of a
task is a namespace of its own with a limit of its own, and one task may hold a lane per
hundredth of a core. Nor does it bound them on a member run as root (the kernel exempts root's
own user id), one without prlimit, or one running tasks unsandboxed. So every member reads the
machine's count of tasks (processes and threads) once a second while shards run, and when
they fill more than a quarter of its room, counts each shard's and stops the largest if it
holds more than a sandbox may, or, if the shards together hold more than a quarter of the
room, the largest of the submitter that holds the most: the owner's programs keep the rest.
Threads count as the kernel counts them: a shard of a few processes with a thousand threads
each takes as many process ids as a thousand processes. Pure: the caller reads the machine
and counts the shards.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

from poolnet_desktop.core.shard_choice import each_its_own, heaviest_submitters_largest

K = TypeVar("K")


def crowded(tasks: int, room: int) -> bool:
    """Whether the machine's ``tasks`` (processes and threads) fill more than a quarter of
    its ``room``: worth counting each shard's (a walk of each one's tree)."""
    return tasks > room // 4


def shards_share(room: int) -> int:
    """The most processes and threads a member's shards may hold together, on a machine with
    ``room`` for them: a quarter."""
    return room // 4


def shard_to_stop(counts: Mapping[K, int], limit: int, share: int,
                  submitter_of: Callable[[K], Hashable] = each_its_own) -> tuple[K, str] | None:
    """The shard to stop and why, else None: the one with the most processes and threads if
    it holds more than ``limit``; or, once all of them together hold more than ``share``, the
    largest of the submitter that holds the most (``core.shard_choice``; ``submitter_of``
    names a shard's submitter). ``counts``: each running shard's processes and threads."""
    if not counts:
        return None
    largest = max(counts, key=counts.__getitem__)
    if counts[largest] > limit:
        return largest, (f"stopped: it ran {counts[largest]} processes and threads, more than the {limit} a "
                         f"shard may run here (it would have left this machine's owner none to start)")
    together = sum(counts.values())
    if together <= share:
        return None
    victim, theirs = heaviest_submitters_largest(counts, submitter_of)
    return victim, (f"stopped: the shards on this member ran {together} processes and threads together, more "
                    f"than the {share} they may hold here, and this shard's submitter the most ({theirs})")
