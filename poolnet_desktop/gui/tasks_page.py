"""The Tasks tab: a drop zone, a table of the pool's tasks, and the selected task's details.

The page holds no connection: it emits what the user asks for (``submit_requested``,
``cancel_requested``, ``submit_again_requested``, ``retry_requested``, ``results_requested``,
``forget_requested``, ``selected``) and is fed by ``apply_changes`` (the task changes the pool
pushes) and ``append_log``. The table model keeps one row per task id and updates only the
rows that changed, so the selection and the scroll position survive every change.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPainter
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from poolnet_desktop.core.matrix import describe_values
from poolnet_desktop.core.task_protocol import ShardSummary, TaskSummary
from poolnet_desktop.core.tasks import ENDED, ShardState, shard_note
from poolnet_desktop.gui.drop_zone import DropZone
from poolnet_desktop.gui.theme import Theme, theme_for

COLUMNS = ("Task", "State", "Progress", "Devices", "Duration")
PROGRESS_COLUMN = 2
MAX_LOG_LINES = 5000
# An empty table given more tasks than this at once is filled in one reset, not row by row.
BULK = 50


MAX_VALUE_LINES = 1000

AnyIndex = QModelIndex | QPersistentModelIndex


def _newest_first(task: TaskSummary) -> tuple[float, str]:
    """The rows' sort key: the newest submission first (ties by id)."""
    return (-task.submitted_at, task.id)


def duration_label(seconds: float | None) -> str:
    """``"42 s"``, ``"3 min 5 s"``, ``"2 h 4 min"``; ``"–"`` when unknown."""
    if seconds is None or seconds < 0:
        return "–"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"


def state_colour(theme: Theme, state: str) -> str:
    return {
        "succeeded": theme.good,
        "failed": theme.bad,
        "cancelled": theme.offline,
        "running": theme.accent,
    }.get(state, theme.warn)


def sweep_lines(shards: Sequence[ShardSummary], limit: int = MAX_VALUE_LINES) -> str:
    """A sweep's shards, one line each: number, state and its ``[matrix]`` values (the first
    ``limit``, then how many more); empty for a task without a matrix."""
    swept = [s for s in shards if s.values]
    lines = [f"{s.index:>5}  {s.state:<10} {describe_values(s.values or {})}" for s in swept[:limit]]
    if len(swept) > limit:
        lines.append(f"… and {len(swept) - limit} more shards")
    return "\n".join(lines)


