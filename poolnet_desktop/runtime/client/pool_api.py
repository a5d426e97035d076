"""``poolnet.Pool``: ``concurrent.futures`` over the pool, for Python callers.

``with Pool() as pool: list(pool.map(fn, items))`` and ``pool.submit(fn, *args)`` behave as a
``ProcessPoolExecutor``'s do, but each call runs as a shard of a real task (the window and
``poolnet tasks`` show it like any other) inside a member's sandbox:

- the function and its arguments travel with ``cloudpickle`` (by value for the caller's own
  code: a script's ``__main__``, a notebook cell, a lambda, a module that is not an installed
  package), the worker (``runtime.client.pool_worker``) runs them and pickles the results back;
- a call that raises re-raises here with the remote traceback as its ``__cause__``;
- what the calls ``print`` is written to this process's stdout and stderr as it happens;
- a ``with`` block left by an exception (Ctrl-C too) cancels the pool's unfinished tasks.

Trust: a member runs the calls, not this process's owner, so what it sends back is read as
plain data only (``runtime.client.safe_pickle``: numbers, text, containers, numpy arrays, built-in
exceptions); a crafted pickle cannot run code here. ``Pool(trust_members=True)`` unpickles
results as ``ProcessPoolExecutor`` does (any type, the caller's own classes included), for a
pool whose every member may run code in this process.

What crosses to the members and back is ``runtime.client.pool_payload``'s. This is the sync API over
a private event loop in a thread of its own, so it works from scripts and from Jupyter (whose
own loop is already running). Two links to the pool: one for requests (submit, fetch, cancel,
one at a time) and one that watches the tasks (progress, output, pool size).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import itertools
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from poolnet_desktop.core.devices import DeviceView
from poolnet_desktop.core.environment import targets_to_resolve
from poolnet_desktop.core.log_lines import LineJoiner, ShardLine
from poolnet_desktop.core.pool_calls import FALLBACK_WORKERS, plan_chunks, shared_cores
from poolnet_desktop.core.pool_url import PoolAddressError, normalise_pool_url
from poolnet_desktop.core.protocol import Error, PoolState, ProtocolError
from poolnet_desktop.core.task_protocol import (
    ShardOutput,
    ShardSummary,
    TaskSummary,
    TaskUpdate,
    WatchReady,
    WatchTask,
)
from poolnet_desktop.runtime.client.env_resolve import ResolvedEnvironment, ResolveOptions, for_members_if_possible
from poolnet_desktop.runtime.client.link import open_link
from poolnet_desktop.runtime.client.link_failures import LINK_ERRORS, describe_link_failure
from poolnet_desktop.runtime.client.pool_payload import (
    Call,
    PoolError,
    RemoteError,
    RemoteTraceback,
    code_files,
    fixed_files,
    read_outcomes,
    resolve,
    resolve_requirements,
    write_task,
)
from poolnet_desktop.runtime.client.task_client import TaskClient, has_ended
from poolnet_desktop.runtime.client.task_files import LoadedTask
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.pool_files import default_pool_url
from poolnet_desktop.runtime.uv_tool import this_platform_target

__all__ = ["Pool", "PoolError", "RemoteError", "RemoteTraceback"]


@dataclass(eq=False)
class _Batch:
    """One task: its calls' futures (in call order), the chunks its shards run, and where
    the functions it sent are defined here (to show their source in remote tracebacks)."""

    futures: list[concurrent.futures.Future[Any]]
    chunks: list[range]
    sources: dict[str, str]
    task_id: str | None = None
    cancelling: bool = False
    cancel_sent: bool = False


class Pool(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` whose workers are the pool's members.

    ``url``: the pool (default: the one ``poolnet submit`` would use: the one this data folder
    hosts or joined last). ``data_dir``: this machine's PoolNet data folder (identity).
    ``max_workers``: how many shards a ``map`` without ``chunksize`` splits into (default: the
    cores the pool shares). ``requirements``: packages the calls need: resolved here once (from
    uv's index, or only ``find_links`` folders with ``no_index``), their wheels shipped, and an
    environment built once per member that the calls run in.
    ``code``: a pairing code, where this device has not joined the pool yet.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        data_dir: str | Path | None = None,
        max_workers: int | None = None,
        requirements: Sequence[str] = (),
        find_links: Sequence[str | Path] = (),
        no_index: bool = False,
        code: str | None = None,
        trust_members: bool = False,
    ) -> None:
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, not {max_workers}")
        self._data_dir = resolve_data_dir(data_dir)
        try:
            self.url = normalise_pool_url(url or default_pool_url(self._data_dir))
        except PoolAddressError as exc:  # a caller catches one error type for every pool failure
            raise PoolError(str(exc)) from None
        self._max_workers = max_workers
        self._trust_members = trust_members
        self._environment: ResolvedEnvironment | None = None
        self._devices: dict[str, DeviceView] = {}
        self._batches: set[_Batch] = set()
        self._runners: set[asyncio.Future[None]] = set()
        self._ended: dict[str, asyncio.Future[TaskSummary]] = {}
        self._listed: dict[str, asyncio.Future[None]] = {}
        self._lines: dict[str, LineJoiner] = {}
        self._shutdown = False
        self._lock = threading.Lock()
        self._scratch = Path(tempfile.mkdtemp(prefix="poolnet-pool-"))
        self._serial = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="poolnet-pool", daemon=True)
        self._thread.start()
        try:
            self._await(self._open(code))
        except BaseException:
            self._stop_loop()
            shutil.rmtree(self._scratch, ignore_errors=True)
            raise
        if requirements:
            try:
                self._environment = self._resolve(requirements, find_links, no_index)
            except BaseException:
                self.shutdown(wait=False)
                raise
        self._fixed = fixed_files(self._environment)

    def _resolve(self, requirements: Sequence[str], find_links: Sequence[str | Path],
                 no_index: bool) -> ResolvedEnvironment:
        """The calls' environment, resolved once for this machine and each member platform in
        the pool (``PoolError`` naming a package that cannot be had)."""
        members = self._await(self._requests.member_platforms())
        own = tuple(t for t in [this_platform_target()] if t)
        options = ResolveOptions(tuple(Path(f) for f in find_links), no_index, offline=no_index)

        def resolve(targets: tuple[str, ...]) -> ResolvedEnvironment:
            return resolve_requirements(requirements, dataclasses.replace(options, targets=targets or None))

        return for_members_if_possible(resolve, own, targets_to_resolve(own, members)[len(own):], PoolError,
                                       lambda: resolve(own))

    # ---- the executor's face -------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args, **kwargs)`` as a one-shard task; its future holds the result."""
        return self._start(fn, [(args, kwargs)], [range(0, 1)])[0]

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
    ) -> Iterator[Any]:
        """``fn`` over the zipped ``iterables`` as one task, results in order. Without
        ``chunksize`` the calls are spread over ``max_workers`` shards (default: the cores
        the pool shares); with it, every shard runs ``chunksize`` calls."""
        deadline = None if timeout is None else time.monotonic() + timeout
        calls: list[Call] = [(args, {}) for args in zip(*iterables)]
        workers = self._max_workers or self._await(self._pool_cores()) or FALLBACK_WORKERS
        futures = self._start(fn, calls, plan_chunks(len(calls), chunksize, workers)) if calls else []
        return _results(futures, deadline, self._cancel_futures)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As ``Executor.shutdown``; ``cancel_futures`` also cancels the pool's tasks that
        have not ended, so that they stop using the members."""
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
        if cancel_futures:
            for batch in list(self._batches):
                self._cancel_futures(batch.futures)
        if wait:
            for batch in list(self._batches):
                concurrent.futures.wait(batch.futures)
        self._await(self._close(wait))
        self._stop_loop()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> Pool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """A block left by an exception (Ctrl-C too) cancels what still runs on the pool;
        one left normally waits for every call, as ``ProcessPoolExecutor`` does."""
        self.shutdown(wait=True, cancel_futures=kind is not None)

    # ---- submitting (caller's thread) ----------------------------------------------------

    def _start(self, fn: Callable[..., Any], calls: list[Call], chunks: list[range]) -> list[concurrent.futures.Future[Any]]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new calls after shutdown")
        folder = self._scratch / f"task-{next(self._serial)}"
        loaded = write_task(folder, fn, calls, chunks, self._fixed,
                            self._environment.spec if self._environment is not None else None)
        batch = _Batch([concurrent.futures.Future() for _ in calls], chunks, code_files(fn))
        for future in batch.futures:
            future.add_done_callback(functools.partial(self._call_done, batch))
        self._batches.add(batch)
        self._loop.call_soon_threadsafe(self._follow, batch, loaded, folder)
        return batch.futures

    def _cancel_futures(self, futures: Iterable[concurrent.futures.Future[Any]]) -> None:
        for future in futures:
            future.cancel()

    def _call_done(self, batch: _Batch, future: concurrent.futures.Future[Any]) -> None:
        """Once no call of a task is wanted any more, the task is cancelled on the pool."""
        if future.cancelled() and all(f.cancelled() for f in batch.futures) and not batch.cancelling and not self._loop.is_closed():
            batch.cancelling = True
            self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._cancel_remote(batch)))

    def _await(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    # ---- on the pool's loop ----------------------------------------------------------------

    async def _open(self, code: str | None) -> None:
        try:
            # The first pairs this device where ``code`` is given; the second is then known.
            self._control = await open_link(self.url, self._data_dir, code=code, on_pending=_say_pending)
            try:
                self._watch = await open_link(self.url, self._data_dir)
            except BaseException:
                await self._control.close()
                raise
        except LINK_ERRORS as exc:
            raise PoolError(describe_link_failure(self.url, exc)) from exc
        self._requests = TaskClient(self._control)
        self._request_lock = asyncio.Lock()
        self._sized = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read_watch())

    async def _close(self, wait: bool) -> None:
        """Cancel on the pool what no caller wants any more; then, with ``wait``, see every
        task to its end (a cancelled one ends once its shards are stopped), else stop
        following them."""
        unwanted = [b for b in self._batches if b.cancelling or all(f.cancelled() for f in b.futures)]
        await asyncio.gather(*(self._cancel_remote(b) for b in unwanted))
        if not wait:
            for runner in self._runners:
                runner.cancel()
        await asyncio.gather(*self._runners, return_exceptions=True)
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await asyncio.gather(self._control.close(), self._watch.close())

    async def _pool_cores(self) -> int:
        """The cores the pool shares, from its first device list (it comes within the pool's
        batch interval of connecting); 0 if it does not come soon."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._sized.wait(), timeout=3.0)
        return shared_cores(self._devices.values())

    async def _read_watch(self) -> None:
        """Task ends, live output and the device list, from the watching link."""
        try:
            while True:
                message = await self._watch.recv()
                if isinstance(message, TaskUpdate):
                    waiter = self._ended.get(message.task.id)
                    if waiter is not None and not waiter.done() and has_ended(message.task):
                        _show(self._lines.pop(message.task.id, LineJoiner()).rest())
                        waiter.set_result(message.task)
                elif isinstance(message, ShardOutput):
                    joiner = self._lines.setdefault(message.shard.task_id, LineJoiner())
                    _show(joiner.feed(message.shard.shard, message.stream, message.data))
                elif isinstance(message, WatchReady):
                    listed = self._listed.get(message.task_id)
                    if listed is not None and not listed.done():
                        listed.set_result(None)
                elif isinstance(message, PoolState):
                    self._update_devices(message)
                elif isinstance(message, Error):
                    self._fail_waiters(PoolError(f"the pool refused: {message.message}"))
        except Exception as exc:  # noqa: BLE001 - the link closed: every waiting call learns why
            self._fail_waiters(PoolError(f"lost the pool at {self.url}: {exc}"))

    def _update_devices(self, state: PoolState) -> None:
        if state.full:
            self._devices.clear()
        self._devices.update((d.id, d) for d in state.devices)
        for device_id in state.removed:
            self._devices.pop(device_id, None)
        if not state.more:
            self._sized.set()

    def _fail_waiters(self, error: PoolError) -> None:
        waiters: list[asyncio.Future[Any]] = [*self._ended.values(), *self._listed.values()]
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)

    def _follow(self, batch: _Batch, loaded: LoadedTask, folder: Path) -> None:
        runner = asyncio.ensure_future(self._launch(batch, loaded, folder))
        self._runners.add(runner)
        runner.add_done_callback(self._runners.discard)

    async def _launch(self, batch: _Batch, loaded: LoadedTask, folder: Path) -> None:
        try:
            await self._run(batch, loaded, folder)
        except asyncio.CancelledError:
            _settle(batch, PoolError("the pool was shut down before the call ended"))
        except ProtocolError as exc:  # refused at submission (unfit, invalid_task, ...)
            _settle(batch, PoolError(f"the pool refused the task: {exc.message}"))
        except Exception as exc:  # noqa: BLE001 - each call's future carries the failure
            _settle(batch, exc if isinstance(exc, PoolError) else PoolError(str(exc)))
        finally:
            self._batches.discard(batch)
            await asyncio.to_thread(shutil.rmtree, folder, True)

    async def _run(self, batch: _Batch, loaded: LoadedTask, folder: Path) -> None:
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[TaskSummary] = loop.create_future()

        async def follow(task_id: str) -> None:
            """Watch the task before its files go up: no shard can start, print or end
            before this watcher is listed."""
            batch.task_id = task_id
            self._ended[task_id] = ended
            listed = self._listed[task_id] = loop.create_future()
            await self._watch.send(WatchTask(task_id=task_id, history=False))
            await listed

        try:
            async with self._request_lock:
                task_id = await self._requests.submit(loaded, on_accepted=follow)
            if batch.cancelling:
                await self._cancel_remote(batch)
            summary = await ended
        finally:
            if batch.task_id is not None:
                self._ended.pop(batch.task_id, None)
                self._listed.pop(batch.task_id, None)
        async with self._request_lock:
            results = await self._requests.fetch_results(task_id, folder / "results")
            failed = {} if summary.succeeded == summary.total else await self._failed_shards(task_id)
        outcomes = await asyncio.to_thread(read_outcomes, results, batch.chunks, failed)
        for future, outcome in zip(batch.futures, outcomes):
            resolve(future, outcome, batch.sources, self._trust_members)

    async def _failed_shards(self, task_id: str) -> dict[int, str]:
        """Why each shard that did not succeed ended so (state and reason)."""
        return {s.index: _shard_ending(s) for s in await self._requests.shards(task_id)
                if s.state != "succeeded"}

    async def _cancel_remote(self, batch: _Batch) -> None:
        batch.cancelling = True
        if batch.task_id is None or batch.cancel_sent:
            return  # not submitted yet: ``_run`` cancels it once it is
        batch.cancel_sent = True
        async with self._request_lock:
            with contextlib.suppress(Exception):
                await self._requests.cancel(batch.task_id)


