"""The shortcuts taken for speed keep their promises.

- BatchBuilder.append's fast path writes exactly the bytes the general path writes.
- decode_batches_as skips what a fetch returns before the position, and nothing else.
- RecordFuture, the cheap future send() returns, behaves as a concurrent Future,
  including under concurrent.futures.wait() and as_completed().
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, as_completed, wait
from concurrent.futures import TimeoutError as FutureTimeout

import pytest

from talos.client.consumer import Message
from talos.client.producer import RecordFuture, RecordMetadata, _Outcome
from talos.errors import InvalidArgument, Throttled
from talos.record.batch import (
    BatchBuilder,
    Record,
    decode_batches_as,
    decode_records,
    encode_batch,
)


@pytest.mark.parametrize("size", [0, 1, 60, 61, 62, 63, 64, 127, 128, 8191, 8192, 70_000])
@pytest.mark.parametrize("delta", [0, 1, 63])
def test_fast_append_matches_general_encoding(size: int, delta: int) -> None:
    fast = BatchBuilder()
    general = BatchBuilder()
    value = bytes(range(256)) * (size // 256) + bytes(size % 256)
    # bytearray values take the general path; bytes values the fast one
    assert fast.append(b"first", None, 1000) == general.append(bytearray(b"first"), None, 1000)
    assert fast.append(value, None, 1000 + delta) == general.append(
        bytearray(value), None, 1000 + delta
    )
    assert fast.build(7) == general.build(7)
    decoded = decode_records(fast.build(7))
    assert decoded[1] == Record(value, None, (), 1000 + delta, 8)


def test_fast_append_still_validates() -> None:
    builder = BatchBuilder()
    with pytest.raises(InvalidArgument, match="timestamp_ms"):
        builder.append(b"v", None, 2**63)
    with pytest.raises(InvalidArgument, match="value"):
        builder.append("text", None, 0)  # type: ignore[arg-type]
    builder.append(b"v", None, 100)
    builder.append(b"w", None, 10_000)  # a large delta takes the general path
    builder.append(b"x", None, 50)  # so does a negative one
    assert [r.timestamp_ms for r in decode_records(builder.build())] == [100, 10_000, 50]


def test_decode_batches_as_starts_at_the_position() -> None:
    first = encode_batch([Record(b"a"), Record(b"b"), Record(b"c")], base_offset=10)
    second = encode_batch([Record(b"d"), Record(b"e")], base_offset=13)
    fetched = first + second

    def make(
        value: bytes | None, key: bytes | None, headers: object, ts: int, offset: int
    ) -> Message:
        return Message("t", 0, offset, key, value, (), ts)

    assert [m.offset for m in decode_batches_as(fetched, make, 0)] == [10, 11, 12, 13, 14]
    assert [m.value for m in decode_batches_as(fetched, make, 11)] == [b"b", b"c", b"d", b"e"]
    assert [m.value for m in decode_batches_as(fetched, make, 13)] == [b"d", b"e"]
    assert decode_batches_as(fetched, make, 15) == []


def _futures(count: int = 3) -> tuple[_Outcome, list[RecordFuture]]:
    outcome = _Outcome("t", 2)
    return outcome, [RecordFuture(outcome, i) for i in range(count)]


def test_record_future_result_and_callbacks() -> None:
    outcome, futures = _futures()
    seen: list[RecordMetadata] = []
    futures[1].add_done_callback(lambda f: seen.append(f.result()))
    assert not futures[0].done() and not futures[0].cancel() and not futures[0].cancelled()
    with pytest.raises(FutureTimeout):
        futures[0].result(timeout=0.01)
    outcome.complete(40, None)
    assert [f.result() for f in futures] == [RecordMetadata("t", 2, 40 + i) for i in range(3)]
    assert seen == [RecordMetadata("t", 2, 41)]
    assert futures[2].exception() is None and futures[2].done()
    late: list[int] = []
    futures[2].add_done_callback(lambda f: late.append(f.result().offset))  # runs at once
    assert late == [42]
    with pytest.raises(RuntimeError):
        futures[0].set_result(RecordMetadata("t", 2, 0))


def test_record_future_error_reaches_every_record() -> None:
    outcome, futures = _futures()
    outcome.complete(0, Throttled("busy"))
    for future in futures:
        assert isinstance(future.exception(), Throttled)
        with pytest.raises(Throttled):
            future.result()


def test_record_future_wakes_a_waiting_thread() -> None:
    outcome, futures = _futures(1)
    threading.Timer(0.05, outcome.complete, args=(7, None)).start()
    started = time.monotonic()
    assert futures[0].result(timeout=5).offset == 7
    assert time.monotonic() - started < 4


def test_record_futures_work_with_wait_and_as_completed() -> None:
    first, early = _futures(2)
    second, late = _futures(2)
    threading.Timer(0.05, first.complete, args=(0, None)).start()
    done, pending = wait([*early, *late], timeout=5, return_when=FIRST_COMPLETED)
    assert done == set(early) and pending == set(late)
    threading.Timer(0.05, second.complete, args=(100, None)).start()
    completed = list(as_completed(late, timeout=5))
    assert set(completed) == set(late)
    assert sorted(f.result().offset for f in completed) == [100, 101]
