"""An injectable clock, so tests and the chaos nemesis can move time.

Deadlines use ``monotonic``; timestamps stored in records use ``wall_ms``.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall_ms(self) -> int: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class ShiftedClock:
    """The system clock shifted by an adjustable offset (for clock-jump faults)."""

    def __init__(self, base: Clock | None = None) -> None:
        self._base: Clock = base or SystemClock()
        self.wall_offset_ms = 0
        self.monotonic_offset = 0.0

    def monotonic(self) -> float:
        return self._base.monotonic() + self.monotonic_offset

    def wall_ms(self) -> int:
        return self._base.wall_ms() + self.wall_offset_ms

    def sleep(self, seconds: float) -> None:
        self._base.sleep(seconds)


class ManualClock:
    """A clock that only moves when told to; for unit tests of timing decisions."""

    def __init__(self, monotonic: float = 0.0, wall_ms: int = 1_700_000_000_000) -> None:
        self._monotonic = monotonic
        self._wall_ms = wall_ms

    def monotonic(self) -> float:
        return self._monotonic

    def wall_ms(self) -> int:
        return self._wall_ms

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self._monotonic += seconds
        self._wall_ms += int(seconds * 1000)


SYSTEM_CLOCK = SystemClock()
