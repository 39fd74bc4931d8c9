"""Load generators in worker processes: one Python process per producer or consumer.

One Python process drives about one core, so ``--producers N`` means N
processes. Each worker sets up (connects, looks up metadata), says it is
ready, and waits for the common go signal, so the timed parts start together.
Progress travels through one shared counter per worker; results come back
over a queue. Every process started here is ended by :meth:`Pool.close`.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from talos.errors import TalosError, TalosTimeout


@dataclass
class WorkResult:
    """What one worker measured; wall-clock start and end so workers can be combined."""

    messages: int = 0
    bytes: int = 0
    started: float = 0.0
    finished: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    failure: str = ""  # set when the worker itself failed
    extra: dict[str, Any] = field(default_factory=dict)


class Tally:
    """A worker's side of the pool: report progress, say ready, wait for go."""

    def __init__(self, counts: Any, slot: int, ready: Any, go: Any, stop: Any) -> None:
        self._counts = counts
        self._slot = slot
        self._ready = ready
        self._go = go
        self._stop = stop

    def add(self, n: int) -> None:
        self._counts[self._slot] += n

    def ready_and_wait(self, timeout: float = 300.0) -> None:
        self._ready.release()
        if not self._go.wait(timeout):
            raise TalosTimeout("bench worker: no go signal")

    def stopping(self) -> bool:
        """True once the parent asked open-ended workers (consumers) to finish."""
        return bool(self._stop.is_set())


Worker = Callable[[Any, Tally], WorkResult]


def _child(
    fn: Worker, spec: Any, counts: Any, slot: int, ready: Any, go: Any, stop: Any, results: Any
) -> None:
    try:
        result = fn(spec, Tally(counts, slot, ready, go, stop))
    except BaseException as exc:  # reported to the parent, which decides
        result = WorkResult(failure=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        ready.release()  # do not leave the parent waiting for a worker that died
    results.put((slot, result))


class Pool:
    """N worker processes running ``fn(spec, tally)``, one per spec."""

    def __init__(self, fn: Worker, specs: Sequence[Any], name: str = "bench") -> None:
        if not specs:
            raise TalosError("bench: a pool needs at least one worker")
        ctx = mp.get_context("spawn")  # grpc does not survive fork
        self.name = name
        self.size = len(specs)
        self._counts = ctx.Array("q", self.size, lock=False)
        self._ready = ctx.Semaphore(0)
        self._go = ctx.Event()
        self._stop = ctx.Event()
        self._results: Any = ctx.Queue()
        self._collected: dict[int, WorkResult] = {}
        self._procs = [
            ctx.Process(
                target=_child,
                args=(fn, spec, self._counts, i, self._ready, self._go, self._stop, self._results),
                name=f"{name}-{i}",
                daemon=True,
            )
            for i, spec in enumerate(specs)
        ]

    def start(self) -> None:
        for proc in self._procs:
            proc.start()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until every worker has set up; raise if one failed meanwhile."""
        deadline = time.monotonic() + timeout
        for _ in range(self.size):
            while not self._ready.acquire(timeout=0.2):
                if time.monotonic() > deadline:
                    raise TalosTimeout(f"{self.name}: workers not ready after {timeout}s")
                self._check_dead()
        self._drain()
        failures = [r.failure for r in self._collected.values() if r.failure]
        if failures:
            raise TalosError(f"{self.name}: a worker failed while setting up:\n{failures[0]}")

    def go(self) -> None:
        self._go.set()

    def stop(self) -> None:
        self._stop.set()

    def progress(self) -> int:
        return int(sum(self._counts))

    def done(self) -> bool:
        self._drain()
        return len(self._collected) == self.size

    def results(self, timeout: float) -> list[WorkResult]:
        deadline = time.monotonic() + timeout
        while not self.done():
            if time.monotonic() > deadline:
                raise TalosTimeout(f"{self.name}: workers did not finish within {timeout}s")
            self._check_dead()
            time.sleep(0.05)
        ordered = [self._collected[i] for i in range(self.size)]
        failures = [r.failure for r in ordered if r.failure]
        if failures:
            raise TalosError(f"{self.name}: a worker failed:\n{failures[0]}")
        return ordered

    def _drain(self) -> None:
        while True:
            try:
                slot, result = self._results.get_nowait()
            except queue.Empty:
                return
            self._collected[slot] = result

    def _check_dead(self) -> None:
        self._drain()
        for i, proc in enumerate(self._procs):
            if proc.exitcode is not None and i not in self._collected:
                time.sleep(0.2)  # its result may still be in the pipe
                self._drain()
                if i not in self._collected:
                    raise TalosError(f"{self.name}: worker {i} exited with {proc.exitcode}")

    def close(self) -> None:
        self._go.set()
        self._stop.set()
        for proc in self._procs:
            if proc.pid is not None:
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(timeout=5)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        self._results.close()
        self._results.join_thread()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def combine(results: Sequence[WorkResult]) -> tuple[int, int, float, list[float], int]:
    """(messages, bytes, seconds from the first start to the last end, latencies, errors)."""
    messages = sum(r.messages for r in results)
    nbytes = sum(r.bytes for r in results)
    started = min(r.started for r in results)
    finished = max(r.finished for r in results)
    latencies = [x for r in results for x in r.latencies_ms]
    errors = sum(r.errors for r in results)
    return messages, nbytes, max(finished - started, 1e-9), latencies, errors
