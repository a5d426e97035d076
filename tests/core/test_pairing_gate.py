"""core.pairing_gate with plain values: attempts counted before the work, one per address."""

from __future__ import annotations

import pytest

from poolnet_desktop.core.pairing_gate import PairingGate, approval_refusal
from poolnet_desktop.core.ratelimit import FailureLimiter


def test_each_attempt_is_counted_before_it_is_admitted_and_overlaps_are_refused() -> None:
    gate = PairingGate(FailureLimiter(max_failures=3, window=60.0))
    assert gate.start("10.0.0.5", now=0.0) is None
    busy = gate.start("10.0.0.5", now=0.1)
    assert busy is not None and busy.counted and "in progress" in busy.message
    assert gate.start("10.0.0.6", now=0.1) is None  # another address is not held up
    assert gate.in_flight() == 2
    gate.finish("10.0.0.5")
    assert gate.start("10.0.0.5", now=0.2) is None  # the third attempt, admitted
    gate.finish("10.0.0.5")
    locked = gate.start("10.0.0.5", now=0.3)
    assert locked is not None and not locked.counted and locked.retry_after == pytest.approx(59.7)
    assert "retry in 60 s" in locked.message
    assert gate.start("10.0.0.5", now=60.05) is None  # the first attempt has expired


def test_finishing_an_address_that_never_started_is_harmless() -> None:
    gate = PairingGate(FailureLimiter())
    gate.finish("10.0.0.9")
    assert gate.in_flight() == 0


def test_the_approval_queue_takes_two_per_address_and_sixteen_in_all() -> None:
    assert approval_refusal([], "a", max_total=16, max_per_address=2) is None
    assert approval_refusal(["a"], "a", max_total=16, max_per_address=2) is None
    third = approval_refusal(["a", "b", "a"], "a", max_total=16, max_per_address=2)
    assert third == "2 devices from a are already waiting for approval; try later"
    assert approval_refusal(["a", "a"], "b", max_total=16, max_per_address=2) is None
    full = approval_refusal([f"10.0.0.{i}" for i in range(16)], "b", max_total=16, max_per_address=2)
    assert full == "too many devices are waiting for approval; try later"
