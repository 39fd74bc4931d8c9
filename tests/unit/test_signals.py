"""A stop signal that arrives while the main thread holds the event's lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from talos.signals import stop_on_signals

# The main thread is inside the event's lock when SIGTERM arrives, as it is for a
# moment inside every Event.wait(); a handler calling Event.set() never returns.
HELD_LOCK = textwrap.dedent(
    """
    import os, signal, threading
    from talos.signals import stop_on_signals
    stop = threading.Event()
    stop_on_signals(stop)
    with stop._cond:
        os.kill(os.getpid(), signal.SIGTERM)
    print("stopped" if stop.wait(10) else "not stopped", flush=True)
    """
)


def test_signal_while_the_event_lock_is_held_sets_the_event() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HELD_LOCK], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the process deadlocked in its SIGTERM handler")
    assert proc.returncode == 0, err
    assert out.strip() == "stopped"


def test_restore_puts_the_previous_handler_back_and_ends_the_watcher() -> None:
    stop = threading.Event()
    before = signal.getsignal(signal.SIGUSR1)
    restore = stop_on_signals(stop, [signal.SIGUSR1])
    assert signal.getsignal(signal.SIGUSR1) is not before
    watchers = [t for t in threading.enumerate() if t.name == "talos-signal-watch"]
    restore()
    assert signal.getsignal(signal.SIGUSR1) is before
    deadline = time.monotonic() + 5
    while any(t.is_alive() for t in watchers) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.is_alive() for t in watchers)
    assert not stop.is_set()


def test_a_signal_sets_the_event() -> None:
    stop = threading.Event()
    restore = stop_on_signals(stop, [signal.SIGUSR1])
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.wait(5)
    finally:
        restore()
