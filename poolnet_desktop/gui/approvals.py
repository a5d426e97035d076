"""Devices asking to join the pool this app hosts, and what those let in may do.

A device that joins without the pairing code waits (up to two minutes) for the owner's
decision. ``ApprovalsPanel`` lists those waiting, each with Approve and Deny; ``ApprovalPrompt``
opens one non-blocking dialog for the newest arrival, so the owner notices even when the
Settings tab is not showing. Both only emit ``decided(device_id, allow)``; the bridge acts.
``PermissionsPanel`` lists the approved devices with their permissions and a "may submit"
switch; it only emits ``permission_changed(device_id, permission, allow)``.
"""

from __future__ import annotations

from typing import Protocol

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QMessageBox, QPushButton, QVBoxLayout, QWidget

from poolnet_desktop.core.display_text import printable
from poolnet_desktop.gui import formatting as fmt


class Waiting(Protocol):
    """What a waiting device shows (``runtime.security.auth.PendingApproval`` has these fields)."""

    device_id: str
    name: str
    platform: str
    role: str
    address: str


def describe(device: Waiting) -> str:
    """``"anna-laptop (macOS, 192.168.1.31) wants to join as a member"``: the name and the
    platform are the device's own words, on one line (``core.display_text``)."""
    what = "watch the pool" if device.role == "observer" else "join as a member"
    name = printable(device.name or device.device_id[:12])
    return f"{name} ({printable(fmt.platform_label(device.platform))}, {device.address}) wants to {what}"


def plain_label(text: str) -> QLabel:
    """A wrapped label that shows ``text`` as it is: a QLabel takes text that looks like HTML
    for rich text, and a device's name must not draw the prompt it appears in."""
    label = QLabel(text)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setWordWrap(True)
    return label


class ApprovalsPanel(QWidget):
    """One row per waiting device; rebuilt when the (short, bounded) list changes."""

    decided = Signal(str, bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._rows: list[QWidget] = []
        self.setVisible(False)

    def set_waiting(self, waiting: list[Waiting]) -> None:
        for row in self._rows:
            row.deleteLater()
        self._rows = [self._row(device) for device in waiting]
        for row in self._rows:
            self._layout.addWidget(row)
        self.setVisible(bool(waiting))

    def _row(self, device: Waiting) -> QWidget:
        row = QWidget()
        label = plain_label(describe(device))
        approve, deny = QPushButton("Approve"), QPushButton("Deny")
        approve.setObjectName("primary")
        approve.clicked.connect(lambda: self.decided.emit(device.device_id, True))
        deny.clicked.connect(lambda: self.decided.emit(device.device_id, False))
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 2, 0, 2)
        layout.addWidget(label, 1)
        layout.addWidget(approve)
        layout.addWidget(deny)
        return row


class Trusted(Protocol):
    """What an approved device shows (``runtime.security.trust.ApprovedDevice`` has these fields)."""

    device_id: str
    name: str
    permissions: frozenset[str]


class PermissionsPanel(QWidget):
    """One row per approved device but the owner: its name, what it may do, and a switch for
    ``submit`` (the permission an owner most often changes); rebuilt when the list changes."""

    permission_changed = Signal(str, str, bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._rows: list[QWidget] = []
        self.submit_boxes: dict[str, QCheckBox] = {}
        self.setVisible(False)

    def set_devices(self, devices: list[Trusted]) -> None:
        for row in self._rows:
            row.deleteLater()
        self.submit_boxes = {}
        self._rows = [self._row(device) for device in devices]
        for row in self._rows:
            self._layout.addWidget(row)
        self.setVisible(bool(devices))

    def _row(self, device: Trusted) -> QWidget:
        row = QWidget()
        may = ", ".join(p for p in ("member", "observer", "submit") if p in device.permissions) or "nothing"
        label = plain_label(f"{printable(device.name or device.device_id[:12])} ({device.device_id[:12]}): {may}")
        submit = QCheckBox("May submit tasks")
        submit.setChecked("submit" in device.permissions)
        submit.toggled.connect(lambda on: self.permission_changed.emit(device.device_id, "submit", on))
        self.submit_boxes[device.device_id] = submit
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 2, 0, 2)
        layout.addWidget(label, 1)
        layout.addWidget(submit)
        return row


class ApprovalPrompt(QObject):
    """Opens a window-modal question for each device that starts waiting; closes it if the
    device stops waiting (it gave up, or was decided in the panel)."""

    decided = Signal(str, bool)

    def __init__(self, parent_widget: QWidget) -> None:
        super().__init__(parent_widget)
        self._parent = parent_widget
        self._known: set[str] = set()
        self._boxes: dict[str, QMessageBox] = {}

    def set_waiting(self, waiting: list[Waiting]) -> None:
        ids = {d.device_id for d in waiting}
        for device_id in list(self._boxes):
            if device_id not in ids:
                self._boxes.pop(device_id).close()
        for device in waiting:
            if device.device_id not in self._known:
                self._ask(device)
        self._known = ids

    def _ask(self, device: Waiting) -> None:
        box = QMessageBox(self._parent)
        box.setWindowTitle("A device asks to join")
        box.setIcon(QMessageBox.Icon.Question)
        box.setTextFormat(Qt.TextFormat.PlainText)
        box.setText(describe(device) + ".")
        box.setInformativeText("Approve only devices you know. It is remembered; you can revoke it later.")
        approve = box.addButton("Approve", QMessageBox.ButtonRole.AcceptRole)
        box.addButton("Deny", QMessageBox.ButtonRole.RejectRole)
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)

        def answered() -> None:
            if self._boxes.pop(device.device_id, None) is not None:
                self.decided.emit(device.device_id, box.clickedButton() is approve)

        box.finished.connect(answered)
        self._boxes[device.device_id] = box
        box.open()
