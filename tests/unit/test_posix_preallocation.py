"""Posix segments are preallocated past their end (fallocate KEEP_SIZE, issue 17 §4).

The reserved blocks must never show: the size, every read and a recovery scan see
exactly the bytes appended, during writing, after a crash-like abandon and after close.
"""

from __future__ import annotations

import os

import pytest

from talos.record import valid_prefix_length
from talos.record.batch import PureBatchBuilder
from talos.storage.posix import (
    PREALLOCATE_MAX,
    PREALLOCATE_MIN,
    PosixLogStore,
    _fallocate_keep_size,
    preallocation,
)
from talos.storage.store import Durability


def test_preallocation_reserves_nothing_while_the_bytes_fit() -> None:
    assert preallocation(position=100, allocated=1000, incoming=900) == 1000


def test_preallocation_steps_grow_with_the_segment_within_bounds() -> None:
    assert preallocation(position=0, allocated=0, incoming=10) == 10 + PREALLOCATE_MIN
    assert preallocation(position=1 << 20, allocated=1 << 20, incoming=5) == (2 << 20) + 5
    big = 1 << 30
    assert preallocation(position=big, allocated=big, incoming=1) == big + 1 + PREALLOCATE_MAX


def test_preallocation_covers_an_append_bigger_than_a_step() -> None:
    assert preallocation(position=0, allocated=0, incoming=50 << 20) == (50 << 20) + (64 << 10)


def batch(i: int) -> bytes:
    builder = PureBatchBuilder()
    builder.append(b"v" * (1000 + i))
    return builder.build(i)


def blocks(path: str) -> int:
    return os.stat(path).st_blocks * 512


@pytest.mark.skipif(_fallocate_keep_size is None, reason="fallocate is Linux-only")
def test_reserved_blocks_never_show_and_are_given_back_on_close(tmp_path) -> None:
    store = PosixLogStore(str(tmp_path))
    stream = store.open_append("t/0/seg.log")
    path = os.path.join(str(tmp_path), "t", "0", "seg.log")
    written = b""
    for i in range(50):
        data = batch(i)
        stream.append(data)
        stream.flush(Durability.SYNC)
        written += data
        assert store.visible_length("t/0/seg.log") == len(written) == stream.position
    assert store.read("t/0/seg.log", 0, 10 << 20) == written
    assert valid_prefix_length(store.read("t/0/seg.log", 0, 10 << 20)) == len(written)
    if blocks(path) <= len(written):
        pytest.skip("this filesystem ignores FALLOC_FL_KEEP_SIZE")
    # a second writer (a takeover reopening it) appends at the real end
    stream.close()
    assert blocks(path) < len(written) + PREALLOCATE_MIN
    reopened = store.open_append("t/0/seg.log", create=False)
    assert reopened.position == len(written)
    reopened.append(b"tail")
    reopened.close()
    assert store.read("t/0/seg.log", 0, 10 << 20) == written + b"tail"


def test_a_filesystem_without_fallocate_still_appends(tmp_path, monkeypatch) -> None:
    store = PosixLogStore(str(tmp_path))
    stream = store.open_append("seg.log")
    monkeypatch.setattr(stream, "_preallocate", lambda fd, offset, length: False)
    stream.append(b"abc")
    stream.append(b"def")
    stream.close()
    assert store.read("seg.log", 0, 100) == b"abcdef"
