"""Rate limits with the time passed in: failed attempts per address, and a token bucket.

Both are pure and bounded in memory; the caller reads a monotonic clock and passes seconds.
"""

from __future__ import annotations

from collections import deque


class FailureLimiter:
    """Refuses an address after ``max_failures`` failures within ``window`` seconds.

    A sliding window: the address is let in again once its oldest counted failure is older
    than ``window``. Successes do not wipe the count, so an attacker holding one valid key
    cannot interleave logins to keep guessing codes. At most ``max_addresses`` are tracked;
    past that, addresses whose failures have all expired are dropped first, then the oldest.
    """

    def __init__(self, max_failures: int = 5, window: float = 60.0, max_addresses: int = 10_000) -> None:
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        if window <= 0:
            raise ValueError("window must be positive")
        if max_addresses < 1:
            raise ValueError("max_addresses must be at least 1")
        self.max_failures = max_failures
        self.window = window
        self.max_addresses = max_addresses
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, address: str, now: float) -> float:
        """Seconds until ``address`` may try again; ``0.0`` when it may try now."""
        times = self._failures.get(address)
        if times is None:
            return 0.0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
            return 0.0
        if len(times) < self.max_failures:
            return 0.0
        return times[0] + self.window - now

    def record_failure(self, address: str, now: float) -> float:
        """Count one failure; returns ``retry_after`` as it stands afterwards."""
        times = self._failures.get(address)
        if times is None:
            self._make_room(now)
            times = self._failures[address] = deque(maxlen=self.max_failures)
        times.append(now)
        return self.retry_after(address, now)

    def tracked(self) -> int:
        """How many addresses have failures on record (for tests and diagnostics)."""
        return len(self._failures)

    def _make_room(self, now: float) -> None:
        if len(self._failures) < self.max_addresses:
            return
        horizon = now - self.window
        for address in [a for a, t in self._failures.items() if not t or t[-1] <= horizon]:
            del self._failures[address]
        while len(self._failures) >= self.max_addresses:
            del self._failures[next(iter(self._failures))]


class TokenBucket:
    """``rate`` tokens a second up to ``capacity``; starts full at ``now``.

    Used for bursts that are fine and floods that are not (connections per address, messages
    per session). A clock that steps backwards adds nothing rather than raising.
    """

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be positive")
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._last = now

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Take ``amount`` tokens if there are enough; False (and nothing taken) if not."""
        if amount > self.capacity:
            raise ValueError(f"cannot take {amount} from a bucket of {self.capacity}")
        self._refill(now)
        if self._tokens >= amount:
            self._tokens -= amount
            return True
        return False

    def retry_after(self, now: float, amount: float = 1.0) -> float:
        """Seconds until ``take(amount)`` would succeed; ``0.0`` if it would now."""
        self._refill(now)
        return max(0.0, (amount - self._tokens) / self.rate)
