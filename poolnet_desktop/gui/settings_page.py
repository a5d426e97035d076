"""The Settings tab: host a pool or join one, what this computer shares, when it pauses.

Every control writes straight to the ``SettingsStore`` (no Apply button) and is refreshed from
it when the preferences change elsewhere (the tray's Pause, a second window); values are set with
signals blocked, so a refresh never writes back. What the runtime reports (the hosted pool's
address and pairing code, pools found on the network, the member's state) comes in through
``show_host``, ``show_pools`` and ``show_member``; joining is asked for with ``join_requested``.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from poolnet_desktop.gui import formatting as fmt
from poolnet_desktop.gui.approvals import ApprovalsPanel, PermissionsPanel
from poolnet_desktop.gui.autostart import Autostart
from poolnet_desktop.gui.settings_model import Preferences, SettingsStore
from poolnet_desktop.gui.theme import theme_for

MEMBER_STATES = {
    "connected": "Sharing this computer in the pool",
    "connecting": "Connecting to the pool…",
    "waiting": "Waiting for the pool's owner to approve this computer…",
    "disconnected": "Not connected; trying again",
    "refused": "The pool refused this computer",
    "stopped": "Not sharing",
    "none": "Not in a pool",
}


class Hosted(Protocol):
    pool_name: str
    pairing_code: str | None
    fingerprint: str

    @property
    def join_address(self) -> str: ...


class Found(Protocol):
    name: str
    url: str
    pool_id: str | None
    tls: bool


class Section(QFrame):
    """A titled, rounded card holding a form."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        super().__init__()
        self.setObjectName("section")
        heading = QLabel(title)
        font = QFont(heading.font())
        font.setPointSizeF(font.pointSizeF() * 1.15)
        font.setWeight(QFont.Weight.DemiBold)
        heading.setFont(font)
        self.body = QVBoxLayout(self)
        self.body.setContentsMargins(20, 16, 20, 18)
        self.body.setSpacing(10)
        self.body.addWidget(heading)
        if subtitle:
            note = QLabel(subtitle)
            note.setObjectName("muted")
            note.setWordWrap(True)
            self.body.addWidget(note)
        self.form = QFormLayout()
        self.form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft)
        self.form.setHorizontalSpacing(18)
        self.form.setVerticalSpacing(10)
        self.body.addLayout(self.form)


class PercentSlider(QWidget):
    """A slider from 0 to 100 % with its value beside it; ``committed`` on release or keys."""

    committed = Signal(float)

    def __init__(self) -> None:
        super().__init__()
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 100)
        self.slider.setSingleStep(5)
        self.slider.setPageStep(10)
        self.value_label = QLabel()
        self.value_label.setMinimumWidth(44)
        self.value_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.slider.valueChanged.connect(self._moved)
        self.slider.sliderReleased.connect(self._commit)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.value_label)

    def set_value(self, value: float) -> None:
        self.slider.setValue(round(value))
        self.value_label.setText(f"{round(value)} %")

    def _moved(self, value: int) -> None:
        self.value_label.setText(f"{value} %")
        if not self.slider.isSliderDown():  # keys and clicks commit now; a drag on release
            self._commit()

    def _commit(self) -> None:
        self.committed.emit(float(self.slider.value()))


