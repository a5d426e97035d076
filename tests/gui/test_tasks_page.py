"""The Tasks page follows the task changes the pool pushes: rows inserted, updated in place and
removed; the window never polls, and "Forget" deletes an ended task from the pool. The selected
sweep's shards show their values."""

from __future__ import annotations

import textwrap
from pathlib import Path

from poolnet_desktop.core.matrix import MatrixValue
from poolnet_desktop.core.task_protocol import ShardSummary, TaskSummary
from poolnet_desktop.gui.tasks_page import TasksPage, sweep_lines
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


def sweep_shards(values: list[dict[str, MatrixValue]]) -> list[ShardSummary]:
    return [
        ShardSummary(index=i, state="succeeded" if i == 0 else "queued", attempt=1 if i == 0 else 0,
                     device_id="dev" if i == 0 else None, exit_code=None, reason="", values=value)
        for i, value in enumerate(values)
    ]


def test_the_selected_sweeps_values_are_shown_and_a_plain_task_hides_them(qtbot) -> None:  # noqa: ANN001
    page = TasksPage(lambda device_id: device_id)
    qtbot.addWidget(page)
    page.show()
    asked: list[str] = []
    page.shards_requested.connect(asked.append)
    page.apply_changes([summary("mc", 2.0, total=3), summary("plain", 1.0, total=2)], [])
    page.select_task("mc")
    assert asked == ["mc"]  # the page asks for the selected task's shards
    page.show_shards("mc", sweep_shards([{"rate": 0.1, "seed": 1}, {"rate": 0.1, "seed": 2}, {"rate": 0.2, "seed": 1}]))
    assert page.values_view.isVisible()
    assert page.values_view.toPlainText().splitlines() == [
        "    0  succeeded  rate=0.1 seed=1",
        "    1  queued     rate=0.1 seed=2",
        "    2  queued     rate=0.2 seed=1",
    ]
    page.select_task("plain")
    page.show_shards("mc", sweep_shards([{"rate": 0.1, "seed": 1}]))  # late: not the selected task
    page.show_shards("plain", sweep_shards([{}, {}]))
    assert asked == ["mc", "plain"]
    assert not page.values_view.isVisible() and page.values_view.toPlainText() == ""


def test_a_huge_sweep_shows_the_first_lines_and_how_many_more() -> None:
    lines = sweep_lines(sweep_shards([{"n": n} for n in range(12)]), limit=10).splitlines()
    assert lines[-2].split() == ["9", "queued", "n=9"]
    assert lines[-1] == "… and 2 more shards"


def test_a_task_submitted_here_is_selected_once_the_pool_lists_it(qtbot) -> None:  # noqa: ANN001
    """The window selects a task it just sent (to show its log); its row comes with the next
    pushed change, after the submission's answer."""
    page = TasksPage(lambda device_id: device_id)
    qtbot.addWidget(page)
    chosen: list[object] = []
    page.selected.connect(chosen.append)
    page.select_task("new")  # not listed yet
    assert page.current_task() is None
    page.apply_changes([summary("new", 1.0, state="queued")], [])
    current = page.current_task()
    assert current is not None and current.id == "new" and chosen == ["new"]
    page.apply_changes([summary("other", 2.0)], [])  # later changes do not move the selection
    current = page.current_task()
    assert current is not None and current.id == "new"
