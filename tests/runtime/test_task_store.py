"""The task store on a real SQLite file: what goes in comes back, acknowledgements wait for
the commit, older stores are brought up to date, and closing commits what is queued."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from poolnet_desktop.core.manifest import TaskSpec
from poolnet_desktop.core.task_protocol import ShardResult
from poolnet_desktop.core.tasks import ShardState, Task
from poolnet_desktop.core.wire import StorageError
from poolnet_desktop.runtime.host.task_store import TaskStore

SPEC = TaskSpec(name="sweep", command=("echo", "{shard}"), shards=3, env={"MODE": "fast"})


def result(reason: str = "succeeded", exit_code: int = 0) -> ShardResult:
    return ShardResult(reason=reason, exit_code=exit_code, started=1.0, ended=2.5)  # type: ignore[arg-type]


def finished_task() -> Task:
    """Shard 0 succeeded, 1 failed and was retried on request, 2 still queued."""
    task = Task("sweep-1", SPEC, submitted_at=10.0, submitter="alice")
    for index in (0, 1):
        task.assign(index, "dev-a", (1,), now=11.0)
    task.record_result(0, 1, ShardState.SUCCEEDED, now=12.0, exit_code=0)
    task.record_result(1, 1, ShardState.TIMED_OUT, now=12.0, reason="timeout")
    task.retry(now=13.0)
    return task


async def test_tasks_shards_results_and_logs_come_back_as_saved(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "tasks.sqlite3")
    task = finished_task()
    store.save_task(task, files_ready=True)
    for shard in task.shards:
        store.save_shard(task.id, shard, result() if shard.index == 0 else None)
    store.append_log(task.id, 0, 1, "stdout", "first\n")
    store.append_log(task.id, 1, 1, "stderr", "oops\n")
    store.append_log(task.id, 0, 1, "stdout", "second\n")
    await store.close()

    reopened = TaskStore(tmp_path / "tasks.sqlite3")
    [stored] = reopened.load()
    assert stored.files_ready and stored.results == {0: result()}
    loaded = stored.task
    assert (loaded.id, loaded.spec, loaded.submitter, loaded.submitted_at) == (
        task.id, SPEC, "alice", 10.0
    )
    assert loaded.shards == task.shards  # every field, retry_base and reported included
    assert loaded.shards[1].placed == {1: "dev-a"}  # who may report attempt 1, after a restart
    assert loaded.shards[1].retry_base == 1 and loaded.shards[1].state is ShardState.QUEUED
    assert [(r.shard, r.data) for r in reopened.logs(task.id)] == [
        (0, "first\n"), (1, "oops\n"), (0, "second\n"),
    ]
    assert [r.data for r in reopened.logs(task.id, shard=0)] == ["first\n", "second\n"]
    await reopened.close()


async def test_history_is_cut_where_a_watcher_started_to_get_output_live(tmp_path: Path) -> None:
    """A watcher registers, notes how much output there was, and gets later output live; the
    history it reads afterwards (later output may be committed by then) stops at its note, so no
    chunk is lost between history and live output and none comes twice. Output stored before a
    restart is always history."""
    first = TaskStore(tmp_path / "tasks.sqlite3")
    first.append_log("t-1", 0, 1, "stdout", "before the restart\n")
    await first.close()
    store = TaskStore(tmp_path / "tasks.sqlite3")
    store.append_log("t-1", 0, 1, "stdout", "hello ")
    store.append_log("t-1", 1, 1, "stdout", "other shard\n")
    whole_task, shard_0 = store.appended_logs("t-1"), store.appended_logs("t-1", 0)
    store.append_log("t-1", 0, 1, "stdout", "from shard 0\n")  # sent live to the watcher
    await store.committed()
    assert [r.data for r in store.logs("t-1", appended=whole_task)] == [
        "before the restart\n", "hello ", "other shard\n",
    ]
    assert [r.data for r in store.logs("t-1", 0, appended=shard_0)] == ["before the restart\n", "hello "]
    assert len(store.logs("t-1")) == 4  # uncut: everything stored
    await store.close()


async def test_forgetting_a_task_drops_its_output_counts(tmp_path: Path) -> None:
    """The counts a watcher's history is cut by go with their task (a host that prunes old
    tasks for months keeps none of theirs)."""
    store = TaskStore(tmp_path / "tasks.sqlite3")
    store.append_log("t-1", 0, 1, "stdout", "a")
    store.append_log("t-1", 1, 1, "stdout", "b")
    store.append_log("t-2", 0, 1, "stdout", "c")
    store.forget(["t-1"])
    assert (store.appended_logs("t-1"), store.appended_logs("t-1", 0)) == (0, 0)
    assert (store.appended_logs("t-2"), store.appended_logs("t-2", 0)) == (1, 1)
    assert store._appended.keys() == {"t-2"}
    await store.close()


async def test_committed_resolves_once_the_rows_are_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "tasks.sqlite3"
    store = TaskStore(path)
    task = Task("t-1", SPEC, submitted_at=1.0)
    store.save_task(task, files_ready=True)
    task.assign(0, "dev-a", (), now=2.0)
    store.save_shard(task.id, task.shards[0])
    task.record_result(0, 1, ShardState.SUCCEEDED, now=3.0)
    store.save_shard(task.id, task.shards[0], result())  # replaces the queued row
    await store.committed()
    with sqlite3.connect(path) as other:  # another connection sees the commit
        rows = other.execute("SELECT idx, state, attempt FROM shards").fetchall()
    assert rows == [(0, "succeeded", 1)]
    await store.close()
    await store.close()  # twice is harmless


async def test_a_store_from_before_retries_on_request_is_brought_up_to_date(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tasks.sqlite3"
    with sqlite3.connect(path) as old:  # the shards table as it was, one row in it
        old.execute(
            "CREATE TABLE shards (task_id TEXT NOT NULL, idx INTEGER NOT NULL, state TEXT NOT "
            "NULL, attempt INTEGER NOT NULL, device_id TEXT, gpus BLOB NOT NULL, exit_code "
            "INTEGER, reason TEXT NOT NULL, queued_at REAL, reported BLOB NOT NULL, assigned_at "
            "REAL, started_at REAL, finished_at REAL, result BLOB, PRIMARY KEY (task_id, idx)) "
            "WITHOUT ROWID"
        )
        old.execute("INSERT INTO shards VALUES ('t-1', 0, 'failed', 3, 'dev', '[]', 1, '', 1.0, "
                    "'[1,2,3]', 2.0, 2.0, 3.0, NULL)")
    store = TaskStore(path)
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT retry_base FROM shards").fetchall() == [(0,)]
    # Only the current attempt's device is known; it keeps reporting it after the upgrade.
    assert store.load() == [] and _placed_of(path) == {3: "dev"}
    await store.close()


def _placed_of(path: Path) -> dict[int, str]:
    with sqlite3.connect(path) as check:
        [(placed,)] = check.execute("SELECT placed FROM shards").fetchall()
    return {int(k): v for k, v in json.loads(placed).items()}


async def test_forget_deletes_a_tasks_rows_and_logs_even_those_still_queued(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "tasks.sqlite3")
    doomed, kept = finished_task(), Task("other-1", SPEC, submitted_at=20.0)
    for task in (doomed, kept):
        store.save_task(task, files_ready=True)
        for shard in task.shards:
            store.save_shard(task.id, shard)
        store.append_log(task.id, 0, 1, "stdout", f"{task.id}\n")
    await store.committed()
    store.save_shard(doomed.id, doomed.shards[0], result())  # queued, not committed yet
    store.append_log(doomed.id, 0, 1, "stdout", "late\n")
    store.forget([doomed.id, "never-stored"])
    await store.close()

    reopened = TaskStore(tmp_path / "tasks.sqlite3")
    assert [stored.task.id for stored in reopened.load()] == [kept.id]
    assert reopened.logs(doomed.id) == [] and [r.data for r in reopened.logs(kept.id)] == ["other-1\n"]
    with sqlite3.connect(reopened.path) as db:
        assert db.execute("SELECT count(*) FROM shards WHERE task_id = ?", (doomed.id,)).fetchone() == (0,)
    await reopened.close()


async def test_writes_the_database_cannot_take_are_kept_and_stored_once_it_has_room(
    tmp_path: Path,
) -> None:
    """SQLite's own page limit makes the file "full" (SQLITE_FULL, what a full disk answers),
    without root; raising the limit is space coming back."""
    store = TaskStore(tmp_path / "tasks.sqlite3")
    with store._db_lock:  # the writer thread's connection
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages}")
    task = finished_task()
    store.save_task(task, files_ready=True)
    for shard in task.shards:
        store.save_shard(task.id, shard)
    store.append_log(task.id, 0, 1, "stdout", "x" * 100_000)
    patient = store.committed(patient=True)
    with pytest.raises(StorageError, match="database or disk is full"):
        await store.committed()
    assert not patient.done()

    store.save_shard(task.id, task.shards[2])  # a newer save while full: still one row
    with store._db_lock:
        store._db.execute("PRAGMA max_page_count = 1000000")
    await asyncio.wait_for(patient, 10)
    await store.committed()
    [stored] = store.load()
    assert stored.task.shards == task.shards
    assert [len(r.data) for r in store.logs(task.id)] == [100_000]
    await store.close()
