"""Talk to a pool about tasks: submit (with files), follow, cancel, list, read logs, fetch
results, forget.

One ``TaskClient`` wraps one authenticated ``PoolLink`` (``runtime.client.link.open_link``); the
command line and the window use it alike. Each method is one short conversation; messages the
pool pushes meanwhile (``pool_state`` batches to observers) are skipped.

A client given a way to reopen its link rides out a host restart in ``resuming``: following a
task (``wait``, ``fetch_results``, ``logs``) is safe to start again on a new link, so a lost link
is reopened with backoff and the conversation starts over (a submission is not: it would
submit twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from websockets.exceptions import ConnectionClosed

from poolnet_desktop.core.paths import UnsafePathError
from poolnet_desktop.core.protocol import ErrorCode, PoolState, ProtocolError
from poolnet_desktop.core.task_protocol import (
    CancelTask,
    FetchResults,
    ForgetTask,
    ListShards,
    ListTasks,
    ResultFiles,
    RetryTask,
    ShardList,
    ShardOutput,
    ShardSummary,
    SubmitTask,
    SubscribeTasks,
    TaskAccepted,
    TaskForgotten,
    TaskList,
    TasksChanged,
    TaskSummary,
    TaskUpdate,
    WatchReady,
    WatchTask,
    is_task_id,
)
from poolnet_desktop.core.tasks import ENDED
from poolnet_desktop.core.transfer import decode_chunk
from poolnet_desktop.runtime.client.link import PoolLink
from poolnet_desktop.runtime.client.task_files import LoadedTask
from poolnet_desktop.runtime.net.backoff import Backoff
from poolnet_desktop.runtime.net.task_transfer import FileReceiver, Outgoing, expected_files, send_files
from poolnet_desktop.runtime.security.auth import AuthRefused

MAX_RESULT_FILE = 64 * 1024**3
# Named here: inside ``TaskClient`` the name ``list`` is its method.
Summaries = list[TaskSummary]
Shards = list[ShardSummary]
# What ends a link without the pool refusing anything: its host restarted, the network dropped.
LINK_LOST = (ConnectionClosed, OSError, TimeoutError)
# How long ``resuming`` keeps trying to reach a pool it lost before giving up.
RECONNECT_FOR = 600.0
T = TypeVar("T")


class TaskClient:
    """Task conversations over one open link; the caller closes the link (``self.link``, which
    ``resuming`` may replace). ``reopen`` opens a new link to the same pool."""

    def __init__(self, link: PoolLink, reopen: Callable[[], Awaitable[PoolLink]] | None = None) -> None:
        self.link = link
        self._reopen = reopen

    async def resuming(
        self,
        step: Callable[[TaskClient], Awaitable[T]],
        on_lost: Callable[[str], None] = lambda _reason: None,
        on_back: Callable[[], None] = lambda: None,
    ) -> T:
        """Run ``step``; when the link is lost, reopen one (backoff between tries) and run
        ``step`` again from its start. Gives up with ``ConnectionError`` after ``RECONNECT_FOR``
        seconds without the pool; refusals (``ProtocolError``, ``AuthRefused``) end it at once."""
        while True:
            try:
                return await step(self)
            except LINK_LOST as exc:
                if self._reopen is None:
                    raise
                reason = describe(exc)
            on_lost(reason)
            with contextlib.suppress(*LINK_LOST):
                await self.link.close()
            self.link = await self._reopened(reason)
            on_back()

    async def _reopened(self, reason: str) -> PoolLink:
        assert self._reopen is not None
        backoff = Backoff()
        give_up = time.monotonic() + RECONNECT_FOR
        while True:
            await asyncio.sleep(backoff.next_delay())
            try:
                return await self._reopen()
            except LINK_LOST as exc:
                reason = describe(exc)
            if time.monotonic() > give_up:
                raise ConnectionError(f"no answer for {RECONNECT_FOR:.0f} s ({reason})")

    async def submit(
        self, task: LoadedTask, on_accepted: Callable[[str], Awaitable[None]] | None = None
    ) -> str:
        """Submit a loaded task and upload the files the pool lacks; returns the task id.
        ``on_accepted`` is awaited with the id before the upload, while no shard can start
        (to begin watching a task without missing any of it).
        Raises ``ProtocolError`` (``invalid_task``, ``unfit``, ...) when refused."""
        request = uuid.uuid4().hex
        await self.link.send(SubmitTask(request_id=request, spec=task.spec))
        accepted: TaskAccepted = await self.link.expect(TaskAccepted)
        _check_task_id(accepted.task_id)
        if on_accepted is not None:
            await on_accepted(accepted.task_id)
        by_path = {entry.path: entry for entry in task.spec.files}
        files = [
            Outgoing(path, task.local_path(by_path[path]), by_path[path].size, by_path[path].sha256)
            for path in accepted.missing
        ]
        await send_files(self.link.send_bytes, accepted.task_id, files)
        return accepted.task_id

    async def wait(
        self, task_id: str, on_update: Callable[[TaskSummary], None] | None = None
    ) -> TaskSummary:
        """Follow a task until it ends; ``on_update`` sees every progress update."""
        await self.link.send(WatchTask(task_id=task_id, history=False))
        while True:
            update: TaskUpdate = await self.link.expect(TaskUpdate)
            if on_update is not None:
                on_update(update.task)
            if has_ended(update.task):
                return update.task

    async def logs(
        self,
        task_id: str,
        on_output: Callable[[ShardOutput], None],
        shard: int | None = None,
        follow: bool = False,
    ) -> TaskSummary:
        """Pass the task's stored output to ``on_output``; with ``follow``, go on with live
        output until the task ends. Returns the task's last known summary."""
        await self.link.send(WatchTask(task_id=task_id, shard=shard, history=True))
        summary: TaskSummary | None = None
        live = False
        while True:
            message = await self.link.expect(TaskUpdate, ShardOutput, WatchReady)
            if isinstance(message, TaskUpdate):
                summary = message.task
            elif isinstance(message, ShardOutput):
                on_output(message)
            else:
                live = True
            if live and summary is not None and (not follow or has_ended(summary)):
                return summary

    async def cancel(self, task_id: str) -> TaskSummary:
        await self.link.send(CancelTask(task_id=task_id))
        update: TaskUpdate = await self.link.expect(TaskUpdate)
        return update.task

    async def retry(self, task_id: str) -> TaskSummary:
        """Run the task's failed, timed-out, cancelled and lost shards again."""
        await self.link.send(RetryTask(task_id=task_id))
        update: TaskUpdate = await self.link.expect(TaskUpdate)
        return update.task

    async def member_platforms(self, timeout: float = 5.0) -> list[str]:
        """The Python platforms (uv targets) of the pool's online members that take tasks, from
        the first ``pool_state`` an observer link gets (a full one); [] if none comes in
        ``timeout`` seconds. Call it first on a new link: later batches hold changes only."""
        try:
            async with asyncio.timeout(timeout):
                state: PoolState = await self.link.expect(PoolState)
        except TimeoutError:
            return []
        return sorted({d.resources.python_target for d in state.devices
                       if d.is_online and d.accept_tasks and d.resources.python_target})

    async def list(self) -> list[TaskSummary]:
        """Every task of the pool, newest first, read a page at a time."""
        await self.link.send(ListTasks())
        return await self._rest_of(await self.link.expect(TaskList))

    async def subscribe(self) -> Summaries:
        """Follow the pool's tasks: returns them all (newest first) as of now; every change
        after that comes as ``tasks_changed`` (``changes()``)."""
        await self.link.send(SubscribeTasks())
        return await self._rest_of(await self.link.expect(TaskList))

    async def _rest_of(self, page: TaskList) -> Summaries:
        """The tasks of ``page`` and of every page after it, newest first. Changes pushed
        meanwhile are applied in the order they came: each message is newer than the last."""
        tasks = {t.id: t for t in page.tasks}
        cursor = page.next
        while cursor is not None:
            await self.link.send(ListTasks(cursor=cursor))
            message = await self.link.expect(TaskList, TasksChanged)
            while isinstance(message, TasksChanged):
                apply_changes(tasks, message)
                message = await self.link.expect(TaskList, TasksChanged)
            tasks.update((t.id, t) for t in message.tasks)
            cursor = message.next
        return sorted(tasks.values(), key=lambda t: (t.submitted_at, t.id), reverse=True)

    async def changes(self) -> AsyncIterator[TasksChanged]:
        """The ``tasks_changed`` batches after ``subscribe()``, for as long as the link lasts."""
        while True:
            yield await self.link.expect(TasksChanged)

    async def shards(self, task_id: str) -> Shards:
        """One task's shards (its submitter and the owner only), a page at a time."""
        shards: Shards = []
        start: int | None = 0
        while start is not None:
            await self.link.send(ListShards(task_id=task_id, start=start))
            page: ShardList = await self.link.expect(ShardList)
            shards.extend(page.shards)
            start = page.next
        return shards

    async def forget(self, task_id: str) -> None:
        """Delete an ended task from the pool: its records, logs and results."""
        await self.link.send(ForgetTask(task_id=task_id))
        await self.link.expect(TaskForgotten)

    async def fetch_results(self, task_id: str, results_root: Path) -> Path:
        """Download every succeeded shard's outputs to ``results_root/TASK/SHARD/...``.

        The pool's answer is untrusted: a task id that is not one, an answer for another task
        or a file path that would leave that folder is refused (``ProtocolError``) before
        anything is written."""
        _check_task_id(task_id)
        await self.link.send(FetchResults(task_id=task_id))
        announced: ResultFiles = await self.link.expect(ResultFiles)
        if announced.task_id != task_id:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"the pool sent results of {announced.task_id!r}, not {task_id!r}")
        try:
            expected = expected_files((f.path, f.size, f.sha256) for f in announced.files)
        except UnsafePathError as exc:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, f"the pool named a result file outside the results folder: {exc}"
            ) from None
        target = results_root / task_id
        await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
        receiver = FileReceiver(
            task_id,
            target,
            expected,
            max_file_size=MAX_RESULT_FILE,
            max_transfer_size=sum(f.size for f in announced.files),
        )
        while not receiver.complete:
            frame = await self.link.expect(bytes)
            header, data = decode_chunk(frame)
            try:
                await receiver.accept(header, data)
            except ProtocolError:
                await receiver.discard()
                raise
        return target


