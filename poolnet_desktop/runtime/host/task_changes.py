"""Task changes pushed to whoever follows them, and the paged reads of tasks and shards.

Observers (the window's link, ``poolnet tasks --follow``) send ``subscribe_tasks`` once and
then receive ``tasks_changed``: one summary per task that changed since the last batch,
coalesced and sent on the coordinator's batch (``Coordinator.batch_listeners``), beside the
devices' ``pool_state``. Nothing is polled and nothing grows with the shards: a summary is a
few hundred bytes whatever the task's size (``core.task_summary``); lists and shard detail
are pages (``list_tasks``, ``list_shards``), and a task's shards only for its submitter and
the owner.

``TaskService`` calls ``changed(task_id)`` where a task changes (through
``TaskRequests.changed``) and ``removed(task_id)`` where one is forgotten.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from poolnet_desktop.core.permissions import Action, Caller, may
from poolnet_desktop.core.protocol import ErrorCode, ProtocolError, encode
from poolnet_desktop.core.task_protocol import (
    MAX_TASK_PAGE,
    ForgetTask,
    ListShards,
    ListTasks,
    ShardList,
    SubscribeTasks,
    TaskForgotten,
    TaskList,
    TasksChanged,
    TaskSummary,
    shard_summary,
)
from poolnet_desktop.core.task_summary import shard_page, task_page
from poolnet_desktop.core.tasks import ENDED, Task
from poolnet_desktop.runtime.host.session import Session

if TYPE_CHECKING:
    from poolnet_desktop.runtime.host.task_service import TaskService


class TaskChanges:
    """Made by ``TaskService``: ``start()`` joins the coordinator's batch, ``stop()`` leaves."""

    def __init__(self, service: TaskService) -> None:
        self.service = service
        self._subscribers: set[Session] = set()
        self._dirty: set[str] = set()
        self._removed: set[str] = set()

    def handlers(self) -> dict[type, Callable[[Session, Any], Any]]:
        return {
            ListTasks: self._on_list,
            SubscribeTasks: self._on_subscribe,
            ListShards: self._on_list_shards,
            ForgetTask: self._on_forget,
        }

    def start(self) -> None:
        self.service.coordinator.batch_listeners.append(self.flush)

    def stop(self) -> None:
        listeners = self.service.coordinator.batch_listeners
        if self.flush in listeners:
            listeners.remove(self.flush)

    # ---- what the task service tells -----------------------------------------------------

    def changed(self, task_id: str) -> None:
        self._dirty.add(task_id)

    def removed(self, task_id: str) -> None:
        self._dirty.discard(task_id)
        self._removed.add(task_id)

    def flush(self) -> None:
        """Send each subscriber the summaries of the tasks changed since the last batch (the
        devices used only on tasks it may see in detail), in frames of ``MAX_TASK_PAGE``."""
        dirty, self._dirty = self._dirty, set()
        removed, self._removed = sorted(self._removed), set()
        tasks = [t for t in map(self.service.tasks.get, sorted(dirty)) if t is not None]
        if not (tasks or removed):
            return
        connected = self.service.coordinator.is_connected
        self._subscribers = {s for s in self._subscribers if connected(s)}
        plain: dict[str, TaskSummary] = {}
        detailed: dict[str, TaskSummary] = {}
        for session in self._subscribers:
            summaries = [self._summary(session.caller, t, plain, detailed) for t in tasks]
            frames = [
                encode(TasksChanged(tasks=summaries[i:i + MAX_TASK_PAGE], removed=removed if i == 0 else []))
                for i in range(0, max(len(summaries), 1), MAX_TASK_PAGE)
            ]
            session.post_many(frames)
            self.service.coordinator.messages_out += len(frames)

    def _summary(self, caller: Caller, task: Task, plain: dict[str, TaskSummary],
                 detailed: dict[str, TaskSummary]) -> TaskSummary:
        """The task's summary as ``caller`` may see it, made once per batch either way."""
        detail = may(caller, Action.SEE_DETAIL, task.submitter) is None
        made = detailed if detail else plain
        summary = made.get(task.id)
        if summary is None:
            summary = made[task.id] = self.service.requests.summary(task, detail)
        return summary

    # ---- requests ------------------------------------------------------------------------

    def _page(self, session: Session, cursor: str | None, limit: int) -> TaskList:
        try:
            page, following = task_page(list(self.service.tasks.values()), cursor, limit)
        except ValueError as exc:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, str(exc)) from None
        caller = session.caller
        summaries = [
            self.service.requests.summary(t, may(caller, Action.SEE_DETAIL, t.submitter) is None)
            for t in page
        ]
        return TaskList(tasks=summaries, next=following)

    async def _on_list(self, session: Session, message: ListTasks) -> None:
        """A page of tasks, newest first; others' tasks without the devices they used."""
        await session.send(self._page(session, message.cursor, message.limit))

    async def _on_subscribe(self, session: Session, message: SubscribeTasks) -> None:
        """The first page now, then every change. Subscribed before the page is made, so a
        change made meanwhile is in a later batch, never lost between the two."""
        self._subscribers.add(session)
        await session.send(self._page(session, None, message.limit))

    async def _on_list_shards(self, session: Session, message: ListShards) -> None:
        task = self.service.requests.task_for(session, message.task_id, Action.SEE_DETAIL)
        shards, following = shard_page(task, message.start, message.limit)
        await session.send(ShardList(task_id=task.id, shards=[shard_summary(task, s) for s in shards],
                                     next=following))

    async def _on_forget(self, session: Session, message: ForgetTask) -> None:
        task = self.service.requests.task_for(session, message.task_id, Action.FORGET_TASK)
        if task.state not in ENDED:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"task {task.id} has not ended: cancel it first")
        await self.service.retention.forget([task.id])
        await session.send(TaskForgotten(task_id=task.id))
