"""The partition executor frees a released partition's slot (issue 12 §4)."""

from __future__ import annotations

import threading

from talos.broker.executor import PartitionExecutor


def test_pins_are_counted_and_the_last_unpin_frees_the_slot() -> None:
    executor = PartitionExecutor(workers=2, max_queued_bytes=1 << 20)
    try:
        for partition in range(100):
            executor.pin(("t", partition))
        assert executor.pinned == 100
        # the partition taken over again: old and new log share one worker
        again = executor.pin(("t", 0))
        assert again == executor.pin(("t", 0))
        for _ in range(3):
            executor.unpin(("t", 0))
        for partition in range(1, 100):
            executor.unpin(("t", partition))
        assert executor.pinned == 0
        # a late job of a released partition still runs, and leaves no pin behind
        done = threading.Event()
        executor.submit(("t", 5), done.set)
        assert done.wait(10)
        assert executor.pinned == 0
    finally:
        executor.stop()


def test_a_new_partition_goes_to_the_worker_with_fewer_bytes_queued() -> None:
    executor = PartitionExecutor(workers=2, max_queued_bytes=1 << 20)
    try:
        busy = executor.pin(("t", 0))
        idle = executor.pin(("t", 1))
        assert busy != idle
        executor.reserve(("t", 0), 1000)
        executor.unpin(("t", 1))  # released: its worker now holds no partition and no bytes
        assert executor.pin(("t", 2)) == idle
        # bytes reserved while pinned and released after the last unpin leave no load behind
        executor.unpin(("t", 0))
        executor.release(("t", 0), 1000)
        assert executor.queued_bytes == 0
        executor.reserve(("t", 3), 10)
        assert executor.pin(("t", 4)) == busy  # (t, 2) holds one partition on the other
    finally:
        executor.stop()
