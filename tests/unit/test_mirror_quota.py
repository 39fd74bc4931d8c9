"""The link's bandwidth quota: a token bucket on an injected clock."""

from __future__ import annotations

import threading

import pytest

from mirror.quota import TokenBucket
from talos.clock import ManualClock
from talos.errors import InvalidArgument


def test_unlimited_never_waits() -> None:
    bucket = TokenBucket(None, clock=ManualClock())
    assert bucket.unlimited
    assert bucket.reserve(10**9) == 0.0
    assert bucket.take(10**9)


def test_a_burst_passes_then_the_rate_holds() -> None:
    clock = ManualClock()
    bucket = TokenBucket(1000, burst_bytes=1000, clock=clock)
    assert bucket.reserve(1000) == 0.0  # the full bucket
    assert bucket.reserve(500) == pytest.approx(0.5)  # in debt: wait for 500 bytes
    clock.advance(0.5)
    assert bucket.reserve(500) == pytest.approx(0.5)  # the debt was paid, new one
    clock.advance(10)  # refills only up to the burst
    assert bucket.reserve(1000) == 0.0
    assert bucket.reserve(1) == pytest.approx(0.001)


def test_a_chunk_bigger_than_the_burst_goes_through_and_the_next_callers_pay() -> None:
    clock = ManualClock()
    bucket = TokenBucket(1000, burst_bytes=100, clock=clock)
    assert bucket.reserve(5000) == pytest.approx(4.9)
    clock.advance(4.9)
    assert bucket.reserve(0) == 0.0


def test_the_average_rate_converges_to_the_quota() -> None:
    clock = ManualClock()
    bucket = TokenBucket(50_000, clock=clock)
    sent = 0
    start = clock.monotonic()
    for _ in range(1000):
        clock.advance(bucket.reserve(7_000))
        sent += 7_000
    elapsed = clock.monotonic() - start
    # the first burst (one second's worth) comes free; after that, exactly the rate
    assert sent / elapsed == pytest.approx(50_000, rel=0.01)


def test_take_waits_on_the_stop_event_and_reports_a_stop() -> None:
    bucket = TokenBucket(1000, burst_bytes=1)  # system clock
    stop = threading.Event()
    stop.set()
    assert bucket.take(10_000, stop) is False  # would wait 10 s; the stop ends it at once
    assert TokenBucket(10**9).take(100, stop) is True


def test_bad_settings_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="rate_bytes_s"):
        TokenBucket(0)
    with pytest.raises(InvalidArgument, match="burst_bytes"):
        TokenBucket(10, burst_bytes=0)
    with pytest.raises(InvalidArgument, match="nbytes"):
        TokenBucket(10).reserve(-1)
