"""A check a member repeats while shards run (its memory guard, its process guard)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Protocol, TypeVar

from poolnet_desktop.runtime.member.runner import MEASURING_SHARE_INVERSE, ShardRunner

K = TypeVar("K", bound=Hashable)


class ShardGuard(Protocol):
    """A guard whose ``watch`` runs while shards run, and ends once none does."""

    async def watch(self) -> None: ...


async def watch_while_running(
    running: Callable[[], Mapping[K, ShardRunner]], check: Callable[[dict[K, ShardRunner]], Awaitable[None]],
    interval: float,
) -> None:
    """``check`` the running shards every ``interval`` until none runs (or cancelled). A
    check that measured them (a walk of each one's processes) is followed by a wait at least
    ``MEASURING_SHARE_INVERSE`` times as long as it took: a shard of thousands of processes
    must not make the member spend its core measuring it."""
    clock, pause = asyncio.get_running_loop().time, interval
    while True:
        await asyncio.sleep(pause)
        runners = dict(running())
        if not runners:
            return
        began = clock()
        await check(runners)
        pause = max(interval, MEASURING_SHARE_INVERSE * (clock() - began))
