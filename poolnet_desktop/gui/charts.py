"""The dashboard: headline totals and live charts of the pool's CPU, GPU, memory and storage.

Four pooled plots show what is in use (filled) against the total (dashed) over the model's
history window; a click on one, or the "By device" switch, shows one curve per device for that
resource, limited to the busiest ``top_devices``. Every plot item is created once, here; a redraw
only calls ``setData`` on the existing curves, and redraws are held to one a second
(``REDRAW_INTERVAL_MS``) however fast batches arrive, and skipped while the dashboard is hidden.

pyqtgraph is imported inside ``ResourceCharts.__init__``: it costs about 0.9 s, which the app
should not pay before its window appears.
"""

from __future__ import annotations

import functools
import html
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QElapsedTimer, QEvent, QRectF, Qt, QTimer
from PySide6.QtGui import QColor, QFont, QPaintEvent, QShowEvent
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from poolnet_desktop.core.display_text import printable
from poolnet_desktop.core.history import History
from poolnet_desktop.gui import formatting as fmt
from poolnet_desktop.gui.pool_model import PoolModel, Resource
from poolnet_desktop.gui.theme import Theme, paint_surface, theme_for

if TYPE_CHECKING:
    import pyqtgraph

_MB_PER_GB = 1024.0


def _plot_unit(resource: Resource, total: float | None = None) -> tuple[str, float]:
    """The unit a resource is plotted in (sizes: GB, or TB from 1 TB of ``total`` MB up) and
    the factor from its history's unit."""
    if resource.unit == "MB":
        if total is not None and total >= _MB_PER_GB * 1024:
            return "TB", 1.0 / (_MB_PER_GB * 1024)
        return "GB", 1.0 / _MB_PER_GB
    return resource.unit, 1.0


def _colour(theme: Theme, resource: Resource) -> str:
    return {
        Resource.CPU: theme.cpu,
        Resource.GPU: theme.gpu,
        Resource.MEMORY: theme.memory,
        Resource.STORAGE: theme.storage,
    }[resource]


@functools.cache
def _time_axis_class(pg: Any) -> type:
    """An x axis in minutes before the newest sample, labelled "now", "2m", "4m"..."""

    class TimeAxis(pg.AxisItem):  # type: ignore[misc]  # pyqtgraph is untyped
        def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:  # noqa: N802
            return ["now" if abs(v) < 1e-9 else f"{-v:g}m" for v in values]

    return TimeAxis


class StatTile(QWidget):
    """A headline figure: a small title, a large value and a line of detail, self-painted."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.value = "–"
        self.detail = ""
        self.setMinimumSize(150, 78)
        self.setAccessibleName(title)

    def set_text(self, value: str, detail: str) -> None:
        if (value, detail) != (self.value, self.detail):
            self.value, self.detail = value, detail
            self.setToolTip(f"{self.title}: {value}, {detail}")
            self.update()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt's name)
        p, theme = paint_surface(self)
        base = self.font()
        small, big = QFont(base), QFont(base)
        small.setPointSizeF(base.pointSizeF() * 0.9)
        big.setPointSizeF(base.pointSizeF() * 1.6)
        big.setWeight(QFont.Weight.DemiBold)
        width = self.width() - 28
        p.setFont(small)
        p.setPen(QColor(theme.muted))
        p.drawText(QRectF(14, 10, width, 16), Qt.AlignmentFlag.AlignVCenter, self.title.upper())
        p.setFont(big)
        p.setPen(QColor(theme.text))
        p.drawText(QRectF(14, 26, width, 28), Qt.AlignmentFlag.AlignVCenter,
                   p.fontMetrics().elidedText(self.value, Qt.TextElideMode.ElideRight, width))
        p.setFont(small)
        p.setPen(QColor(theme.muted))
        p.drawText(QRectF(14, 54, width, 16), Qt.AlignmentFlag.AlignVCenter,
                   p.fontMetrics().elidedText(self.detail, Qt.TextElideMode.ElideRight, width))
        p.end()


class _Panel(QFrame):
    """A rounded surface holding a header line and a plot."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title_label = QLabel(title)
        bold = self.title_label.font()
        bold.setWeight(QFont.Weight.DemiBold)
        self.title_label.setFont(bold)
        self.value_label = QLabel()
        self.value_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.header = QHBoxLayout()
        self.header.addWidget(self.title_label)
        self.header.addStretch(1)
        self.header.addWidget(self.value_label)
        self.body = QVBoxLayout(self)
        self.body.setContentsMargins(14, 10, 10, 8)
        self.body.setSpacing(4)
        self.body.addLayout(self.header)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt's name)
        p, theme = paint_surface(self)
        p.end()


