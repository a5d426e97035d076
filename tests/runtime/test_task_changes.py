"""Task changes pushed to subscribers, and ended tasks forgotten (on request or by the
retention policy) from memory, the SQLite store, the logs and the result files.

Everything is real: a pool host on 127.0.0.1 over TLS, two members running real shards,
observers paired with the code from their own data folders, the store on disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from poolnet_desktop.core.protocol import MAX_CONTROL_MESSAGE, ProtocolError, encode
from poolnet_desktop.core.retention import RetentionPolicy
from poolnet_desktop.core.task_protocol import TasksChanged, TaskSummary
from poolnet_desktop.runtime.client.link import open_link
from poolnet_desktop.runtime.client.task_client import TaskClient, apply_changes
from poolnet_desktop.runtime.client.task_files import load_task
from poolnet_desktop.runtime.datadir import resolve_data_dir
from poolnet_desktop.runtime.host.pool_host import HostOptions, PoolHost
from poolnet_desktop.runtime.member.member import Member
from poolnet_desktop.runtime.net.discovery import DiscoverySettings
from tests.runtime.conftest import PAIRING_CODE
from tests.runtime.test_least_authority import new_member
from tests.runtime.test_task_pool import members, wait_for  # noqa: F401 (fixtures)


async def submit(client: TaskClient, folder: Path, body: str) -> str:
    folder.mkdir(parents=True)
    (folder / "shared.txt").write_text("the same input for every task\n")
    (folder / "own.txt").write_text(f"input of {folder.name} alone\n")
    (folder / "job.pool.toml").write_text(textwrap.dedent(body))
    return await client.submit(await asyncio.to_thread(load_task, folder))


WRITES_OUTPUT = """
    name = "writes"
    command = ["{python}", "-c", "import pathlib; pathlib.Path('out').mkdir(); pathlib.Path('out/r.txt').write_text('x'); print('a line')"]
    shards = 4
    files = ["shared.txt", "own.txt"]
    outputs = ["out/*.txt"]
    retries = 0
"""


class Follower:
    """A subscriber's view of the pool's tasks, kept by the pushed changes only."""

    def __init__(self, client: TaskClient) -> None:
        self.client = client
        self.tasks: dict[str, TaskSummary] = {}
        self.frames: list[TasksChanged] = []
        self._reading: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.tasks = {t.id: t for t in await self.client.subscribe()}
        self._reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for change in self.client.changes():
            self.frames.append(change)
            apply_changes(self.tasks, change)

    async def stop(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            await asyncio.gather(self._reading, return_exceptions=True)


@pytest.fixture
async def bystander(pool: PoolHost, tmp_path: Path) -> AsyncIterator[TaskClient]:
    """Another device paired with the code: it may observe, not see others' task details."""
    link = await open_link(pool.local_url, resolve_data_dir(tmp_path / "bystander"), code=PAIRING_CODE)
    yield TaskClient(link)
    await link.close()


