"""Ending the servers that tests and benches start, each in its own process group.

Every launcher (ZooKeeper, Kafka, MiniDFS, NATS, Redis) starts its server with
``start_new_session=True`` so that a JVM's or a shell's children die with it.
Stopping is the same for all of them: wake the group (it may be SIGSTOPped by
a fault test), ask it to end, and SIGKILL it if it has not within the timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from types import TracebackType
from typing import Self


def kill_process_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole group and reap the leader: no clean-up runs."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)


def stop_process_group(
    proc: subprocess.Popen[bytes] | None,
    timeout: float,
    ask: Callable[[subprocess.Popen[bytes]], None] = _terminate,
) -> None:
    """Ask the group to end (SIGTERM unless ``ask`` says otherwise), then SIGKILL it."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGCONT)
        ask(proc)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        kill_process_group(proc)


class Server:
    """``with Launcher(...) as server:`` starts it and always stops it, also when the
    start fails half-way (some processes may already run)."""

    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
