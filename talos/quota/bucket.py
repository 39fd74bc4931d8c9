"""A token bucket that admits while it is out of debt, as a broker quota needs.

The broker cannot make a client wait in line, it can only say "not now": a
request is admitted when the bucket holds no debt, and its whole cost is then
taken, even into debt (a batch larger than the burst must pass some time, or
it never would). A request that meets debt is refused with the time the
debt takes to refill, which the client waits before retrying. Over time the
admitted rate is the bucket's rate, with bursts up to ``burst`` above it.

The arithmetic is pure (``refilled``, ``retry_after``, ``charged``); the
``TokenBucket`` wrapper only keeps the state and reads the injected clock.
"""

from __future__ import annotations

from typing import NamedTuple

from talos.clock import SYSTEM_CLOCK, Clock

#: Seconds of rate a full bucket holds.
DEFAULT_BURST_S = 1.0
#: Debt smaller than this (a float rounding after an exact wait) counts as none.
_EPSILON = 1e-6


class BucketState(NamedTuple):  # a tuple: made on every check, on the request path
    tokens: float  # negative: debt
    at: float  # monotonic time the tokens were counted


def refilled(state: BucketState, now: float, rate: float, burst: float) -> BucketState:
    """Tokens grow at ``rate`` per second up to ``burst``; time never runs backwards."""
    elapsed = max(0.0, now - state.at)
    return BucketState(min(burst, state.tokens + elapsed * rate), max(now, state.at))


def retry_after(state: BucketState, now: float, rate: float, burst: float) -> float:
    """Seconds until the bucket is out of debt: 0 admits now."""
    tokens = refilled(state, now, rate, burst).tokens
    return 0.0 if tokens >= -_EPSILON else -tokens / rate


def charged(state: BucketState, now: float, rate: float, burst: float, cost: float) -> BucketState:
    """Take ``cost`` tokens (after refilling), into debt if need be."""
    full = refilled(state, now, rate, burst)
    return BucketState(full.tokens - cost, full.at)


class TokenBucket:
    """One quota dimension on one broker. ``rate`` may change (a quota or its share
    changed); the tokens and the debt carry over. Not thread-safe: the broker's
    event loop is its only user. ``now`` is the caller's reading of the clock (one
    reading serves every bucket a request meets)."""

    __slots__ = ("burst", "clock", "rate", "state")

    def __init__(self, rate: float, clock: Clock = SYSTEM_CLOCK, burst_s: float = DEFAULT_BURST_S):
        self.clock = clock
        self.rate = rate
        self.burst = rate * burst_s
        self.state = BucketState(self.burst, clock.monotonic())

    def set_rate(self, rate: float, burst_s: float = DEFAULT_BURST_S) -> None:
        self.rate = rate
        self.burst = rate * burst_s
        self.state = BucketState(min(self.state.tokens, self.burst), self.state.at)

    def retry_after(self, now: float) -> float:
        return retry_after(self.state, now, self.rate, self.burst)

    def charge(self, cost: float, now: float) -> None:
        self.state = charged(self.state, now, self.rate, self.burst, cost)
