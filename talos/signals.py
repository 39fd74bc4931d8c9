"""Turning SIGINT/SIGTERM into a ``threading.Event`` without deadlocking.

A Python signal handler runs on the main thread between two bytecodes, possibly
while that thread is inside ``Event.wait()`` holding the event's own
(non-reentrant) lock. A handler that calls ``Event.set()`` then waits for a
lock its own thread holds, forever (CPython documents this; a chaos client hung
this way on SIGTERM). So the handler only writes a byte to a pipe, which takes
no Python lock, and a watcher thread sets the event.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType

TERMINATING = (signal.SIGINT, signal.SIGTERM)


def stop_on_signals(
    stop: threading.Event, signals: Sequence[signal.Signals] = TERMINATING
) -> Callable[[], None]:
    """Set ``stop`` when one of ``signals`` arrives (main thread only).

    Returns a function that puts the previous handlers back and ends the watcher.
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):  # a full pipe already holds a wake-up
            os.write(write_end, b"\0")

    def watch() -> None:
        try:
            if os.read(read_end, 1):  # empty: restored before any signal came
                stop.set()
        finally:
            os.close(read_end)

    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    threading.Thread(target=watch, name="talos-signal-watch", daemon=True).start()

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(write_end)

    return restore
