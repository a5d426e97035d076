"""Every message about tasks: submitting, watching, running shards and bringing results back.

Three conversations share the pool's WebSocket (all PoolNet dialect; file bytes travel beside
them as binary chunk frames, ``core.transfer``):

* submitter -> coordinator: ``submit_task`` -> ``task_accepted`` (or ``error``), then the input
  files as chunks (transfer id = task id), then ``task_update`` once it is queued;
  ``cancel_task`` -> ``task_update``; ``retry_task`` -> ``task_update``;
  ``list_tasks`` -> ``task_list`` (a page); ``subscribe_tasks`` -> ``task_list``, then
  ``tasks_changed`` batches; ``list_shards`` -> ``shard_list`` (a page);
  ``forget_task`` -> ``task_forgotten``;
  ``watch_task`` -> the stored log as ``shard_output``, ``watch_ready``, then live
  ``shard_output`` and ``task_update``; ``fetch_results`` -> ``result_files`` -> chunks.
* coordinator -> member: ``assign_shards`` (attempts of one task, each to run at once or
  after another shard on that member ends), ``shard_cancel``, ``shard_ack`` (the results are
  stored: drop them from the spool), and the blobs a member asked for with ``fetch_blobs``.
* member -> coordinator: ``shards_report`` (right after ``welcome``: what it still runs or
  holds), ``shard_started``, ``shard_output``, ``shards_finished`` followed by each result's
  output files as chunks (transfer id = ``result_transfer_id``).

Assignments and results travel in batches because a stream of tiny shards is bound by the
cost of each message (a TLS record and a wake-up of the other process), not by the shards.

Pure schemas; nothing here does I/O.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from poolnet_desktop.core.environment import EnvironmentSpec
from poolnet_desktop.core.manifest import FileEntry, ShardResources, TaskSpec
from poolnet_desktop.core.matrix import MatrixAxis, MatrixValue, shard_values
from poolnet_desktop.core.resources import Resources
from poolnet_desktop.core.task_summary import (
    MAX_SUMMARY_DEVICES,
    devices_used,
    ended_at,
    started_at,
    state_counts,
)
from poolnet_desktop.core.tasks import Shard, ShardState, Task
from poolnet_desktop.core.wire import Message, Sha256Hex

TASK_ID_PATTERN = r"^[A-Za-z0-9_-]{1,100}$"
TaskId = Annotated[str, msgspec.Meta(pattern=TASK_ID_PATTERN)]
ShardIndex = Annotated[int, msgspec.Meta(ge=0, le=100_000)]
Attempt = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
RequestId = Annotated[str, msgspec.Meta(max_length=128)]
OutputText = Annotated[str, msgspec.Meta(max_length=512 * 1024)]
Reason = Literal["succeeded", "failed", "timeout", "memory", "cancelled", "error"]
MAX_LIST = 100_000
# Pages of a list: summaries are at most a few KB (``core.task_summary``), so a page stays far
# below the 1 MiB frame cap however big the pool's tasks are.
MAX_TASK_PAGE = 100
MAX_SHARD_PAGE = 1000

_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_-]+")


def is_task_id(text: str) -> bool:
    """Whether ``text`` can be a task id. Ids name folders on the submitter
    (``results/<id>/``), so one from the network that is a path (``/root/.ssh``, ``..``) must
    be refused before it is joined to anything."""
    return re.fullmatch(TASK_ID_PATTERN, text) is not None


def new_task_id(name: str, token: str) -> str:
    """A readable, unique task id: the task's name made file-safe plus a random ``token``
    (hex). It names folders (``results/<id>/``) and spool keys, hence the narrow alphabet."""
    stem = _UNSAFE_ID.sub("-", name).strip("-")[:40] or "task"
    return f"{stem}-{token}"


def result_transfer_id(task_id: str, shard: int, attempt: int) -> str:
    """The transfer id of one attempt's output files (also the member's spool key)."""
    return f"{task_id}.{shard}.{attempt}"


class ShardRef(msgspec.Struct, rename="camel", frozen=True, array_like=True):
    """One attempt of one shard: ``[taskId, shard, attempt]`` on the wire (compact in lists)."""

    task_id: TaskId
    shard: ShardIndex
    attempt: Attempt


class ShardResult(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """How an attempt ended: what the member's runner (``runtime.member.runner``) returns, spools and
    sends as is. ``exit_code`` is None when the process never started, negative when a signal
    ended it (POSIX); ``started``/``ended`` are wall-clock seconds; ``outputs`` are relative to
    the working folder; ``refused`` lists outputs that matched a glob but were not taken (a
    symlink out of the folder); ``message`` says why it ended so when the exit code does not."""

    reason: Reason
    exit_code: int | None
    started: float
    ended: float
    outputs: list[FileEntry] = msgspec.field(default_factory=list)
    refused: list[str] = msgspec.field(default_factory=list)
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    truncated: bool = False
    peak_memory: int = 0
    message: Annotated[str, msgspec.Meta(max_length=4096)] = ""


class ShardSummary(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """One shard as people see it."""

    index: int
    state: str
    attempt: int
    device_id: str | None
    exit_code: int | None
    reason: str
    values: dict[str, MatrixValue] | None = None  # its [matrix] combination, if any


class TaskSummary(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """One task as lists, pushed changes and progress bars show it: its size does not grow
    with its shards (those are read a page at a time: ``list_shards``).

    ``running`` counts shards whose process runs; ``waiting`` those placed on a member but not
    started yet (held there behind a shard it runs, or on their way to it). ``counts``: shards
    by state. ``devices`` (at most ``MAX_SUMMARY_DEVICES`` of ``device_count``) is where its
    shards were placed: None for a caller who may not see its details.
    """

    id: str
    name: str
    state: str
    total: int
    done: int
    succeeded: int
    running: int
    queued: int
    submitted_at: float
    reason: str = ""
    waiting: int = 0
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    devices: list[str] | None = None
    device_count: int = 0
    started_at: float | None = None
    ended_at: float | None = None


# ---- submitter -> coordinator ----------------------------------------------------------------


class SubmitTask(Message, tag="submit_task"):
    """Submit a task; its ``spec.files`` follow as chunks once ``task_accepted`` names its id."""

    request_id: RequestId
    spec: TaskSpec


class CancelTask(Message, tag="cancel_task"):
    task_id: TaskId


class RetryTask(Message, tag="retry_task"):
    """Run the task's failed, timed-out, cancelled and lost shards again."""

    task_id: TaskId


