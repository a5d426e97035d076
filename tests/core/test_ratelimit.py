"""core.ratelimit with the time passed in."""

from __future__ import annotations

import pytest

from poolnet_desktop.core.ratelimit import FailureLimiter, TokenBucket


def test_failures_below_the_limit_are_let_through() -> None:
    limiter = FailureLimiter(max_failures=5, window=60.0)
    for t in range(4):
        assert limiter.record_failure("10.0.0.1", float(t)) == 0.0
    assert limiter.retry_after("10.0.0.1", 4.0) == 0.0


def test_the_fifth_failure_in_a_minute_locks_until_the_oldest_expires() -> None:
    limiter = FailureLimiter(max_failures=5, window=60.0)
    for t in (0.0, 1.0, 2.0, 3.0):
        limiter.record_failure("10.0.0.1", t)
    assert limiter.record_failure("10.0.0.1", 10.0) == pytest.approx(50.0)
    assert limiter.retry_after("10.0.0.1", 30.0) == pytest.approx(30.0)
    assert limiter.retry_after("10.0.0.1", 59.0) == pytest.approx(1.0)
    # At 60 s the first failure leaves the window: four remain, so one more try is allowed.
    assert limiter.retry_after("10.0.0.1", 60.0) == 0.0


def test_addresses_are_counted_apart_and_forgotten_when_clean() -> None:
    limiter = FailureLimiter(max_failures=2, window=10.0)
    limiter.record_failure("a", 0.0)
    limiter.record_failure("a", 1.0)
    assert limiter.retry_after("a", 2.0) > 0
    assert limiter.retry_after("b", 2.0) == 0.0
    assert limiter.retry_after("a", 20.0) == 0.0
    assert limiter.tracked() == 0


def test_memory_stays_bounded_under_many_addresses() -> None:
    limiter = FailureLimiter(max_failures=3, window=60.0, max_addresses=100)
    for i in range(1000):
        limiter.record_failure(f"10.0.{i // 256}.{i % 256}", float(i) / 100)
    assert limiter.tracked() <= 100
    # The most recent address is still tracked.
    assert "10.0.3.231" in limiter._failures


@pytest.mark.parametrize("kwargs", [{"max_failures": 0}, {"window": 0}, {"max_addresses": 0}])
def test_limiter_refuses_nonsense_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FailureLimiter(**kwargs)  # type: ignore[arg-type]


def test_bucket_allows_a_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, capacity=3.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5)
    assert not bucket.take(0.5)
    assert bucket.take(100.0, amount=3.0)  # refill is capped at capacity
    assert not bucket.take(100.0)


def test_bucket_ignores_a_clock_that_steps_back() -> None:
    bucket = TokenBucket(rate=1.0, capacity=1.0, now=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)
    assert bucket.retry_after(5.0) == pytest.approx(1.0)
    assert bucket.take(11.0)


def test_bucket_refuses_impossible_requests() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0.0, capacity=1.0, now=0.0)
    bucket = TokenBucket(rate=1.0, capacity=2.0, now=0.0)
    with pytest.raises(ValueError, match="cannot take 3"):
        bucket.take(0.0, amount=3.0)
