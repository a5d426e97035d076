"""Who may start a pairing, or wait for the owner's approval, right now.

Pure: the caller passes the time and the addresses; the host's authenticator carries the
answers out. A pairing attempt is counted against its address *before* any key work, so ten
guesses sent at once spend the address's allowance exactly as ten sent one after another, and
an address runs one pairing at a time, so the guesses cannot overlap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from poolnet_desktop.core.ratelimit import FailureLimiter


@dataclass(frozen=True)
class Refusal:
    """Why not, in words for the device; ``counted`` when the attempt is already on record."""

    message: str
    retry_after: float | None = None
    counted: bool = False


class PairingGate:
    """Admits pairing attempts: counted first (in ``limiter``), one in flight per address."""

    def __init__(self, limiter: FailureLimiter) -> None:
        self.limiter = limiter
        self._in_flight: set[str] = set()

    def start(self, address: str, now: float) -> Refusal | None:
        """Count an attempt from ``address`` and admit it (None), or say why not. An admitted
        attempt must be ended with ``finish``, whatever its outcome."""
        wait = self.limiter.retry_after(address, now)
        if wait > 0:
            return Refusal(f"too many pairing attempts from {address}; retry in {math.ceil(wait)} s", retry_after=wait)
        self.limiter.record_failure(address, now)
        if address in self._in_flight:
            return Refusal(f"another pairing from {address} is in progress; one at a time", counted=True)
        self._in_flight.add(address)
        return None

    def finish(self, address: str) -> None:
        self._in_flight.discard(address)

    def in_flight(self) -> int:
        return len(self._in_flight)


def approval_refusal(waiting_from: Iterable[str], address: str, *, max_total: int, max_per_address: int) -> str | None:
    """Why a new device from ``address`` may not join the owner's approval queue, or None.
    ``waiting_from`` is the address of every other device waiting now: one address must not
    fill the queue that everybody's newcomers share."""
    waiting = list(waiting_from)
    if len(waiting) >= max_total:
        return "too many devices are waiting for approval; try later"
    same = sum(1 for other in waiting if other == address)
    if same >= max_per_address:
        return f"{same} devices from {address} are already waiting for approval; try later"
    return None
