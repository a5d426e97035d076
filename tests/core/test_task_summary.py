"""Task summaries (counts, devices used, times; never a line per shard) and paged lists."""

from __future__ import annotations

import msgspec
import pytest

from poolnet_desktop.core.manifest import TaskSpec
from poolnet_desktop.core.protocol import MAX_CONTROL_MESSAGE, encode
from poolnet_desktop.core.task_protocol import MAX_TASK_PAGE, TaskList, TasksChanged, task_summary
from poolnet_desktop.core.task_summary import (
    MAX_SUMMARY_DEVICES,
    ended_at,
    shard_page,
    started_at,
    task_page,
)
from poolnet_desktop.core.tasks import ShardState, Task

S = ShardState


def make_task(task_id: str = "t", shards: int = 3, submitted_at: float = 100.0) -> Task:
    return Task(task_id, TaskSpec(name=task_id, command=("true",), shards=shards, retries=0),
                submitted_at=submitted_at, submitter="alice")


def test_a_summary_counts_states_and_names_devices_and_times() -> None:
    task = make_task(shards=3)
    task.assign(0, "dev-a", (), now=101.0)
    task.assign(1, "dev-b", (), now=101.0)
    task.start(0, 1, now=102.0)
    task.record_result(0, 1, S.SUCCEEDED, now=105.0)
    summary = task_summary(task, detail=True)
    assert summary.counts == {"succeeded": 1, "assigned": 1, "queued": 1}
    assert summary.devices == ["dev-a", "dev-b"] and summary.device_count == 2
    assert (summary.started_at, summary.ended_at) == (102.0, None)  # still running
    assert task_summary(task).devices is None  # not for a caller without the detail

    task.assign(2, "dev-a", (), now=106.0)
    task.record_result(1, 1, S.FAILED, now=107.0)
    task.record_result(2, 1, S.SUCCEEDED, now=109.0)
    assert task_summary(task).state == "failed" and ended_at(task) == 109.0


def test_a_shard_whose_start_was_never_heard_counts_from_its_placement() -> None:
    task = make_task(shards=2)
    task.assign(0, "dev-a", (), now=101.0)
    assert started_at(task) is None  # placed, not started: the task has not started
    task.record_result(0, 1, S.SUCCEEDED, now=101.5)  # a tiny shard: its result came first
    assert started_at(task) == 101.0


def test_a_summary_stays_small_whatever_the_task_size() -> None:
    task = make_task(shards=100_000)
    for index in range(0, 100_000, 50):
        task.assign(index, f"pn-{'d' * 60}{index:06}", (), now=101.0)
    summary = task_summary(task, detail=True)
    assert len(summary.devices or []) == MAX_SUMMARY_DEVICES and summary.device_count == 2000
    page = TaskList(tasks=[summary] * MAX_TASK_PAGE)
    assert len(encode(page)) < MAX_CONTROL_MESSAGE // 4


def test_a_cancelled_task_that_never_ran_ended_when_submitted() -> None:
    task = make_task(shards=2)
    task.cancel(now=150.0)
    assert ended_at(task) in (100.0, 150.0)
    assert ended_at(make_task()) is None


def test_pages_run_newest_first_and_survive_a_task_forgotten_meanwhile() -> None:
    tasks = [make_task(f"t{i}", submitted_at=float(i)) for i in range(7)]
    first, cursor = task_page(tasks, None, 3)
    assert [t.id for t in first] == ["t6", "t5", "t4"] and cursor is not None
    remaining = [t for t in tasks if t.id != "t4"]  # the page's last task is forgotten
    second, cursor = task_page(remaining, cursor, 3)
    assert [t.id for t in second] == ["t3", "t2", "t1"]
    third, cursor = task_page(remaining, cursor, 3)
    assert [t.id for t in third] == ["t0"] and cursor is None


def test_same_second_tasks_are_neither_skipped_nor_repeated() -> None:
    tasks = [make_task(f"t{i}", submitted_at=5.0) for i in range(5)]
    seen, cursor = [], None
    while True:
        page, cursor = task_page(tasks, cursor, 2)
        seen += [t.id for t in page]
        if cursor is None:
            break
    assert sorted(seen) == [f"t{i}" for i in range(5)] and len(seen) == 5


def test_a_forged_cursor_is_refused() -> None:
    with pytest.raises(ValueError, match="cursor"):
        task_page([make_task()], "nonsense", 3)
    with pytest.raises(ValueError):
        task_page([make_task()], "abc/t", 3)


def test_shard_pages_end_with_none() -> None:
    task = make_task(shards=5)
    page, following = shard_page(task, 0, 2)
    assert [s.index for s in page] == [0, 1] and following == 2
    page, following = shard_page(task, 4, 2)
    assert [s.index for s in page] == [4] and following is None


def test_a_change_batch_refuses_more_than_a_page_of_summaries() -> None:
    summary = task_summary(make_task())
    too_many = encode(TasksChanged(tasks=[summary] * (MAX_TASK_PAGE + 1)))
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(too_many, type=TasksChanged)
