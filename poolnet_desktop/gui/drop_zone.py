"""Where tasks come in: drop manifests, scripts or a folder holding a manifest, or pick files.

``DropZone`` only decides which dropped paths are tasks and emits them as
``task_files_dropped(list[Path])``; submitting them is the caller's job, which can report a
failure back in place with ``show_message``. Anything that is not a task gets a message saying
what would have been accepted, never an exception.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QRectF, Qt, QUrl, Signal
from PySide6.QtGui import (
    QColor,
    QDragEnterEvent,
    QDragLeaveEvent,
    QDropEvent,
    QFont,
    QPainter,
    QPaintEvent,
    QPen,
)
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from poolnet_desktop.core.manifest import (
    MANIFEST_SUFFIX,
    SCRIPT_SUFFIXES,
    ManifestError,
    folder_manifest,
    is_task_name,
)
from poolnet_desktop.gui.theme import theme_for

WHAT_IS_A_TASK = f"drop a {MANIFEST_SUFFIX} manifest, a script, or a folder holding one"


def task_in(path: Path) -> Path | str:
    """The task file ``path`` stands for, or a message saying why it is not one.

    The rule is the loader's (``core.manifest``): a manifest or a known script by its name, or
    a folder standing for the one manifest directly inside it.
    """
    if path.is_dir():
        try:
            names = [p.name for p in path.iterdir() if p.is_file()]
        except OSError as exc:
            return f"cannot read the folder {path.name}: {exc.strerror or exc}"
        try:
            return path / folder_manifest(path.name, names)
        except ManifestError as exc:
            return str(exc)
    if not path.exists():
        return f"{path.name} was not found"
    if path.is_file() and is_task_name(path.name):
        return path
    return f"{path.name} is not a task: {WHAT_IS_A_TASK}"


def tasks_from_urls(urls: list[QUrl]) -> tuple[list[Path], list[str]]:
    """Split dropped URLs into task files and messages about the rest, in the order given."""
    tasks: list[Path] = []
    problems: list[str] = []
    for url in urls:
        if not url.isLocalFile():
            problems.append(f"{url.toDisplayString()} is not a file on this computer: {WHAT_IS_A_TASK}")
            continue
        found = task_in(Path(url.toLocalFile()))
        if isinstance(found, Path):
            if found not in tasks:
                tasks.append(found)
        else:
            problems.append(found)
    return tasks, problems


class DropZone(QWidget):
    """A dashed drop target with an "Add task…" button and an inline message line."""

    task_files_dropped = Signal(list)  # list[Path], never empty

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.setMinimumHeight(170)
        self._hovering = False
        self._error = False
        self.file_dialog: QFileDialog | None = None

        self.icon_label = QLabel("↓")
        self.icon_label.setFixedSize(44, 44)
        self.title_label = QLabel("Drop task files here")
        title_font = QFont(self.title_label.font())
        title_font.setPointSizeF(title_font.pointSizeF() * 1.25)
        title_font.setWeight(QFont.Weight.DemiBold)
        self.title_label.setFont(title_font)
        self.hint_label = QLabel(
            f"A manifest ({MANIFEST_SUFFIX}), a script ({' '.join(SCRIPT_SUFFIXES)}) "
            "or a folder holding one manifest"
        )
        self.hint_label.setWordWrap(True)
        self.add_button = QPushButton("Add task…")
        self.add_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.add_button.clicked.connect(self.open_file_dialog)
        self.message_label = QLabel()
        self.message_label.setTextFormat(Qt.TextFormat.PlainText)
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message_label.hide()

        for label in (self.icon_label, self.title_label, self.hint_label, self.message_label):
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        button_row = QHBoxLayout()
        button_row.addStretch(1)
        button_row.addWidget(self.add_button)
        button_row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(24, 20, 24, 18)
        layout.setSpacing(8)
        layout.addStretch(1)
        layout.addWidget(self.icon_label, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addWidget(self.title_label)
        layout.addWidget(self.hint_label)
        layout.addSpacing(4)
        layout.addLayout(button_row)
        layout.addWidget(self.message_label)
        layout.addStretch(1)
        self._restyle()

    # ---- public ----------------------------------------------------------------------------

    def show_message(self, text: str, error: bool = True) -> None:
        """Show ``text`` under the button (red when ``error``), e.g. why a submission failed."""
        self._error = error
        self.message_label.setText(text)
        self.message_label.show()
        self._restyle()

    def clear_message(self) -> None:
        self.message_label.clear()
        self.message_label.hide()

    def open_file_dialog(self) -> None:
        """Open (window-modal, without blocking) a file dialog for manifests and scripts."""
        if self.file_dialog is None:
            patterns = " ".join(["*" + MANIFEST_SUFFIX, *("*" + s for s in SCRIPT_SUFFIXES)])
            self.file_dialog = QFileDialog(self, "Add task", "", f"Tasks ({patterns});;All files (*)")
            self.file_dialog.setFileMode(QFileDialog.FileMode.ExistingFiles)
            self.file_dialog.filesSelected.connect(self._on_files_chosen)
        self.file_dialog.open()

    # ---- drag and drop ---------------------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt's name)
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
            self._set_hovering(True)
        else:
            event.ignore()

    def dragLeaveEvent(self, event: QDragLeaveEvent) -> None:  # noqa: N802 (Qt's name)
        self._set_hovering(False)

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 (Qt's name)
        self._set_hovering(False)
        if not event.mimeData().hasUrls():
            event.ignore()
            return
        event.acceptProposedAction()
        self._take(*tasks_from_urls(event.mimeData().urls()))

    def _on_files_chosen(self, files: list[str]) -> None:
        self._take(*tasks_from_urls([QUrl.fromLocalFile(f) for f in files]))

    def _take(self, tasks: list[Path], problems: list[str]) -> None:
        if problems:
            more = len(problems) - 1
            self.show_message(problems[0] + (f" (and {more} more not taken)" if more else ""))
        else:
            self.clear_message()
        if tasks:
            self.task_files_dropped.emit(tasks)

    # ---- looks -----------------------------------------------------------------------------

    def _set_hovering(self, hovering: bool) -> None:
        if hovering != self._hovering:
            self._hovering = hovering
            self.update()

    def _restyle(self) -> None:
        theme = theme_for(self.palette())
        self.hint_label.setStyleSheet(f"color: {theme.muted};")
        tint = QColor(theme.accent)
        self.icon_label.setStyleSheet(
            f"color: {theme.accent}; font-size: 22px; font-weight: 700; border-radius: 22px;"
            f" background: rgba({tint.red()}, {tint.green()}, {tint.blue()}, 30);"
        )
        colour = theme.bad if self._error else theme.good
        self.message_label.setStyleSheet(f"color: {colour};")
        self.add_button.setStyleSheet(
            f"QPushButton {{ background: {theme.accent}; color: white; border: none;"
            " border-radius: 6px; padding: 7px 18px; font-weight: 600; }"
            f"QPushButton:pressed {{ background: {theme.text}; }}"
        )

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt's name)
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._restyle()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt's name)
        theme = theme_for(self.palette())
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fill = QColor(theme.accent if self._hovering else theme.surface)
        if self._hovering:
            fill.setAlpha(40)
        pen = QPen(QColor(theme.accent if self._hovering else theme.offline), 1.5)
        pen.setStyle(Qt.PenStyle.DashLine)
        pen.setDashPattern([5.0, 4.0])
        p.setPen(pen)
        p.setBrush(fill)
        p.drawRoundedRect(QRectF(self.rect()).adjusted(1, 1, -1, -1), 14, 14)
        p.end()
