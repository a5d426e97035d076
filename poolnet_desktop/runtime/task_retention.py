"""Forgetting ended tasks: on request (``forget_task``) and by the retention policy.

The decision of what to keep is ``core.retention.tasks_to_prune``; this module carries it out
at start and then every ``interval`` seconds: the task leaves the records in memory, its rows
and logs leave the store, its result files are deleted, and so are its input blobs no remaining
task names. Subscribers hear it as ``removed`` in their next ``tasks_changed``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from poolnet_desktop.core.retention import RetentionPolicy, tasks_to_prune
from poolnet_desktop.core.task_summary import ended_at

if TYPE_CHECKING:
    from poolnet_desktop.runtime.task_service import TaskService

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
        """Forget ended tasks (the caller checked they ended): records, rows, logs, files."""
        service = self.service
        gone, inputs = [], set()
        for task_id in task_ids:
            task = service.tasks.pop(task_id, None)
            if task is None:
                continue
            gone.append(task_id)
            inputs |= {entry.sha256 for entry in task.spec.files}
            service.scheduler.remove_task(task_id)
            for index in range(len(task.shards)):
                service.recorded.pop((task_id, index), None)
            service.changes.removed(task_id)
        if not gone:
            return
        service.store_or_fail().forget(gone)
        kept = {entry.sha256 for task in service.tasks.values() for entry in task.spec.files}
        await asyncio.to_thread(_delete_files, service.results, gone, service.blobs, inputs - kept)


def _delete_files(results: Path, task_ids: list[str], blobs: Path, unused: set[str]) -> None:
    """The tasks' result folders, and their input blobs that no other task names."""
    for task_id in task_ids:
        shutil.rmtree(results / task_id, ignore_errors=True)
    for sha256 in unused:
        (blobs / sha256).unlink(missing_ok=True)