class ListTasks(Message, tag="list_tasks"):
    """One page of the pool's tasks, newest first: ``cursor`` is the previous page's
    ``next`` (None: the first page); at most ``limit`` (up to ``MAX_TASK_PAGE``)."""

    cursor: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_TASK_PAGE)] = MAX_TASK_PAGE


class SubscribeTasks(Message, tag="subscribe_tasks"):
    """Answered by the first page (``task_list``, as ``list_tasks`` with no cursor), then
    ``tasks_changed`` batches for as long as the connection lasts."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_TASK_PAGE)] = MAX_TASK_PAGE


class ListShards(Message, tag="list_shards"):
    """One page of one task's shards (its submitter and the owner only)."""

    task_id: TaskId
    start: ShardIndex = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_SHARD_PAGE)] = MAX_SHARD_PAGE


class ForgetTask(Message, tag="forget_task"):
    """Delete an ended task: its records, logs and result files (submitter and owner)."""

    task_id: TaskId


class WatchTask(Message, tag="watch_task"):
    """Send the task's stored output (of one shard, or all), then follow it live."""

    task_id: TaskId
    shard: ShardIndex | None = None
    history: bool = True


class FetchResults(Message, tag="fetch_results"):
    task_id: TaskId


# ---- member -> coordinator -------------------------------------------------------------------


class ShardsReport(Message, tag="shards_report"):
    """Sent by a member right after ``welcome``: attempts it still runs or holds waiting to
    run (``running``), results it holds undelivered, and its resources, so the coordinator
    can place work at once."""

    running: Annotated[list[ShardRef], msgspec.Meta(max_length=MAX_LIST)]
    spooled: Annotated[list[ShardRef], msgspec.Meta(max_length=MAX_LIST)]
    resources: Resources


class ShardStarted(Message, tag="shard_started"):
    shard: ShardRef


class ShardOutput(Message, tag="shard_output"):
    """Both directions: a member's live output, and the coordinator's relay to watchers."""

    shard: ShardRef
    stream: Literal["stdout", "stderr"]
    data: OutputText


class FinishedShard(msgspec.Struct, frozen=True, array_like=True):
    """How one attempt ended: ``[shardRef, result]`` on the wire."""

    shard: ShardRef
    result: ShardResult


class ShardsFinished(Message, tag="shards_finished"):
    """Attempts that ended; the ``result.outputs`` of each follow as chunks, in this order."""

    results: Annotated[list[FinishedShard], msgspec.Meta(min_length=1, max_length=MAX_LIST)]


class FetchBlobs(Message, tag="fetch_blobs"):
    """A member asks for input files it lacks, by sha256; they come as chunks whose transfer
    id and path are the sha256."""

    sha256: Annotated[list[Sha256Hex], msgspec.Meta(min_length=1, max_length=MAX_LIST)]


# ---- coordinator -> member -------------------------------------------------------------------


class Assignment(msgspec.Struct, frozen=True, array_like=True):
    """One attempt to run: ``[shard, attempt, gpus, after]`` on the wire. With ``after`` the
    member starts it only once that attempt of its own has ended (it waits ahead, see
    ``core.scheduler``); if the member no longer holds ``after``, it starts at once."""

    shard: ShardIndex
    attempt: Attempt
    gpus: list[int]
    after: ShardRef | None = None


