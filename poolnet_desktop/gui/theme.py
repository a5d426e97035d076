"""Light and dark colours that follow the system, for Qt widgets and pyqtgraph plots alike.

``install_theme(app)`` applies the system's scheme (``QStyleHints.colorScheme``, Qt 6.5+) and
follows its changes. Widgets never hold colours: they call ``theme_for(self.palette())`` when
they paint, and charts recolour on ``QEvent.PaletteChange``, so one palette switch restyles all.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QGuiApplication, QPainter, QPalette, QPen
from PySide6.QtWidgets import QApplication, QWidget


@dataclass(frozen=True)
class Theme:
    """The named colours of one scheme, as ``#rrggbb`` strings (usable by Qt and pyqtgraph)."""

    dark: bool
    window: str
    surface: str  # cards, plots, tiles
    surface_alt: str  # pills, hovered buttons
    text: str
    muted: str
    border: str
    track: str  # the empty part of a bar
    accent: str
    good: str
    warn: str
    bad: str
    offline: str
    cpu: str
    gpu: str
    memory: str
    storage: str
    series: tuple[str, ...]  # one colour per device curve, distinguishable side by side


LIGHT = Theme(
    dark=False,
    window="#f4f5f7",
    surface="#ffffff",
    surface_alt="#eef0f4",
    text="#1b2030",
    muted="#677084",
    border="#dfe3ea",
    track="#e8ebf0",
    accent="#3366ee",
    good="#1c9a57",
    warn="#c97a06",
    bad="#d42f2f",
    offline="#a1a7b3",
    cpu="#3b82f6",
    gpu="#9b51e0",
    memory="#0fa37f",
    storage="#e08a00",
    series=(
        "#3b82f6", "#e4572e", "#0fa37f", "#9b51e0",
        "#e08a00", "#d6336c", "#17a2b8", "#6c757d",
    ),
)

DARK = Theme(
    dark=True,
    window="#15171c",
    surface="#1e2128",
    surface_alt="#2a2e37",
    text="#e7e9ee",
    muted="#9aa2b1",
    border="#2e333d",
    track="#303540",
    accent="#6f95ff",
    good="#3ccf84",
    warn="#f3b33d",
    bad="#ff6b6b",
    offline="#6b7280",
    cpu="#60a5fa",
    gpu="#c084fc",
    memory="#34d399",
    storage="#fbbf24",
    series=(
        "#60a5fa", "#ff8a65", "#34d399", "#c084fc",
        "#fbbf24", "#f472b6", "#22d3ee", "#cbd5e1",
    ),
)


def theme_for(palette: QPalette) -> Theme:
    """The theme matching a palette: dark when its window colour is dark."""
    return DARK if palette.color(QPalette.ColorRole.Window).lightness() < 128 else LIGHT


SURFACE_RADIUS = 12


def paint_surface(widget: QWidget) -> tuple[QPainter, Theme]:
    """Start painting ``widget`` as a rounded, bordered surface (cards, tiles, chart panels);
    returns the antialiased painter, for the widget to draw its content, and the theme."""
    theme = theme_for(widget.palette())
    painter = QPainter(widget)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(QPen(QColor(theme.border), 1))
    painter.setBrush(QColor(theme.surface))
    painter.drawRoundedRect(QRectF(widget.rect()).adjusted(0.5, 0.5, -0.5, -0.5), SURFACE_RADIUS, SURFACE_RADIUS)
    return painter, theme


def system_prefers_dark(app: QGuiApplication) -> bool:
    """The system's choice; when it states none (e.g. offscreen), judge the current palette."""
    scheme = app.styleHints().colorScheme()
    if scheme == Qt.ColorScheme.Dark:
        return True
    if scheme == Qt.ColorScheme.Light:
        return False
    return theme_for(app.palette()).dark


def palette_for(theme: Theme) -> QPalette:
    """A complete QPalette in the theme's colours, disabled roles included."""
    role = QPalette.ColorRole
    palette = QPalette()
    colours = {
        role.Window: theme.window,
        role.WindowText: theme.text,
        role.Base: theme.surface,
        role.AlternateBase: theme.surface_alt,
        role.Text: theme.text,
        role.Button: theme.surface,
        role.ButtonText: theme.text,
        role.BrightText: theme.bad,
        role.Highlight: theme.accent,
        role.HighlightedText: "#ffffff",
        role.ToolTipBase: theme.surface_alt,
        role.ToolTipText: theme.text,
        role.PlaceholderText: theme.muted,
        role.Link: theme.accent,
        role.Mid: theme.border,
        role.Midlight: theme.surface_alt,
        role.Dark: theme.border,
        role.Light: theme.surface,
    }
    for colour_role, value in colours.items():
        palette.setColor(colour_role, QColor(value))
    for colour_role in (role.WindowText, role.Text, role.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, colour_role, QColor(theme.offline))
    return palette


def apply_theme(app: QApplication, dark: bool | None = None) -> Theme:
    """Style the whole application light or dark (``None``: as the system prefers).

    Uses the Fusion style, the one that honours a palette on every platform, so the colours
    look the same on Windows, macOS and Linux. The style is set once: setting it again (the
    system's scheme changes at any time) deletes the style object in use, which a widget
    still waiting for its deletion then calls into.
    """
    theme = DARK if (system_prefers_dark(app) if dark is None else dark) else LIGHT
    if app.style().name().lower() != "fusion":
        app.setStyle("Fusion")
    app.setPalette(palette_for(theme))
    return theme


def install_theme(app: QApplication) -> Theme:
    """Apply the system's scheme now and again whenever the user switches it."""
    app.styleHints().colorSchemeChanged.connect(lambda _scheme: apply_theme(app))
    return apply_theme(app)
