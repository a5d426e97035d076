"""``poolnet-desktop``: the desktop app, its window and tray, on one qasync event loop.

Qt and asyncio share the main thread (qasync): the runtime's coordinator, member and links run
as asyncio tasks between Qt events, with no thread for networking. ``main`` makes the
QApplication and the loop; ``DesktopApp`` builds the settings, bridge, tray and window, starts
the runtime and runs until Quit (window, tray, Ctrl+Q, SIGINT or SIGTERM), then stops it all in
order. Closing the window alone keeps PoolNet sharing in the tray, hence
``setQuitOnLastWindowClosed(False)`` and an asyncio.Event to end ``run`` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_API", "pyside6")  # qasync would otherwise prefer PyQt when present

from PySide6.QtCore import QSettings, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication, QMessageBox  # noqa: E402

from poolnet_desktop import __version__  # noqa: E402
from poolnet_desktop.gc_tuning import tune_for_serving  # noqa: E402
from poolnet_desktop.gui.bridge import DiscoverySettings, PoolBridge  # noqa: E402
from poolnet_desktop.gui.main_window import MainWindow, open_folder  # noqa: E402
from poolnet_desktop.gui.settings_model import SettingsStore  # noqa: E402
from poolnet_desktop.gui.theme import install_theme  # noqa: E402
from poolnet_desktop.gui.tray import PoolTray  # noqa: E402
from poolnet_desktop.logs import configure_logging, log_to_file  # noqa: E402
from poolnet_desktop.runtime.datadir import PRIVATE_UMASK, DataDirError, resolve_data_dir  # noqa: E402
from poolnet_desktop.runtime.instance_lock import AlreadyRunning, InstanceLock, ask_to_show, listen_for_show  # noqa: E402

WINDOW = "the PoolNet window"

log = logging.getLogger(__name__)


class DesktopApp:
    """The app's objects and their lifetime; ``bind`` and ``discovery`` are for tests."""

    def __init__(
        self,
        store: SettingsStore,
        *,
        bind: str = "0.0.0.0",
        discovery: DiscoverySettings | None = None,
        open_path: Callable[[Path], None] = open_folder,
    ) -> None:
        # Closing the window must not end Qt's loop under asyncio: Quit ends ``run`` instead.
        QApplication.setQuitOnLastWindowClosed(False)
        self.store = store
        self.bridge = PoolBridge(store, bind=bind, discovery=discovery)
        self.tray = PoolTray()
        self.window = MainWindow(store, self.bridge, self.tray, open_path=open_path)
        self._quit = asyncio.Event()
        self.window.quit_requested.connect(self.quit)

    def quit(self) -> None:
        self._quit.set()

    async def run(self, minimised: bool | None = None) -> None:
        """Show the window (unless minimised to an existing tray), start the runtime, and
        wait for Quit; then stop everything, whatever ended the wait."""
        if minimised is None:
            minimised = self.store.prefs.start_minimised
        if not (minimised and self.tray.available):
            self.window.show()
        second_windows = await listen_for_show(self.bridge.data_dir, self.window.bring_to_front)
        try:
            await self.bridge.start()
            await self._quit.wait()
        finally:
            if second_windows is not None:
                second_windows.close()
            self.window.hide()
            await self.bridge.stop()
            self.tray.hide()


async def claim_data_dir(data_dir: Path, tell: Callable[[str], None]) -> InstanceLock | int:
    """The window's hold on its data folder, or the exit code when another PoolNet has it:
    0 when that is a window, brought to the front instead of opening a second one; 1 after
    telling the user, when it is ``poolnet join`` or ``host`` (or a window that did not answer)."""
    try:
        return InstanceLock(data_dir, WINDOW).acquire()
    except AlreadyRunning as exc:
        if exc.holder is not None and exc.holder.program == WINDOW and await ask_to_show(data_dir):
            print("PoolNet is already open: its window was brought to the front.", flush=True)
            return 0
        tell(f"{exc}. Stop it first, or start the window with another data folder (--data-dir).")
        return 1


def _tell_user(text: str) -> None:
    print(f"poolnet-desktop: {text}", file=sys.stderr, flush=True)
    QMessageBox.warning(None, "PoolNet is already running", text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="poolnet-desktop", description="PoolNet's desktop app.")
    parser.add_argument("--version", action="version", version=f"poolnet-desktop {__version__}")
    parser.add_argument("--minimised", action="store_true", help="start in the tray (where there is one)")
    parser.add_argument("--settings", type=Path, help="keep the settings in this INI file (default: the platform's)")
    parser.add_argument("--data-dir", help="where this instance keeps its data and identity (saved in the settings)")
    parser.add_argument("--no-discovery", action="store_true", help="no zeroconf on the LAN (or POOLNET_DISCOVERY=off)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    return parser


def _stop_on_signals(app: DesktopApp) -> None:
    """SIGINT and SIGTERM quit cleanly. Python runs signal handlers only between bytecodes,
    so a slow idle timer gives it the chance while Qt waits for events."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, ValueError, RuntimeError):
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(app.quit))
    ticker = QTimer(app.window)
    ticker.timeout.connect(lambda: None)
    ticker.start(250)


async def _run(args: argparse.Namespace) -> int:
    settings = QSettings(str(args.settings), QSettings.Format.IniFormat) if args.settings else None
    store = SettingsStore(settings)
    if args.data_dir:
        store.update(data_dir=str(Path(args.data_dir).expanduser().resolve()))
    if args.no_discovery:
        store.update(discovery=False)
    try:
        data_dir = resolve_data_dir(store.prefs.data_path)
    except DataDirError as exc:
        print(f"poolnet-desktop: {exc}", file=sys.stderr)
        return 2
    lock = await claim_data_dir(data_dir, _tell_user)
    if isinstance(lock, int):
        return lock
    log_to_file(data_dir, WINDOW)
    store.share_pause_rules()
    try:
        app = DesktopApp(store)
        _stop_on_signals(app)
        await app.run(minimised=True if args.minimised else None)
    finally:
        lock.release()
    return 0


def main(argv: list[str] | None = None) -> int:
    os.umask(PRIVATE_UMASK)  # the task store, inputs and keys are never world-readable
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    import qasync

    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(qt_app, QApplication)
    qt_app.setApplicationName("PoolNet")
    qt_app.setOrganizationName("PoolNet")
    install_theme(qt_app)
    tune_for_serving()  # "Host pool" may be switched on for a large pool
    with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(qt_app)) as runner:
        return runner.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
