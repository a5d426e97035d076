"""Keep a member's shards within the memory its owner lends, and off the owner's last memory
(``core.memory_share`` decides; this reads the machine, measures the shards and stops one)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Mapping
from typing import Generic, TypeVar

import psutil

from poolnet_desktop.core.memory_share import memory_floor, shard_to_stop, worth_measuring
from poolnet_desktop.core.shard_choice import each_its_own
from poolnet_desktop.runtime.member.runner import ShardRunner
from poolnet_desktop.runtime.member.shard_watch import watch_while_running

log = logging.getLogger(__name__)

# How often the machine's memory is read while shards run: one read of /proc/meminfo, a few
# tens of microseconds. The shards themselves are measured only when that read says they may
# be over (a walk of each one's processes).
CHECK_INTERVAL = 1.0

K = TypeVar("K", bound=Hashable)


class MemoryGuard(Generic[K]):
    """``watch`` checks every ``interval`` until no shard runs. ``running``: the shards now;
    ``percent``: the share of memory lent now (the owner may change it); ``floor``: bytes to
    keep available (default: ``memory_floor`` of this machine); ``submitter_of``: a shard's submitter."""

    def __init__(
        self, running: Callable[[], Mapping[K, ShardRunner]], percent: Callable[[], float],
        floor: int | None = None, interval: float = CHECK_INTERVAL,
        submitter_of: Callable[[K], Hashable] = each_its_own,
    ) -> None:
        self._running = running
        self._submitter_of = submitter_of
        self._percent = percent
        self._total = psutil.virtual_memory().total
        self._floor = memory_floor(self._total) if floor is None else floor
        self._interval = interval

    async def watch(self) -> None:
        """Check until no shard runs (or cancelled), paced as ``watch_while_running`` says."""
        await watch_while_running(self._running, self._check, self._interval)

    async def _check(self, runners: dict[K, ShardRunner]) -> None:
        available, percent = psutil.virtual_memory().available, self._percent()
        if worth_measuring(self._total, available, percent, self._floor):
            await self._stop_one(runners, available, percent)

    async def _stop_one(self, runners: dict[K, ShardRunner], available: int, percent: float) -> None:
        used = await asyncio.to_thread(lambda: {key: runner.memory_in_use() for key, runner in runners.items()})
        decision = shard_to_stop(self._total, available, percent, self._floor, used, self._submitter_of)
        if decision is not None:
            key, why = decision
            log.warning("%s", why)
            runners[key].stop_for_memory(why)
