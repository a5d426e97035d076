"""``poolnet.Pool`` end to end: a real pool host and two real members on 127.0.0.1, real
sandboxed shards, and the Python API used as a script would use it (synchronously).

The pool runs on an event loop in a thread of its own, as it would in another process, so
that the tests call ``Pool`` from a plain thread exactly as a user's script does.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import poolnet
from poolnet_desktop.core.task_protocol import TaskSummary
from poolnet_desktop.runtime.client.link import open_link
from poolnet_desktop.runtime.client.task_client import TaskClient
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.host.pool_host import HostOptions, PoolHost
from poolnet_desktop.runtime.member.member import Member, MemberOptions
from poolnet_desktop.runtime.net.discovery import DiscoverySettings
from tests.runtime.conftest import PAIRING_CODE
from tests.runtime.test_environments import REAL_WHEELS, real_wheel_fits


class PoolThread:
    """A pool host and two members on a loop in a background thread."""

    def __init__(self, root: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.root = root
        self.host, self.members = self.run(self._start())

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _start(self) -> tuple[PoolHost, list[tuple[Member, asyncio.Task[None]]]]:
        host = PoolHost(HostOptions(
            data_dir=resolve_data_dir(self.root / "host"), bind="127.0.0.1", port=0,
            heartbeat_timeout=1.5, batch_interval=0.1, pairing_code=PAIRING_CODE, legacy_port=0,
            discovery=DiscoverySettings(enabled=False),
        ))
        await host.start()
        members = []
        for name in ("alpha", "beta"):
            member = Member(MemberOptions(
                url=host.local_url, data_dir=resolve_data_dir(self.root / name), name=name,
                code=PAIRING_CODE, discovery=DiscoverySettings(enabled=False),
            ))
            members.append((member, asyncio.ensure_future(member.run())))
        async with asyncio.timeout(30):
            while not all(m.agent.config.device_id in host.tasks._members for m, _ in members):
                await asyncio.sleep(0.05)
        return host, members

    async def tasks(self) -> list[TaskSummary]:
        async with await open_link(self.host.local_url, self.host.options.data_dir) as link:
            return await TaskClient(link).list()

    async def _stop(self) -> None:
        for member, running in self.members:
            await member.stop()
            await running
        await self.host.stop()

    def stop(self) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.fixture
def pool_thread(tmp_path: Path) -> Iterator[PoolThread]:
    running = PoolThread(tmp_path)
    yield running
    running.stop()


def open_pool(pool_thread: PoolThread, **options: Any) -> poolnet.Pool:
    """The host owner's ``Pool`` (its identity needs no pairing) with no URL given: the one
    its data folder hosts, as ``poolnet submit`` would find it."""
    return poolnet.Pool(data_dir=pool_thread.host.options.data_dir, **options)


def square(x: int) -> int:
    return x * x


def fails_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"three is not welcome (got {x})")
    return x


@dataclass(frozen=True)
class Point:
    x: float
    y: float


def mirrored(point: Point) -> Point:
    return Point(point.y, point.x)


def shout(x: int) -> int:
    print(f"hello from call {x} in pid namespace {os.getpid()}")
    return x


def test_map_over_a_hundred_items_returns_every_value_in_order_from_a_few_shards(
    pool_thread: PoolThread,
) -> None:
    with open_pool(pool_thread) as pool:
        assert pool.url == pool_thread.host.local_url
        assert list(pool.map(square, range(100))) == [x * x for x in range(100)]
        assert list(pool.map(pow, range(10), [2] * 10, chunksize=3)) == [x**2 for x in range(10)]
    tasks = pool_thread.run(pool_thread.tasks())
    by_name = {t.name: t for t in tasks}
    # One task per map, one shard per chunk: not a hundred one-call shards.
    assert by_name["pool square"].state == "succeeded"
    assert 1 < by_name["pool square"].total < 100
    assert set(by_name["pool square"].devices or ()) == {
        m.agent.config.device_id for m, _ in pool_thread.members
    }
    assert (by_name["pool pow"].total, by_name["pool pow"].succeeded) == (4, 4)


def test_a_remote_exception_is_raised_here_with_its_traceback(pool_thread: PoolThread) -> None:
    with open_pool(pool_thread, max_workers=2) as pool:
        results = pool.map(fails_on_three, range(6))
        assert [next(results), next(results), next(results)] == [0, 1, 2]
        with pytest.raises(ValueError, match="three is not welcome") as raised:
            next(results)
        remote = raised.value.__cause__
        assert isinstance(remote, poolnet.RemoteTraceback)
        assert "in fails_on_three" in str(remote)
        assert 'raise ValueError(f"three is not welcome (got {x})")' in str(remote)
        # The other calls of the same shard still ran: a raising call is not a failed shard.
        assert pool.submit(fails_on_three, 4).result() == 4


def test_the_callers_own_classes_go_there_and_come_back_as_themselves(pool_thread: PoolThread) -> None:
    """This test module is no package a member could import: its code travels by value, and
    the objects that come back (members trusted) are of the caller's classes, not copies."""
    with open_pool(pool_thread, trust_members=True) as pool:
        assert list(pool.map(mirrored, [Point(1, 2), Point(3, 4)])) == [Point(2, 1), Point(4, 3)]
    with open_pool(pool_thread) as pool:  # by default a member sends plain data only
        with pytest.raises(poolnet.PoolError, match=r"holds \S+, which a member may not send back"):
            pool.submit(mirrored, Point(1, 2)).result()
        assert pool.submit(square, 7).result() == 49


