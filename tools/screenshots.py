"""Render each tab of the real desktop app to PNG, offscreen, light and dark.

    QT_QPA_PLATFORM=offscreen .venv/bin/python tools/screenshots.py [OUT_DIR] [--seconds N]

Nothing is simulated: the app hosts a real pool on 127.0.0.1 (discovery off), two more real
members join it from this process with their own identities (named "render-box" and
"anna-laptop"; they report this machine's resources), the example task ``resources/examples/
sweep`` is dropped on the Tasks tab as a real QDropEvent and runs to the end, and the charts
collect ``--seconds`` of real samples. Writes ``{dashboard,devices,tasks,settings}-{light,dark}.png``
to OUT_DIR (default ``docs/screenshots``), and first ``first-start-light.png``: the window of a
computer in no pool yet, showing itself. Everything lives in a temporary folder, removed after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QT_API", "pyside6")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import qasync  # noqa: E402
from PySide6.QtCore import QMimeData, QPoint, QPointF, QSettings, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDragEnterEvent, QDropEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from poolnet_desktop.app import DesktopApp  # noqa: E402
from poolnet_desktop.gui.main_window import PAGES  # noqa: E402
from poolnet_desktop.gui.settings_model import SettingsStore  # noqa: E402
from poolnet_desktop.gui.theme import apply_theme  # noqa: E402
from poolnet_desktop.runtime.member.member import Member, MemberOptions  # noqa: E402
from poolnet_desktop.runtime.net.discovery import DiscoverySettings  # noqa: E402

EXAMPLE = ROOT / "resources" / "examples" / "sweep"
OFF = DiscoverySettings(enabled=False)


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise SystemExit(f"screenshots: gave up waiting for {what}") from None


def drop(widget, paths: list[Path]) -> None:  # noqa: ANN001 (any QWidget)
    """Deliver a drag-enter then a drop of local files, as a file manager would."""
    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    args = (Qt.DropAction.CopyAction, data, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, QDragEnterEvent(QPoint(20, 20), *args))
    QApplication.sendEvent(widget, QDropEvent(QPointF(20, 20), *args))


async def capture_first_start(out: Path, scratch: Path) -> None:
    """The window as a new user first sees it: this computer alone, live, and the two ways in."""
    store = SettingsStore(QSettings(str(scratch / "first.ini"), QSettings.Format.IniFormat))
    store.update(discovery=False, data_dir=str(scratch / "first"), device_name="workstation")
    app = DesktopApp(store, bind="127.0.0.1", discovery=OFF, open_path=lambda _path: None)
    app.window.resize(1280, 820)
    running = asyncio.create_task(app.run(minimised=False))
    try:
        await until(lambda: app.window.model.totals.devices == 1, 20, "this computer's figures")
        await asyncio.sleep(8)  # a few samples on the charts
        app.window.ensure_charts().refresh()
        path = out / "first-start-light.png"
        app.window.grab().save(str(path))
        print(path)
    finally:
        app.quit()
        await running


async def capture(qt: QApplication, out: Path, seconds: float, scratch: Path) -> None:
    settings = QSettings(str(scratch / "settings.ini"), QSettings.Format.IniFormat)
    store = SettingsStore(settings)
    store.update(host_pool=True, host_port=0, discovery=False, data_dir=str(scratch / "host"),
                 device_name="workstation")
    app = DesktopApp(store, bind="127.0.0.1", discovery=OFF, open_path=lambda _path: None)
    window = app.window
    window.resize(1280, 820)
    running = asyncio.create_task(app.run(minimised=False))
    await until(lambda: app.bridge.host is not None, 20, "the pool to start")
    host = app.bridge.host
    assert host is not None
    members = [
        Member(MemberOptions(url=host.local_url, data_dir=scratch / name, name=name,
                             code=host.pairing_code, discovery=OFF))
        for name in ("render-box", "anna-laptop")
    ]
    member_tasks = [asyncio.create_task(m.run()) for m in members]
    try:
        await until(lambda: window.model.totals.devices >= 3, 30, "three devices online")
        window.show_page(PAGES.index("Tasks"))
        drop(window.tasks.drop_zone, [EXAMPLE])
        await until(lambda: any(t.state == "succeeded" for t in window.tasks.model.tasks), 120, "the task to finish")
        await asyncio.sleep(max(0.0, seconds))
        await until(lambda: bool(window.tasks.log_view.toPlainText()), 20, "the task's log")
        for scheme in ("light", "dark"):
            apply_theme(qt, dark=scheme == "dark")
            for index, page in enumerate(PAGES):
                window.show_page(index)
                await asyncio.sleep(0.3)  # the loop paints and lays out meanwhile
                if index == 0:
                    window.ensure_charts().refresh()
                path = out / f"{page.lower()}-{scheme}.png"
                window.grab().save(str(path))
                print(path)
    finally:
        for member in members:
            await member.stop()
        await asyncio.gather(*member_tasks, return_exceptions=True)
        app.quit()
        await running


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--seconds", type=float, default=20.0, help="chart samples to collect after the task")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    qt = QApplication.instance() or QApplication([])
    assert isinstance(qt, QApplication)
    with tempfile.TemporaryDirectory(prefix="poolnet-shots-") as scratch, \
            asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(qt)) as runner:
        runner.run(capture_first_start(args.out, Path(scratch)))
        runner.run(capture(qt, args.out, args.seconds, Path(scratch)))


if __name__ == "__main__":
    main()
