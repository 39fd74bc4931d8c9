"""A partition-affine thread pool.

All work for one partition runs on the same worker thread, so a partition's
writes need no locks and stay in order. A new partition goes to the worker
with the fewest bytes queued, so one slow topic cannot stall the others. The
bytes queued on the whole broker are bounded: past the bound the broker
answers THROTTLED instead of growing memory. A pin is counted (the old and the
new log of a partition taken over again share one worker) and freed with the
last unpin, so a broker that releases partitions keeps no slot for them.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Hashable

from talos.errors import Throttled

log = logging.getLogger(__name__)

Job = Callable[[], None]


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.partitions = 0
        self.thread = threading.Thread(
            target=self._run, name=f"partition-worker-{index}", daemon=True
        )

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # a job must never kill the worker
                log.exception("partition job failed on worker %d", self.index)


def pick_least_loaded(loads: list[tuple[int, int]]) -> int:
    """Index of the worker with the fewest queued bytes, then fewest partitions."""
    return min(range(len(loads)), key=lambda i: (loads[i][0], loads[i][1], i))


class PartitionExecutor:
    def __init__(self, workers: int, max_queued_bytes: int) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.max_queued_bytes = max_queued_bytes
        self._workers = [_Worker(i) for i in range(workers)]
        self._pins: dict[Hashable, _Worker] = {}
        self._pin_counts: dict[Hashable, int] = {}
        # Bytes queued per partition (a worker's load is the sum over its partitions,
        # counted when a new partition is placed), whether or not it is still pinned.
        self._key_bytes: dict[Hashable, int] = {}
        self._lock = threading.Lock()
        self._queued_bytes = 0
        for worker in self._workers:
            worker.thread.start()

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def pin(self, key: Hashable) -> int:
        """Hold the partition on one worker until the matching :meth:`unpin`; its index."""
        with self._lock:
            self._pin_counts[key] = self._pin_counts.get(key, 0) + 1
            return self._worker_for(key).index

    def unpin(self, key: Hashable) -> None:
        """Drop one hold; the last one frees the partition's slot."""
        with self._lock:
            count = self._pin_counts.pop(key, 0) - 1
            if count > 0:
                self._pin_counts[key] = count
                return
            worker = self._pins.pop(key, None)
            if worker is not None:
                worker.partitions -= 1

    @property
    def pinned(self) -> int:
        """Partitions holding a worker."""
        with self._lock:
            return len(self._pins)

    def _worker_for(self, key: Hashable) -> _Worker:
        worker = self._pins.get(key)
        if worker is None:
            queued = [0] * len(self._workers)
            for pinned, nbytes in self._key_bytes.items():
                holder = self._pins.get(pinned)
                if holder is not None:
                    queued[holder.index] += nbytes
            loads = [(queued[w.index], w.partitions) for w in self._workers]
            worker = self._workers[pick_least_loaded(loads)]
            if key in self._pin_counts:
                worker.partitions += 1
                self._pins[key] = worker
        return worker

    def reserve(self, key: Hashable, nbytes: int) -> None:
        """Account for bytes about to be queued for a partition, or push back."""
        with self._lock:
            if self._queued_bytes + nbytes > self.max_queued_bytes and self._queued_bytes > 0:
                raise Throttled(
                    f"broker has {self._queued_bytes} bytes queued (limit "
                    f"{self.max_queued_bytes}); retry later"
                )
            self._queued_bytes += nbytes
            self._key_bytes[key] = self._key_bytes.get(key, 0) + nbytes

    def release(self, key: Hashable, nbytes: int) -> None:
        with self._lock:
            self._queued_bytes -= nbytes
            left = self._key_bytes.pop(key, 0) - nbytes
            if left > 0:
                self._key_bytes[key] = left

    def submit(self, key: Hashable, job: Job) -> None:
        """Run ``job`` on the partition's worker; an unpinned key's job (a late one after
        release) runs on the least-loaded worker and leaves no pin behind."""
        with self._lock:
            worker = self._worker_for(key)
        worker.jobs.put(job)

    def stop(self) -> None:
        for worker in self._workers:
            worker.jobs.put(None)
        for worker in self._workers:
            worker.thread.join(timeout=10)