def _shard_ending(shard: ShardSummary) -> str:
    """``failed: exited with code 3``, ``timed_out: timed out after 60 s`` (the record says
    how a failed attempt's program ended)."""
    return f"{shard.state}: {shard.reason}" if shard.reason and shard.reason != shard.state else shard.state


def _show(lines: Iterable[ShardLine]) -> None:
    """What the calls printed, as whole lines (several shards' chunks interleave), to this
    process's stdout or stderr as the calls wrote them."""
    for line in lines:
        out = sys.stdout if line.stream == "stdout" else sys.stderr
        out.write(line.text + "\n")
        out.flush()


def _say_pending(message: str) -> None:
    print(f"poolnet: {message}", file=sys.stderr, flush=True)


def _results(
    futures: list[concurrent.futures.Future[Any]],
    deadline: float | None,
    cancel: Callable[[Iterable[concurrent.futures.Future[Any]]], None],
) -> Iterator[Any]:
    """``map``'s iterator: each result in order, by ``deadline`` (``time.monotonic``);
    leaving it early cancels the rest (the task too, once none of its calls is wanted), as
    ``Executor.map`` does."""
    try:
        for index, future in enumerate(futures):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            yield future.result(left)
            futures[index] = None  # type: ignore[call-overload]
    finally:
        cancel(f for f in futures if f is not None)

def _settle(batch: _Batch, error: BaseException) -> None:
    """Fail every call of ``batch`` still waiting (a cancelled one stays cancelled)."""
    for future in batch.futures:
        if not future.done() and future.set_running_or_notify_cancel():
            future.set_exception(error)
