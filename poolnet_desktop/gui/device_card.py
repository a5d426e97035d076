"""One device as a card: who it is, whether it is online, and bars of what it has in use.

The card paints itself (no child labels or layouts): ``set_device`` only stores the new view and
asks for a repaint, which Qt skips for cards scrolled out of sight or filtered away. That is what
keeps a wall of 500 cards updating every second cheap: no relayout, no text measured for cards
nobody sees. Its only child is the "Forget" button, shown while the device is offline.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPaintEvent
from PySide6.QtWidgets import QPushButton, QWidget

from poolnet_desktop.core.display_text import printable
from poolnet_desktop.core.devices import DeviceView
from poolnet_desktop.core.sandbox_state import short as short_sandbox
from poolnet_desktop.gui import formatting as fmt
from poolnet_desktop.gui.theme import Theme, paint_surface

CARD_WIDTH = 320
CARD_HEIGHT = 190
_PAD = 16
_LABEL_W = 62
_VALUE_W = 96
_ROW_H = 22
_BARS_TOP = 64


class DeviceCard(QWidget):
    """A fixed-size card for one device; ``set_device`` updates it in place."""

    forget_requested = Signal(str)

    def __init__(
        self, device: DeviceView, clock: Callable[[], float], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._device = device
        self._clock = clock
        self.setFixedSize(CARD_WIDTH, CARD_HEIGHT)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, False)
        self.forget_button = QPushButton("Forget", self)
        self.forget_button.setToolTip("Remove this offline device from the pool's list")
        self.forget_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.forget_button.adjustSize()
        self.forget_button.move(
            CARD_WIDTH - _PAD - self.forget_button.width(),
            CARD_HEIGHT - 12 - self.forget_button.height(),
        )
        self.forget_button.clicked.connect(lambda: self.forget_requested.emit(self._device.id))
        self.forget_button.setVisible(not device.is_online)
        self._describe()

    @property
    def device(self) -> DeviceView:
        return self._device

    def set_device(self, device: DeviceView) -> None:
        """Show a newer view of the same device (repaints later, only if on screen)."""
        if device.id != self._device.id:
            raise ValueError(f"card of {self._device.id!r} cannot show {device.id!r}")
        old, self._device = self._device, device
        if old.is_online != device.is_online:
            self.forget_button.setVisible(not device.is_online)
        if (old.name, old.is_online) != (device.name, device.is_online):
            self._describe()
        self.update()

    def _describe(self) -> None:
        d = self._device
        state = "online" if d.is_online else "offline"
        self.setAccessibleName(f"{d.name}, {state}")

    # ---- painting --------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt's name)
        d, r = self._device, self._device.resources
        online = d.is_online
        p, theme = paint_surface(self)
        if not online:
            p.setOpacity(0.6)

        base = self.font()
        bold = QFont(base)
        bold.setPointSizeF(base.pointSizeF() * 1.1)
        bold.setWeight(QFont.Weight.DemiBold)
        small = QFont(base)
        small.setPointSizeF(base.pointSizeF() * 0.9)

        # Header: status dot, name, platform pill.
        dot = theme.good if online and d.accept_tasks else theme.warn if online else theme.offline
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(dot))
        p.drawEllipse(QRectF(_PAD, 21, 9, 9))

        pill_text = fmt.platform_label(d.platform)
        p.setFont(small)
        pill_w = QFontMetrics(small).horizontalAdvance(pill_text) + 16
        pill = QRectF(CARD_WIDTH - _PAD - pill_w, 15, pill_w, 21)
        p.setBrush(QColor(theme.surface_alt))
        p.drawRoundedRect(pill, 10.5, 10.5)
        p.setPen(QColor(theme.muted))
        p.drawText(pill, Qt.AlignmentFlag.AlignCenter, pill_text)

        name_x = _PAD + 18
        name_w = int(pill.left()) - 8 - name_x
        p.setFont(bold)
        p.setPen(QColor(theme.text))
        name = QFontMetrics(bold).elidedText(printable(d.name or d.id), Qt.TextElideMode.ElideRight, name_w)
        p.drawText(QRectF(name_x, 12, name_w, 26), Qt.AlignmentFlag.AlignVCenter, name)

        p.setFont(small)
        p.setPen(QColor(theme.muted))
        seen = fmt.ago(d.last_seen, self._clock())
        status = f"seen {seen}" if online else f"offline · last seen {seen}"
        if online and not d.accept_tasks:
            status = "not taking tasks"
        contained = short_sandbox(d.sandbox) if online else ""
        subtitle = " · ".join(
            x for x in (d.ip_address, "" if d.role == "member" else d.role, status, contained) if x
        )
        subtitle = QFontMetrics(small).elidedText(
            subtitle, Qt.TextElideMode.ElideRight, CARD_WIDTH - name_x - _PAD
        )
        p.drawText(QRectF(name_x, 36, CARD_WIDTH - name_x - _PAD, 18), Qt.AlignmentFlag.AlignVCenter, subtitle)

        # Bars.
        gpu_label = "none"
        if r.gpus:
            gpu_label = f"{r.gpu_usage or 0:.0f}%" + (f" ×{r.gpus}" if r.gpus > 1 else "")
        rows = (
            ("CPU", r.cpu_usage, f"{r.cpu_usage:.0f}% · {r.cpu_cores} cores", theme.cpu),
            ("Memory", fmt.percent(r.memory_usage, r.memory_total),
             fmt.used_of_total(r.memory_usage, r.memory_total), theme.memory),
            ("Storage", fmt.percent(r.storage_usage, r.storage_total),
             fmt.used_of_total(r.storage_usage, r.storage_total), theme.storage),
            ("GPU", (r.gpu_usage or 0.0) if r.gpus else 0.0, gpu_label, theme.gpu),
        )
        for i, (label, pct, value, colour) in enumerate(rows):
            self._paint_bar(p, theme, _BARS_TOP + i * _ROW_H, label, pct, value,
                            colour if online else theme.offline, small)

        # Footer: GPU name and running shards.
        footer_y = _BARS_TOP + 4 * _ROW_H + 6
        p.setFont(small)
        p.setPen(QColor(theme.muted))
        gpu_name = r.gpu_name or ("GPU" if r.gpus else "No GPU")
        shards = d.running_shards
        work = f"{shards} shard{'s' if shards != 1 else ''} running" if shards else "idle"
        if r.environments:  # Python environments kept for tasks (issue 16)
            work += f" · {r.environments} Python env{'s' if r.environments != 1 else ''}"
        footer_w = CARD_WIDTH - 2 * _PAD - (self.forget_button.width() + 8 if not online else 0)
        line = QFontMetrics(small).elidedText(f"{gpu_name} · {work}", Qt.TextElideMode.ElideRight, footer_w)
        if shards and online:
            p.setPen(QColor(theme.accent))
        p.drawText(QRectF(_PAD, footer_y, footer_w, 24), Qt.AlignmentFlag.AlignVCenter, line)
        p.end()

    def _paint_bar(
        self, p: QPainter, theme: Theme, y: float, label: str, pct: float, value: str,
        colour: str, font: QFont,
    ) -> None:
        p.setFont(font)
        p.setPen(QColor(theme.muted))
        p.drawText(QRectF(_PAD, y, _LABEL_W, _ROW_H), Qt.AlignmentFlag.AlignVCenter, label)
        p.setPen(QColor(theme.text))
        p.drawText(
            QRectF(CARD_WIDTH - _PAD - _VALUE_W, y, _VALUE_W, _ROW_H),
            Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight,
            value,
        )
        bar_x = _PAD + _LABEL_W
        bar_w = CARD_WIDTH - _PAD - _VALUE_W - 10 - bar_x
        track = QRectF(bar_x, y + _ROW_H / 2 - 3, bar_w, 6)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(theme.track))
        p.drawRoundedRect(track, 3, 3)
        fill = max(0.0, min(100.0, pct)) / 100.0 * bar_w
        if fill > 0:
            p.setBrush(QColor(colour))
            p.drawRoundedRect(QRectF(bar_x, track.top(), max(fill, 6.0), 6), 3, 3)
