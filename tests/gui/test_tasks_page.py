"""The Tasks page follows the task changes the pool pushes: rows inserted, updated in place and
removed; the window never polls, and "Forget" deletes an ended task from the pool."""

from __future__ import annotations

import textwrap
from pathlib import Path

from poolnet_desktop.core.task_protocol import TaskSummary
from poolnet_desktop.gui.tasks_page import TasksPage
from tests.gui.test_app import device_named, drop_files, running_desktop, wait_for


def summary(task_id: str, submitted_at: float, state: str = "running", done: int = 0, **more) -> TaskSummary:
    fields = dict(id=task_id, name=task_id, state=state, total=4, done=done, succeeded=done, running=4 - done,
                  queued=0, submitted_at=submitted_at)
    return TaskSummary(**{**fields, **more})


def test_changes_insert_update_in_place_and_remove_rows(qtbot) -> None:  # noqa: ANN001 (pytest-qt)
    page = TasksPage(device_name=lambda device_id: f"box {device_id}")
    qtbot.addWidget(page)
    assert page.empty_label.isVisibleTo(page)
    page.apply_changes([summary("old", 1.0), summary("new", 3.0)], [])
    page.apply_changes([summary("middle", 2.0)], [])
    assert [t.id for t in page.model.tasks] == ["new", "middle", "old"]
    page.select_task("middle")
    selected: list[object] = []
    page.selected.connect(selected.append)

    page.apply_changes([summary("middle", 2.0, state="succeeded", done=4, devices=["a", "b"], device_count=3,
                                ended_at=12.0)], [])
    current = page.current_task()
    assert current is not None and current.state == "succeeded"
    assert page.model.index(1, 2).data() == "4 / 4"
    assert page.model.index(1, 3).data() == "box a, box b, 1 more"
    assert page.model.index(1, 4).data() == "10 s"
    assert page.forget_button.isEnabled() and not page.cancel_button.isEnabled()
    forgets: list[str] = []
    page.forget_requested.connect(forgets.append)
    page.forget_button.click()
    assert forgets == ["middle"]

    page.apply_changes([], ["middle", "never-seen"])
    assert [t.id for t in page.model.tasks] == ["new", "old"]
    assert page.model.row_of("middle") is None and (page.current_task() or summary("-", 0)).id != "middle"
    assert selected  # the page told the bridge its log is no longer wanted
    page.apply_changes([], ["new", "old"])
    assert page.empty_label.isVisibleTo(page) and not page.table.isVisibleTo(page)


async def test_the_window_shows_a_task_from_pushed_changes_and_forgets_it(tmp_path: Path) -> None:
    async with running_desktop(tmp_path) as desktop:
        await desktop.host()
        await wait_for(lambda: (d := device_named(desktop, "this-box")) is not None and d.is_online)
        manifest = tmp_path / "naps.pool.toml"
        manifest.write_text(textwrap.dedent("""
            command = ["sleep", "0.5"]
            shards = 3
            retries = 0
            [resources]
            cpu = 0.1
        """))
        tasks = desktop.window.tasks
        drop_files(tasks.drop_zone, [manifest])
        await wait_for(lambda: any(t.name == "naps" and t.state == "succeeded" for t in tasks.model.tasks), 60)
        task = next(t for t in tasks.model.tasks if t.name == "naps")
        assert (task.done, task.succeeded, task.counts) == (3, 3, {"succeeded": 3})
        row = tasks.model.row_of(task.id)
        assert row is not None and tasks.model.index(row, 3).data() == "this-box"
        host = desktop.bridge.host
        assert host is not None
        dispatched = host.metrics.dispatch
        assert "list_tasks" not in dispatched  # nothing polled: every change was pushed
        assert dispatched["subscribe_tasks"].count == 1

        tasks.select_task(task.id)
        tasks.forget_button.click()
        await wait_for(lambda: tasks.model.row_of(task.id) is None, 30)
        assert task.id not in host.tasks.tasks


def test_a_whole_list_fills_an_empty_page_newest_first(qtbot) -> None:  # noqa: ANN001 (pytest-qt)
    page = TasksPage(device_name=str)
    qtbot.addWidget(page)
    page.apply_changes([summary(f"t{i:03}", float(i)) for i in range(120)], [])
    assert [t.id for t in page.model.tasks] == [f"t{i:03}" for i in reversed(range(120))]
    assert page.model.row_of("t119") == 0 and page.table.isVisibleTo(page)
    page.apply_changes([summary("t200", 200.0)], ["t000"])
    assert page.model.row_of("t200") == 0 and page.model.rowCount() == 120