class RunsACommand:
    """What a hostile member sends back: unpickling it runs a shell command in the caller."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def crafted_result(marker: str) -> RunsACommand:
    return RunsACommand(marker)


def test_a_member_cannot_run_code_in_the_caller_through_a_result(pool_thread: PoolThread, tmp_path: Path) -> None:
    """The member's shard returns a pickle that runs a command when loaded (as a hostile
    member would write into result.pkl): the call fails, naming the type, and nothing runs.
    Before the fix results were unpickled with cloudpickle and the command ran here."""
    marker = tmp_path / "the-member-ran-code-here"
    with open_pool(pool_thread) as pool:
        with pytest.raises(poolnet.PoolError, match=r"holds (posix|os)\.system"):
            pool.submit(crafted_result, str(marker)).result()
        with pytest.raises(poolnet.RemoteError, match="CraftedError"):  # as an exception's pickle too
            pool.submit(raises_crafted, str(marker)).result()
    assert not marker.exists()


class CraftedError(Exception):
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.args[0]}",)


def raises_crafted(marker: str) -> None:
    raise CraftedError(marker)


def test_printed_output_reaches_the_caller(
    pool_thread: PoolThread, capfd: pytest.CaptureFixture[str]
) -> None:
    with open_pool(pool_thread) as pool:
        assert list(pool.map(shout, range(5))) == list(range(5))
    out = capfd.readouterr().out
    for x in range(5):
        assert f"hello from call {x} in pid namespace" in out


def test_submit_returns_futures_that_resolve_with_closures_and_keywords(
    pool_thread: PoolThread,
) -> None:
    offset = 100
    with open_pool(pool_thread) as pool:
        futures = [pool.submit(lambda a, b=0: a + b + offset, i, b=1) for i in range(4)]
        assert [f.result(timeout=60) for f in futures] == [101, 102, 103, 104]
    assert sum(t.name == "pool lambda" for t in pool_thread.run(pool_thread.tasks())) == 4


def sleep_task(pool_thread: PoolThread) -> TaskSummary | None:
    """The pool's ``pool sleep`` task, if it has one."""
    return next((t for t in pool_thread.run(pool_thread.tasks()) if t.name == "pool sleep"), None)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_leaving_the_block_by_an_exception_cancels_the_pools_task(pool_thread: PoolThread) -> None:
    with pytest.raises(KeyboardInterrupt):
        with open_pool(pool_thread) as pool:
            future = pool.submit(time.sleep, 600)
            wait_until(lambda: bool((task := sleep_task(pool_thread)) and task.running), "it never started")
            raise KeyboardInterrupt
    assert future.cancelled()
    # The block is left once the pool has stopped the call's shard.
    assert (task := sleep_task(pool_thread)) is not None and (task.state, task.running) == ("cancelled", 0)


