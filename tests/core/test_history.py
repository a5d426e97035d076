"""The bounded sample ring: order, wrap-around, interval collapsing, and refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolnet_desktop.core.history import History


def test_empty_ring_reports_nothing() -> None:
    ring = History(["a", "b"], capacity=3)
    assert len(ring) == 0
    assert ring.times() == []
    assert ring.series("a") == []
    assert ring.last_time() is None
    assert ring.latest("b") is None


def test_samples_come_back_oldest_first_per_channel() -> None:
    ring = History(["used", "total"], capacity=5)
    for t in range(3):
        assert ring.record(float(t), [t * 10.0, 100.0]) is True
    assert ring.times() == [0.0, 1.0, 2.0]
    assert ring.series("used") == [0.0, 10.0, 20.0]
    assert ring.series("total") == [100.0, 100.0, 100.0]
    assert ring.last_time() == 2.0
    assert ring.latest("used") == 20.0


def test_full_ring_drops_the_oldest_and_stays_bounded() -> None:
    ring = History(["v"], capacity=4)
    for t in range(11):
        ring.record(float(t), [float(t) * 2])
    assert len(ring) == 4
    assert ring.times() == [7.0, 8.0, 9.0, 10.0]
    assert ring.series("v") == [14.0, 16.0, 18.0, 20.0]


def test_samples_within_the_interval_replace_the_newest() -> None:
    ring = History(["v"], capacity=10, interval=1.0)
    assert ring.record(0.0, [1.0]) is True
    assert ring.record(0.4, [2.0]) is False
    assert ring.record(0.9, [3.0]) is False
    assert ring.times() == [0.9]
    assert ring.series("v") == [3.0]
    # The interval counts from where the sample began (0.0), not from its last update (0.9).
    assert ring.record(1.0, [4.0]) is True
    assert ring.times() == [0.9, 1.0]
    assert ring.series("v") == [3.0, 4.0]


def test_equal_times_are_accepted_but_going_back_is_refused() -> None:
    ring = History(["v"], capacity=3)
    ring.record(5.0, [1.0])
    ring.record(5.0, [2.0])
    with pytest.raises(ValueError, match="went backwards"):
        ring.record(4.0, [3.0])
    assert ring.series("v") == [1.0, 2.0]


def test_bad_arguments_get_clear_errors() -> None:
    with pytest.raises(ValueError, match="at least one channel"):
        History([], capacity=3)
    with pytest.raises(ValueError, match="unique"):
        History(["a", "a"], capacity=3)
    with pytest.raises(ValueError, match="capacity"):
        History(["a"], capacity=0)
    with pytest.raises(ValueError, match="negative"):
        History(["a"], capacity=2, interval=-1)
    ring = History(["a", "b"], capacity=2)
    with pytest.raises(ValueError, match="expected 2 values"):
        ring.record(0.0, [1.0])
    with pytest.raises(KeyError, match="no channel 'c'"):
        ring.series("c")


@given(
    capacity=st.integers(1, 20),
    steps=st.lists(st.floats(0, 3, allow_nan=False), max_size=60),
    interval=st.sampled_from([0.0, 0.5, 1.0]),
)
def test_ring_matches_a_plain_list_model(capacity: int, steps: list[float], interval: float) -> None:
    """Against an obviously right (but unbounded) model: same samples, last ``capacity`` kept."""
    ring = History(["v"], capacity=capacity, interval=interval)
    model: list[tuple[float, float]] = []
    bucket = 0.0
    now = 0.0
    for i, step in enumerate(steps):
        now += step
        if model and now < bucket + interval:
            model[-1] = (now, float(i))
        else:
            model.append((now, float(i)))
            bucket = now
        ring.record(now, [float(i)])
    kept = model[-capacity:]
    assert ring.times() == [t for t, _ in kept]
    assert ring.series("v") == [v for _, v in kept]
    assert len(ring) == len(kept) <= capacity
