"""Watching a task (``watch_task``) never misses its end, however the watch request and the
task's last change interleave on the coordinator."""

from __future__ import annotations

import asyncio
from pathlib import Path

from poolnet_desktop.runtime.client.link import open_link
from poolnet_desktop.runtime.client.task_client import TaskClient
from poolnet_desktop.runtime.client.task_files import load_task
from poolnet_desktop.runtime.host.pool_host import PoolHost
from poolnet_desktop.runtime.member.member import Member
from tests.runtime.test_task_pool import members, wait_for, write  # noqa: F401 - fixtures


async def test_a_task_that_ends_while_its_stored_output_is_read_still_ends_for_the_watcher(
    pool: PoolHost, members: list[Member], client: TaskClient, tmp_path: Path  # noqa: F811
) -> None:
    write(tmp_path / "job", "job.pool.toml", """
        command = ["sh", "-c", "sleep 0.5; echo done"]
    """)
    task_id = await client.submit(await asyncio.to_thread(load_task, tmp_path / "job"))
    store = pool.tasks.store_or_fail()
    real_committed = store.committed
    ended = asyncio.Event()

    def committed_once_it_has_ended(urgent: bool = False) -> asyncio.Future[None]:
        """The watch request's wait for the stored output lasts until the task has ended."""
        store.committed = real_committed  # type: ignore[method-assign]
        waited = real_committed(urgent)

        async def later() -> None:
            await ended.wait()
            await waited

        return asyncio.ensure_future(later())

    store.committed = committed_once_it_has_ended  # type: ignore[method-assign]
    following = asyncio.ensure_future(client.logs(task_id, lambda output: None, follow=True))
    await wait_for(lambda: pool.tasks.tasks[task_id].state == "succeeded")
    ended.set()
    summary = await asyncio.wait_for(following, timeout=20)
    assert summary.state == "succeeded"


async def test_watching_an_ended_task_leaves_nothing_behind_once_the_watcher_leaves(
    pool: PoolHost, members: list[Member], tmp_path: Path  # noqa: F811
) -> None:
    """An ended task does not change again, so only its watchers' leaving lets them go: a
    submitter watching its ended tasks over and over must not grow the host for good."""
    write(tmp_path / "job", "job.pool.toml", 'command = ["true"]\n')
    for _ in range(3):
        async with await open_link(pool.local_url, pool.options.data_dir) as link:
            client = TaskClient(link)
            task_id = await client.submit(await asyncio.to_thread(load_task, tmp_path / "job"))
            await client.wait(task_id)
            await client.logs(task_id, lambda output: None)  # watches, reads the history, stops
        await wait_for(lambda: task_id not in pool.tasks.requests._watchers)
