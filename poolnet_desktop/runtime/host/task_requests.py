"""What people ask of the task service, and the updates they follow.

``TaskRequests`` answers ``cancel_task``, ``retry_task``, ``watch_task``,
``fetch_results``, ``GET /api/tasks`` and the seed protocol's ``task_submit``, and keeps the
watchers: ``TaskService`` calls ``changed(task)`` after every change to a task, and
``relay(...)`` with each line of a shard's live output. The records and every decision on
them stay with the coordination core (``core.coordination``); this module reads them and
asks the service (``TaskActions``: the part of ``TaskService`` it uses, so that the two
modules do not import each other) to carry out changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from poolnet_desktop.core.coordination import Coordination
from poolnet_desktop.core.manifest import TaskSpec
from poolnet_desktop.core.permissions import Action
from poolnet_desktop.core.protocol import (
    ErrorCode,
    ProtocolError,
    SeedTaskOutcome,
    TaskResult,
    TaskSubmit,
    encode,
)
from poolnet_desktop.core.task_protocol import (
    CancelTask,
    FetchResults,
    ResultFiles,
    RetryTask,
    ShardOutput,
    ShardRef,
    TaskSummary,
    TaskUpdate,
    WatchReady,
    WatchTask,
    task_summary,
)
from poolnet_desktop.core.tasks import ENDED, ShardState, Task
from poolnet_desktop.runtime.host.rest import json_response
from poolnet_desktop.runtime.host.session import CLOSE_TOO_SLOW, MAX_PENDING_OUTPUT, Session
from poolnet_desktop.runtime.host.task_store import TaskStore
from poolnet_desktop.runtime.net.task_transfer import Outgoing, send_files

UPDATE_INTERVAL = 0.25
SEED_OUTPUT_CAP = 64 * 1024


@dataclass(slots=True)
class _Watcher:
    """A session following a task (or one shard of it). Until its history is sent, live
    output and updates wait in ``backlog`` (None once it is sent) so that they arrive after
    the history, in order."""

    session: Session
    shard: int | None
    backlog: list[bytes] | None = None
    held: int = 0  # bytes in ``backlog``

    def post(self, message: bytes) -> None:
        """Send, or hold until the history is sent; a watcher whose history takes so long that
        more than ``MAX_PENDING_OUTPUT`` waits is closed as too slow, as ``Session.post`` does."""
        if self.backlog is None:
            self.session.post(message)
            return
        self.held += len(message)
        if self.held > MAX_PENDING_OUTPUT:
            self.backlog.clear()
            self.session.connection.fail(CLOSE_TOO_SLOW, "too slow to keep up with the pool")
        else:
            self.backlog.append(message)


class TaskActions(Protocol):
    """What the requests need of the task service (``runtime.host.task_service.TaskService``)."""

    core: Coordination
    results: Path

    def is_connected(self, session: Session) -> bool: ...
    def store_or_fail(self) -> TaskStore: ...
    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None: ...
    def admit(self, spec: TaskSpec, submitter: str) -> Task: ...
    def submitter_of(self, session: Session) -> str: ...
    def save_all(self, task: Task, files_ready: bool) -> None: ...
    def queue(self, task: Task) -> None: ...
    def cancel(self, task: Task, reason: str = ...) -> None: ...
    async def retry(self, task: Task) -> None: ...
    async def outputs_in_place(self, task_id: str) -> None: ...


class TaskRequests:
    """Made by ``TaskService``, which registers ``handlers()`` and calls ``stop()``."""

    def __init__(self, service: TaskActions) -> None:
        self.service = service
        self._watchers: dict[str, list[_Watcher]] = {}
        self._seed_waiters: dict[str, tuple[Session, str]] = {}
        self._dirty: set[str] = set()
        self._update_timer: asyncio.TimerHandle | None = None

    def handlers(self) -> dict[type, Callable[[Session, Any], Any]]:
        return {
            CancelTask: self._on_cancel,
            RetryTask: self._on_retry,
            WatchTask: self._on_watch,
            FetchResults: self._on_fetch_results,
            TaskSubmit: self._on_seed_submit,
        }

    def stop(self) -> None:
        if self._update_timer is not None:
            self._update_timer.cancel()

    def relay(self, message: ShardOutput) -> None:
        """Pass a shard's live output on to whoever watches its task (or that shard)."""
        ref = message.shard
        watchers = [w for w in self._watchers.get(ref.task_id, ()) if w.shard in (None, ref.shard)]
        if watchers:
            json = encode(message)
            for watcher in watchers:
                watcher.post(json)

    def task_for(self, session: Session, task_id: str, action: Action) -> Task:
        """The task ``task_id`` if this session may take ``action`` on it."""
        task = self.service.core.tasks.get(task_id)
        if task is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no task {task_id!r}")
        session.require(action, task.submitter)
        return task

    async def _on_cancel(self, session: Session, message: CancelTask) -> None:
        task = self.task_for(session, message.task_id, Action.CANCEL)
        self.service.cancel(task)
        await session.send(TaskUpdate(task=self.summary(task, detail=True)))

    async def _on_retry(self, session: Session, message: RetryTask) -> None:
        """Run the task's unsuccessful shards again (``Task.retry``), if its inputs are
        still here."""
        task = self.task_for(session, message.task_id, Action.RETRY)
        await self.service.retry(task)
        await session.send(TaskUpdate(task=self.summary(task, detail=True)))

    async def _on_watch(self, session: Session, message: WatchTask) -> None:
        """The task, its stored output, then its live output. The watcher is registered first
        and holds live output and task updates until the history is sent, and the history is
        cut at that moment: no chunk or update (a task that ends meanwhile) is lost between
        the two, and no chunk is sent twice."""
        task = self.task_for(session, message.task_id, Action.WATCH)
        watcher = _Watcher(session, message.shard, backlog=[])  # listed before any await
        self._watchers.setdefault(task.id, []).append(watcher)
        try:
            await session.send(TaskUpdate(task=self.summary(task, detail=True)))
            if message.history:
                store = self.service.store_or_fail()
                appended = store.appended_logs(task.id, message.shard)
                await store.committed()
                for record in await asyncio.to_thread(store.logs, task.id, message.shard, appended):
                    await session.send(ShardOutput(
                        shard=ShardRef(task.id, record.shard, record.attempt),
                        stream=record.stream,  # type: ignore[arg-type]
                        data=record.data,
                    ))
        except BaseException:  # unlisted, or its backlog would grow for ever
            self._watchers[task.id] = [w for w in self._watchers.get(task.id, ()) if w is not watcher]
            raise
        backlog, watcher.backlog = watcher.backlog or [], None
        if backlog:
            session.post_many(backlog)
        await session.send(WatchReady(task_id=task.id))

    async def _on_fetch_results(self, session: Session, message: FetchResults) -> None:
        task = self.task_for(session, message.task_id, Action.FETCH)
        await self.service.outputs_in_place(task.id)
        entries, outgoing = [], []
        for shard in task.shards:
            result = self.service.core.recorded.get((task.id, shard.index))
            if result is None or shard.state is not ShardState.SUCCEEDED:
                continue
            for entry in result.outputs:
                wire = f"{shard.index}/{entry.path}"
                entries.append(type(entry)(path=wire, size=entry.size, sha256=entry.sha256))
                local = self.service.results / task.id / str(shard.index) / entry.path
                outgoing.append(Outgoing(wire, local, entry.size, entry.sha256))
        await session.send(ResultFiles(task_id=task.id, files=entries))
        await send_files(session.connection.send, task.id, outgoing)

    def summary(self, task: Task, detail: bool = False) -> TaskSummary:
        return task_summary(task, self.service.core.waiting_reason(task.id), detail)

    def changed(self, task: Task) -> None:
        """Tell watchers (at most every ``UPDATE_INTERVAL``, at once when the task ends) and
        seed submitters at the end."""
        self._dirty.add(task.id)
        loop = asyncio.get_running_loop()
        if task.state in ENDED:  # the end is news at once: a waiting submitter is done
            if self._update_timer is not None:
                self._update_timer.cancel()
            self._update_timer = loop.call_later(0, self._flush_updates)
        elif self._update_timer is None:
            self._update_timer = loop.call_later(UPDATE_INTERVAL, self._flush_updates)

    def _flush_updates(self) -> None:
        self._update_timer = None
        dirty, self._dirty = self._dirty, set()
        for task_id in dirty:
            task = self.service.core.tasks.get(task_id)
            if task is None:  # forgotten since it changed
                self._watchers.pop(task_id, None)
                continue
            watchers = [w for w in self._watchers.get(task_id, ()) if self.service.is_connected(w.session)]
            if watchers:
                self._watchers[task_id] = watchers
                update = encode(TaskUpdate(task=self.summary(task)))
                for watcher in watchers:
                    watcher.post(update)
            else:
                self._watchers.pop(task_id, None)
            if task_id in self._seed_waiters and task.state in ENDED:
                self.service.spawn(self._answer_seed(task))

    def session_left(self, session: Session) -> None:
        """A session ended: it follows nothing any more (a task that does not change again,
        an ended one, would otherwise keep its watchers, and their sessions, for good)."""
        for task_id, watchers in list(self._watchers.items()):
            kept = [w for w in watchers if w.session is not session]
            if kept:
                self._watchers[task_id] = kept
            else:
                del self._watchers[task_id]

    def forget(self, task_id: str) -> None:
        """A task left the records: nobody follows it any more."""
        self._watchers.pop(task_id, None)
        self._seed_waiters.pop(task_id, None)
        self._dirty.discard(task_id)

    def rest_tasks(self) -> Any:
        return json_response(200, {"tasks": [self.summary(t) for t in self.service.core.tasks.values()]})

    # ---- the seed's task_submit --------------------------------------------------------------

    async def _on_seed_submit(self, session: Session, message: TaskSubmit) -> None:
        """Run the seed's ``data.command`` for real as a one-shard task and answer
        ``task_result`` with its exit code and output once it ends; seed clients only when
        the host allows it (``--legacy-tasks``: the coordinator refuses it otherwise)."""
        command = message.task.data.command
        try:
            if not command:
                raise ValueError("task.data.command is empty")
            shell = isinstance(command, str)
            spec = TaskSpec(
                name="seed-task",
                command=(command,) if isinstance(command, str) else tuple(command),
                shell=shell,
                retries=0,
            )
            task = self.service.admit(spec, submitter=self.service.submitter_of(session))
        except (ValueError, ProtocolError) as exc:
            error = exc.message if isinstance(exc, ProtocolError) else str(exc)
            outcome = SeedTaskOutcome(success=False, error=error)
            await session.send(TaskResult(task_id=message.task.id, result=outcome))
            return
        self._seed_waiters[task.id] = (session, message.task.id)
        self.service.save_all(task, files_ready=True)
        self.service.queue(task)

    async def _answer_seed(self, task: Task) -> None:
        session, seed_id = self._seed_waiters.pop(task.id)
        store = self.service.store_or_fail()
        await store.committed()
        streams = {"stdout": "", "stderr": ""}
        for record in await asyncio.to_thread(store.logs, task.id):
            streams[record.stream] += record.data
        shard = task.shards[0]
        body = {
            "exitCode": shard.exit_code,
            "stdout": streams["stdout"][:SEED_OUTPUT_CAP],
            "stderr": streams["stderr"][:SEED_OUTPUT_CAP],
            "taskId": task.id,
        }
        success = shard.state is ShardState.SUCCEEDED
        outcome = SeedTaskOutcome(
            success=success, result=body, error=None if success else shard.reason or shard.state
        )
        await session.send(TaskResult(task_id=seed_id, result=outcome))