def test_cancelling_a_calls_future_cancels_its_task_on_the_pool(pool_thread: PoolThread) -> None:
    with open_pool(pool_thread) as pool:
        future = pool.submit(time.sleep, 600)
        wait_until(lambda: bool((task := sleep_task(pool_thread)) and task.running), "it never started")
        assert future.cancel()
        wait_until(lambda: getattr(sleep_task(pool_thread), "state", None) == "cancelled", "never cancelled")


def test_a_shard_that_dies_fails_its_calls_with_the_reason(pool_thread: PoolThread) -> None:
    with open_pool(pool_thread) as pool:
        future = pool.submit(os._exit, 3)
        with pytest.raises(poolnet.PoolError, match=r"shard 0 did not succeed \(failed: exited with code 3\)"):
            future.result(timeout=60)


def escaped(text: str) -> str:
    import markupsafe  # only in the calls' task environment, not in this process's Python

    return str(markupsafe.escape(text)) + f" ({markupsafe.__file__.rsplit('/', 3)[-3]})"


@real_wheel_fits
def test_calls_run_in_an_environment_of_the_requirements_with_wheels_shipped(pool_thread: PoolThread) -> None:
    """Pool(requirements=...) resolves once here (offline, from a folder of wheels), ships the
    wheels, and each member builds the environment the calls run in; a package that cannot be
    had is refused at Pool(), naming it."""
    with open_pool(pool_thread, requirements=["markupsafe>=3"], find_links=[REAL_WHEELS], no_index=True) as pool:
        assert list(pool.map(escaped, ["<b>", "&"])) == ["&lt;b&gt; (site-packages)", "&amp; (site-packages)"]
    with pytest.raises(poolnet.PoolError, match="requirements: .*'nosuchpackage' is not available"):
        open_pool(pool_thread, requirements=["nosuchpackage"], find_links=[REAL_WHEELS], no_index=True)


def test_an_unreachable_pool_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(poolnet.PoolError, match="cannot reach the pool at wss://127.0.0.1:9/ws"):
        poolnet.Pool("127.0.0.1:9", data_dir=tmp_path / "me")
    with pytest.raises(poolnet.PoolError, match="'ws://127.0.0.1:9/ws' is not a pool address"):
        poolnet.Pool("ws://127.0.0.1:9/ws", data_dir=tmp_path / "me")  # was a bare ValueError


EXAMPLE = Path(__file__).resolve().parents[2] / "resources" / "examples" / "pool_api_example.py"


@pytest.mark.parametrize("how", ["script", "stdin"])
def test_the_example_runs_as_a_script_and_as_notebook_code(pool_thread: PoolThread, how: str) -> None:
    """Its functions live in ``__main__``, which no member can import: they travel by value.
    Fed through stdin, ``__main__`` has no file at all, as in a notebook."""
    run = subprocess.run(
        [sys.executable, str(EXAMPLE)] if how == "script" else [sys.executable, "-"],
        input=None if how == "script" else EXAMPLE.read_text(), capture_output=True, text=True,
        env={**os.environ, "POOLNET_HOME": str(pool_thread.host.options.data_dir)}, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "pi ~ 3.1" in run.stdout and "one more estimate: 3.1" in run.stdout
    assert "seed 11 checked" in run.stdout and "seed 12 checked" in run.stdout
    assert "caught: seed 13 is unlucky" in run.stdout
    assert 'raise ValueError(f"seed {seed} is unlucky")' in run.stdout or how == "stdin"
