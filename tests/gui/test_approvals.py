"""The owner decides whom to let in from a prompt that shows the asking device's own words
(its name and platform): they must show as text, on one line, never as markup."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QMessageBox, QWidget

from poolnet_desktop.gui.approvals import ApprovalPrompt, ApprovalsPanel, PermissionsPanel

# A stranger's hello, written to make the prompt say something else: Qt takes text that looks
# like HTML for rich text, and a line break would push the real address out of the first line.
SPOOF = "<b>anna-laptop</b> (macOS, 192.168.1.31) wants to join as a member.<br><br><small>\nhidden"


@dataclass
class Device:
    device_id: str = "pn-stranger00000000"
    name: str = SPOOF
    platform: str = "linux-x86_64"
    role: str = "member"
    address: str = "10.0.0.66"
    permissions: frozenset[str] = frozenset({"member"})


def shown_as_text(label: QLabel | QMessageBox) -> str:
    assert label.textFormat() == Qt.TextFormat.PlainText
    text = label.text()
    assert "\n" not in text
    return text


def test_a_waiting_devices_name_is_shown_as_text_in_the_panel_and_the_prompt(qtbot) -> None:
    panel = ApprovalsPanel()
    qtbot.addWidget(panel)
    panel.set_waiting([Device()])
    (label,) = panel.findChildren(QLabel)
    text = shown_as_text(label)
    assert text.startswith("<b>anna-laptop</b>") and "\\nhidden (linux-x86_64, 10.0.0.66)" in text and "10.0.0.66" in text

    window = QWidget()
    qtbot.addWidget(window)
    prompt = ApprovalPrompt(window)
    prompt.set_waiting([Device()])
    (box,) = window.findChildren(QMessageBox)
    assert shown_as_text(box).endswith("10.0.0.66) wants to join as a member.")
    box.close()


def test_an_approved_devices_name_is_shown_as_text(qtbot) -> None:
    panel = PermissionsPanel()
    qtbot.addWidget(panel)
    panel.set_devices([Device()])
    (label,) = panel.findChildren(QLabel)
    assert shown_as_text(label).startswith("<b>anna-laptop</b>")