def apply_changes(tasks: dict[str, TaskSummary], change: TasksChanged) -> None:
    """Bring a follower's tasks by id up to date with one ``tasks_changed``."""
    for task_id in change.removed:
        tasks.pop(task_id, None)
    tasks.update((t.id, t) for t in change.tasks)


def _check_task_id(task_id: str) -> None:
    if not is_task_id(task_id):
        raise ProtocolError(
            ErrorCode.FORBIDDEN, f"{task_id[:120]!r} is not a task id (letters, digits, - and _); refused"
        )


def has_ended(summary: TaskSummary) -> bool:
    """Ended and nothing of it still running: a cancelled task's shards report later."""
    return summary.state in ENDED and summary.running == summary.waiting == 0


class TaskListing:
    """The pool's task list as the observer link reads it after ``subscribe_tasks``: its pages
    first (changes pushed meanwhile applied in order), then each change as it comes. ``known``
    is what the window shows from before (a reconnect): those not listed any more are removed
    once the last page is in."""

    def __init__(self, known: set[str]) -> None:
        self._known = known
        self._tasks: dict[str, TaskSummary] | None = {}

    def take_page(self, page: TaskList) -> tuple[list[TaskSummary], list[str]] | None:
        """The whole list once its last page is in (changed, removed), else None."""
        if self._tasks is None:
            return None  # not ours: pages are only read right after subscribing
        self._tasks.update((t.id, t) for t in page.tasks)
        if page.next is not None:
            return None
        tasks, self._tasks = self._tasks, None
        return list(tasks.values()), sorted(self._known - set(tasks))

    def take_change(self, change: TasksChanged) -> tuple[list[TaskSummary], list[str]] | None:
        """A change to pass on, or None while the pages are still coming (folded into them)."""
        if self._tasks is not None:
            apply_changes(self._tasks, change)
            return None
        return change.tasks, change.removed


def describe(exc: BaseException) -> str:
    """One line for a link failure (the pool's own words for a refusal)."""
    if isinstance(exc, (AuthRefused, ProtocolError)):
        return exc.message
    return str(exc) or type(exc).__name__
