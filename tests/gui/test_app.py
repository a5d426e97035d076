"""The real desktop app on the qasync loop: hosting, a member in another process, tasks by drop.

Everything is real: the window (offscreen), the pool host on 127.0.0.1 with discovery off,
members as subprocesses of ``python -m poolnet_desktop join``, TLS WebSockets, task shards as
subprocesses. Waits poll with ``await asyncio.sleep`` under a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from poolnet_desktop.app import WINDOW, DesktopApp, claim_data_dir
from poolnet_desktop.gui.bridge import DiscoverySettings
from poolnet_desktop.gui.pool_model import Resource
from poolnet_desktop.gui.settings_model import SettingsStore
from poolnet_desktop.runtime.instance_lock import InstanceLock
from tests.conftest import SANDBOXED_SHARDS, linux_only, posix_only

OFF = DiscoverySettings(enabled=False)


async def wait_for(condition: Callable[[], object], timeout: float = 45.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


class Desktop:
    """A running ``DesktopApp`` and what the test needs around it."""

    def __init__(self, app: DesktopApp, opened: list[Path], settings: Path) -> None:
        self.app, self.opened, self.settings = app, opened, settings
        self.window, self.bridge = app.window, app.bridge

    async def host(self) -> tuple[int, str]:
        """Switch Host pool on through its checkbox; the pool's port and pairing code."""
        self.window.settings.host_toggle.setChecked(True)
        await wait_for(lambda: self.bridge.host is not None and self.window.settings.pairing_code.text() != "–")
        assert self.bridge.host is not None
        return self.bridge.host.server.port, self.window.settings.pairing_code.text()


@contextlib.asynccontextmanager
async def running_desktop(tmp_path: Path) -> AsyncIterator[Desktop]:
    """The app, started and stopped inside the test itself: an async fixture would leave its
    tasks alive between pytest's phases, when pytest-qt processes Qt events with no asyncio
    loop running."""
    settings = tmp_path / "settings.ini"
    store = SettingsStore(QSettings(str(settings), QSettings.Format.IniFormat))
    store.update(host_port=0, discovery=False, data_dir=str(tmp_path / "data"), device_name="this-box",
                 pause_on_battery=False)
    opened: list[Path] = []
    app = DesktopApp(store, bind="127.0.0.1", discovery=OFF, open_path=opened.append)
    running = asyncio.ensure_future(app.run(minimised=False))
    try:
        yield Desktop(app, opened, settings)
    finally:
        app.quit()
        async with asyncio.timeout(30):
            await running
        app.window.deleteLater()


async def join_in_another_process(port: int, code: str, data_dir: Path, name: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "POOLNET_DISCOVERY": "off", "POOLNET_PAIRING_CODE": code}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "poolnet_desktop", "join", f"127.0.0.1:{port}",
        "--no-discovery", "--data-dir", str(data_dir), "--name", name,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env,
    )


def device_named(desktop: Desktop, name: str):  # noqa: ANN201 (a DeviceView or None)
    return next((d for d in desktop.window.model.devices() if d.name == name), None)


async def test_host_pool_toggle_opens_and_closes_the_port(tmp_path: Path) -> None:
    async with running_desktop(tmp_path) as desktop:
        assert desktop.bridge.host is None
        port, code = await desktop.host()
        assert desktop.bridge.host is not None
        shown = desktop.window.settings.host_fingerprint.text().replace(" ", "")
        assert shown == desktop.bridge.host.identity.cert_fingerprint.upper()
        assert desktop.window.settings.device_id_label.text().replace(" ", "") == desktop.bridge.device_id
        assert len(code.replace("-", "")) >= 8
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
        # This machine's own member joins its own pool and shows as a card, online.
        await wait_for(lambda: (d := device_named(desktop, "this-box")) is not None and d.is_online)
        desktop.window.devices.flush()
        assert desktop.window.devices.card(device_named(desktop, "this-box").id) is not None

        # "New code" replaces the code the host accepts, and the panel shows the new one.
        desktop.window.settings.new_code_button.click()
        await wait_for(lambda: desktop.window.settings.pairing_code.text() != code)
        assert desktop.window.settings.pairing_code.text() == desktop.bridge.host.pairing_code

        desktop.window.settings.host_toggle.setChecked(False)
        # The panel clears once the host has stopped and its port is closed.
        await wait_for(lambda: desktop.window.settings.pairing_code.text() == "–")
        assert desktop.bridge.host is None
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)


