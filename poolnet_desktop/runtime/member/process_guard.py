"""Keep a member's shards from taking the machine's process ids: the kernel bounds each
sandbox, not the shards together, nor those of a member run as root, one without prlimit, or
one running tasks unsandboxed (``core.process_share`` decides; this reads the machine, counts
the shards' processes and threads, and stops one)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Generic, TypeVar

from poolnet_desktop.core.process_share import crowded, shard_to_stop, shards_share
from poolnet_desktop.core.shard_choice import each_its_own
from poolnet_desktop.runtime.member.process_table import ProcessTable
from poolnet_desktop.runtime.member.runner import ShardRunner
from poolnet_desktop.runtime.member.shard_watch import watch_while_running

log = logging.getLogger(__name__)

# How often the machine's count of tasks is read while shards run: one read of /proc/loadavg.
CHECK_INTERVAL = 1.0

K = TypeVar("K", bound=Hashable)


def machine_tasks(loadavg: Path = Path("/proc/loadavg")) -> int:
    """The processes and threads on this machine now (``/proc/loadavg``'s "running/total");
    0 where that cannot be read."""
    try:
        return int(loadavg.read_text().split()[3].partition("/")[2])
    except (OSError, IndexError, ValueError):
        return 0


class ProcessGuard(Generic[K]):
    """``watch`` checks every ``interval`` until no shard runs. ``running``: the shards now;
    ``room``: the processes and threads this machine has room for; ``limit``: the most of
    them one shard may hold (``sandbox.process_limit``); ``submitter_of``: a shard's submitter."""

    def __init__(self, running: Callable[[], Mapping[K, ShardRunner]], room: int, limit: int,
                 interval: float = CHECK_INTERVAL, submitter_of: Callable[[K], Hashable] = each_its_own) -> None:
        self._running = running
        self._room = room
        self._limit = limit
        self._interval = interval
        self._submitter_of = submitter_of

    async def watch(self) -> None:
        """Check until no shard runs (or cancelled), paced as ``watch_while_running`` says."""
        await watch_while_running(self._running, self._check, self._interval)

    @staticmethod
    def _count(runners: dict[K, ShardRunner]) -> dict[K, int]:
        """Each shard's processes and threads, from one read of /proc for them all."""
        table = ProcessTable.read()
        return {key: runner.threads_in_use(table) for key, runner in runners.items()}

    async def _check(self, runners: dict[K, ShardRunner]) -> None:
        if not crowded(machine_tasks(), self._room):
            return
        counts = await asyncio.to_thread(self._count, runners)
        decision = shard_to_stop(counts, self._limit, shards_share(self._room), self._submitter_of)
        if decision is not None:
            key, why = decision
            log.warning("%s", why)
            runners[key].stop_for_processes(why)
