"""Running an asyncio service from the command line until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from poolnet_desktop.logs import log_to_file
from poolnet_desktop.runtime.instance_lock import AlreadyRunning, InstanceLock

try:
    import uvloop
except ImportError:  # not made for Windows: asyncio's own loop there
    uvloop = None  # type: ignore[assignment]


def run_service(main: Coroutine[Any, Any, None]) -> None:
    """Run a long-lived service to its end, on uvloop where it is installed.

    uvloop's transports and TLS are compiled: a coordinator holding 5,000 members spends most
    of its time reading small TLS records, and needed ~11 % less CPU on it
    (``benchmarks/bench_scale.py``). The desktop app runs the same services on qasync's loop.
    """
    with asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop is not None else None) as runner:
        runner.run(main)


def run_holding(data_dir: Path, program: str, work: Callable[[], int]) -> int:
    """Run ``work`` while this process holds ``data_dir`` (see ``instance_lock``), logging to
    its log file; exit code 1, after saying who holds it, when another PoolNet already shares
    this computer from there."""
    try:
        lock = InstanceLock(data_dir, program).acquire()
    except AlreadyRunning as exc:
        print(f"poolnet: {exc}; stop it first, or give another --data-dir", file=sys.stderr)
        return 1
    try:
        log_to_file(data_dir, program)
        return work()
    finally:
        lock.release()


async def until_signalled(
    start: Callable[[], Awaitable[asyncio.Task[None] | None]], stop: Callable[[], Awaitable[None]]
) -> None:
    """Start a service, wait for SIGINT or SIGTERM, then stop it in order.

    ``start`` may return a task that can end by itself (a member refused by its pool): its
    end stops the wait too.
    """
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows' loop has no signal handlers
            loop.add_signal_handler(sig, stopping.set)
    try:
        ends_by_itself = await start()
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(stopping.wait())]
        if ends_by_itself is not None:
            waiters.append(ends_by_itself)
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        waiters[0].cancel()
    finally:
        await stop()