@posix_only("SIGKILL")
async def test_a_member_in_another_process_appears_then_greys_when_killed_and_can_be_forgotten(
    tmp_path: Path
) -> None:
    async with running_desktop(tmp_path) as desktop:
        port, code = await desktop.host()
        process = await join_in_another_process(port, code, tmp_path / "other", "other-box")
        try:
            await wait_for(lambda: (d := device_named(desktop, "other-box")) is not None and d.is_online, 30)
        finally:
            process.send_signal(signal.SIGKILL)
            await process.wait()
        device_id = device_named(desktop, "other-box").id
        await wait_for(lambda: not desktop.window.model.device(device_id).is_online)
        desktop.window.devices.flush()
        card = desktop.window.devices.card(device_id)
        assert card is not None and not card.device.is_online
        assert not card.forget_button.isHidden()  # an offline card offers Forget

        card.forget_button.click()
        await wait_for(lambda: desktop.window.model.device(device_id) is None)


async def test_the_charts_receive_points_from_the_live_pool(tmp_path: Path) -> None:
    async with running_desktop(tmp_path) as desktop:
        await desktop.host()
        await wait_for(lambda: desktop.window.model.totals.devices >= 1)
        charts = desktop.window.ensure_charts()
        await wait_for(lambda: len(desktop.window.model.history) >= 3)
        charts.refresh()
        used, total = charts.pool_curves(Resource.CPU)
        x, y = total.getData()
        assert x is not None and len(x) >= 3
        assert y[-1] == desktop.window.model.totals.total_cpu_cores > 0