class ResourceCharts(QWidget):
    """Headline tiles and live charts of the model's pool; see the module docstring."""

    REDRAW_INTERVAL_MS = 1000

    def __init__(
        self, model: PoolModel, top_devices: int = 8, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        import pyqtgraph as pg  # deferred: see the module docstring

        if top_devices < 1:
            raise ValueError(f"top_devices must be at least 1, got {top_devices}")
        self._pg = pg
        self._model = model
        self._top = top_devices
        self._breakdown: Resource | None = None
        self._dirty = True
        self.redraw_count = 0

        # Headline tiles.
        self.tiles = {
            key: StatTile(title)
            for key, title in (
                ("devices", "Devices online"),
                ("cpu", "CPU"),
                ("memory", "Memory"),
                ("storage", "Storage"),
                ("gpu", "GPUs"),
                ("tasks", "Tasks"),
            )
        }
        tiles_row = QHBoxLayout()
        tiles_row.setSpacing(12)
        for key, tile in self.tiles.items():
            tiles_row.addWidget(tile, 2 if key == "tasks" else 1)

        # Pool / By device switch.
        self.pool_button = QPushButton("Pool")
        self.device_button = QPushButton("By device")
        self._mode_group = QButtonGroup(self)
        for button in (self.pool_button, self.device_button):
            button.setCheckable(True)
            button.setCursor(Qt.CursorShape.PointingHandCursor)
            self._mode_group.addButton(button)
        self.pool_button.setChecked(True)
        self.pool_button.clicked.connect(self.show_pool)
        self.device_button.clicked.connect(lambda: self.show_device_breakdown(self._resource_choice()))
        self.resource_combo = QComboBox()
        for resource in Resource:
            self.resource_combo.addItem(resource.label, resource)
        self.resource_combo.currentIndexChanged.connect(self._on_resource_chosen)
        self.resource_combo.setVisible(False)
        self.window_label = QLabel()
        mode_row = QHBoxLayout()
        mode_row.setSpacing(0)
        mode_row.addWidget(self.pool_button)
        mode_row.addWidget(self.device_button)
        mode_row.addSpacing(10)
        mode_row.addWidget(self.resource_combo)
        mode_row.addStretch(1)
        mode_row.addWidget(self.window_label)

        # Pooled plots: used (filled) against total (dashed), one panel per resource.
        self._pool_panels: dict[Resource, _Panel] = {}
        self._pool_plots: dict[Resource, pyqtgraph.PlotWidget] = {}
        self._pool_curves: dict[Resource, tuple[pyqtgraph.PlotDataItem, pyqtgraph.PlotDataItem]] = {}
        grid_page = QWidget()
        grid = QGridLayout(grid_page)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(12)
        for i, resource in enumerate(Resource):
            panel = _Panel(resource.label)
            plot = self._make_plot()
            plot.setToolTip(f"Click for {resource.label} by device")
            plot.scene().sigMouseClicked.connect(
                lambda _event, r=resource: self.show_device_breakdown(r)
            )
            # skipFiniteCheck: the ring never holds NaN, and the check splits the fill into
            # many small paths, several times slower to paint.
            total = pg.PlotDataItem(antialias=True, skipFiniteCheck=True)
            used = pg.PlotDataItem(antialias=True, fillLevel=0.0, skipFiniteCheck=True)
            plot.addItem(total)
            plot.addItem(used)
            panel.body.addWidget(plot, 1)
            grid.addWidget(panel, i // 2, i % 2)
            self._pool_panels[resource] = panel
            self._pool_plots[resource] = plot
            self._pool_curves[resource] = (used, total)

        # Per-device plot: a fixed set of curves, reused for whichever devices lead.
        self._device_panel = _Panel("By device")
        self._device_plot = self._make_plot()
        self._device_curves = [
            pg.PlotDataItem(antialias=True, skipFiniteCheck=True) for _ in range(top_devices)
        ]
        for curve in self._device_curves:
            self._device_plot.addItem(curve)
        self.legend_label = QLabel()
        self.legend_label.setTextFormat(Qt.TextFormat.RichText)
        self.legend_label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.legend_label.setMinimumWidth(200)
        device_row = QHBoxLayout()
        device_row.addWidget(self._device_plot, 1)
        device_row.addWidget(self.legend_label)
        self._device_panel.body.addLayout(device_row, 1)

        self._stack = QStackedWidget()
        self._stack.addWidget(grid_page)
        self._stack.addWidget(self._device_panel)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 16, 16, 16)
        layout.setSpacing(12)
        layout.addLayout(tiles_row)
        layout.addLayout(mode_row)
        layout.addWidget(self._stack, 1)

        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.timeout.connect(self._redraw_if_shown)
        self._since_redraw = QElapsedTimer()

        self._apply_colours()
        # Every batch ends with history_changed, after any totals or device signals.
        model.history_changed.connect(self._on_model_changed)
        self.refresh()

    # ---- public ----------------------------------------------------------------------------

    @property
    def model(self) -> PoolModel:
        return self._model

    @property
    def breakdown(self) -> Resource | None:
        """The resource broken down by device, or None while the pooled plots show."""
        return self._breakdown

    def show_pool(self) -> None:
        self._breakdown = None
        self.pool_button.setChecked(True)
        self.resource_combo.setVisible(False)
        self._stack.setCurrentIndex(0)
        self.refresh()

    def show_device_breakdown(self, resource: Resource) -> None:
        """One curve per device (the busiest ``top_devices``) for ``resource``."""
        self._breakdown = resource
        self.device_button.setChecked(True)
        self.resource_combo.setVisible(True)
        self.resource_combo.setCurrentIndex(self.resource_combo.findData(resource))
        self._stack.setCurrentIndex(1)
        self.refresh()

    def pool_curves(self, resource: Resource) -> tuple[Any, Any]:
        """The pooled plot's ``(used, total)`` PlotDataItems for ``resource``."""
        return self._pool_curves[resource]

    def pool_plot(self, resource: Resource) -> Any:
        """The pooled PlotWidget for ``resource`` (a click on it opens its breakdown)."""
        return self._pool_plots[resource]

    def pool_summary(self, resource: Resource) -> str:
        """The pooled plot's header figure, e.g. ``"21 of 42 cores · 50%"``."""
        return self._pool_panels[resource].value_label.text()

    def device_curves(self) -> list[Any]:
        """The per-device PlotDataItems (unused ones hold no points)."""
        return list(self._device_curves)

    def refresh(self) -> None:
        """Redraw now from the model, whatever the rate limit (tests and first show use it)."""
        self._dirty = False
        self._since_redraw.start()
        self.redraw_count += 1
        self._update_tiles()
        history = self._model.history
        newest = history.last_time()
        minutes = self._model.window_seconds / 60.0
        self.window_label.setText(f"last {fmt.number(minutes)} min")
        if self._breakdown is None:
            for resource in Resource:
                self._draw_pooled(resource, history, newest, minutes)
        else:
            self._draw_devices(self._breakdown, newest, minutes)

    # ---- drawing ---------------------------------------------------------------------------

    def _make_plot(self) -> pyqtgraph.PlotWidget:
        pg = self._pg
        plot = pg.PlotWidget(axisItems={"bottom": _time_axis_class(pg)(orientation="bottom")})
        item = plot.getPlotItem()
        item.hideButtons()
        item.setMenuEnabled(False)
        item.setMouseEnabled(x=False, y=False)
        item.showGrid(x=False, y=True, alpha=0.12)  # horizontal lines only: half the paint cost
        item.getAxis("left").setWidth(46)
        plot.setMinimumHeight(140)
        return plot

    def _draw_pooled(
        self, resource: Resource, history: History, newest: float | None, minutes: float
    ) -> None:
        used_curve, total_curve = self._pool_curves[resource]
        unit, scale = _plot_unit(resource, history.latest(resource.total))
        self._pool_panels[resource].title_label.setText(f"{resource.label} · {unit}")
        x = [(t - newest) / 60.0 for t in history.times()] if newest is not None else []
        used = [v * scale for v in history.series(resource.used)]
        total = [v * scale for v in history.series(resource.total)]
        used_curve.setData(x, used)
        total_curve.setData(x, total)
        self._set_ranges(self._pool_plots[resource], max(total + used, default=0.0), minutes)
        if used:
            share = fmt.percent(used[-1], total[-1])
            text = f"{fmt.number(used[-1])} of {fmt.number(total[-1])} {unit} · {share:.0f}%"
        else:
            text = "no data yet"
        self._pool_panels[resource].value_label.setText(text)

    def _draw_devices(self, resource: Resource, newest: float | None, minutes: float) -> None:
        total = self._model.history.latest(resource.total)
        unit, scale = _plot_unit(resource, total)
        self._device_panel.title_label.setText(f"{resource.label} by device · {unit}")
        ranked: list[tuple[float, str, History]] = []
        for device in self._model.devices():
            history = self._model.device_history(device.id)
            if history is not None and len(history):
                ranked.append((history.latest(resource.used) or 0.0, device.id, history))
        ranked.sort(key=lambda item: (-item[0], item[1]))
        theme = theme_for(self.palette())
        legend: list[str] = []
        peak = 0.0
        for i, curve in enumerate(self._device_curves):
            if i >= len(ranked) or newest is None:
                curve.setData([], [])
                continue
            latest, device_id, history = ranked[i]
            values = [v * scale for v in history.series(resource.used)]
            curve.setData([(t - newest) / 60.0 for t in history.times()], values)
            peak = max(peak, max(values, default=0.0))
            view = self._model.device(device_id)
            name = view.name if view is not None and view.name else device_id
            colour = theme.series[i % len(theme.series)]
            # Device names come from the network: escaped, so none can inject markup.
            legend.append(
                f"<tr><td style='color:{colour}'>&#9632;</td>"
                f"<td style='padding-left:6px'>{html.escape(printable(name))}</td>"
                f"<td align='right' style='padding-left:10px;color:{theme.muted}'>"
                f"{fmt.number(latest * scale)} {unit}</td></tr>"
            )
        hidden = len(ranked) - len(legend)
        footer = (
            f"<p style='color:{theme.muted}'>and {hidden} more device{'s' if hidden != 1 else ''}</p>"
            if hidden > 0 else ""
        )
        self.legend_label.setText(
            f"<table>{''.join(legend)}</table>{footer}" if legend
            else f"<p style='color:{theme.muted}'>No devices yet.</p>"
        )
        self._device_panel.value_label.setText(
            f"top {min(len(ranked), self._top)} of {len(ranked)} · pool total "
            f"{fmt.number((total or 0.0) * scale)} {unit}"
        )
        self._set_ranges(self._device_plot, peak, minutes)

    def _set_ranges(self, plot: pyqtgraph.PlotWidget, peak: float, minutes: float) -> None:
        item = plot.getPlotItem()
        item.setXRange(-minutes, 0, padding=0)
        item.setYRange(0, peak * 1.1 if peak > 0 else 1.0, padding=0)

    def _update_tiles(self) -> None:
        t = self._model.totals
        known = len(self._model)
        self.tiles["devices"].set_text(f"{t.devices}", f"of {known} known")
        self.tiles["cpu"].set_text(
            f"{t.total_cpu_cores} cores",
            f"{fmt.number(t.cpu_cores_used)} in use · {fmt.percent(t.cpu_cores_used, t.total_cpu_cores):.0f}%",
        )
        self.tiles["memory"].set_text(fmt.size(t.total_memory), f"{fmt.size(t.memory_used)} in use")
        self.tiles["storage"].set_text(fmt.size(t.total_storage), f"{fmt.size(t.storage_used)} in use")
        gpus = t.total_g_p_us
        self.tiles["gpu"].set_text(f"{gpus}", f"{t.gpu_usage:.0f}% busy" if gpus else "none in the pool")
        tasks = self._model.tasks
        done = tasks.get("succeeded", 0)
        detail = f"{tasks.get('queued', 0)} queued · {done} done"
        if tasks.get("failed", 0):
            detail += f" · {tasks['failed']} failed"
        self.tiles["tasks"].set_text(f"{tasks.get('running', 0)} running", detail)

    # ---- scheduling and colours -------------------------------------------------------------

    def _on_model_changed(self) -> None:
        self._dirty = True
        if self._redraw_timer.isActive():
            return
        elapsed = self._since_redraw.elapsed() if self._since_redraw.isValid() else self.REDRAW_INTERVAL_MS
        self._redraw_timer.start(max(0, self.REDRAW_INTERVAL_MS - elapsed))

    def _redraw_if_shown(self) -> None:
        if self._dirty and self.isVisible():
            self.refresh()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        if self._dirty:
            self.refresh()

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt's name)
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_colours()
            self.refresh()

    def _resource_choice(self) -> Resource:
        choice = self.resource_combo.currentData()
        return choice if isinstance(choice, Resource) else Resource.CPU

    def _on_resource_chosen(self, _index: int) -> None:
        if self._breakdown is not None and self._resource_choice() is not self._breakdown:
            self.show_device_breakdown(self._resource_choice())

    def _apply_colours(self) -> None:
        pg = self._pg
        theme = theme_for(self.palette())
        plots = [*self._pool_plots.values(), self._device_plot]
        for plot in plots:
            plot.setBackground(theme.surface)
            for side in ("left", "bottom"):
                axis = plot.getPlotItem().getAxis(side)
                axis.setPen(pg.mkPen(theme.border))
                axis.setTextPen(pg.mkPen(theme.muted))
        for resource, (used, total) in self._pool_curves.items():
            colour = QColor(_colour(theme, resource))
            fill = QColor(colour)
            fill.setAlpha(70 if theme.dark else 50)
            used.setPen(pg.mkPen(colour, width=2))
            used.setBrush(pg.mkBrush(fill))
            total.setPen(pg.mkPen(theme.muted, width=1.5, style=Qt.PenStyle.DashLine))
        for i, curve in enumerate(self._device_curves):
            curve.setPen(pg.mkPen(theme.series[i % len(theme.series)], width=2))
        segment = (
            f"QPushButton {{ padding: 5px 14px; border: 1px solid {theme.border};"
            f" background: {theme.surface}; color: {theme.muted}; }}"
            f"QPushButton:checked {{ background: {theme.accent}; color: white;"
            f" border-color: {theme.accent}; }}"
        )
        self.pool_button.setStyleSheet(
            segment + "QPushButton { border-top-left-radius: 6px; border-bottom-left-radius: 6px; }"
        )
        self.device_button.setStyleSheet(
            segment + "QPushButton { border-top-right-radius: 6px; border-bottom-right-radius: 6px; }"
        )
        self.window_label.setStyleSheet(f"color: {theme.muted};")
        for panel in [*self._pool_panels.values(), self._device_panel]:
            panel.value_label.setStyleSheet(f"color: {theme.muted};")
