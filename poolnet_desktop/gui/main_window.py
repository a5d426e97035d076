"""The main window: a sidebar (Dashboard, Devices, Tasks, Settings) over one stack of pages.

It owns the ``PoolModel`` the pages share and wires the bridge's signals to the pages, once,
here. The dashboard's charts import pyqtgraph (about 0.9 s), so they are built just after the
window first shows (``ensure_charts``), not before: the window appears at once.

Closing the window hides it when a tray icon can bring it back (PoolNet keeps sharing); where
there is no tray it asks to quit, as does Quit in either menu (``quit_requested``).
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QEvent, QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QFont, QHideEvent, QKeySequence, QShowEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from poolnet_desktop.core.protocol import PoolState
from poolnet_desktop.core.task_protocol import TaskSummary
from poolnet_desktop.gui.approvals import ApprovalPrompt
from poolnet_desktop.gui.bridge import PoolBridge
from poolnet_desktop.gui.charts import ResourceCharts
from poolnet_desktop.gui.devices_view import DevicesView
from poolnet_desktop.gui.get_started import GetStartedPanel
from poolnet_desktop.gui.pool_model import PoolModel
from poolnet_desktop.gui.settings_model import SettingsStore
from poolnet_desktop.gui.settings_page import SettingsPage
from poolnet_desktop.gui.tasks_page import TasksPage
from poolnet_desktop.gui.theme import Theme, theme_for
from poolnet_desktop.gui.tray import PoolTray, app_icon
from poolnet_desktop.logs import LOG_FOLDER

PAGES = ("Dashboard", "Devices", "Tasks", "Settings")
GLYPHS = ("◔", "▣", "≡", "⚙")


def open_folder(path: Path) -> None:
    QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))


def style_sheet(theme: Theme) -> str:
    """The few rules the palette cannot express: the sidebar, section cards, primary buttons."""
    return f"""
    #sidebar {{ background: {theme.surface}; border-right: 1px solid {theme.border}; }}
    #sidebar QListWidget {{ background: transparent; border: none; outline: none; }}
    #sidebar QListWidget::item {{ padding: 9px 12px; margin: 2px 10px; border-radius: 8px; color: {theme.text}; }}
    #sidebar QListWidget::item:selected {{ background: {theme.surface_alt}; color: {theme.accent}; }}
    #sidebar QListWidget::item:hover:!selected {{ background: {theme.window}; }}
    #brand {{ font-weight: 700; }}
    #muted {{ color: {theme.muted}; }}
    #pageTitle {{ font-weight: 600; }}
    #section {{ background: {theme.surface}; border: 1px solid {theme.border}; border-radius: 12px; }}
    #section QLabel {{ background: transparent; }}
    QPushButton {{ padding: 6px 14px; border-radius: 6px; border: 1px solid {theme.border};
                   background: {theme.surface}; }}
    QPushButton:hover {{ background: {theme.surface_alt}; }}
    QPushButton:disabled {{ color: {theme.offline}; }}
    QPushButton#primary {{ background: {theme.accent}; color: white; border: none; font-weight: 600; }}
    QLineEdit {{ padding: 5px 8px; border-radius: 6px; border: 1px solid {theme.border};
                 background: {theme.surface}; }}
    QTableView {{ background: {theme.surface}; border: 1px solid {theme.border}; border-radius: 10px;
                  alternate-background-color: {theme.window}; selection-background-color: {theme.surface_alt};
                  selection-color: {theme.text}; }}
    QHeaderView::section {{ background: {theme.surface}; color: {theme.muted}; border: none;
                            border-bottom: 1px solid {theme.border}; padding: 6px 8px; }}
    QPlainTextEdit {{ background: {theme.surface}; border: 1px solid {theme.border}; border-radius: 10px;
                      padding: 6px; }}
    """


class MainWindow(QMainWindow):
    """See the module docstring. ``clock`` is monotonic time for the model's history."""

    quit_requested = Signal()

    def __init__(
        self,
        store: SettingsStore,
        bridge: PoolBridge,
        tray: PoolTray,
        *,
        clock: Callable[[], float] = time.monotonic,
        open_path: Callable[[Path], None] = open_folder,
    ) -> None:
        super().__init__()
        self.store = store
        self.bridge = bridge
        self.tray = tray
        self._clock = clock
        self._open_path = open_path
        self._link = ("offline", "")
        self._paused = ""
        self._queued_notice: str | None = None  # the task the drop zone says is queued
        self._told_about_tray = False
        self.setWindowTitle("PoolNet")
        self.setWindowIcon(app_icon())
        self.resize(1180, 780)
        self.setMinimumSize(QSize(860, 560))

        self.model = PoolModel()
        self.charts: ResourceCharts | None = None
        self.dashboard = QWidget()
        self._dashboard_layout = QVBoxLayout(self.dashboard)
        self._dashboard_layout.setContentsMargins(16, 12, 16, 16)
        self.get_started = GetStartedPanel()
        self._dashboard_layout.addWidget(self.get_started)
        self.devices = DevicesView(self.model)
        self.tasks = TasksPage(self._device_name)
        self.settings = SettingsPage(store)
        self.prompt = ApprovalPrompt(self)

        self.stack = QStackedWidget()
        for page in (self.dashboard, self.devices, self.tasks, self.settings):
            self.stack.addWidget(page)
        self.nav = QListWidget()
        for glyph, name in zip(GLYPHS, PAGES):
            QListWidgetItem(f"{glyph}   {name}", self.nav)
        self.nav.currentRowChanged.connect(self.show_page)
        self.title_label = QLabel()
        self.title_label.setObjectName("pageTitle")
        title_font = QFont(self.title_label.font())
        title_font.setPointSizeF(title_font.pointSizeF() * 1.5)
        self.title_label.setFont(title_font)
        self.link_label = QLabel()
        self.link_label.setObjectName("muted")
        self.status_label = QLabel()
        self.status_label.setTextFormat(Qt.TextFormat.PlainText)  # hosts' and submitters' words
        self.status_label.setWordWrap(True)
        self.status_label.setObjectName("muted")
        self.setCentralWidget(self._layout())
        self._problem_timer = QTimer(self)
        self._problem_timer.setSingleShot(True)
        self._problem_timer.timeout.connect(self._show_status)

        quit_action = QAction("Quit PoolNet", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.quit_requested)
        self.addAction(quit_action)
        self._connect()
        geometry, saved_page = store.window_layout()
        if geometry is not None:
            self.restoreGeometry(geometry)
        self.nav.setCurrentRow(saved_page if 0 <= saved_page < len(PAGES) else 0)
        self._restyle()
        self._show_status()

    # ---- layout ----------------------------------------------------------------------------

    def _layout(self) -> QWidget:
        brand = QLabel("PoolNet")
        brand.setObjectName("brand")
        brand_font = QFont(brand.font())
        brand_font.setPointSizeF(brand_font.pointSizeF() * 1.45)
        brand.setFont(brand_font)
        icon = QLabel()
        icon.setPixmap(app_icon().pixmap(28, 28))
        head = QHBoxLayout()
        head.setContentsMargins(20, 20, 12, 16)
        head.addWidget(icon)
        head.addSpacing(6)
        head.addWidget(brand)
        head.addStretch(1)
        sidebar = QFrame()
        sidebar.setObjectName("sidebar")
        sidebar.setFixedWidth(210)
        side = QVBoxLayout(sidebar)
        side.setContentsMargins(0, 0, 0, 16)
        side.addLayout(head)
        side.addWidget(self.nav, 1)
        side.addWidget(self.status_label)
        self.status_label.setContentsMargins(20, 0, 14, 0)

        top = QHBoxLayout()
        top.setContentsMargins(24, 18, 24, 4)
        top.addWidget(self.title_label)
        top.addStretch(1)
        top.addWidget(self.link_label)
        main = QWidget()
        column = QVBoxLayout(main)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addLayout(top)
        column.addWidget(self.stack, 1)
        root = QWidget()
        row = QHBoxLayout(root)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(sidebar)
        row.addWidget(main, 1)
        return root

    def _connect(self) -> None:
        bridge, tasks, settings = self.bridge, self.tasks, self.settings
        bridge.pool_state.connect(self.apply_state)
        bridge.link_changed.connect(self._on_link)
        bridge.member_changed.connect(settings.show_member)
        bridge.member_changed.connect(lambda state, _detail: self.get_started.setVisible(state == "none"))
        self.get_started.host_requested.connect(lambda: self.store.update(host_pool=True))
        self.get_started.join_requested.connect(self._ask_where_to_join)
        bridge.host_changed.connect(settings.show_host)
        bridge.host_failed.connect(settings.show_host_problem)
        bridge.approvals_changed.connect(self._on_approvals)
        bridge.trusted_changed.connect(settings.permissions.set_devices)
        bridge.pools_found.connect(settings.show_pools)
        bridge.paused_changed.connect(self._on_paused)
        bridge.tasks_changed.connect(tasks.apply_changes)
        bridge.task_submitted.connect(self._on_submitted)
        bridge.task_finished.connect(self._on_finished)
        bridge.task_log.connect(tasks.append_log)
        bridge.task_shards.connect(tasks.show_shards)
        bridge.task_problem.connect(tasks.show_problem)
        bridge.results_ready.connect(lambda _task_id, folder: self._open_path(folder))
        bridge.problem.connect(self.show_problem)
        settings.join_requested.connect(bridge.join)
        settings.show_device_id(bridge.device_id)
        settings.open_logs_requested.connect(lambda: self._open_path(bridge.data_dir / LOG_FOLDER))
        settings.approvals.decided.connect(bridge.approve)
        settings.permissions.permission_changed.connect(bridge.set_permission)
        settings.new_code_requested.connect(bridge.new_pairing_code)
        self.prompt.decided.connect(bridge.approve)
        self.devices.forget_requested.connect(bridge.forget_device)
        tasks.submit_requested.connect(bridge.submit)
        tasks.cancel_requested.connect(bridge.cancel)
        tasks.submit_again_requested.connect(bridge.submit_again)
        tasks.retry_requested.connect(bridge.retry)
        tasks.results_requested.connect(bridge.fetch_results)
        tasks.forget_requested.connect(bridge.forget)
        tasks.selected.connect(bridge.follow_log)
        tasks.shards_requested.connect(bridge.load_shards)
        self.tray.open_requested.connect(self.bring_to_front)
        self.tray.quit_requested.connect(self.quit_requested)
        self.tray.pause_toggled.connect(bridge.set_manual_pause)

    # ---- public ----------------------------------------------------------------------------

    def show_page(self, index: int) -> None:
        self.stack.setCurrentIndex(index)
        self.title_label.setText(PAGES[index])
        if self.nav.currentRow() != index:
            self.nav.setCurrentRow(index)
        if index == 0 and self.isVisible():
            self.ensure_charts()

    def ensure_charts(self) -> ResourceCharts:
        """Build the dashboard's charts now if they are not built yet (imports pyqtgraph)."""
        if self.charts is None:
            self.charts = ResourceCharts(self.model)
            self._dashboard_layout.addWidget(self.charts)
        return self.charts

    def apply_state(self, state: PoolState) -> None:
        if self.model.apply(state, self._clock()):
            self._show_status()

    def bring_to_front(self) -> None:
        self.showNormal()
        self.raise_()
        self.activateWindow()

    def show_problem(self, text: str) -> None:
        self.status_label.setText(f"⚠ {text}")
        self._problem_timer.start(12_000)

    # ---- reactions ---------------------------------------------------------------------------

    def _ask_where_to_join(self) -> None:
        self.show_page(PAGES.index("Settings"))
        self.settings.address_edit.setFocus()

    def _device_name(self, device_id: str) -> str:
        device = self.model.device(device_id)
        return device.name if device is not None else device_id[:10]

    def _on_link(self, state: str, detail: str) -> None:
        self._link = (state, detail)
        self._show_status()

    def _on_paused(self, reason: str) -> None:
        self._paused = reason
        self.tray.pause_action.blockSignals(True)
        self.tray.pause_action.setChecked(reason == "paused by you")
        self.tray.pause_action.blockSignals(False)
        self.settings.show_paused(reason)
        self._show_status()

    def _on_approvals(self, waiting: list) -> None:
        self.settings.approvals.set_waiting(waiting)
        self.prompt.set_waiting(waiting)
        if waiting:
            self.tray.notify("A device asks to join", f"{len(waiting)} waiting for your approval in PoolNet")

    def _on_submitted(self, task_id: str, name: str) -> None:
        self.tasks.drop_zone.show_message(f"{name} is in the pool's queue.", error=False)
        self._queued_notice = task_id
        self.tasks.select_task(task_id)

    def _on_finished(self, task: TaskSummary) -> None:
        if task.id == self._queued_notice:  # "in the pool's queue" is no longer true
            self.tasks.drop_zone.clear_message()
            self._queued_notice = None
        ok = task.state == "succeeded"
        text = f"{task.name}: {task.succeeded} of {task.total} shards succeeded"
        if not self.tray.notify(f"Task {task.state}", text, error=not ok):
            self.show_problem(f"Task {task.state}: {text}")

    def _show_status(self) -> None:
        state, detail = self._link
        online = self.model.totals.devices
        theme = theme_for(self.palette())
        if state == "connected":
            link = f"<span style='color:{theme.good}'>●</span> {html.escape(detail)}"
            status = f"{online} device{'s' if online != 1 else ''} online"
        elif state == "connecting":
            link, status = "○ connecting…", "Connecting to the pool"
        elif state == "none":
            link, status = "○ not in a pool", "This computer is in no pool yet"
        else:
            link, status = "○ offline", detail or "Not connected"
        if self._paused:
            status += f"\nSharing paused: {self._paused}"
        self.link_label.setText(link)
        self.status_label.setText(status)
        tray_text = status.replace("\n", " · ")
        if self.tray.status_action.text() != tray_text:
            self.tray.set_status(tray_text, sharing=state == "connected" and not self._paused)

    def _restyle(self) -> None:
        self.setStyleSheet(style_sheet(theme_for(self.palette())))

    # ---- Qt events ---------------------------------------------------------------------------

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        if self.charts is None and self.stack.currentIndex() == 0:
            QTimer.singleShot(0, self.ensure_charts)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt's name)
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._restyle()

    def hideEvent(self, event: QHideEvent) -> None:  # noqa: N802 (Qt's name)
        """Closed to the tray or quit: either way the next start opens where this one was."""
        super().hideEvent(event)
        self.store.save_window_layout(self.saveGeometry(), self.stack.currentIndex())

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt's name)
        if self.tray.available:
            event.ignore()
            self.hide()
            if not self._told_about_tray:
                self._told_about_tray = True
                self.tray.notify("PoolNet keeps running", "It still shares this computer. Quit it from the tray icon.")
            return
        event.accept()
        self.quit_requested.emit()
