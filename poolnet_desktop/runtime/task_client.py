"""Talk to a pool about tasks: submit (with files), follow, cancel, list, read logs, fetch results.

One ``TaskClient`` wraps one authenticated ``PoolLink`` (``runtime.link.open_link``); the
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from websockets.exceptions import ConnectionClosed

from poolnet_desktop.core.paths import UnsafePathError
from poolnet_desktop.core.protocol import ErrorCode, ProtocolError
from poolnet_desktop.core.task_protocol import (
    CancelTask,
    FetchResults,
    ListTasks,
    ResultFiles,
    RetryTask,
    ShardOutput,
    SubmitTask,
    TaskAccepted,
    TaskList,
    TaskSummary,
    TaskUpdate,
    WatchReady,
    WatchTask,
    is_task_id,
)
from poolnet_desktop.core.tasks import ENDED
from poolnet_desktop.core.transfer import decode_chunk
from poolnet_desktop.runtime.backoff import Backoff
from poolnet_desktop.runtime.link import PoolLink
from poolnet_desktop.runtime.task_files import LoadedTask
from poolnet_desktop.runtime.task_transfer import FileReceiver, Outgoing, expected_files, send_files

MAX_RESULT_FILE = 64 * 1024**3
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
                reason = _describe(exc)
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
                reason = _describe(exc)
            if time.monotonic() > give_up:
                raise ConnectionError(f"no answer for {RECONNECT_FOR:.0f} s ({reason})")

    async def submit(self, task: LoadedTask) -> str:
        """Submit a loaded task and upload the files the pool lacks; returns the task id.
        Raises ``ProtocolError`` (``invalid_task``, ``unfit``, ...) when refused."""
        request = uuid.uuid4().hex
        await self.link.send(SubmitTask(request_id=request, spec=task.spec))
        accepted: TaskAccepted = await self.link.expect(TaskAccepted)
        _check_task_id(accepted.task_id)
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
            if _ended(update.task):
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
            if live and summary is not None and (not follow or _ended(summary)):
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

    async def list(self, detail: bool = False) -> list[TaskSummary]:
        """Every task of the pool; ``detail`` adds their shards (where each one runs)."""
        await self.link.send(ListTasks(detail=detail))
        listing: TaskList = await self.link.expect(TaskList)
        return listing.tasks

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


def _check_task_id(task_id: str) -> None:
    if not is_task_id(task_id):
        raise ProtocolError(
            ErrorCode.FORBIDDEN, f"{task_id[:120]!r} is not a task id (letters, digits, - and _); refused"
        )


def _ended(summary: TaskSummary) -> bool:
    """Ended and nothing of it still running: a cancelled task's shards report later."""
    return summary.state in ENDED and summary.running == summary.waiting == 0


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
