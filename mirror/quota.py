"""The bandwidth quota of a link: one token bucket shared by a worker's partitions.

The bucket may go into debt: a chunk larger than the burst is let through and
the debt is paid by the callers that come after it, so one big batch never
deadlocks the link while the average rate still holds. The clock is
injectable, so the arithmetic is tested without sleeping.
"""

from __future__ import annotations

import math
import threading

from talos.clock import SYSTEM_CLOCK, Clock
from talos.errors import InvalidArgument

MAX_RATE_BYTES_S = 10**12
DEFAULT_BURST_S = 1.0


def _check_number(value: object, param: str, low: float, high: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise InvalidArgument(f"{param}: must be a number from {low} to {high}, got {value!r}")
    return float(value)


class TokenBucket:
    """``rate_bytes_s`` on average, bursts up to ``burst_bytes``; None rate means unlimited."""

    def __init__(
        self,
        rate_bytes_s: int | None,
        burst_bytes: int | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        if rate_bytes_s is None:
            self.rate: float | None = None
            self.burst = 0.0
        else:
            self.rate = _check_number(rate_bytes_s, "rate_bytes_s", 1, MAX_RATE_BYTES_S)
            default_burst = max(1.0, self.rate * DEFAULT_BURST_S)
            self.burst = (
                default_burst
                if burst_bytes is None
                else _check_number(burst_bytes, "burst_bytes", 1, MAX_RATE_BYTES_S)
            )
        self._tokens = self.burst
        self._last = clock.monotonic()

    @property
    def unlimited(self) -> bool:
        return self.rate is None

    def reserve(self, nbytes: int) -> float:
        """Take ``nbytes`` now; returns how long the caller must wait before sending them."""
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise InvalidArgument(f"nbytes: must be an integer >= 0, got {nbytes!r}")
        rate = self.rate
        if rate is None:
            return 0.0
        with self._lock:
            now = self.clock.monotonic()
            elapsed = max(0.0, now - self._last)
            self._last = now
            self._tokens = min(self.burst, self._tokens + elapsed * rate)
            self._tokens -= nbytes
            return 0.0 if self._tokens >= 0 else -self._tokens / rate

    def take(self, nbytes: int, stop: threading.Event | None = None) -> bool:
        """Reserve and wait; False if ``stop`` was set while waiting."""
        wait = self.reserve(nbytes)
        if wait <= 0:
            return True
        if stop is not None:
            return not stop.wait(wait)
        self.clock.sleep(wait)
        return True