class TaskTableModel(QAbstractTableModel):
    """Rows are tasks, newest first. ``device_name`` turns a device id into a label."""

    def __init__(self, device_name: Callable[[str], str], clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._device_name = device_name
        self._clock = clock
        self._tasks: list[TaskSummary] = []
        self._row: dict[str, int] = {}

    # ---- data in --------------------------------------------------------------------------

    def apply_changes(self, changed: list[TaskSummary], removed: list[str]) -> None:
        """Take pushed task changes: a known task's row is updated in place, a new one is
        inserted where it belongs (newest first), a forgotten one removed; the other rows,
        the selection and the scroll position stay as they are."""
        for task_id in removed:
            row = self._row.get(task_id)
            if row is not None:
                self.beginRemoveRows(QModelIndex(), row, row)
                del self._tasks[row]
                self._reindex()
                self.endRemoveRows()
        if len(changed) > BULK and not self._tasks:  # the whole list, on (re)connecting
            self.beginResetModel()
            self._tasks = sorted(changed, key=_newest_first)
            self._reindex()
            self.endResetModel()
            return
        last = len(COLUMNS) - 1
        for task in changed:
            row = self._row.get(task.id)
            if row is not None:
                self._tasks[row] = task
                self.dataChanged.emit(self.index(row, 0), self.index(row, last))
                continue
            row = bisect.bisect_left(self._tasks, _newest_first(task), key=_newest_first)
            self.beginInsertRows(QModelIndex(), row, row)
            self._tasks.insert(row, task)
            self._reindex()
            self.endInsertRows()

    def _reindex(self) -> None:
        self._row = {t.id: i for i, t in enumerate(self._tasks)}

    # ---- data out -------------------------------------------------------------------------

    @property
    def tasks(self) -> list[TaskSummary]:
        """The rows, newest first."""
        return list(self._tasks)

    def task(self, row: int) -> TaskSummary:
        return self._tasks[row]

    def row_of(self, task_id: str) -> int | None:
        return self._row.get(task_id)

    def devices(self, task: TaskSummary) -> list[str]:
        """Where its shards ran, by name; empty where this device may not see it."""
        names = [self._device_name(i) for i in task.devices or ()]
        if task.device_count > len(names):
            names.append(f"{task.device_count - len(names)} more")
        return names

    def duration(self, task: TaskSummary) -> float | None:
        if task.state in ENDED:
            return None if task.ended_at is None else task.ended_at - task.submitted_at
        return self._clock() - task.submitted_at

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: N802, B008 (Qt's API)
        return 0 if parent.isValid() else len(self._tasks)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: N802, B008 (Qt's API)
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        task = self._tasks[index.row()]
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if column == 0:
                return task.name
            if column == 1:
                return task.state
            if column == PROGRESS_COLUMN:
                return f"{task.done} / {task.total}"
            if column == 3:
                names = self.devices(task)
                return ", ".join(names) if names else "–"
            return duration_label(self.duration(task))
        if role == Qt.ItemDataRole.ToolTipRole:
            return task.reason or f"{task.name}: {task.state}, {task.done} of {task.total} shards done"
        if role == Qt.ItemDataRole.UserRole:
            return task
        return None


class ProgressDelegate(QStyledItemDelegate):
    """Paints the progress column as a thin rounded bar over shards, with ``done / total``."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: AnyIndex) -> None:
        task: TaskSummary = index.data(Qt.ItemDataRole.UserRole)
        theme = theme_for(option.palette)
        rect = QRectF(option.rect).adjusted(8, 0, -8, 0)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        bar = QRectF(rect.left(), rect.center().y() - 3, rect.width() * 0.6, 6)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(theme.track))
        painter.drawRoundedRect(bar, 3, 3)
        if task.total:
            filled = QRectF(bar)
            filled.setWidth(bar.width() * task.done / task.total)
            painter.setBrush(QColor(state_colour(theme, task.state)))
            painter.drawRoundedRect(filled, 3, 3)
        painter.setPen(QColor(theme.muted))
        text = QRectF(bar.right() + 8, rect.top(), rect.right() - bar.right() - 8, rect.height())
        painter.drawText(text, Qt.AlignmentFlag.AlignVCenter, f"{task.done} / {task.total}")
        painter.restore()


class StateDelegate(QStyledItemDelegate):
    """Paints the state as a coloured dot and word, so a finished task stands out."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: AnyIndex) -> None:
        task: TaskSummary = index.data(Qt.ItemDataRole.UserRole)
        theme = theme_for(option.palette)
        rect = QRectF(option.rect).adjusted(8, 0, -4, 0)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(state_colour(theme, task.state)))
        painter.drawEllipse(QRectF(rect.left(), rect.center().y() - 4, 8, 8))
        painter.setPen(QColor(theme.text))
        painter.drawText(rect.adjusted(16, 0, 0, 0), Qt.AlignmentFlag.AlignVCenter, task.state)
        painter.restore()


class TasksPage(QWidget):
    """See the module docstring."""

    submit_requested = Signal(list)  # list[Path]
    cancel_requested = Signal(str)
    submit_again_requested = Signal(str)  # the whole task anew, from its file
    retry_requested = Signal(str)  # the same task's failed, cancelled and lost shards
    results_requested = Signal(str)
    forget_requested = Signal(str)  # delete an ended task from the pool
    shards_requested = Signal(str)  # read one task's shards (``show_shards`` gets them)
    selected = Signal(object)  # task id, or None

    def __init__(self, device_name: Callable[[str], str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.drop_zone = DropZone()
        self.drop_zone.setMinimumHeight(150)
        self.drop_zone.task_files_dropped.connect(self._on_dropped)

        self.model = TaskTableModel(device_name)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setShowGrid(False)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(34)
        self.table.setItemDelegateForColumn(1, StateDelegate(self.table))
        self.table.setItemDelegateForColumn(PROGRESS_COLUMN, ProgressDelegate(self.table))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(False)
        for column, width in enumerate((200, 110, 170, 0, 90)):
            if width:
                self.table.setColumnWidth(column, width)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.table.selectionModel().currentRowChanged.connect(self._on_current_changed)
        self.empty_label = QLabel("No tasks yet. Drop a task file above to run it on the pool.")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)

        self.title_label = QLabel("Select a task to see its log")
        title_font = QFont(self.title_label.font())
        title_font.setWeight(QFont.Weight.DemiBold)
        title_font.setPointSizeF(title_font.pointSizeF() * 1.15)
        self.title_label.setFont(title_font)
        self.detail_label = QLabel()
        self.detail_label.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel")
        self.submit_again_button = QPushButton("Submit again")
        self.submit_again_button.setToolTip("Submit the task's file again, as a new task")
        self.retry_button = QPushButton("Retry failed shards")
        self.retry_button.setToolTip("Run this task's failed, cancelled and lost shards again")
        self.results_button = QPushButton("Open results")
        self.forget_button = QPushButton("Forget")
        self.forget_button.setToolTip("Delete this ended task from the pool: its records, logs and results")
        self.cancel_button.clicked.connect(lambda: self._ask(self.cancel_requested))
        self.submit_again_button.clicked.connect(lambda: self._ask(self.submit_again_requested))
        self.retry_button.clicked.connect(lambda: self._ask(self.retry_requested))
        self.results_button.clicked.connect(lambda: self._ask(self.results_requested))
        self.forget_button.clicked.connect(lambda: self._ask(self.forget_requested))


        self.values_view = QPlainTextEdit()
        self.values_view.setReadOnly(True)
        self.values_view.setMaximumHeight(110)
        self.values_view.setToolTip("Each shard's values from the task's [matrix]")
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(MAX_LOG_LINES)
        self.log_view.setPlaceholderText("The selected task's output appears here as it runs.")
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        self.log_view.setFont(mono)
        self.values_view.setFont(mono)

        buttons = QHBoxLayout()
        for button in self._task_buttons():
            buttons.addWidget(button)
        buttons.addStretch(1)
        details = QWidget()
        details_layout = QVBoxLayout(details)
        details_layout.setContentsMargins(0, 8, 0, 0)
        details_layout.addWidget(self.title_label)
        details_layout.addWidget(self.detail_label)
        details_layout.addLayout(buttons)
        details_layout.addWidget(self.values_view)
        details_layout.addWidget(self.log_view, 1)

        table_box = QWidget()
        table_layout = QVBoxLayout(table_box)
        table_layout.setContentsMargins(0, 0, 0, 0)
        table_layout.addWidget(self.table, 1)
        table_layout.addWidget(self.empty_label)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(table_box)
        splitter.addWidget(details)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setChildrenCollapsible(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 16, 16, 16)
        layout.setSpacing(12)
        layout.addWidget(self.drop_zone)
        layout.addWidget(splitter, 1)
        self._current: str | None = None
        self._held_notes: list[str] = []  # what the selected task's held shards wait on
        self._select_when_listed: str | None = None  # a task submitted here, until its row comes
        self._update_details()

    # ---- fed by the bridge ------------------------------------------------------------------

    def apply_changes(self, changed: list[TaskSummary], removed: list[str]) -> None:
        """Take the tasks that changed and those forgotten, as the pool pushed them."""
        before = self.current_task()
        self.model.apply_changes(changed, removed)
        after = self.current_task()
        if before is not None and after is not None and before.state not in ENDED and after.state in ENDED:
            self.shards_requested.emit(after.id)  # their final states
        has_tasks = self.model.rowCount() > 0
        self.empty_label.setVisible(not has_tasks)
        self.table.setVisible(has_tasks)
        if self._select_when_listed is not None and self.model.row_of(self._select_when_listed) is not None:
            self.select_task(self._select_when_listed)
        if self._current is not None and self.model.row_of(self._current) is None:
            self._current = None  # the selected task was forgotten
            self._take_shards([])
            self.log_view.clear()
            self.selected.emit(None)
        self._update_details()

    def show_shards(self, task_id: str, shards: list[ShardSummary]) -> None:
        """A task's shards as the pool listed them (asked for on selection and at its end)."""
        if task_id == self._current:
            self._take_shards(shards)
            self._update_details()

    def _take_shards(self, shards: list[ShardSummary]) -> None:
        """The selected task's shards: its sweep values shown, and its held shards' notes
        kept for the detail line (made here once, not at every pushed change)."""
        values = sweep_lines(shards)
        self.values_view.setVisible(bool(values))
        if values != self.values_view.toPlainText():  # unchanged: keep its scroll position
            self.values_view.setPlainText(values)
        self._held_notes = sorted({shard_note(s.state, s.reason) for s in shards if s.state == ShardState.ASSIGNED})

    def append_log(self, task_id: str, text: str) -> None:
        if task_id == self._current:
            self.log_view.moveCursor(self.log_view.textCursor().MoveOperation.End)
            self.log_view.insertPlainText(text)

    def show_problem(self, text: str) -> None:
        self.drop_zone.show_message(text)

    def current_task(self) -> TaskSummary | None:
        row = self.model.row_of(self._current) if self._current else None
        return None if row is None else self.model.task(row)

    def select_task(self, task_id: str) -> None:
        """Select a task, or (one just submitted, not listed yet) select it once it is."""
        row = self.model.row_of(task_id)
        self._select_when_listed = task_id if row is None else None
        if row is not None:
            self.table.selectRow(row)

    # ---- internals ---------------------------------------------------------------------------

    def _on_dropped(self, paths: list[Path]) -> None:
        self.drop_zone.show_message(
            f"Sending {', '.join(p.name for p in paths)} to the pool…", error=False
        )
        self.submit_requested.emit(paths)

    def _ask(self, signal: Any) -> None:
        if self._current is not None:
            signal.emit(self._current)

    def _task_buttons(self) -> tuple[QPushButton, ...]:
        return (self.cancel_button, self.submit_again_button, self.retry_button, self.results_button,
                self.forget_button)

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        task_id = self.model.task(current.row()).id if current.isValid() else None
        if task_id != self._current:
            self._current = task_id
            self._take_shards([])
            self.log_view.clear()
            self.selected.emit(task_id)
            if task_id is not None:
                self.shards_requested.emit(task_id)
        self._update_details()

    def _update_details(self) -> None:
        task = self.current_task()
        for button in self._task_buttons():
            button.setEnabled(task is not None)
        if task is None:
            self.title_label.setText("Select a task to see its log")
            self.detail_label.setText("")
            return
        self.cancel_button.setEnabled(task.state not in ENDED)
        self.submit_again_button.setEnabled(task.state in ENDED)
        self.retry_button.setEnabled(task.state in ENDED and task.succeeded < task.total)
        self.results_button.setEnabled(task.succeeded > 0)
        self.forget_button.setEnabled(task.state in ENDED)
        self.title_label.setText(task.name)
        devices = self.model.devices(task)
        parts = [
            f"{task.state}",
            f"{task.done} of {task.total} shards done ({task.succeeded} succeeded, "
            f"{task.running} running, {task.waiting} waiting on members, {task.queued} queued)",
            f"on {', '.join(devices)}" if devices else "",
            f"took {duration_label(self.model.duration(task))}" if task.state in ENDED else "",
            task.reason,
            *self._held_notes,
        ]
        self.detail_label.setText(" · ".join(p for p in parts if p))
