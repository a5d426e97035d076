"""The system tray: status at a glance, Pause sharing, Open, Quit, and desktop notifications.

Where the platform has no tray (a bare X server, offscreen), ``available`` is False, the menu
still exists (the window's own menu reuses its actions) and closing the window quits instead of
hiding it, since nothing would be left to bring it back.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QAction, QColor, QIcon, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QMenu, QSystemTrayIcon


def app_icon(colour: str = "#3366ee", busy: bool = True) -> QIcon:
    """PoolNet's mark, drawn here so no image file has to ship: three linked nodes in a
    rounded square (greyed when sharing is paused)."""
    icon = QIcon()
    for size in (16, 32, 64, 128):
        pixmap = QPixmap(size, size)
        pixmap.fill(Qt.GlobalColor.transparent)
        p = QPainter(pixmap)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        s = size / 32.0
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(colour if busy else "#8a919e"))
        p.drawRoundedRect(QRectF(1 * s, 1 * s, 30 * s, 30 * s), 8 * s, 8 * s)
        nodes = [QPointF(16 * s, 9 * s), QPointF(9 * s, 22 * s), QPointF(23 * s, 22 * s)]
        p.setPen(QPen(QColor("white"), max(1.0, 2 * s)))
        for a, b in ((0, 1), (1, 2), (2, 0)):
            p.drawLine(nodes[a], nodes[b])
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor("white"))
        for node in nodes:
            p.drawEllipse(node, 3.6 * s, 3.6 * s)
        p.end()
        icon.addPixmap(pixmap)
    return icon


class PoolTray(QObject):
    """The tray icon and its menu; emits what the user picks."""

    open_requested = Signal()
    quit_requested = Signal()
    pause_toggled = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.menu = QMenu()
        self.status_action = QAction("Starting…", self)
        self.status_action.setEnabled(False)
        self.pause_action = QAction("Pause sharing", self)
        self.pause_action.setCheckable(True)
        self.pause_action.toggled.connect(self.pause_toggled)
        self.open_action = QAction("Open PoolNet", self)
        self.open_action.triggered.connect(self.open_requested)
        self.quit_action = QAction("Quit PoolNet", self)
        self.quit_action.triggered.connect(self.quit_requested)
        self.menu.addAction(self.status_action)
        self.menu.addSeparator()
        self.menu.addAction(self.pause_action)
        self.menu.addAction(self.open_action)
        self.menu.addSeparator()
        self.menu.addAction(self.quit_action)
        self.icon: QSystemTrayIcon | None = None
        if QSystemTrayIcon.isSystemTrayAvailable():
            self.icon = QSystemTrayIcon(app_icon(), self)
            self.icon.setContextMenu(self.menu)
            self.icon.activated.connect(self._on_activated)
            self.icon.show()

    @property
    def available(self) -> bool:
        return self.icon is not None

    def set_status(self, text: str, sharing: bool) -> None:
        self.status_action.setText(text)
        if self.icon is not None:
            self.icon.setToolTip(f"PoolNet: {text}")
            self.icon.setIcon(app_icon(busy=sharing))

    def notify(self, title: str, text: str, error: bool = False) -> bool:
        """Show a desktop notification; False where there is no tray to show it from."""
        if self.icon is None or not QSystemTrayIcon.supportsMessages():
            return False
        kind = QSystemTrayIcon.MessageIcon.Warning if error else QSystemTrayIcon.MessageIcon.Information
        self.icon.showMessage(title, text, kind, 8000)
        return True

    def hide(self) -> None:
        if self.icon is not None:
            self.icon.hide()

    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.open_requested.emit()
