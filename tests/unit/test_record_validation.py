"""The broker's record check (poison batches, issue 11 §3) and the consumer's split decode.

A batch with a valid CRC but records that do not frame as its header says must
be refused before it is stored; the check must agree with the decoder on every
input, so nothing it accepts can fail a consumer.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from talos.errors import CorruptBatch
from talos.record import (
    HEADER_SIZE,
    BatchBuilder,
    Codec,
    Record,
    compress,
    crc32c,
    decode_records,
    encode_batch,
    validate_single_batch,
)
from talos.record.batch import decode_fetch_as, with_base_offset

TS = 1_700_000_000_000


def reframe(records: bytes, count: int, codec: Codec = Codec.NONE) -> bytes:
    """A batch with a valid CRC around ``records`` (raw, uncompressed), claiming ``count``."""
    template = bytearray(encode_batch([Record(b"x", timestamp_ms=TS)], codec=codec))
    body = compress(codec, records) if codec is not Codec.NONE else records
    out = template[:HEADER_SIZE] + body
    struct.pack_into("<I", out, 9, len(out) - 13)  # batch_length
    struct.pack_into("<I", out, 19, count)  # record_count
    struct.pack_into("<I", out, 13, crc32c(bytes(out[17:])))
    return bytes(out)


def records_of(batch: bytes) -> bytes:
    return batch[HEADER_SIZE:]


GOOD = records_of(
    encode_batch(
        [
            Record(b"v" * 100, timestamp_ms=TS),
            Record(b"v" * 100, timestamp_ms=TS),
            Record(None, b"key", (("h", b"1"),), TS + 5),
        ]
    )
)

POISON = {
    # record_count lies: far more records than the bytes hold (would push the log end)
    "count 2^32-1": (GOOD, 2**32 - 1),
    "count one too many": (GOOD, 4),
    "count one too few": (GOOD, 2),
    "garbage": (b"\xff" * 40, 3),
    "length past the end": (b"\xfe\x7f" + GOOD[2:], 3),
    "negative length": (b"\x03" + GOOD[1:], 3),
    "varint of 11 bytes": (b"\x80" * 11 + GOOD, 4),
    "truncated last record": (GOOD[:-1], 3),
    "byte left over": (GOOD + b"\x00", 3),
    "key length -2": (b"\x0a\x00\x03\x00\x00\x00" + GOOD, 4),
    "header key not UTF-8": (
        b"\x10\x00\x01\x01\x02\x02\xff\xfe\x01" + GOOD,
        4,
    ),
    "header count too big": (b"\x0a\x00\x01\x01\x7f\x00" + GOOD, 4),
}


@pytest.mark.parametrize("codec", [Codec.NONE, Codec.ZSTD, Codec.LZ4])
@pytest.mark.parametrize("case", sorted(POISON))
def test_poison_batch_with_a_valid_crc_is_refused(case: str, codec: Codec) -> None:
    records, count = POISON[case]
    batch = reframe(records, count, codec)
    with pytest.raises(CorruptBatch):
        decode_records(batch)  # a consumer could not read it ...
    with pytest.raises(CorruptBatch, match=r"^batch at 0: "):
        validate_single_batch(batch)  # ... so the broker refuses it


def test_control_the_good_records_reframed_are_accepted() -> None:
    for codec in Codec:
        header = validate_single_batch(reframe(GOOD, 3, codec))
        assert header.record_count == 3


def test_compressed_batch_that_is_not_a_frame_is_refused() -> None:
    batch = bytearray(reframe(GOOD, 3))
    struct.pack_into("<H", batch, 17, Codec.ZSTD)
    struct.pack_into("<I", batch, 13, crc32c(bytes(batch[17:])))
    with pytest.raises(CorruptBatch, match="zstd"):
        validate_single_batch(bytes(batch))


def test_same_shape_runs_are_checked_record_by_record() -> None:
    """The run shortcut must still catch one odd record among many identical ones."""
    builder = BatchBuilder()
    for _ in range(500):
        builder.append(b"a" * 100, timestamp_ms=TS)
    good = records_of(builder.build())
    size = len(good) // 500
    validate_single_batch(reframe(good, 500))
    for index in (1, 2, 250, 499):
        at = index * size
        for rel, byte in ((0, 0x7F), (1, 0x80), (2, 0x85), (3, 0x04), (size - 1, 0x01)):
            bad = bytearray(good)
            bad[at + rel] = byte
            with pytest.raises(CorruptBatch):
                decode_records(reframe(bytes(bad), 500))
            with pytest.raises(CorruptBatch):
                validate_single_batch(reframe(bytes(bad), 500))


records = st.builds(
    Record,
    value=st.none() | st.binary(max_size=200),
    key=st.none() | st.binary(max_size=20),
    headers=st.lists(
        st.tuples(st.text(max_size=5), st.none() | st.binary(max_size=5)), max_size=2
    ).map(tuple),
    timestamp_ms=st.integers(TS - 10**6, TS + 10**6),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    recs=st.lists(records, min_size=1, max_size=20),
    repeat=st.integers(1, 30),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3),
    count_delta=st.sampled_from([0, 0, 0, -1, 1]),
)
def test_the_check_agrees_with_the_decoder(
    recs: list[Record], repeat: int, edits: list[tuple[int, int]], count_delta: int
) -> None:
    """On any bytes behind a valid CRC: the check passes exactly when decoding succeeds."""
    whole = recs * repeat
    raw = bytearray(records_of(encode_batch(whole)))
    for at, byte in edits:
        raw[at % len(raw)] = byte
    batch = reframe(bytes(raw), max(1, len(whole) + count_delta))
    try:
        decoded = decode_records(batch)
    except CorruptBatch:
        with pytest.raises(CorruptBatch):
            validate_single_batch(batch)
    else:
        assert validate_single_batch(batch).record_count == len(decoded)


def test_decode_fetch_returns_the_records_before_a_bad_batch() -> None:
    first = with_base_offset(encode_batch([Record(b"a"), Record(b"b")]), 10)
    second = with_base_offset(encode_batch([Record(b"c")]), 12)
    bad = with_base_offset(reframe(GOOD, 2**32 - 1), 13)
    after = with_base_offset(encode_batch([Record(b"d")]), 14)
    fetch = first + second + bad + after
    out, found = decode_fetch_as(fetch, Record, 11)
    assert [(r.offset, r.value) for r in out] == [(11, b"b"), (12, b"c")]
    assert found is not None
    assert (found.offset, found.next_offset) == (13, 13 + 2**32 - 1)
    # asked for an offset inside the bad batch: it is still the one reported
    out, found = decode_fetch_as(bad + after, Record, 20)
    assert out == [] and found is not None and found.offset == 20
    # a fetch without a bad batch
    assert decode_fetch_as(first + second, Record, 0)[1] is None
    # bytes that are not even a header: the extent is unknown, one offset is skipped
    out, found = decode_fetch_as(first + b"\x07" * 100, Record, 10)
    assert len(out) == 2 and found is not None and (found.offset, found.next_offset) == (12, 13)
