"""Durations and sizes as people write them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolnet_desktop.core.units import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("90s", 90.0),
        ("2m", 120.0),
        ("2 min", 120.0),
        ("1h30m", 5400.0),
        ("1h 30m 15s", 5415.0),
        ("1.5 h", 5400.0),
        ("500ms", 0.5),
        ("1d", 86400.0),
        ("2M", 120.0),
    ],
)
def test_durations_read_as_written(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "x", "1x", "10s5", "1h30", "-1s", "1 fortnight", True, -3])
def test_unreadable_durations_say_what_is_accepted(text: str | float) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@given(st.integers(0, 10_000), st.integers(0, 59), st.integers(0, 59))
def test_chained_units_add_up(hours: int, minutes: int, seconds: int) -> None:
    assert parse_duration(f"{hours}h{minutes}m{seconds}s") == hours * 3600 + minutes * 60 + seconds
