"""The task detail line says what a shard held ahead waits for, never that it runs."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from poolnet_desktop.core.task_protocol import ShardSummary, TaskSummary
from poolnet_desktop.gui.tasks_page import TasksPage


def test_a_held_shard_is_shown_waiting_on_its_device_behind_the_shard_it_follows(qtbot: QtBot) -> None:
    page = TasksPage(lambda device_id: {"pn-desk2": "desk2"}.get(device_id, device_id))
    qtbot.addWidget(page)
    shards = [
        ShardSummary(index=0, state="running", attempt=1, device_id="pn-desk2", exit_code=None, reason=""),
        ShardSummary(index=1, state="assigned", attempt=1, device_id="pn-desk2", exit_code=None,
                     reason="waiting on desk2 behind render (shard 0)"),
    ]
    page.apply_changes([TaskSummary(id="t-1", name="render", state="running", total=2, done=0, succeeded=0,
                                    running=1, queued=0, submitted_at=0.0, waiting=1)], [])
    page.select_task("t-1")
    page.show_shards("t-1", shards)  # as the pool lists them when the task is selected
    detail = page.detail_label.text()
    assert "1 running, 1 waiting on members" in detail
    assert detail.endswith("waiting on desk2 behind render (shard 0)")