def drop_files(widget, paths: list[Path]) -> None:  # noqa: ANN001 (a QWidget)
    """A drag-enter then a drop carrying file URLs, as a file manager sends them."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    enter = QDragEnterEvent(QPoint(10, 10), *args)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted()
    QApplication.sendEvent(widget, QDropEvent(QPointF(10, 10), *args))


@linux_only(SANDBOXED_SHARDS)
async def test_a_dropped_manifest_runs_to_the_end_shows_its_log_and_opens_its_results(
    tmp_path: Path
) -> None:
    async with running_desktop(tmp_path) as desktop:
        await desktop.host()
        await wait_for(lambda: (d := device_named(desktop, "this-box")) is not None and d.is_online)
        job = tmp_path / "job"
        job.mkdir()
        (job / "work.py").write_text(textwrap.dedent("""
            import pathlib, sys
            shard = sys.argv[1]
            pathlib.Path("out").mkdir()
            pathlib.Path(f"out/{shard}.txt").write_text(f"shard {shard} squared is {int(shard) ** 2}")
            print(f"hello from shard {shard}")
        """))
        (job / "squares.pool.toml").write_text(textwrap.dedent("""
            name = "squares"
            command = ["{python}", "work.py", "{shard}"]
            shards = 3
            files = ["work.py"]
            outputs = ["out/*.txt"]
            [resources]
            cpu = 0.1
        """))
        (job / "notes.txt").write_text("not a task")
        tasks = desktop.window.tasks
        desktop.window.show_page(2)

        drop_files(tasks.drop_zone, [job / "notes.txt"])
        assert "notes.txt is not a task" in tasks.drop_zone.message_label.text()

        drop_files(tasks.drop_zone, [job])  # a folder holding one manifest
        await wait_for(lambda: any(t.name == "squares" and t.state == "succeeded" for t in tasks.model.tasks), 60)
        task = next(t for t in tasks.model.tasks if t.name == "squares")
        assert (task.done, task.total, task.succeeded) == (3, 3, 3)
        await wait_for(lambda: tasks.drop_zone.message_label.text() == "")  # "in the queue" is gone
        row = tasks.model.row_of(task.id)
        assert tasks.model.index(row, 2).data() == "3 / 3"
        assert tasks.model.index(row, 3).data() == "this-box"

        tasks.select_task(task.id)
        await wait_for(lambda: tasks.log_view.toPlainText().count("hello from shard") == 3)
        assert "[1] hello from shard 1" in tasks.log_view.toPlainText()
        assert tasks.results_button.isEnabled() and not tasks.cancel_button.isEnabled()
        tasks.results_button.click()
        await wait_for(lambda: desktop.opened)
        folder = desktop.opened[0]
        assert (folder / "2" / "out" / "2.txt").read_text() == "shard 2 squared is 4"


async def test_settings_made_in_the_window_survive_a_restart_of_the_window(tmp_path: Path) -> None:
    async with running_desktop(tmp_path) as desktop:
        page = desktop.window.settings
        page.sliders["cpu_percent"].slider.setValue(35)  # as the keyboard or a click would
        page.gpu_check.setChecked(False)
        page.in_use_check.setChecked(True)
        page.name_edit.setText("renamed-box")
        page.name_edit.editingFinished.emit()
        await wait_for(lambda: desktop.app.store.prefs.device_name == "renamed-box")
        desktop.app.quit()
        await asyncio.sleep(0.5)

        reopened = SettingsStore(QSettings(str(desktop.settings), QSettings.Format.IniFormat))
        app = DesktopApp(reopened, bind="127.0.0.1", discovery=OFF, open_path=lambda _p: None)
        page = app.window.settings
        assert page.sliders["cpu_percent"].slider.value() == 35
        assert not page.gpu_check.isChecked()
        assert page.in_use_check.isChecked()
        assert page.name_edit.text() == "renamed-box"
        assert reopened.prefs.limits.cpu_percent == 35.0
        app.window.deleteLater()


async def test_closing_the_window_without_a_tray_quits_and_everything_stops(tmp_path: Path) -> None:
    async with running_desktop(tmp_path) as desktop:
        port, _ = await desktop.host()
        assert not desktop.app.tray.available  # offscreen has no tray: nothing could reopen it
        desktop.window.close()
        await wait_for(lambda: desktop.bridge.host is None and desktop.bridge.member is None)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)


async def test_a_second_window_on_the_same_data_folder_brings_the_first_to_the_front(tmp_path: Path) -> None:
    async with running_desktop(tmp_path) as desktop:
        held = InstanceLock(desktop.bridge.data_dir, WINDOW).acquire()  # as the first window's main() holds it
        try:
            desktop.window.hide()
            second = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "poolnet_desktop.app", "--settings", str(tmp_path / "second.ini"),
                "--data-dir", str(desktop.bridge.data_dir), "--no-discovery",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
            )
            try:
                async with asyncio.timeout(60):
                    out, err = await second.communicate()
            finally:
                if second.returncode is None:  # it would have opened a second window
                    second.kill()
                    await second.wait()
            assert second.returncode == 0, err.decode()
            assert "brought to the front" in out.decode()
            await wait_for(desktop.window.isVisible, timeout=5)
        finally:
            held.release()


async def test_a_window_started_beside_poolnet_join_says_who_shares_this_computer(tmp_path: Path) -> None:
    held = InstanceLock(tmp_path, "poolnet join").acquire()
    told: list[str] = []
    try:
        assert await claim_data_dir(tmp_path, told.append) == 1
    finally:
        held.release()
    assert told == [f"poolnet join (process {os.getpid()}) is already sharing this computer from {tmp_path}."
                    " Stop it first, or start the window with another data folder (--data-dir)."]
    claimed = await claim_data_dir(tmp_path, told.append)
    assert isinstance(claimed, InstanceLock)
    claimed.release()


async def test_open_log_folder_opens_the_data_folders_logs(tmp_path: Path) -> None:
    async with running_desktop(tmp_path) as desktop:
        desktop.window.settings.logs_button.click()
        assert desktop.opened == [tmp_path / "data" / "logs"]


async def test_the_window_reopens_where_it_was_on_the_page_it_showed(tmp_path: Path) -> None:
    async with running_desktop(tmp_path) as desktop:
        desktop.window.resize(860, 610)  # the offscreen screen is narrow: keep within it
        desktop.window.nav.setCurrentRow(2)  # Tasks, as a click in the sidebar
        await asyncio.sleep(0.1)
    reopened = SettingsStore(QSettings(str(desktop.settings), QSettings.Format.IniFormat))
    app = DesktopApp(reopened, bind="127.0.0.1", discovery=OFF, open_path=lambda _p: None)
    assert (app.window.width(), app.window.height()) == (860, 610)
    assert app.window.stack.currentIndex() == 2 and app.window.title_label.text() == "Tasks"
    app.window.deleteLater()


async def test_a_first_start_shows_this_computer_live_and_hosting_takes_it_into_the_pool(tmp_path: Path) -> None:
    async with running_desktop(tmp_path) as desktop:
        window = desktop.window
        await wait_for(lambda: device_named(desktop, "this-box (this computer, not in a pool)") is not None)
        alone = device_named(desktop, "this-box (this computer, not in a pool)")
        assert alone.resources.cpu_cores > 0 and alone.resources.memory_total > 0
        assert window.model.totals.total_cpu_cores == alone.resources.cpu_cores
        assert window.get_started.isVisible()
        assert window.link_label.text() == "○ not in a pool"

        window.get_started.host_button.click()
        await wait_for(lambda: desktop.bridge.host is not None and device_named(desktop, "this-box") is not None)
        assert not window.get_started.isVisible()
        assert device_named(desktop, "this-box (this computer, not in a pool)") is None
        assert desktop.app.store.prefs.host_pool


async def test_join_a_pool_from_the_first_start_goes_to_the_address_field(tmp_path: Path) -> None:
    async with running_desktop(tmp_path) as desktop:
        desktop.window.get_started.join_button.click()
        assert desktop.window.stack.currentWidget() is desktop.window.settings


@linux_only(SANDBOXED_SHARDS)
async def test_retry_failed_shards_reruns_the_task_and_submit_again_makes_a_new_one(tmp_path: Path) -> None:
    async with running_desktop(tmp_path) as desktop:
        await desktop.host()
        await wait_for(lambda: (d := device_named(desktop, "this-box")) is not None and d.is_online)
        manifest = tmp_path / "flaky.pool.toml"
        manifest.write_text('command = ["sh", "-c", "exit 3"]\nretries = 0\n[resources]\ncpu = 0.1\n')
        tasks = desktop.window.tasks
        drop_files(tasks.drop_zone, [manifest])
        await wait_for(lambda: any(t.name == "flaky" and t.state == "failed" for t in tasks.model.tasks), 60)
        task = next(t for t in tasks.model.tasks if t.name == "flaky")
        tasks.select_task(task.id)
        assert tasks.retry_button.isEnabled() and tasks.submit_again_button.isEnabled()
        held = desktop.bridge.host.tasks.tasks[task.id]  # the coordinator's own record
        assert held.shards[0].attempt == 1

        tasks.retry_button.click()
        await wait_for(lambda: held.shards[0].attempt == 2 and held.state.value == "failed", 30)
        assert [t.name for t in tasks.model.tasks].count("flaky") == 1

        tasks.submit_again_button.click()
        await wait_for(lambda: [t.name for t in tasks.model.tasks].count("flaky") == 2, 30)


@posix_only("SIGKILL")
async def test_the_host_panel_shows_each_devices_permissions_and_takes_submit_away(tmp_path: Path) -> None:
    async with running_desktop(tmp_path) as desktop:
        port, code = await desktop.host()
        process = await join_in_another_process(port, code, tmp_path / "other", "other-box")
        try:
            await wait_for(lambda: (d := device_named(desktop, "other-box")) is not None and d.is_online, 30)
            device_id = device_named(desktop, "other-box").id
            panel = desktop.window.settings.permissions
            await wait_for(lambda: device_id in panel.submit_boxes)
            assert desktop.bridge.host.identity.device_id not in panel.submit_boxes  # the owner is not listed
            switch = panel.submit_boxes[device_id]
            assert switch.isChecked()  # paired with the code: may submit
            switch.click()
            store = desktop.bridge.host.access.store
            async with asyncio.timeout(30):
                while (await store.approved(device_id)).permissions != {"member", "observer"}:
                    await asyncio.sleep(0.05)
            # The panel is drawn again from the store.
            await wait_for(lambda: panel.submit_boxes.get(device_id) not in (None, switch))
            assert not panel.submit_boxes[device_id].isChecked()
        finally:
            process.send_signal(signal.SIGKILL)
            await process.wait()


async def test_hosting_on_a_port_in_use_unticks_host_pool_and_says_why(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        async with running_desktop(tmp_path) as desktop:
            desktop.app.store.update(host_port=taken.getsockname()[1])
            desktop.window.settings.host_toggle.setChecked(True)
            await wait_for(lambda: "Not hosting" in desktop.window.settings.host_address.text())
            assert "Address already in use" in desktop.window.settings.host_address.text()
            await wait_for(lambda: not desktop.window.settings.host_toggle.isChecked())
            assert desktop.bridge.host is None and not desktop.app.store.prefs.host_pool


async def test_what_hosts_and_other_submitters_wrote_shows_as_text_in_the_window(tmp_path: Path) -> None:
    """A refusal's reason comes from the host (or a fake one), a finished task's name from
    whoever submitted it: shown in labels that take HTML-looking text for rich text, markup in
    them drew what it liked in the window's status and the Settings page."""
    markup = "<h1>Pool upgraded</h1><a href='http://evil.example'>sign in again</a>"
    async with running_desktop(tmp_path) as desktop:
        window = desktop.window
        window.show_problem(f"Task failed: {markup}")
        window.settings.show_member("refused", markup)
        window.tasks.drop_zone.show_message(markup, error=True)
        for label in (window.status_label, window.settings.member_label, window.tasks.drop_zone.message_label):
            assert label.textFormat() == Qt.TextFormat.PlainText
            assert markup in label.text()
