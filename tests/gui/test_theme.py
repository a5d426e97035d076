"""Theme: light and dark palettes applied to the application and read back by widgets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import shiboken6
from PySide6.QtCore import QEvent
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from poolnet_desktop.gui.drop_zone import DropZone
from poolnet_desktop.gui.theme import DARK, LIGHT, apply_theme, palette_for, theme_for


@pytest.fixture
def app(qapp: QApplication) -> Iterator[QApplication]:
    """The application, its palette and style restored afterwards for the other tests. The
    widgets a test closed are deleted first: they would call into the style replaced here when
    their deletion came later (a CI run crashed in the next test's event processing)."""
    palette, style = qapp.palette(), qapp.style().name()
    yield qapp
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    qapp.setPalette(palette)
    if qapp.style().name() != style:
        qapp.setStyle(style)


def test_each_theme_reads_back_from_its_own_palette() -> None:
    assert theme_for(palette_for(DARK)) is DARK
    assert theme_for(palette_for(LIGHT)) is LIGHT
    assert palette_for(DARK).color(QPalette.ColorRole.Window).name() == DARK.window


def test_apply_theme_restyles_live_widgets(app: QApplication, qtbot: QtBot) -> None:
    zone = DropZone()
    qtbot.addWidget(zone)
    zone.show()
    assert apply_theme(app, dark=True) is DARK
    qtbot.waitUntil(lambda: theme_for(zone.palette()) is DARK)
    qtbot.waitUntil(lambda: DARK.muted in zone.hint_label.styleSheet())  # restyled on the change
    assert apply_theme(app, dark=False) is LIGHT
    qtbot.waitUntil(lambda: LIGHT.muted in zone.hint_label.styleSheet())
    assert app.style().name().lower() == "fusion"


def test_a_scheme_change_keeps_the_style_that_widgets_waiting_for_deletion_use(
    app: QApplication, qtbot: QtBot
) -> None:
    """The system's scheme may change while widgets wait for their deletion (a device card
    just removed): the style they call into on deletion is kept, not replaced."""
    apply_theme(app, dark=True)
    style = shiboken6.getCppPointer(app.style())[0]
    zone = DropZone()
    zone.show()
    zone.deleteLater()
    apply_theme(app, dark=False)
    assert shiboken6.getCppPointer(app.style())[0] == style
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def test_following_the_system_without_a_stated_scheme_keeps_the_palette(app: QApplication) -> None:
    """Offscreen, the system states no scheme: the current palette decides."""
    apply_theme(app, dark=True)
    assert apply_theme(app) is DARK
    apply_theme(app, dark=False)
    assert apply_theme(app) is LIGHT


def test_every_colour_is_a_valid_hex_colour() -> None:
    for theme in (LIGHT, DARK):
        for name, value in vars(theme).items():
            values = value if isinstance(value, tuple) else (value,)
            for colour in values:
                if isinstance(colour, str):
                    assert len(colour) == 7 and int(colour[1:], 16) >= 0, (name, colour)
