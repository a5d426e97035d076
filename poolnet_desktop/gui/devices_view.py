"""Every device as a card, in a scrolling grid that can be sorted and filtered.

Built to stay cheap with hundreds of devices updating every second:

* a card is created once per device id and updated in place (``DeviceCard.set_device``);
  it is deleted only when its device is removed;
* cards are placed by hand on a plain canvas (fixed card size, no QLayout), and a placement
  pass moves only cards whose slot changed;
* placement runs from one coalescing timer: adds, removals, filter and sort changes are laid out
  on the next turn of the event loop (one pass per batch); when a changing value only reorders
  cards (sorting by CPU or memory) the pass waits ``RESORT_INTERVAL_MS`` so cards neither jump
  about nor cost a sort per update.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from enum import Enum
from typing import Any

from PySide6.QtCore import QEvent, QObject, QPoint, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from poolnet_desktop.core.devices import DeviceView
from poolnet_desktop.gui import formatting as fmt
from poolnet_desktop.gui.device_card import CARD_HEIGHT, CARD_WIDTH, DeviceCard
from poolnet_desktop.gui.pool_model import PoolModel

_MARGIN = 16
_SPACING = 14


class SortKey(Enum):
    """How cards are ordered; the value is what the sort menu shows."""

    NAME = "Name"
    CPU = "CPU use"
    MEMORY = "Memory use"
    ONLINE = "Online first"


def _sort_key(key: SortKey) -> Callable[[DeviceView], tuple[Any, ...]]:
    """Busiest first for usage sorts; offline devices (stale figures) always after online."""
    def name(d: DeviceView) -> tuple[str, str]:
        return (d.name.casefold(), d.id)

    if key is SortKey.NAME:
        return name
    if key is SortKey.CPU:
        return lambda d: (not d.is_online, -d.resources.cpu_usage, *name(d))
    if key is SortKey.MEMORY:
        return lambda d: (
            not d.is_online,
            -fmt.percent(d.resources.memory_usage, d.resources.memory_total),
            *name(d),
        )
    return lambda d: (not d.is_online, *name(d))


def _matches(device: DeviceView, words: list[str]) -> bool:
    """True when every word of the filter appears in the device's name, address, platform,
    GPU or id (case-insensitive)."""
    if not words:
        return True
    haystack = " ".join(
        (
            device.name,
            device.id,
            device.ip_address,
            fmt.platform_label(device.platform),
            device.resources.gpu_name or "",
            "online" if device.is_online else "offline",
        )
    ).casefold()
    return all(word in haystack for word in words)


class DevicesView(QWidget):
    """Cards for the model's devices; forwards each card's "Forget" as ``forget_requested``."""

    forget_requested = Signal(str)
    RESORT_INTERVAL_MS = 2000
    SEEN_REFRESH_MS = 10_000
    # Cards made per event-loop turn: a pool of 500 appearing at once must not freeze the
    # window for half a second; the rest are made on the following turns.
    CARDS_PER_TURN = 40

    def __init__(
        self,
        model: PoolModel,
        clock: Callable[[], float] = time.time,
        parent: QWidget | None = None,
    ) -> None:
        """``clock`` gives the wall-clock time for "last seen" labels (tests pass a fixed one)."""
        super().__init__(parent)
        self._model = model
        self._clock = clock
        self._cards: dict[str, DeviceCard] = {}
        self._to_create: dict[str, None] = {}  # ordered set of ids awaiting a card
        self._order: list[str] = []
        self._sort = SortKey.NAME
        self._words: list[str] = []

        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter by name, address, platform or GPU")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(self.set_filter)
        self.sort_combo = QComboBox()
        for key in SortKey:
            self.sort_combo.addItem(f"Sort: {key.value}", key)
        self.sort_combo.currentIndexChanged.connect(
            lambda i: self.set_sort(self.sort_combo.itemData(i))
        )
        self.count_label = QLabel()
        bar = QHBoxLayout()
        bar.setContentsMargins(_MARGIN, _MARGIN, _MARGIN, 0)
        bar.addWidget(self.filter_edit, 1)
        bar.addWidget(self.sort_combo)
        bar.addSpacing(8)
        bar.addWidget(self.count_label)

        self._canvas = QWidget()
        self.empty_label = QLabel(self._canvas)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)
        self._scroll = QScrollArea()
        self._scroll.setWidget(self._canvas)
        self._scroll.setWidgetResizable(False)
        self._scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self._scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._scroll.viewport().installEventFilter(self)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        layout.addLayout(bar)
        layout.addWidget(self._scroll, 1)

        self._layout_timer = QTimer(self)
        self._layout_timer.setSingleShot(True)
        self._layout_timer.timeout.connect(self._place_cards)
        self._create_timer = QTimer(self)
        self._create_timer.setSingleShot(True)
        self._create_timer.timeout.connect(self._create_some_cards)
        # Offline cards get no updates, yet their "last seen 5 min ago" must keep ageing.
        self._seen_timer = QTimer(self)
        self._seen_timer.setInterval(self.SEEN_REFRESH_MS)
        self._seen_timer.timeout.connect(self._scroll.viewport().update)
        self._seen_timer.start()

        model.device_added.connect(self._on_added)
        model.device_changed.connect(self._on_changed)
        model.device_removed.connect(self._on_removed)
        for device in model.devices():
            self._on_added(device.id)
        self.flush()

    # ---- public ----------------------------------------------------------------------------

    @property
    def sort_key(self) -> SortKey:
        return self._sort

    def card(self, device_id: str) -> DeviceCard | None:
        """The card showing a device, None if the device is unknown."""
        return self._cards.get(device_id)

    def shown_ids(self) -> list[str]:
        """Ids of the cards on show, in display order, as of the last placement pass."""
        return list(self._order)

    def set_sort(self, key: SortKey) -> None:
        if key is self._sort:
            return
        self._sort = key
        self.sort_combo.setCurrentIndex(self.sort_combo.findData(key))
        self._schedule(0)

    def set_filter(self, text: str) -> None:
        """Show only cards matching every word of ``text``; empty shows all."""
        words = text.casefold().split()
        if words == self._words:
            return
        self._words = words
        if self.filter_edit.text() != text:
            self.filter_edit.setText(text)
        self._schedule(0)

    def flush(self) -> None:
        """Make every pending card and run a pending placement pass now (the timers would run
        them shortly anyway)."""
        while self._to_create:
            self._create_some_cards()
        if self._layout_timer.isActive():
            self._layout_timer.stop()
            self._place_cards()

    # ---- model signals ---------------------------------------------------------------------

    def _on_added(self, device_id: str) -> None:
        if device_id not in self._cards:
            self._to_create[device_id] = None
            if not self._create_timer.isActive():
                self._create_timer.start(0)

    def _create_some_cards(self) -> None:
        """Make up to ``CARDS_PER_TURN`` pending cards from the model's latest data."""
        self._create_timer.stop()
        for _ in range(min(self.CARDS_PER_TURN, len(self._to_create))):
            device_id = next(iter(self._to_create))
            del self._to_create[device_id]
            device = self._model.device(device_id)
            if device is None or device_id in self._cards:
                continue
            card = DeviceCard(device, self._clock, self._canvas)
            card.hide()
            card.forget_requested.connect(self.forget_requested)
            self._cards[device_id] = card
        if self._to_create:
            self._create_timer.start(0)
        self._schedule(0)

    def _on_changed(self, device_id: str) -> None:
        card = self._cards.get(device_id)
        device = self._model.device(device_id)
        if card is None or device is None:
            return
        old = card.device
        card.set_device(device)
        if old.name != device.name or old.is_online != device.is_online:
            self._schedule(0)
        elif self._words and (old.ip_address, old.platform, old.resources.gpu_name) != (
            device.ip_address, device.platform, device.resources.gpu_name
        ):
            self._schedule(0)
        elif (self._sort is SortKey.CPU and old.resources.cpu_usage != device.resources.cpu_usage) or (
            self._sort is SortKey.MEMORY
            and (old.resources.memory_usage, old.resources.memory_total)
            != (device.resources.memory_usage, device.resources.memory_total)
        ):
            self._schedule(self.RESORT_INTERVAL_MS)

    def _on_removed(self, device_id: str) -> None:
        self._to_create.pop(device_id, None)
        card = self._cards.pop(device_id, None)
        if card is None:
            return
        card.hide()
        card.deleteLater()
        self._schedule(0)

    # ---- placement -------------------------------------------------------------------------

    def _schedule(self, delay_ms: int) -> None:
        """Coalesce placement passes: an earlier pending pass is kept, a later one pulled in."""
        timer = self._layout_timer
        if timer.isActive() and timer.remainingTime() <= delay_ms:
            return
        timer.start(delay_ms)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if watched is self._scroll.viewport() and event.type() == QEvent.Type.Resize:
            self._schedule(0)
        return super().eventFilter(watched, event)

    def _place_cards(self) -> None:
        shown = sorted(
            (c.device for c in self._cards.values() if _matches(c.device, self._words)),
            key=_sort_key(self._sort),
        )
        self._order = [d.id for d in shown]
        viewport = self._scroll.viewport()
        width = viewport.width()
        columns = max(1, (width - 2 * _MARGIN + _SPACING) // (CARD_WIDTH + _SPACING))
        # Centre the grid so a wide window has even side margins.
        used = columns * CARD_WIDTH + (columns - 1) * _SPACING
        left = max(_MARGIN, (width - used) // 2)
        for i, device in enumerate(shown):
            card = self._cards[device.id]
            slot = QPoint(
                left + (i % columns) * (CARD_WIDTH + _SPACING),
                _MARGIN + (i // columns) * (CARD_HEIGHT + _SPACING),
            )
            if card.pos() != slot:
                card.move(slot)
            if card.isHidden():
                card.show()
        showing = set(self._order)
        for device_id, card in self._cards.items():
            if device_id not in showing and not card.isHidden():
                card.hide()

        rows = math.ceil(len(shown) / columns)
        height = 2 * _MARGIN + rows * (CARD_HEIGHT + _SPACING) - _SPACING if rows else 160
        self._canvas.resize(width, height)
        self._update_labels(len(shown))

    def _update_labels(self, shown: int) -> None:
        total = len(self._cards)
        online = sum(1 for c in self._cards.values() if c.device.is_online)
        text = f"{total} device{'s' if total != 1 else ''} · {online} online"
        if shown != total:
            text = f"{shown} of {text}"
        self.count_label.setText(text)
        if shown:
            self.empty_label.hide()
            return
        if total:
            self.empty_label.setText(f"No device matches “{' '.join(self._words)}”.")
        else:
            self.empty_label.setText(
                "No devices yet.\nStart PoolNet on another computer on this network to add it."
            )
        self.empty_label.setGeometry(_MARGIN, _MARGIN, self._canvas.width() - 2 * _MARGIN, 120)
        self.empty_label.show()
