"""Sizes and durations as people write them ("2 GiB", "512MB", "1h30m") and the seed
protocol's megabytes."""

from __future__ import annotations

import re

BYTES_PER_MB = 1024 * 1024

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int | float) -> int:
    """Return a size in bytes from ``"2 GiB"``, ``"512MB"``, ``"100"`` or a plain number.

    Raises ValueError with the accepted units when the text cannot be read.
    """
    if isinstance(text, bool):
        raise ValueError(f"not a size: {text!r}")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"a size cannot be negative: {text!r}")
        return int(text)
    match = _SIZE.match(text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (write e.g. '512 MiB', '2 GB' or a byte count)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1,
    "sec": 1,
    "m": 60,
    "min": 60,
    "h": 3600,
    "hr": 3600,
    "d": 86400,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
_DURATION = re.compile(rf"\s*(?:{_DURATION_PART.pattern})+")
_DURATION_HINT = "write seconds, or e.g. '90s', '2m', '1h30m'"


def parse_duration(text: str | int | float) -> float:
    """Return seconds from ``90``, ``"90"``, ``"90s"``, ``"2m"``, ``"1h30m"`` or ``"1.5 h"``.

    A bare number is seconds, as everywhere a time is asked for; units may be chained
    (``"1h30m"``), and then each part needs its unit. Raises ValueError saying the accepted
    forms when the text cannot be read.
    """
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"a duration cannot be negative: {text!r}")
        return float(text)
    parts = _DURATION_PART.findall(text) if _DURATION.fullmatch(text) else []
    units = [unit.lower() for _, unit in parts]
    if not parts or any(unit and unit not in _DURATION_UNITS for unit in units) or (len(parts) > 1 and "" in units):
        raise ValueError(f"not a duration: {text!r} ({_DURATION_HINT})")
    return sum(float(number) * _DURATION_UNITS[unit or "s"] for (number, _), unit in zip(parts, units))


def bytes_to_mb(n: int | float) -> float:
    """Bytes to the seed protocol's MB (mebibytes, as its Node server computed them)."""
    return n / BYTES_PER_MB


def format_mb(mb: float) -> str:
    """A short human label for a size given in MB: ``"512 MB"``, ``"15.6 GB"``, ``"1.9 TB"``."""
    for unit, scale in (("TB", 1024 * 1024), ("GB", 1024)):
        if mb >= scale:
            return f"{mb / scale:.1f} {unit}"
    return f"{mb:.0f} MB"
