"""When a produce request is written on the broker's event loop (issue 17 §4, ``flush``)."""

from __future__ import annotations

from talos.broker.partition import INLINE_MAX_BYTES, INLINE_MIN_GAP_S, write_inline

LONE = {"durability": "flush", "store": "posix", "nbytes": 200, "idle": True, "since_last_s": 1.0}


def test_a_lone_small_flush_request_on_posix_is_written_inline() -> None:
    assert write_inline(**LONE)
    assert write_inline(**{**LONE, "nbytes": INLINE_MAX_BYTES})


def test_sync_and_hdfs_keep_the_worker() -> None:
    assert not write_inline(**{**LONE, "durability": "sync"})  # fdatasync takes milliseconds
    assert not write_inline(**{**LONE, "store": "hdfs"})  # hflush is a round trip


def test_a_busy_partition_keeps_the_worker_and_its_group_commit() -> None:
    assert not write_inline(**{**LONE, "idle": False})
    assert not write_inline(**{**LONE, "since_last_s": INLINE_MIN_GAP_S / 2})
    assert not write_inline(**{**LONE, "nbytes": INLINE_MAX_BYTES + 1})
