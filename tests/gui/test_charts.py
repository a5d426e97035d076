"""ResourceCharts: curves fed in place from the model, bounded, rate-limited, a click from
the per-device breakdown."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from pytestqt.qtbot import QtBot

from poolnet_desktop.gui.charts import ResourceCharts
from poolnet_desktop.gui.pool_model import PoolModel, Resource
from tests.gui.conftest import MakeDevice, MakeState


@pytest.fixture
def charts(qtbot: QtBot) -> ResourceCharts:
    widget = ResourceCharts(PoolModel(history_seconds=30, sample_interval=1.0), top_devices=2)
    qtbot.addWidget(widget)
    widget.resize(1000, 700)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def feed(model: PoolModel, make_device: MakeDevice, make_state: MakeState, seconds: range) -> None:
    for t in seconds:
        devices = [
            make_device("big", "Big", cores=32, cpu=50.0, memory_used=2048.0 * (t + 1)),
            make_device("mid", "Mid", cores=8, cpu=50.0),
            make_device("small", "Small", cores=2, cpu=50.0),
        ]
        model.apply(make_state(t + 1, devices, full=t == 0, tasks={"running": 3, "queued": 5}), float(t))


def test_curves_receive_points_in_place_bounded_by_the_ring(
    charts: ResourceCharts, make_device: MakeDevice, make_state: MakeState
) -> None:
    used, total = charts.pool_curves(Resource.CPU)
    assert used.getData()[0] is None or len(used.getData()[0]) == 0

    feed(charts.model, make_device, make_state, range(10))
    charts.refresh()
    assert charts.pool_curves(Resource.CPU) == (used, total)  # the same items, updated
    x, y = used.getData()
    assert len(x) == 10
    assert x[-1] == 0.0 and x[0] == pytest.approx(-9 / 60)  # minutes before the newest sample
    assert np.allclose(y, 21.0)  # half of 42 cores
    assert np.allclose(total.getData()[1], 42.0)
    memory_used = charts.pool_curves(Resource.MEMORY)[0].getData()[1]
    assert memory_used[-1] == pytest.approx((2048.0 * 10 + 2 * 4096.0) / 1024.0)  # in GB

    feed(charts.model, make_device, make_state, range(10, 100))
    charts.refresh()
    assert len(used.getData()[0]) == 30  # the ring's capacity, however long it runs
    assert "21 of 42 cores" in charts.pool_summary(Resource.CPU)


def test_headline_tiles_show_totals_and_tasks(
    charts: ResourceCharts, make_device: MakeDevice, make_state: MakeState
) -> None:
    feed(charts.model, make_device, make_state, range(1))
    charts.refresh()
    assert charts.tiles["devices"].value == "3"
    assert charts.tiles["cpu"].value == "42 cores"
    assert charts.tiles["cpu"].detail.startswith("21 in use")
    assert charts.tiles["tasks"].value == "3 running"
    assert charts.tiles["tasks"].detail == "5 queued · 0 done"
    assert charts.tiles["gpu"].detail == "none in the pool"


def test_redraws_are_coalesced_to_about_one_a_second(
    qtbot: QtBot, charts: ResourceCharts, make_device: MakeDevice, make_state: MakeState
) -> None:
    charts.refresh()
    before = charts.redraw_count
    feed(charts.model, make_device, make_state, range(20))  # 20 batches at once
    qtbot.waitUntil(lambda: charts.redraw_count > before, timeout=3000)
    qtbot.wait(200)
    assert charts.redraw_count == before + 1  # one redraw for all twenty
    assert len(charts.pool_curves(Resource.CPU)[0].getData()[0]) == 20


def test_hidden_charts_do_not_redraw_until_shown(
    qtbot: QtBot, charts: ResourceCharts, make_device: MakeDevice, make_state: MakeState
) -> None:
    charts.hide()
    charts.REDRAW_INTERVAL_MS = 10
    before = charts.redraw_count
    feed(charts.model, make_device, make_state, range(5))
    qtbot.wait(100)
    assert charts.redraw_count == before
    charts.show()
    assert charts.redraw_count == before + 1
    assert len(charts.pool_curves(Resource.CPU)[0].getData()[0]) == 5


def test_per_device_breakdown_shows_the_top_devices(
    qtbot: QtBot, charts: ResourceCharts, make_device: MakeDevice, make_state: MakeState
) -> None:
    feed(charts.model, make_device, make_state, range(4))
    qtbot.mouseClick(charts.device_button, Qt.MouseButton.LeftButton)
    assert charts.breakdown is Resource.CPU
    curves = charts.device_curves()
    assert len(curves) == 2  # bounded to top_devices
    assert np.allclose(curves[0].getData()[1], 16.0)  # Big: half of 32 cores
    assert np.allclose(curves[1].getData()[1], 4.0)  # Mid
    legend = charts.legend_label.text()
    assert "Big" in legend and "Mid" in legend and "Small" not in legend
    assert "1 more device" in legend

    charts.resource_combo.setCurrentIndex(charts.resource_combo.findData(Resource.MEMORY))
    assert charts.breakdown is Resource.MEMORY
    assert charts.device_curves()[0].getData()[1][-1] == pytest.approx(8.0)  # Big: 8 GB

    charts.show_pool()
    assert charts.breakdown is None


def test_clicking_a_pooled_plot_opens_its_breakdown(qtbot: QtBot, charts: ResourceCharts) -> None:
    plot = charts.pool_plot(Resource.GPU)
    centre = QPoint(plot.width() // 2, plot.height() // 2)
    qtbot.mouseClick(plot.viewport(), Qt.MouseButton.LeftButton, pos=centre)
    qtbot.waitUntil(lambda: charts.breakdown is Resource.GPU, timeout=2000)


def test_device_names_cannot_inject_markup(
    charts: ResourceCharts, make_device: MakeDevice, make_state: MakeState
) -> None:
    charts.model.apply(make_state(1, [make_device("x", "<b>evil</b>\u202etxt.exe")], full=True), 0.0)
    charts.show_device_breakdown(Resource.CPU)
    # Nor reverse what follows them (a right-to-left override shown as its escape).
    assert "&lt;b&gt;evil&lt;/b&gt;\\u202etxt.exe" in charts.legend_label.text()


def test_top_devices_must_be_positive(qtbot: QtBot) -> None:
    with pytest.raises(ValueError, match="top_devices"):
        ResourceCharts(PoolModel(), top_devices=0)
