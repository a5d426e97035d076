"""What the coordination core (``core.coordination``) asks the runtime to do.

Every method of ``Coordination`` returns a list of these, in the order they must be carried
out. They are plain values, so a test can read a decision without a socket or a database:
"send this member that cancel", "store this shard's record", "move these result files",
"place shards soon", "wake me at this time". The runtime (``runtime.host.task_service``) carries
each out and decides nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

from poolnet_desktop.core.task_protocol import (
    Assignment,
    AssignShards,
    ShardCancel,
    ShardRef,
    ShardResult,
)
from poolnet_desktop.core.tasks import Shard, Task

# Shards placed in one pass, per (member, task): sent once their records are committed.
Batches = dict[tuple[str, str], list[Assignment]]


@dataclass(frozen=True, slots=True)
class Send:
    """Post this message to the member now (dropped if it is not connected)."""

    device_id: str
    message: AssignShards | ShardCancel


@dataclass(frozen=True, slots=True)
class SaveTask:
    """Store the task's own record (spec, submitter, cancel flag, whether its files are here)."""

    task: Task
    files_ready: bool


@dataclass(frozen=True, slots=True)
class SaveShard:
    """Store a snapshot of the shard's record now (and the result it recorded, if any)."""

    task_id: str
    shard: Shard
    result: ShardResult | None = None


@dataclass(frozen=True, slots=True)
class AppendLog:
    """Store a line of an attempt's live output."""

    ref: ShardRef
    stream: str
    data: str


@dataclass(frozen=True, slots=True)
class SendAfterCommit:
    """Commit what is queued to the store (urgently), then call
    ``Coordination.assignments_committed(batches)`` and carry out what it returns: a member
    learns of an attempt only once the records say it is the member's."""

    batches: Batches


@dataclass(frozen=True, slots=True)
class AckAfterCommit:
    """Tell the member it may forget this result once everything queued so far is committed."""

    device_id: str
    ref: ShardRef


@dataclass(frozen=True, slots=True)
class KeepOutputs:
    """The accepted result's files (``files``: the folder they arrived in) become the shard's
    outputs; None: the shard keeps no outputs (remove any from an earlier attempt). Carry
    this out before the store writes that follow it."""

    task_id: str
    shard: int
    files: Path | None


@dataclass(frozen=True, slots=True)
class DropFiles:
    """Delete a result's files that were not taken (a duplicate or a stale attempt)."""

    files: Path


@dataclass(frozen=True, slots=True)
class TaskChanged:
    """The task's state or a shard's changed: tell whoever follows it. ``ended``: it has just
    reached, or is in, an ended state (news to send at once)."""

    task_id: str
    ended: bool


@dataclass(frozen=True, slots=True)
class RunningShards:
    """How many shards hold the member's share now (shown on its device card)."""

    device_id: str
    count: int


@dataclass(frozen=True, slots=True)
class PlaceSoon:
    """Shards wait: call ``Coordination.place`` once, soon (coalesce many of these)."""


@dataclass(frozen=True, slots=True)
class WakeAt:
    """Call ``Coordination.expire`` at this time (None: no deadline is pending)."""

    when: float | None


@dataclass(frozen=True, slots=True)
class Forgotten:
    """The task left the records: remove its stored records, logs and result files."""

    task_id: str


Effect = Union[Send, SaveTask, SaveShard, AppendLog, SendAfterCommit, AckAfterCommit,
               KeepOutputs, DropFiles, TaskChanged, RunningShards, PlaceSoon, WakeAt, Forgotten]
PLACE_SOON = PlaceSoon()