class AssignShards(Message, tag="assign_shards"):
    """Run these attempts of one task. ``command`` is the manifest's: the member expands
    ``{shard}``/``{shards}`` and the shard's ``matrix`` values per attempt
    (``core.manifest.expand_command``, ``core.matrix.shard_values``) and ``{python}`` for
    itself; ``files`` go in each attempt's working folder.

    ``submitter_tag`` stands for the task's submitter, the same for all its tasks while this
    coordinator runs, and says nothing of who it is (``Coordination.submitter_tag``): a
    member's guards weigh one submitter's shards together, so that spreading a load over many
    tasks cannot get another submitter's shard stopped in its place."""

    task_id: TaskId
    shards: int
    command: list[str]
    env: dict[str, str]
    shell: bool
    timeout: float | None
    resources: ShardResources
    outputs: list[str]
    files: list[FileEntry]
    items: Annotated[list[Assignment], msgspec.Meta(min_length=1, max_length=MAX_LIST)]
    matrix: list[MatrixAxis] = msgspec.field(default_factory=list)
    # The task's Python environment (its wheels are among ``files``); None: PoolNet's own.
    environment: EnvironmentSpec | None = None
    submitter_tag: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{0,32}$")] = ""

    def refs(self) -> list[ShardRef]:
        return [ShardRef(self.task_id, item.shard, item.attempt) for item in self.items]


class ShardCancel(Message, tag="shard_cancel"):
    shard: ShardRef


class ShardAck(Message, tag="shard_ack"):
    """These results are stored for good: the member may forget them."""

    shards: list[ShardRef]


# ---- coordinator -> submitter ----------------------------------------------------------------


class TaskAccepted(Message, tag="task_accepted"):
    """The task has an id; upload the ``missing`` files (paths from ``spec.files``; those the
    coordinator already holds by sha256 are skipped). It is queued once they all arrived."""

    request_id: RequestId
    task_id: str
    missing: list[str]


class TaskUpdate(Message, tag="task_update"):
    task: TaskSummary


class TaskList(Message, tag="task_list"):
    """A page of tasks; ``next`` is the cursor of the following page (None: the last)."""

    tasks: Annotated[list[TaskSummary], msgspec.Meta(max_length=MAX_TASK_PAGE)]
    next: str | None = None


class TasksChanged(Message, tag="tasks_changed"):
    """Pushed to subscribers once per batch: the tasks that changed since the last one
    (new ones included), and those forgotten. A batch of many tasks comes as several."""

    tasks: Annotated[list[TaskSummary], msgspec.Meta(max_length=MAX_TASK_PAGE)]
    removed: list[str] = msgspec.field(default_factory=list)


class ShardList(Message, tag="shard_list"):
    """A page of a task's shards; ``next`` is the index the following page starts at."""

    task_id: str
    shards: Annotated[list[ShardSummary], msgspec.Meta(max_length=MAX_SHARD_PAGE)]
    next: int | None = None


class TaskForgotten(Message, tag="task_forgotten"):
    task_id: str


class WatchReady(Message, tag="watch_ready"):
    """The stored output has been sent; what follows is live."""

    task_id: str


class ResultFiles(Message, tag="result_files"):
    """The answer to ``fetch_results``: every output file (path ``SHARD/...``), whose chunks
    follow with the task id as transfer id."""

    task_id: str
    files: list[FileEntry]



def task_summary(task: Task, reason: str = "", detail: bool = False) -> TaskSummary:
    """What lists and progress bars show of ``task``; ``reason`` says why it waits, if it does.
    ``detail`` (for its submitter and the owner) adds the devices its shards were placed on."""
    done, total = task.progress()
    devices = devices_used(task) if detail else None
    return TaskSummary(
        id=task.id,
        name=task.spec.name,
        state=task.state.value,
        total=total,
        done=done,
        succeeded=task.count(ShardState.SUCCEEDED),
        running=task.count(ShardState.RUNNING),
        waiting=task.count(ShardState.ASSIGNED),
        queued=task.count(ShardState.QUEUED),
        submitted_at=task.submitted_at,
        reason=reason,
        counts=state_counts(task),
        devices=None if devices is None else devices[:MAX_SUMMARY_DEVICES],
        device_count=0 if devices is None else len(devices),
        started_at=started_at(task),
        ended_at=ended_at(task),
    )


def shard_summary(task: Task, shard: Shard) -> ShardSummary:
    """One shard of ``task`` as people see it, with its sweep values if the task has any."""
    return ShardSummary(index=shard.index, state=shard.state.value, attempt=shard.attempt,
                        device_id=shard.device_id, exit_code=shard.exit_code, reason=shard.reason,
                        values=shard_values(task.spec.matrix, shard.index) if task.spec.matrix else None)


# How a member's runner says an attempt ended, as the task's shard state.
OUTCOME_STATES: dict[str, ShardState] = {
    "succeeded": ShardState.SUCCEEDED,
    "failed": ShardState.FAILED,
    "error": ShardState.FAILED,
    "memory": ShardState.FAILED,
    "timeout": ShardState.TIMED_OUT,
    "cancelled": ShardState.CANCELLED,
}
