"""How long the pool remembers ended tasks: a pure decision over plain values.

A host that runs tasks for months must not keep every one: the store, the logs and the
result files grow without end, and every list or summary walks them. Ended tasks are kept
for ``keep_days`` days *or* while they are among the last ``keep_last`` ended, whichever
keeps more: a pool used once a year still shows its last runs, and a busy one a month of
them. Tasks that have not ended are never pruned. Time is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """``keep_days``: ended tasks younger than this stay; ``keep_last``: so do the most
    recently ended this many, however old."""

    keep_days: float = 30.0
    keep_last: int = 1000

    def __post_init__(self) -> None:
        if self.keep_days < 0 or self.keep_last < 0:
            raise ValueError("keep_days and keep_last must not be negative")


def tasks_to_prune(
    ended: Iterable[tuple[str, float]], now: float, policy: RetentionPolicy
) -> list[str]:
    """The ids of the ended tasks to forget, given each ended task's ``(id, ended_at)``.

    A task is kept if it ended within ``policy.keep_days`` of ``now`` or is among the
    ``policy.keep_last`` most recently ended (ties broken by id, so the answer does not
    depend on the order given); every other one is returned, oldest first."""
    newest_first = sorted(ended, key=lambda item: (item[1], item[0]), reverse=True)
    cutoff = now - policy.keep_days * DAY
    return [task_id for task_id, ended_at in reversed(newest_first[policy.keep_last:])
            if ended_at < cutoff]