class SettingsPage(QScrollArea):
    """See the module docstring."""

    join_requested = Signal(str, str)  # address, pairing code
    open_logs_requested = Signal()
    new_code_requested = Signal()  # the host's owner wants a fresh pairing code

    def __init__(self, store: SettingsStore, autostart: Autostart | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._store = store
        self._autostart = autostart if autostart is not None else Autostart()
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        content = self._content = QWidget()
        content.setObjectName("page")
        column = QVBoxLayout(content)
        column.setContentsMargins(24, 20, 24, 24)
        column.setSpacing(16)
        column.addWidget(self._host_section())
        column.addWidget(self._join_section())
        column.addWidget(self._sharing_section())
        column.addWidget(self._pause_section())
        column.addWidget(self._app_section())
        column.addStretch(1)
        self.setWidget(content)
        self._load(store.prefs)
        store.changed.connect(self._load)

    # ---- sections ---------------------------------------------------------------------------

    def _host_section(self) -> Section:
        section = Section("Host a pool", "This computer coordinates the pool; other computers join it.")
        self.host_toggle = QCheckBox("Host pool")
        self._bind(self.host_toggle.toggled, lambda on: {"host_pool": on})
        self.port_spin = QSpinBox()
        self.port_spin.setRange(0, 65535)
        self.port_spin.setToolTip("0 picks any free port")
        self.port_spin.setFixedWidth(110)
        self._bind(self.port_spin.editingFinished, lambda: {"host_port": self.port_spin.value()})
        self.host_address = QLabel("–")
        self.pairing_code = QLabel("–")
        code_font = QFont("monospace")
        code_font.setStyleHint(QFont.StyleHint.Monospace)
        code_font.setPointSizeF(self.font().pointSizeF() * 1.5)
        code_font.setWeight(QFont.Weight.Bold)
        self.pairing_code.setFont(code_font)
        for label in (self.host_address, self.pairing_code):
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.new_code_button = QPushButton("New code")
        self.new_code_button.setToolTip("Replace the code: the old one no longer pairs (devices already in stay)")
        self.new_code_button.setEnabled(False)
        self.new_code_button.clicked.connect(self.new_code_requested)
        code_row = QHBoxLayout()
        code_row.addWidget(self.pairing_code)
        code_row.addWidget(self.new_code_button)
        code_row.addStretch(1)
        self.approvals = ApprovalsPanel()
        self.permissions = PermissionsPanel()
        section.form.addRow(self.host_toggle)
        section.form.addRow("Port", self.port_spin)
        section.form.addRow("Members join at", self.host_address)
        section.form.addRow("Pairing code", code_row)
        self.host_fingerprint = QLabel("–")
        self.host_fingerprint.setWordWrap(True)
        self.host_fingerprint.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.host_fingerprint.setToolTip("Members see the same fingerprint when they pair: compare the two")
        section.form.addRow("Fingerprint", self.host_fingerprint)
        section.body.addWidget(self.approvals)
        section.body.addWidget(self.permissions)
        return section

    def _join_section(self) -> Section:
        section = Section("Join a pool", "Pools announced on your network, or an address and its pairing code.")
        self.member_label = QLabel(MEMBER_STATES["none"])
        self.member_label.setTextFormat(Qt.TextFormat.PlainText)  # a refusal's reason is the host's
        self.member_label.setWordWrap(True)
        self.pools_box = QVBoxLayout()
        self.pools_box.setSpacing(6)
        self.no_pools_label = QLabel("No pools found on the network yet.")
        self.no_pools_label.setObjectName("muted")
        self.pools_box.addWidget(self.no_pools_label)
        self.address_edit = QLineEdit()
        self.address_edit.setPlaceholderText("192.168.1.10:3000")
        self.code_edit = QLineEdit()
        self.code_edit.setPlaceholderText("ABCD-EFGH (needed once)")
        self.join_button = QPushButton("Join")
        self.join_button.setObjectName("primary")
        self.join_button.clicked.connect(self._join_typed)
        manual = QHBoxLayout()
        manual.addWidget(self.address_edit, 2)
        manual.addWidget(self.code_edit, 1)
        manual.addWidget(self.join_button)
        section.form.addRow("Status", self.member_label)
        section.body.addLayout(self.pools_box)
        section.body.addLayout(manual)
        self._pool_rows: list[QWidget] = []
        return section

    def _sharing_section(self) -> Section:
        section = Section("What this computer shares", "Limits apply to work the pool sends here.")
        self.name_edit = QLineEdit()
        self._bind(self.name_edit.editingFinished, lambda: {"device_name": self.name_edit.text().strip() or None})
        self.sliders: dict[str, PercentSlider] = {}
        section.form.addRow("Device name", self.name_edit)
        for key, label in (("cpu_percent", "CPU"), ("memory_percent", "Memory"), ("storage_percent", "Storage")):
            slider = PercentSlider()
            slider.committed.connect(lambda value, key=key: self._store.update(**{key: value}))
            self.sliders[key] = slider
            section.form.addRow(label, slider)
        self.sliders["memory_percent"].setToolTip(
            "Tasks running here together stay under this share of memory: past it, or when this"
            " computer runs short of memory, the one using the most is stopped and runs elsewhere.")
        self.gpu_check = QCheckBox("Share GPUs")
        self._bind(self.gpu_check.toggled, lambda on: {"share_gpu": on})
        self.accept_check = QCheckBox("Accept tasks from the pool")
        self._bind(self.accept_check.toggled, lambda on: {"accept_tasks": on})
        self.task_network_check = QCheckBox("Tasks may use the network")
        self._bind(self.task_network_check.toggled, lambda on: {"task_network": on})
        self.unsandboxed_check = QCheckBox("Run tasks without a sandbox (where none can be made)")
        self.unsandboxed_check.setToolTip("Tasks are other people's code: without a sandbox they can read"
                                          " this user's files. Off by default.")
        self._bind(self.unsandboxed_check.toggled, lambda on: {"allow_unsandboxed": on})
        section.form.addRow(self.gpu_check)
        section.form.addRow(self.accept_check)
        section.form.addRow(self.task_network_check)
        section.form.addRow(self.unsandboxed_check)
        self.env_cache_spin = QDoubleSpinBox()
        self.env_cache_spin.setRange(0.5, 10_000)
        self.env_cache_spin.setSuffix(" GB")
        self.env_cache_spin.setDecimals(1)
        self.env_cache_spin.setFixedWidth(110)
        self.env_cache_spin.setToolTip("Python environments built for tasks are kept up to this size; "
                                       "the least recently used go first")
        self._bind(self.env_cache_spin.editingFinished, lambda: {"env_cache_gb": self.env_cache_spin.value()})
        section.form.addRow("Python environments", self.env_cache_spin)
        return section

    def _pause_section(self) -> Section:
        section = Section("Pause sharing", "While any of these holds, running tasks are suspended and new ones wait.")
        self.in_use_check = QCheckBox("While the computer is in use")
        self._bind(self.in_use_check.toggled, lambda on: {"pause_when_in_use": on})
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(5, 100)
        self.threshold_spin.setSuffix(" %")
        self.threshold_spin.setDecimals(0)
        self.threshold_spin.setFixedWidth(90)
        self.threshold_spin.setToolTip("Where keyboard and mouse cannot be read: CPU used by your other programs, "
                                       "out of the whole machine")
        self._bind(self.threshold_spin.editingFinished, lambda: {"in_use_threshold": self.threshold_spin.value()})
        self.idle_spin = QDoubleSpinBox()
        self.idle_spin.setRange(1, 120)
        self.idle_spin.setSuffix(" min")
        self.idle_spin.setDecimals(0)
        self.idle_spin.setFixedWidth(90)
        self.idle_spin.setToolTip("In use: the keyboard or mouse was used this recently")
        self._bind(self.idle_spin.editingFinished, lambda: {"idle_minutes": self.idle_spin.value()})
        self.battery_check = QCheckBox("While on battery")
        self._bind(self.battery_check.toggled, lambda on: {"pause_on_battery": on})
        self.pause_label = QLabel()
        self.pause_label.setObjectName("muted")
        row = QHBoxLayout()
        row.addWidget(self.in_use_check)
        row.addSpacing(12)
        row.addWidget(QLabel("keyboard or mouse in the last"))
        row.addWidget(self.idle_spin)
        row.addWidget(QLabel("(else other programs above"))
        row.addWidget(self.threshold_spin)
        row.addWidget(QLabel(")"))
        row.addStretch(1)
        section.body.addLayout(row)
        section.body.addWidget(self.battery_check)
        section.body.addWidget(self.pause_label)
        return section

    def _app_section(self) -> Section:
        section = Section("App")
        self.login_check = QCheckBox("Start PoolNet when I log in")
        self.login_check.setChecked(self._autostart.enabled())
        self.login_check.toggled.connect(self._set_autostart)
        self.minimised_check = QCheckBox("Start minimised to the tray")
        self._bind(self.minimised_check.toggled, lambda on: {"start_minimised": on})
        self.discovery_check = QCheckBox("Find pools on the local network (mDNS)")
        self._bind(self.discovery_check.toggled, lambda on: {"discovery": on})
        self.data_label = QLabel()
        self.data_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.data_label.setWordWrap(True)
        section.form.addRow(self.login_check)
        section.form.addRow(self.minimised_check)
        section.form.addRow(self.discovery_check)
        section.form.addRow("Data folder", self.data_label)
        self.device_id_label = QLabel("–")
        self.device_id_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.device_id_label.setToolTip("The id a pool's owner sees when this computer asks to join")
        section.form.addRow("This device", self.device_id_label)
        self.logs_button = QPushButton("Open log folder")
        self.logs_button.clicked.connect(self.open_logs_requested)
        section.form.addRow("Log", self.logs_button)
        return section

    def _set_autostart(self, on: bool) -> None:
        try:
            self._autostart.set(on)
        except OSError as exc:
            self.login_check.blockSignals(True)
            self.login_check.setChecked(self._autostart.enabled())
            self.login_check.blockSignals(False)
            self.login_check.setToolTip(f"Cannot change it: {exc.strerror or exc}")

    # ---- fed by the bridge -------------------------------------------------------------------

    def show_host(self, host: Hosted | None) -> None:
        self.new_code_button.setEnabled(host is not None)
        if host is None:
            for label in (self.host_address, self.pairing_code, self.host_fingerprint):
                label.setText("–")
            return
        self.host_address.setText(f"{host.join_address}   ({host.pool_name})")
        self.pairing_code.setText(host.pairing_code or "off")
        self.host_fingerprint.setText(fmt.for_reading_aloud(host.fingerprint))

    def show_host_problem(self, text: str) -> None:
        self.host_address.setText(f"⚠ {text}")

    def show_device_id(self, device_id: str) -> None:
        self.device_id_label.setText(fmt.for_reading_aloud(device_id))

    def show_member(self, state: str, detail: str) -> None:
        text = MEMBER_STATES.get(state, state)
        self.member_label.setText(f"{text}: {detail}" if detail and state in ("refused", "disconnected", "none") else text)

    def show_paused(self, reason: str) -> None:
        self.pause_label.setText(f"Paused now: {reason}." if reason else "Sharing now.")

    def show_pools(self, pools: list[Found]) -> None:
        for row in self._pool_rows:
            row.deleteLater()
        self._pool_rows = [self._pool_row(pool) for pool in pools]
        for row in self._pool_rows:
            self.pools_box.addWidget(row)
        self.no_pools_label.setVisible(not pools)

    def _pool_row(self, pool: Found) -> QWidget:
        row = QWidget()
        name = QLabel(f"<b>{html.escape(pool.name)}</b>  <span style='color:{theme_for(self.palette()).muted}'>"
                      f"{html.escape(pool.url)}</span>")
        button = QPushButton("Join")
        button.clicked.connect(lambda: self.join_requested.emit(pool.url, self.code_edit.text()))
        if not pool.tls:  # a seed-system server: its links are plain text, which PoolNet never joins
            button.setEnabled(False)
            button.setToolTip("This server speaks plain text (an older pool); PoolNet joins only over TLS.")
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(name, 1)
        layout.addWidget(button)
        return row

    # ---- internals ---------------------------------------------------------------------------

    def _bind(self, signal: Any, changes: Callable[..., dict[str, Any]]) -> None:
        """Write ``changes(*signal args)`` to the store whenever ``signal`` fires
        (a value of None means: keep the stored one)."""

        def write(*args: Any) -> None:
            wanted = {k: v for k, v in changes(*args).items() if v is not None}
            if wanted:
                self._store.update(**wanted)

        signal.connect(write)

    def _join_typed(self) -> None:
        address = self.address_edit.text().strip()
        if address:
            self.join_requested.emit(address, self.code_edit.text())

    def _load(self, prefs: Preferences) -> None:
        with _quiet(self._content):
            self.host_toggle.setChecked(prefs.host_pool)
            self.port_spin.setValue(prefs.host_port)
            self.name_edit.setText(prefs.device_name)
            for key, slider in self.sliders.items():
                slider.set_value(getattr(prefs, key))
            self.gpu_check.setChecked(prefs.share_gpu)
            self.accept_check.setChecked(prefs.accept_tasks)
            self.task_network_check.setChecked(prefs.task_network)
            self.unsandboxed_check.setChecked(prefs.allow_unsandboxed)
            self.env_cache_spin.setValue(prefs.env_cache_gb)
            self.in_use_check.setChecked(prefs.pause_when_in_use)
            self.threshold_spin.setValue(prefs.in_use_threshold)
            self.idle_spin.setValue(prefs.idle_minutes)
            self.battery_check.setChecked(prefs.pause_on_battery)
            self.minimised_check.setChecked(prefs.start_minimised)
            self.discovery_check.setChecked(prefs.discovery)
            if not self.address_edit.hasFocus() and prefs.pool_address:
                self.address_edit.setText(prefs.pool_address)
        self.data_label.setText(str(prefs.data_path))


@contextmanager
def _quiet(root: QWidget) -> Iterator[None]:
    """Block the signals of every widget under ``root`` while values are set from the store."""
    widgets = root.findChildren(QWidget)
    previous = [w.blockSignals(True) for w in widgets]
    try:
        yield
    finally:
        for widget, was in zip(widgets, previous):
            widget.blockSignals(was)
