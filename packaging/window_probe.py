"""Start PoolNet's desktop app and exit the moment its first window is exposed.

Run it inside a bundle, so the installed app is what starts:
    /opt/poolnet/poolnet-desktop --poolnet-run-python window_probe.py [poolnet-desktop options]
It calls ``poolnet_desktop.app.main`` as the entry point does, prints ``window-shown TITLE``
and leaves at once with ``os._exit``: what is measured ends at the window, not at a shutdown.
"""

import os
import sys

import PySide6.QtWidgets as QtWidgets
from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QWindow


class _ExposeWatcher(QObject):
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.Expose and isinstance(watched, QWindow) and watched.isExposed():
            print(f"window-shown {watched.title()}", flush=True)
            os._exit(0)
        return False


class _WatchedApplication(QtWidgets.QApplication):
    """The app's QApplication with the watcher on every event (installed before app imports)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self._watcher = _ExposeWatcher()
        self.installEventFilter(self._watcher)


QtWidgets.QApplication = _WatchedApplication

from poolnet_desktop.app import main  # noqa: E402 - must see the patched QApplication

sys.exit(main(sys.argv[1:]))
