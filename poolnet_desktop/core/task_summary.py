"""What a task looks like from afar: counts, devices used and times, never a line per shard.

Lists and pushed changes carry one summary per task whatever its size, so a pool that ran
100,000 shards answers in kilobytes; the shards of one task are read separately, a page at a
time (``shard_page``). Lists are pages too (``task_page``): newest first, resumed from an
opaque cursor that stays valid while tasks come and go. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence

from poolnet_desktop.core.tasks import ENDED, Shard, Task

# A summary names at most this many devices (and counts them all): one task spread over a
# thousand members must not make a list page outgrow a frame.
MAX_SUMMARY_DEVICES = 16


def state_counts(task: Task) -> dict[str, int]:
    """Shards by state (only the states some shard is in)."""
    return {state.value: n for state, n in task.counts().items()}


def devices_used(task: Task) -> list[str]:
    """Every device an attempt of the task was placed on, sorted."""
    return sorted(task.devices)


def started_at(task: Task) -> float | None:
    """When its first shard started running, if one did (``Task.first_started_at``)."""
    return task.first_started_at


def ended_at(task: Task) -> float | None:
    """When an ended task ended: its last shard's end (None while it has not ended, or for
    a task that ended without any shard finishing, which then ended when it was submitted)."""
    if task.state not in ENDED:
        return None
    last = task.last_finished_at
    return task.submitted_at if last is None else last


def _order(task: Task) -> tuple[float, str]:
    return (task.submitted_at, task.id)


def format_cursor(task: Task) -> str:
    return f"{task.submitted_at!r}/{task.id}"


def parse_cursor(cursor: str) -> tuple[float, str]:
    """``ValueError`` for a cursor this module did not write."""
    stamp, _, task_id = cursor.partition("/")
    if not task_id:
        raise ValueError(f"not a task list cursor: {cursor[:80]!r}")
    return float(stamp), task_id


def task_page(tasks: Sequence[Task], cursor: str | None, limit: int) -> tuple[list[Task], str | None]:
    """Up to ``limit`` tasks, newest first, after ``cursor`` (None: from the newest), and
    the cursor of the next page (None on the last). A task forgotten meanwhile does not
    break a cursor: the page resumes where that task was."""
    ordered = sorted(tasks, key=_order, reverse=True)
    if cursor is not None:
        after = parse_cursor(cursor)
        ordered = [t for t in ordered if _order(t) < after]
    page = ordered[:limit]
    more = len(ordered) > limit
    return page, format_cursor(page[-1]) if more and page else None


def shard_page(task: Task, start: int, limit: int) -> tuple[list[Shard], int | None]:
    """Shards ``start`` .. ``start + limit - 1`` of a task, and where the next page starts."""
    page = task.shards[start:start + limit]
    following = start + len(page)
    return page, following if following < len(task.shards) else None
