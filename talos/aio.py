"""The asyncio event loop Talos runs on (uvloop's, unless told otherwise), and one on a thread.

uvloop's loop is written in C. On the produce path, where the broker's loop
and the producer's I/O loop each run once per request, it took the round trip
at 5K msg/s from 1.04 to 0.78 ms p50 and from 2.0 to 1.4 ms p99 on the 2-core
machine (bench/README.md). ``TALOS_EVENT_LOOP=asyncio`` selects the standard
library's loop, for debugging or where uvloop is not installed.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from talos.errors import InvalidArgument

T = TypeVar("T")

LOOPS = ("uvloop", "asyncio")


def loop_kind() -> str:
    """The loop chosen by TALOS_EVENT_LOOP (default uvloop, asyncio if it is missing)."""
    kind = os.environ.get("TALOS_EVENT_LOOP", "") or "uvloop"
    if kind not in LOOPS:
        raise InvalidArgument(f"TALOS_EVENT_LOOP: must be one of {', '.join(LOOPS)}, got {kind!r}")
    if kind == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "asyncio"
    return kind


def new_event_loop() -> asyncio.AbstractEventLoop:
    if loop_kind() == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run() on the chosen loop."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


class IoLoop:
    """An asyncio loop on its own daemon thread; other threads hand it work."""

    def __init__(self, name: str) -> None:
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the loop and wait for its result (not from the loop thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def is_current(self) -> bool:
        """True on the loop's own thread, where waiting for the loop would deadlock."""
        return threading.current_thread() is self._thread

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5.0)
        if not self._thread.is_alive():
            self.loop.close()
