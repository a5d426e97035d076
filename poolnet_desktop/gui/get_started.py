"""The dashboard's first-start panel: what to do while this computer is in no pool yet."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QPaintEvent
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from poolnet_desktop.gui.theme import paint_surface


class GetStartedPanel(QWidget):
    """Two ways into a pool: host one here, or join one (found on the network, or by address)."""

    host_requested = Signal()
    join_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        title = QLabel("This computer is not in a pool yet")
        font = title.font()
        font.setPointSizeF(font.pointSizeF() * 1.2)
        font.setBold(True)
        title.setFont(font)
        text = QLabel(
            "Below is what it has to share, live. Host a pool here and other computers can join"
            " it with the code it shows, or join a pool another computer hosts."
        )
        text.setWordWrap(True)
        text.setObjectName("muted")
        self.host_button = QPushButton("Host a pool here")
        self.host_button.setObjectName("primary")
        self.host_button.clicked.connect(self.host_requested)
        self.join_button = QPushButton("Join a pool…")
        self.join_button.clicked.connect(self.join_requested)
        buttons = QHBoxLayout()
        buttons.addWidget(self.host_button)
        buttons.addWidget(self.join_button)
        buttons.addStretch(1)
        column = QVBoxLayout(self)
        column.setContentsMargins(18, 14, 18, 14)
        column.addWidget(title)
        column.addWidget(text)
        column.addLayout(buttons)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt's name)
        painter, _ = paint_surface(self)
        painter.end()
