"""The Tasks page shows each shard's sweep values for the selected task."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from poolnet_desktop.core.task_protocol import ShardSummary, TaskSummary
from poolnet_desktop.gui.tasks_page import TasksPage, sweep_lines


def summary(task_id: str, values: list[dict] | None) -> TaskSummary:
    shards = [
        ShardSummary(index=i, state="succeeded" if i == 0 else "queued", attempt=1 if i == 0 else 0,
                     device_id="dev" if i == 0 else None, exit_code=None, reason="",
                     values=value)
        for i, value in enumerate(values or [None, None])
    ]
    return TaskSummary(id=task_id, name=task_id, state="running", total=len(shards), done=1,
                       succeeded=1, running=0, queued=len(shards) - 1, submitted_at=1.0,
                       shards=shards)


def test_the_selected_sweeps_values_are_shown_and_a_plain_task_hides_them(qtbot: QtBot) -> None:
    page = TasksPage(lambda device_id: device_id)
    qtbot.addWidget(page)
    page.show()
    sweep = summary("mc", [{"rate": 0.1, "seed": 1}, {"rate": 0.1, "seed": 2}, {"rate": 0.2, "seed": 1}])
    page.set_tasks([sweep, summary("plain", None)])
    page.select_task("mc")
    assert page.values_view.isVisible()
    assert page.values_view.toPlainText().splitlines() == [
        "    0  succeeded  rate=0.1 seed=1",
        "    1  queued     rate=0.1 seed=2",
        "    2  queued     rate=0.2 seed=1",
    ]
    page.select_task("plain")
    assert not page.values_view.isVisible()
    assert page.values_view.toPlainText() == ""


def test_a_huge_sweep_shows_the_first_lines_and_how_many_more() -> None:
    big = summary("big", [{"n": n} for n in range(12)])
    lines = sweep_lines(big, limit=10).splitlines()
    assert lines[-2].split() == ["9", "queued", "n=9"]
    assert lines[-1] == "… and 2 more shards"
