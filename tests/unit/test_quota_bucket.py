"""The broker's token bucket, as a specification: admit while out of debt, charge whole
costs (into debt), refuse with the time the debt takes to refill."""

from __future__ import annotations

import pytest

from talos.clock import ManualClock
from talos.quota.bucket import BucketState, TokenBucket, charged, refilled, retry_after


def test_a_full_bucket_admits_at_once() -> None:
    assert retry_after(BucketState(100, 0.0), 0.0, rate=100, burst=100) == 0.0


def test_a_cost_larger_than_the_burst_passes_once_and_leaves_debt() -> None:
    state = charged(BucketState(100, 0.0), 0.0, rate=100, burst=100, cost=300)
    assert state.tokens == -200
    assert retry_after(state, 0.0, rate=100, burst=100) == pytest.approx(2.0)


def test_debt_refills_at_the_rate() -> None:
    state = BucketState(-200, 0.0)
    assert retry_after(state, 1.5, rate=100, burst=100) == pytest.approx(0.5)
    assert retry_after(state, 2.0, rate=100, burst=100) == 0.0


def test_refill_stops_at_the_burst() -> None:
    assert refilled(BucketState(0, 0.0), 60.0, rate=100, burst=100).tokens == 100


def test_time_running_backwards_adds_nothing() -> None:
    state = refilled(BucketState(10, 5.0), 4.0, rate=100, burst=100)
    assert state == BucketState(10, 5.0)


def test_admitted_rate_converges_to_the_rate() -> None:
    """A client that retries exactly at retry-after gets the bucket's rate, plus the burst."""
    clock = ManualClock()
    bucket = TokenBucket(1000, clock)
    sent = 0
    while clock.monotonic() < 10.0:
        wait = bucket.retry_after(clock.monotonic())
        if wait:
            clock.advance(wait)
            continue
        bucket.charge(300, clock.monotonic())
        sent += 300
    assert 10 * 1000 <= sent <= 11 * 1000 + 300  # 10 s of rate, one burst, one overshoot


def test_a_rate_change_keeps_the_debt_and_caps_the_tokens() -> None:
    clock = ManualClock()
    bucket = TokenBucket(1000, clock)
    bucket.set_rate(100)
    assert bucket.state.tokens == 100  # the burst shrank with the rate
    bucket.charge(300, 0.0)
    bucket.set_rate(1000)
    assert bucket.retry_after(0.0) == pytest.approx(0.2)  # the debt stays, repaid faster
