"""A small progress bar on stderr (redrawn in place on a terminal, a line a few seconds else)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def render(label: str, done: int, total: int | None, elapsed: float, width: int = 30) -> str:
    """One line: a bar when the total is known (count or duration), then count and rate."""
    rate = done / elapsed if elapsed > 0 else 0.0
    text = f"{label} {done:>12,} msgs {rate:>11,.0f} msg/s {elapsed:6.1f} s"
    if total:
        fraction = min(max(done / total, 0.0), 1.0)
        filled = int(fraction * width)
        text = f"[{'#' * filled}{'.' * (width - filled)}] {fraction * 100:5.1f}% " + text
    return text


class Progress:
    def __init__(
        self,
        label: str,
        total: int | None = None,
        duration: float | None = None,
        stream: TextIO | None = None,
        enabled: bool = True,
    ) -> None:
        self.label = label
        self.total = total
        self.duration = duration
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self._last = 0.0
        self._interval = 0.1 if self.tty else 2.0

    def update(self, done: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self._interval:
            return
        self._last = now
        elapsed = now - self.start
        if self.total:
            line = render(self.label, done, self.total, elapsed)
        elif self.duration:  # a timed run: the bar follows the clock
            line = render(self.label, done, None, elapsed)
            fraction = min(elapsed / self.duration, 1.0)
            filled = int(fraction * 30)
            line = f"[{'#' * filled}{'.' * (30 - filled)}] {fraction * 100:5.1f}% " + line
        else:
            line = render(self.label, done, None, elapsed)
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self, done: int) -> None:
        self.update(done, force=True)
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
