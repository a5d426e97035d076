"""Reconnection delays: exponential, capped, with jitter so a restarted host is not stampeded."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """``next_delay()`` grows ``base * 2**n`` up to ``cap``; each value is jittered to 50-100 %."""

    base: float = 0.5
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    _attempt: int = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * (2.0**self._attempt))
        self._attempt = min(self._attempt + 1, 32)
        return delay * self.rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        self._attempt = 0
