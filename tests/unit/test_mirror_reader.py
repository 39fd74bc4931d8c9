"""The reader's pure parts: which bytes of a segment read count as batches to copy."""

from __future__ import annotations

from mirror.reader import _segment_for, valid_batches
from talos.coord.partition_state import PartitionState, SegmentInfo
from talos.record.batch import Record, encode_batch


def batch(base: int, count: int = 2) -> bytes:
    return encode_batch([Record(value=b"v" * 50) for _ in range(count)], base_offset=base)


def offsets(data: bytes, offset: int, limit: int | None = None) -> list[int]:
    headers, _, _ = valid_batches(data, offset, limit)
    return [h.base_offset for h in headers]


def test_whole_batches_from_the_one_holding_the_offset() -> None:
    data = batch(0) + batch(2) + batch(4)
    assert offsets(data, 0) == [0, 2, 4]
    assert offsets(data, 2) == [2, 4]  # earlier batches (an index boundary) are skipped
    assert offsets(data, 3) == [2, 4]  # mid-batch: the batch holding it comes first
    assert offsets(data, 6) == []
    _, positions, used = valid_batches(data, 2)
    assert positions == [len(batch(0)), 2 * len(batch(0))] and used == len(data)


def test_a_torn_tail_is_never_returned() -> None:
    whole = batch(0) + batch(2)
    torn = whole + batch(4)[:-7]
    assert offsets(torn, 0) == [0, 2]
    assert valid_batches(torn, 0)[2] == len(whole)
    assert offsets(batch(0)[:30], 0) == []  # not even a header


def test_a_crc_invalid_batch_ends_the_valid_prefix() -> None:
    bad = bytearray(batch(2))
    bad[-1] ^= 1
    data = batch(0) + bytes(bad) + batch(4)
    assert offsets(data, 0) == [0]


def test_offsets_must_continue_without_a_gap() -> None:
    data = batch(0) + batch(5)  # 2..4 missing
    assert offsets(data, 0) == [0]


def test_nothing_past_a_sealed_end() -> None:
    data = batch(0) + batch(2) + batch(4)
    assert offsets(data, 0, limit=4) == [0, 2]
    assert offsets(data, 0, limit=3) == [0]  # a batch straddling the end is dropped too


def test_the_segment_holding_an_offset() -> None:
    state = PartitionState(
        epoch=3,
        owner="b1",
        segments=(
            SegmentInfo(0, 1, 10, 500),
            SegmentInfo(10, 2, 10, 0),  # empty: sealed at its base by a takeover
            SegmentInfo(10, 3, 25, 900),
            SegmentInfo(25, 3),  # open
        ),
    )
    assert _segment_for(state, 0) == state.segments[0]
    assert _segment_for(state, 9) == state.segments[0]
    assert _segment_for(state, 10) == state.segments[2]
    assert _segment_for(state, 24) == state.segments[2]
    assert _segment_for(state, 25) == state.segments[3]
    assert _segment_for(state, 1000) == state.segments[3]
    sealed_only = PartitionState(segments=(SegmentInfo(0, 1, 10, 500),))
    assert _segment_for(sealed_only, 10) is None  # between a seal and the next segment
    assert _segment_for(PartitionState(), 0) is None
