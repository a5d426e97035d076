"""Forgetting ended tasks: on request (``forget_task``) and by the retention policy.

The decision of what to keep is ``core.retention.tasks_to_prune``; this module carries it out
at start and then every ``interval`` seconds: the task leaves the records in memory, its rows
and logs leave the store, its result files are deleted, and so are its input blobs no remaining
task names. Subscribers hear it as ``removed`` in their next ``tasks_changed``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from poolnet_desktop.core.retention import RetentionPolicy, tasks_to_prune
from poolnet_desktop.core.task_summary import ended_at

if TYPE_CHECKING:
    from poolnet_desktop.runtime.host.task_service import TaskService

log = logging.getLogger(__name__)

PRUNE_INTERVAL = 3600.0


class TaskRetention:
    """Made by ``TaskService``; ``start()`` once its store is open, ``stop()`` before it closes."""

    def __init__(self, service: TaskService, policy: RetentionPolicy,
                 interval: float = PRUNE_INTERVAL) -> None:
        self.service = service
        self.policy = policy
        self.interval = interval
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.service.spawn(self.prune())

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def prune(self) -> list[str]:
        """Forget what the policy no longer keeps, then come back in ``interval`` seconds."""
        self.stop()  # a pass asked for early replaces the one due
        ended = []
        for task in self.service.tasks.values():
            end = ended_at(task)
            if end is not None:
                ended.append((task.id, end))
        doomed = tasks_to_prune(ended, self.service.clock(), self.policy)
        if doomed:
            log.info("forgetting %d ended tasks past the retention policy", len(doomed))
            await self.forget(doomed)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.interval, lambda: self.service.spawn(self.prune()))
        return doomed

    async def forget(self, task_ids: Iterable[str]) -> None:
        """Forget ended tasks (the caller checked they ended): the task service drops each
        (records, store rows, logs, result folder), then the input files no other task names
        are deleted."""
        service = self.service
        inputs: set[str] = set()
        for task_id in task_ids:
            task = service.tasks.get(task_id)
            if task is not None:
                await service.forget(task_id)
                inputs |= {entry.sha256 for entry in task.spec.files}
        kept = {entry.sha256 for task in service.tasks.values() for entry in task.spec.files}
        await asyncio.to_thread(_delete_blobs, service.blobs, inputs - kept)


def _delete_blobs(blobs: Path, unused: set[str]) -> None:
    for sha256 in unused:
        (blobs / sha256).unlink(missing_ok=True)
