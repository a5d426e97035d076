"""Short labels for the widgets: sizes, percents, platforms and "seen 5 s ago".

Plain functions of their arguments (the caller passes the wall-clock time in), so every label
the cards and charts paint can be checked without a window.
"""

from __future__ import annotations

from datetime import datetime

from poolnet_desktop.core.auth import DEVICE_ID_PREFIX
from poolnet_desktop.core.units import format_mb

_PLATFORMS = {
    "linux": "Linux",
    "darwin": "macOS",
    "macos": "macOS",
    "win32": "Windows",
    "windows": "Windows",
    "android": "Android",
    "ios": "iOS",
    "freebsd": "FreeBSD",
}
_MB_PER_GB = 1024.0
_MB_PER_TB = 1024.0 * 1024.0


def platform_label(platform: str) -> str:
    """``"linux"`` -> ``"Linux"``, ``"darwin"`` -> ``"macOS"``; unknown names are shown as sent."""
    return _PLATFORMS.get(platform.lower(), platform or "unknown")


def percent(part: float, whole: float) -> float:
    """``part`` as a percent of ``whole``, clamped to 0..100 (0 when ``whole`` is not positive)."""
    if whole <= 0:
        return 0.0
    return max(0.0, min(100.0, 100.0 * part / whole))


def used_of_total(used_mb: float, total_mb: float) -> str:
    """``"6.1 / 16.0 GB"``: both sizes in the total's unit, so they compare at a glance."""
    if total_mb >= _MB_PER_TB:
        unit, scale = "TB", _MB_PER_TB
    elif total_mb >= _MB_PER_GB:
        unit, scale = "GB", _MB_PER_GB
    else:
        return f"{used_mb:.0f} / {total_mb:.0f} MB"
    # Three significant digits at most, so the label fits a card's value column.
    digits = 0 if total_mb / scale >= 100 else 1
    return f"{used_mb / scale:.{digits}f} / {total_mb / scale:.{digits}f} {unit}"


def size(mb: float) -> str:
    """A size in MB as a short label (``"15.6 GB"``)."""
    return format_mb(mb)


def number(value: float) -> str:
    """Whole numbers without decimals, others with one: ``"64"``, ``"12.5"``."""
    return f"{value:.0f}" if abs(value - round(value)) < 0.05 else f"{value:.1f}"


def ago(iso_timestamp: str, now_wall: float) -> str:
    """How long ago an ISO-8601 time was: ``"just now"``, ``"42 s ago"``, ``"5 min ago"``.

    The timestamp comes from the network; one that cannot be read gives ``"unknown"`` rather
    than an exception, since this runs while painting.
    """
    try:
        moment = datetime.fromisoformat(iso_timestamp)
    except ValueError:
        return "unknown"
    if moment.tzinfo is None:
        return "unknown"
    seconds = now_wall - moment.timestamp()
    if seconds < 2:
        return "just now"
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h ago"
    return f"{seconds // 86400:.0f} d ago"


def for_reading_aloud(text: str, size: int = 4) -> str:
    """A device id or fingerprint in groups of ``size``, to compare with another screen or
    over the phone (as Syncthing shows device ids): ``pn-abcd efgh ...``, ``A1B2 C3D4 ...``."""
    prefix = DEVICE_ID_PREFIX if text.startswith(DEVICE_ID_PREFIX) else ""
    body = text[len(prefix):] if prefix else text.upper()
    return prefix + " ".join(body[i : i + size] for i in range(0, len(body), size))
