"""A bounded ring of timestamped samples, for charts of the last minutes.

Pure: the caller passes the time in. Memory is fixed at construction (``capacity`` samples of
``len(channels)`` floats in flat ``array('d')`` buffers, 8 bytes a value), so a dashboard can keep
one ring per device for hundreds of devices and still never grow.

Samples closer together than ``interval`` seconds collapse into one: the newest values replace
the last sample instead of adding another, so a ring of 600 samples at ``interval=1.0`` always
spans about ten minutes however often updates arrive.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence


class History:
    """A fixed-size ring of ``(time, values...)`` samples with named channels, oldest first."""

    def __init__(self, channels: Sequence[str], capacity: int, interval: float = 0.0) -> None:
        if not channels:
            raise ValueError("a history needs at least one channel")
        if len(set(channels)) != len(channels):
            raise ValueError(f"channel names must be unique: {list(channels)}")
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1 sample, got {capacity}")
        if interval < 0:
            raise ValueError(f"interval cannot be negative, got {interval}")
        self._channels = tuple(channels)
        self._index = {name: i for i, name in enumerate(self._channels)}
        self._capacity = capacity
        self._interval = interval
        self._times = array("d", bytes(8 * capacity))
        self._values = [array("d", bytes(8 * capacity)) for _ in self._channels]
        self._start = 0  # physical slot of the oldest sample
        self._len = 0
        self._bucket_start = 0.0  # time the newest sample's interval began

    @property
    def channels(self) -> tuple[str, ...]:
        return self._channels

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def interval(self) -> float:
        return self._interval

    def __len__(self) -> int:
        return self._len

    def record(self, now: float, values: Sequence[float]) -> bool:
        """Add a sample at time ``now``, one value per channel in ``channels`` order.

        Returns True when a new sample was added, False when it replaced the newest one
        (``now`` fell within ``interval`` of where that sample began). Once full, adding drops
        the oldest sample. Raises ValueError when the count of values is wrong or ``now`` is
        earlier than the newest sample (the caller's clock must be monotonic).
        """
        if len(values) != len(self._channels):
            raise ValueError(
                f"expected {len(self._channels)} values {self._channels}, got {len(values)}"
            )
        if self._len:
            newest = self._slot(self._len - 1)
            if now < self._times[newest]:
                raise ValueError(
                    f"sample time went backwards: {now} is before {self._times[newest]}"
                )
            if now < self._bucket_start + self._interval:
                self._write(newest, now, values)
                return False
        if self._len < self._capacity:
            slot = self._slot(self._len)
            self._len += 1
        else:
            slot = self._start
            self._start = (self._start + 1) % self._capacity
        self._bucket_start = now
        self._write(slot, now, values)
        return True

    def times(self) -> list[float]:
        """Sample times, oldest first."""
        return self._ordered(self._times)

    def series(self, channel: str) -> list[float]:
        """One channel's values, oldest first, aligned with ``times()``."""
        return self._ordered(self._values[self._channel(channel)])

    def last_time(self) -> float | None:
        """Time of the newest sample, or None while empty."""
        return self._times[self._slot(self._len - 1)] if self._len else None

    def latest(self, channel: str) -> float | None:
        """The newest value of one channel, or None while empty."""
        column = self._values[self._channel(channel)]
        return column[self._slot(self._len - 1)] if self._len else None

    def _channel(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"no channel {name!r}; channels are {self._channels}") from None

    def _slot(self, logical: int) -> int:
        return (self._start + logical) % self._capacity

    def _write(self, slot: int, now: float, values: Sequence[float]) -> None:
        self._times[slot] = now
        for column, value in zip(self._values, values):
            column[slot] = value

    def _ordered(self, column: array[float]) -> list[float]:
        end = self._start + self._len
        if end <= self._capacity:
            return column[self._start : end].tolist()
        return column[self._start :].tolist() + column[: end - self._capacity].tolist()