async def test_subscribers_get_each_change_as_a_summary_and_only_their_own_details(
    pool: PoolHost, members: list[Member], client: TaskClient, bystander: TaskClient, tmp_path: Path
) -> None:
    owner_view, other_view = Follower(client), Follower(bystander)
    task_id = ""
    try:
        await owner_view.start()
        await other_view.start()
        assert owner_view.tasks == other_view.tasks == {}
        watcher = await open_link(pool.local_url, pool.options.data_dir)
        task_id = await submit(TaskClient(watcher), tmp_path / "job", WRITES_OUTPUT)
        await watcher.close()
        for view in (owner_view, other_view):
            await wait_for(lambda v=view: v.tasks.get(task_id) is not None and v.tasks[task_id].state == "succeeded")
    finally:
        await owner_view.stop()
        await other_view.stop()
    mine, theirs = owner_view.tasks[task_id], other_view.tasks[task_id]
    assert (mine.total, mine.succeeded, mine.counts) == (4, 4, {"succeeded": 4})
    member_ids = {m.agent.config.device_id for m in members}
    assert mine.devices and set(mine.devices) <= member_ids and mine.device_count == len(mine.devices)
    assert mine.started_at is not None and mine.ended_at is not None and mine.ended_at >= mine.started_at
    assert theirs.devices is None and theirs.counts == mine.counts  # where it ran is not theirs to see
    # Coalesced: fewer frames than the task's changes (4 shards placed, started, finished).
    assert 1 <= len(owner_view.frames) < 12
    assert all(len(encode(frame)) < MAX_CONTROL_MESSAGE // 100 for frame in owner_view.frames)


async def test_forgetting_an_ended_task_deletes_its_records_logs_and_files(
    pool: PoolHost, members: list[Member], client: TaskClient, bystander: TaskClient, tmp_path: Path
) -> None:
    task_id = await submit(client, tmp_path / "job", WRITES_OUTPUT)
    assert (await client.wait(task_id)).state == "succeeded"
    kept = await submit(client, tmp_path / "kept", WRITES_OUTPUT)
    running = await submit(client, tmp_path / "slow", 'command = ["sleep", "60"]\nretries = 0\n')
    service = pool.tasks
    await wait_for(lambda: service.tasks[running].state == "running")
    await service.store_or_fail().committed(urgent=True)
    results, blobs = service.results / task_id, service.blobs
    inputs = {f.path: f.sha256 for f in service.tasks[task_id].spec.files}
    assert (results / "0" / "out" / "r.txt").is_file() and all((blobs / b).is_file() for b in inputs.values())

    view_link = await open_link(pool.local_url, pool.options.data_dir)
    view = Follower(TaskClient(view_link))
    await view.start()
    try:
        error = await _refused(bystander.forget(task_id))
        assert error.code == "forbidden" and "submitter" in error.message
        error = await _refused(client.forget(running))
        assert error.code == "forbidden" and "cancel it first" in error.message
        await client.forget(task_id)
        await wait_for(lambda: task_id not in view.tasks)
    finally:
        await view.stop()
        await view_link.close()
    assert any(task_id in frame.removed for frame in view.frames)
    assert task_id not in service.tasks and all(key[0] != task_id for key in service.recorded)
    assert [t.id for t in await client.list()] == [running, kept]
    await service.store_or_fail().committed(urgent=True)
    with sqlite3.connect(service.store_or_fail().path) as db:
        for table, column in (("tasks", "id"), ("shards", "task_id"), ("logs", "task_id")):
            assert db.execute(f"SELECT count(*) FROM {table} WHERE {column} = ?", (task_id,)).fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM logs WHERE task_id = ?", (kept,)).fetchone()[0] > 0
    assert not results.exists() and (service.results / kept).is_dir()
    # Its own input goes; the one another task shares (same content, same sha256) stays.
    assert not (blobs / inputs["own.txt"]).exists() and (blobs / inputs["shared.txt"]).is_file()
    await client.cancel(running)


async def _refused(call) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        await asyncio.wait_for(call, 10)
    return caught.value


def _host(data_dir: Path, retention: RetentionPolicy) -> PoolHost:
    return PoolHost(HostOptions(
        data_dir=data_dir, bind="127.0.0.1", port=0, heartbeat_timeout=1.5, batch_interval=0.1,
        pairing_code=PAIRING_CODE, discovery=DiscoverySettings(enabled=False), retention=retention,
    ))


async def test_the_retention_policy_prunes_old_ended_tasks_for_good(tmp_path: Path) -> None:
    data_dir = resolve_data_dir(tmp_path / "host")
    keep_last_one = RetentionPolicy(keep_days=0, keep_last=1)
    host = _host(data_dir, keep_last_one)
    await host.start()
    try:
        link = await open_link(host.local_url, data_dir)
        client = TaskClient(link)
        member = new_member(host.local_url, tmp_path / "worker")
        running = asyncio.create_task(member.run())
        await wait_for(lambda: member.agent.config.device_id in host.tasks._members)
        old = await submit(client, tmp_path / "old", WRITES_OUTPUT)
        await client.wait(old)
        new = await submit(client, tmp_path / "new", WRITES_OUTPUT.replace('"writes"', '"other"'))
        await client.wait(new)
        assert await host.tasks.retention.prune() == [old]
        assert not (host.tasks.results / old).exists() and (host.tasks.results / new).is_dir()
        await link.close()
        await member.stop()
        await running
    finally:
        await host.stop()
    again = _host(data_dir, RetentionPolicy())
    await again.start()
    try:
        assert list(again.tasks.tasks) == [new]  # gone from the store too, not only from memory
    finally:
        await again.stop()
