"""Record batch format: round trips, CRC, corruption and truncation detection, rewriting."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import string
import struct

import crcmod.predefined
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from talos.config import MAX_OFFSET
from talos.errors import CorruptBatch, InvalidArgument
from talos.record import (
    HEADER_SIZE,
    BatchBuilder,
    Codec,
    Record,
    compress,
    crc32c,
    decode_all,
    decode_records,
    decompress,
    encode_batch,
    iter_batches,
    parse_codec,
    parse_header,
    record_size,
    stamp_base_offset,
    valid_prefix_length,
    verify_batch,
    verify_single_batch,
    with_base_offset,
    with_origin,
)
from talos.record.crc import crc32c_extend

# crcmod's C extension: an implementation independent of google-crc32c.
crcmod_crc32c = crcmod.predefined.mkCrcFun("crc-32c")

I64 = st.integers(-(2**63), 2**63 - 1)
payloads = st.none() | st.binary(max_size=300)
headers = st.lists(
    st.tuples(st.text(max_size=12), st.none() | st.binary(max_size=40)), max_size=4
).map(tuple)
records = st.builds(Record, value=payloads, key=payloads, headers=headers, timestamp_ms=I64)
record_lists = st.lists(records, min_size=1, max_size=12)
origins = st.text(alphabet=string.ascii_letters + string.digits + "-._ ", max_size=16)


@st.composite
def batches(draw: st.DrawFn) -> tuple[bytes, list[Record], dict[str, int | str]]:
    """A batch with arbitrary records and header fields, plus what went in."""
    fields: dict[str, int | str] = {
        "codec": draw(st.sampled_from(Codec)),
        "base_offset": draw(st.integers(0, MAX_OFFSET - 100)),
        "producer_id": draw(st.integers(-1, 2**63 - 1)),
        "producer_epoch": draw(st.integers(-1, 2**15 - 1)),
        "base_sequence": draw(st.integers(-1, 2**31 - 1)),
        "origin_cluster": draw(origins),
        "origin_offset": draw(st.integers(-1, MAX_OFFSET)),
    }
    recs = draw(record_lists)
    return encode_batch(recs, **fields), recs, fields  # type: ignore[arg-type]


def small_batch(**kwargs: object) -> bytes:
    recs = [
        Record(b"hello", b"k1", (("trace", b"abc"), ("empty", None)), 1_000),
        Record(None, None, (), 990),
        Record(b"", b"", (("\u00e9", b""),), 1_005),
    ]
    return encode_batch(recs, **kwargs)  # type: ignore[arg-type]


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def forge(records_area: bytes, *, record_count: int = 1, attributes: int = 0) -> bytes:
    """A batch with a valid CRC around arbitrary record bytes, packed from the documented layout."""
    tail = struct.pack("<HIqqqhi16sq", attributes, record_count, 0, 0, -1, -1, -1, b"", -1)
    crc = crcmod_crc32c(tail + records_area)
    return struct.pack("<BqII", 1, 0, 4 + len(tail) + len(records_area), crc) + tail + records_area


# --- layout -----------------------------------------------------------------------------------


def test_header_fields_sit_at_the_documented_offsets() -> None:
    recs = [Record(b"v", timestamp_ms=50), Record(b"w", timestamp_ms=70)]
    batch = encode_batch(
        recs,
        codec=Codec.LZ4,
        base_offset=1234,
        producer_id=77,
        producer_epoch=3,
        base_sequence=40,
        origin_cluster="west",
        origin_offset=999,
    )
    assert batch[0] == 1
    assert struct.unpack_from("<q", batch, 1)[0] == 1234
    assert struct.unpack_from("<I", batch, 9)[0] == len(batch) - 13
    assert struct.unpack_from("<I", batch, 13)[0] == crcmod_crc32c(batch[17:])
    assert struct.unpack_from("<H", batch, 17)[0] == 2
    assert struct.unpack_from("<I", batch, 19)[0] == 2
    assert struct.unpack_from("<qq", batch, 23) == (50, 70)
    assert struct.unpack_from("<qhi", batch, 39) == (77, 3, 40)
    assert batch[53:69] == b"west" + bytes(12)
    assert struct.unpack_from("<q", batch, 69)[0] == 999
    assert decompress(Codec.LZ4, batch[HEADER_SIZE:])[:1] == b"\x0a"  # 1st record: 5 bytes

    header = verify_single_batch(batch)
    assert header.total_size == len(batch)
    assert header.next_offset == 1236
    assert header.last_sequence == 41
    assert header.codec is Codec.LZ4
    assert header.origin_cluster == "west"


def test_record_encoding_matches_the_documented_layout() -> None:
    batch = encode_batch(
        [Record(b"ab", b"k", (("h", None),), timestamp_ms=10), Record(None, timestamp_ms=9)]
    )
    assert batch[HEADER_SIZE:] == bytes(
        [
            # length 10, delta 0, key len 1, "k", value len 2, "ab", 1 header, "h", null value
            *(20, 0, 2, ord("k"), 4, ord("a"), ord("b"), 1, 1, ord("h"), 1),
            # length 4, delta -1, null key, null value, no headers
            *(8, 1, 1, 1, 0),
        ]
    )


def test_unset_fields_read_as_none() -> None:
    header = verify_single_batch(encode_batch([Record(b"x")]))
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (-1, -1, -1)
    assert header.last_sequence == -1
    assert (header.origin_cluster, header.origin_offset) == ("", -1)


# --- round trips ------------------------------------------------------------------------------


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_round_trip(case: tuple[bytes, list[Record], dict[str, int | str]]) -> None:
    batch, recs, fields = case
    base = int(fields["base_offset"])
    expected = [dataclasses.replace(r, offset=base + i) for i, r in enumerate(recs)]
    assert decode_records(batch) == expected
    assert decode_records(bytearray(batch)) == expected
    assert decode_records(memoryview(b"xyz" + batch + b"tail"), 3) == expected

    header = verify_single_batch(batch)
    assert header.record_count == len(recs)
    assert header.first_timestamp == recs[0].timestamp_ms
    assert header.max_timestamp == max(r.timestamp_ms for r in recs)
    for name in ("base_offset", "producer_id", "producer_epoch", "base_sequence"):
        assert getattr(header, name) == fields[name]
    assert header.origin_cluster == fields["origin_cluster"]
    assert header.origin_offset == fields["origin_offset"]
    assert header.codec == fields["codec"]


@settings(deadline=None)
@given(record_lists, st.sampled_from(Codec), st.integers(-1, 2**31 - 1))
def test_builder_matches_encode_batch(recs: list[Record], codec: Codec, sequence: int) -> None:
    builder = BatchBuilder(codec)
    sizes = [builder.append(r.value, r.key, r.timestamp_ms, r.headers) for r in recs]
    assert builder.record_count == len(recs)
    assert builder.size_in_bytes == HEADER_SIZE + sum(sizes)
    builder.set_sequence(5, 2, sequence)
    batch = builder.build(base_offset=40)
    assert batch == encode_batch(
        recs, codec=codec, base_offset=40, producer_id=5, producer_epoch=2, base_sequence=sequence
    )
    if codec is Codec.NONE:
        assert len(batch) == builder.size_in_bytes


@given(payloads, payloads, headers)
def test_record_size_is_the_encoded_size(
    value: bytes | None, key: bytes | None, hdrs: tuple[tuple[str, bytes | None], ...]
) -> None:
    batch = encode_batch([Record(value, key, hdrs)])
    assert record_size(value, key, hdrs) == len(batch) - HEADER_SIZE


def test_builder_accepts_buffers_and_list_headers() -> None:
    builder = BatchBuilder()
    builder.append(bytearray(b"v"), memoryview(b"k"), 5, [["h", b"x"]])  # type: ignore[arg-type, list-item]
    assert decode_records(builder.build()) == [Record(b"v", b"k", (("h", b"x"),), 5, 0)]


# --- CRC --------------------------------------------------------------------------------------


@given(st.binary(max_size=5000), st.integers(0, 50))
def test_crc_matches_crcmod(data: bytes, cut: int) -> None:
    expected = crcmod_crc32c(data)
    assert crc32c(data) == expected
    assert crc32c(bytearray(data)) == expected
    assert crc32c(memoryview(data)) == expected
    assert crc32c(memoryview(b"\xff" * cut + data + b"\xff")[cut:-1]) == expected
    assert crc32c_extend(crc32c(data[:cut]), data[cut:]) == expected


def test_crc_of_large_views_matches_crcmod() -> None:
    data = os.urandom(3 * 256 * 1024 + 17)
    expected = crcmod_crc32c(data[5:])
    assert crc32c(memoryview(data)[5:]) == expected
    assert crc32c(memoryview(bytearray(data))[5:]) == expected
    assert crc32c(memoryview(data).cast("B")[::-1]) == crcmod_crc32c(data[::-1])
    assert crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C


# --- corruption and truncation ----------------------------------------------------------------


@pytest.mark.parametrize("codec", list(Codec))
def test_every_single_bit_flip_is_detected(codec: Codec) -> None:
    batch = small_batch(codec=codec, producer_id=9, origin_cluster="dc2", origin_offset=3)
    assert len(decode_records(batch)) == 3
    for bit in range(72, len(batch) * 8):  # all after the base offset (the broker stamps it)
        damaged = flip(batch, bit)
        with pytest.raises(CorruptBatch):
            verify_single_batch(damaged)
        with pytest.raises(CorruptBatch):
            decode_records(damaged)
    for bit in range(8):
        with pytest.raises(CorruptBatch, match="magic"):
            decode_records(flip(batch, bit))


def test_base_offset_is_outside_the_crc() -> None:
    batch = small_batch()
    for bit in range(8, 72):
        verify_single_batch(flip(batch, bit))


@settings(deadline=None)
@given(batches(), st.data())
def test_random_bit_flips_are_detected(
    case: tuple[bytes, list[Record], dict[str, int | str]], data: st.DataObject
) -> None:
    batch = case[0]
    bit = data.draw(st.integers(72, len(batch) * 8 - 1))
    damaged = flip(batch, bit)
    with pytest.raises(CorruptBatch):
        verify_single_batch(damaged)
    with pytest.raises(CorruptBatch):
        decode_records(damaged)
    assert valid_prefix_length(damaged) == 0


@pytest.mark.parametrize("codec", list(Codec))
def test_every_truncation_is_detected(codec: Codec) -> None:
    batch = small_batch(codec=codec)
    for size in range(len(batch)):
        cut = batch[:size]
        with pytest.raises(CorruptBatch):
            verify_single_batch(cut)
        with pytest.raises(CorruptBatch):
            decode_records(cut)
        with pytest.raises(CorruptBatch):
            verify_batch(cut)
        assert list(iter_batches(cut)) == []
        assert valid_prefix_length(cut) == 0


def test_trailing_bytes_fail_the_single_batch_check() -> None:
    batch = small_batch()
    with pytest.raises(CorruptBatch, match="bytes given"):
        verify_single_batch(batch + b"\x00")
    assert verify_batch(batch + b"\x00").total_size == len(batch)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(batches(), min_size=1, max_size=4),
    st.sampled_from(["truncate", "flip", "garbage", "nothing"]),
    st.data(),
)
def test_scan_returns_exactly_the_valid_prefix(
    cases: list[tuple[bytes, list[Record], dict[str, int | str]]], damage: str, data: st.DataObject
) -> None:
    valid = [case[0] for case in cases]
    prefix = b"".join(valid)
    last = data.draw(batches())[0]
    if damage == "truncate":
        last = last[: data.draw(st.integers(0, len(last) - 1))]
    elif damage == "flip":
        last = flip(last, data.draw(st.integers(72, len(last) * 8 - 1)))
    elif damage == "garbage":
        last = data.draw(st.binary(min_size=1, max_size=200))
    else:
        last = b""
    buf = prefix + last

    starts = [sum(len(b) for b in valid[:i]) for i in range(len(valid))]
    found = list(iter_batches(buf))
    assert [pos for pos, _ in found] == starts
    assert [h.total_size for _, h in found] == [len(b) for b in valid]
    assert valid_prefix_length(buf) == len(prefix)
    assert valid_prefix_length(bytearray(b"??" + buf), 2) == len(prefix)
    expected = [r for b in valid for r in decode_records(b)]
    assert decode_all(prefix) == expected
    if last:
        with pytest.raises(CorruptBatch):
            decode_all(buf)
    else:
        assert decode_all(buf) == expected


def test_empty_buffer_scans_to_nothing() -> None:
    assert list(iter_batches(b"")) == []
    assert valid_prefix_length(b"") == 0
    assert decode_all(b"") == []


@given(st.binary(max_size=400), st.integers(0, 3))
def test_arbitrary_bytes_never_raise_anything_but_corrupt_batch(data: bytes, pos: int) -> None:
    for candidate in (data, b"\x01" + data):
        with contextlib.suppress(CorruptBatch):
            decode_records(candidate, min(pos, len(candidate)))


@given(st.binary(max_size=300), st.integers(1, 2**32 - 1), st.integers(0, 2))
def test_arbitrary_records_with_a_valid_crc_raise_only_corrupt_batch(
    area: bytes, count: int, attributes: int
) -> None:
    batch = forge(area, record_count=count, attributes=attributes)
    try:
        decoded = decode_records(batch)
    except CorruptBatch:
        return
    assert len(decoded) == count


@settings(deadline=None)
@given(record_lists, st.data())
def test_mutated_records_with_a_valid_crc_raise_only_corrupt_batch(
    recs: list[Record], data: st.DataObject
) -> None:
    area = bytearray(encode_batch(recs)[HEADER_SIZE:])
    for _ in range(data.draw(st.integers(1, 4))):
        area[data.draw(st.integers(0, len(area) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(area)))
    try:
        decoded = decode_records(forge(bytes(area[:cut]), record_count=len(recs)))
    except CorruptBatch:
        return
    assert len(decoded) == len(recs)


@pytest.mark.parametrize(
    ("area", "count", "attributes", "message"),
    [
        (b"\x08\x00\x01\x01\x00", 2, 0, "cannot hold"),
        (b"\x08\x00\x01\x01\x00\x00", 1, 0, "after the last record"),
        (b"\x03\x00\x01\x01\x00", 1, 0, "bad length"),
        (b"\x08\x00\x05\x01\x00", 1, 0, "bad key length"),
        (b"\x08\x00\x01\x7f\x00", 1, 0, "bad value length"),
        (b"\x10\x00\x01\x01\x01\x02\xff\xfe\x01", 1, 0, "not UTF-8"),
        (b"\x06\x00\x01\x01\x00", 1, 0, "length does not match"),
        (b"\x08\x00\x01\x01\x01", 1, 0, "headers do not fit"),
        (b"\x20" + b"\xff" * 16, 1, 0, "varint longer"),
        (b"not a frame", 1, 1, "zstd"),
        (b"not a frame", 1, 2, "lz4"),
    ],
)
def test_framing_errors_say_what_is_wrong(
    area: bytes, count: int, attributes: int, message: str
) -> None:
    with pytest.raises(CorruptBatch, match=message):
        decode_records(forge(area, record_count=count, attributes=attributes))


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0, b"\x02", "magic"),
        (9, struct.pack("<I", 10), "batch_length"),
        (17, struct.pack("<H", 3), "attributes"),
        (17, struct.pack("<H", 8), "attributes"),
        (19, struct.pack("<I", 0), "record_count"),
        (53, b"d\x00c", "origin_cluster"),
        (53, b"\xff", "origin_cluster"),
    ],
)
def test_bad_header_fields_are_rejected(offset: int, value: bytes, message: str) -> None:
    batch = bytearray(small_batch())
    batch[offset : offset + len(value)] = value
    with pytest.raises(CorruptBatch, match=message):
        parse_header(batch)


# --- rewriting --------------------------------------------------------------------------------


@settings(deadline=None)
@given(batches(), st.integers(0, MAX_OFFSET - 100))
def test_with_base_offset_keeps_the_batch_valid(
    case: tuple[bytes, list[Record], dict[str, int | str]], base: int
) -> None:
    batch = case[0]
    stamped = with_base_offset(batch, base)
    header = verify_single_batch(stamped)
    assert header.base_offset == base
    assert header.crc == verify_single_batch(batch).crc
    assert [r.offset for r in decode_records(stamped)] == list(range(base, base + len(case[1])))


def test_stamp_base_offset_in_place_across_batches() -> None:
    first, second = small_batch(), small_batch(codec=Codec.ZSTD)
    buf = bytearray(first + second)
    stamp_base_offset(buf, 0, 100)
    stamp_base_offset(buf, len(first), 103)
    assert [r.offset for r in decode_all(buf)] == [100, 101, 102, 103, 104, 105]
    with pytest.raises(CorruptBatch):
        stamp_base_offset(buf, 1, 5)
    with pytest.raises(InvalidArgument, match="buf"):
        stamp_base_offset(bytes(buf), 0, 5)  # type: ignore[arg-type]


@settings(deadline=None)
@given(batches(), origins.filter(bool), st.integers(-1, MAX_OFFSET))
def test_with_origin_keeps_the_batch_valid_and_changes_the_crc(
    case: tuple[bytes, list[Record], dict[str, int | str]], origin: str, origin_offset: int
) -> None:
    batch = case[0]
    before = verify_single_batch(batch)
    mirrored = with_origin(batch, origin, origin_offset)
    after = verify_single_batch(mirrored)
    assert (after.origin_cluster, after.origin_offset) == (origin, origin_offset)
    if (origin, origin_offset) != (before.origin_cluster, before.origin_offset):
        assert after.crc != before.crc
    assert after._replace(crc=0, origin_cluster="", origin_offset=0) == before._replace(
        crc=0, origin_cluster="", origin_offset=0
    )
    assert decode_records(mirrored) == decode_records(batch)


def test_with_origin_refuses_a_damaged_batch() -> None:
    damaged = flip(small_batch(), 8 * 100)
    with pytest.raises(CorruptBatch):
        with_origin(damaged, "dc1", 0)


# --- compression ------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", [Codec.ZSTD, Codec.LZ4])
def test_decompress_rejects_bad_frames(codec: Codec) -> None:
    data = os.urandom(500) * 4
    frame = compress(codec, data)
    assert decompress(codec, frame) == data
    assert decompress(codec, memoryview(frame)) == data
    for bad in (frame[:-1], frame + b"x", frame + frame, b"", b"\x00" * 20):
        with pytest.raises(CorruptBatch):
            decompress(codec, bad)
    with pytest.raises(CorruptBatch, match="more than"):
        decompress(codec, frame, max_size=len(data) - 1)


def test_codec_none_is_identity() -> None:
    assert compress(Codec.NONE, bytearray(b"ab")) == b"ab"
    assert decompress(Codec.NONE, memoryview(b"ab")) == b"ab"


# --- bad input --------------------------------------------------------------------------------


def test_parse_codec() -> None:
    assert parse_codec("none") is Codec.NONE
    assert parse_codec("zstd") is Codec.ZSTD
    assert parse_codec("LZ4") is Codec.LZ4
    with pytest.raises(
        InvalidArgument, match=r"compression: must be one of none, zstd, lz4, got 'gzip'"
    ):
        parse_codec("gzip")


@pytest.mark.parametrize(
    ("call", "param"),
    [
        (lambda: encode_batch([Record(b"x")], origin_cluster="x" * 17), "origin_cluster"),
        (lambda: encode_batch([Record(b"x")], origin_cluster="d\u00e9"), "origin_cluster"),
        (lambda: with_origin(small_batch(), "a-very-long-cluster", 0), "origin_cluster"),
        (lambda: with_origin(small_batch(), "dc1", -2), "origin_offset"),
        (lambda: encode_batch([]), "records"),
        (lambda: encode_batch([Record(b"x")], base_offset=-1), "base_offset"),
        (lambda: with_base_offset(small_batch(), 2**63), "base_offset"),
        (lambda: BatchBuilder(codec=7), "codec"),  # type: ignore[arg-type]
        (lambda: BatchBuilder(producer_epoch=2**15), "producer_epoch"),
        (lambda: BatchBuilder().set_sequence(-2, 0, 0), "producer_id"),
        (lambda: BatchBuilder().set_sequence(1, 0, 2**31), "base_sequence"),
        (lambda: BatchBuilder().append("text"), "value"),  # type: ignore[arg-type]
        (lambda: BatchBuilder().append(b"v", key="k"), "key"),  # type: ignore[arg-type]
        (lambda: BatchBuilder().append(b"v", timestamp_ms=2**63), "timestamp_ms"),
        (lambda: BatchBuilder().append(b"v", timestamp_ms=1.5), "timestamp_ms"),  # type: ignore[arg-type]
        (lambda: BatchBuilder().append(b"v", headers=[(b"k", b"v")]), "headers"),  # type: ignore[list-item]
        (lambda: BatchBuilder().append(b"v", headers=[("k", "v")]), "headers"),  # type: ignore[list-item]
        (lambda: BatchBuilder().append(b"v", headers=5), "headers"),  # type: ignore[arg-type]
        (lambda: BatchBuilder().build(), "records"),
        (lambda: parse_header(small_batch(), -1), "pos"),
        (lambda: compress(9, b""), "codec"),
    ],
)
def test_bad_input_names_the_parameter(call: object, param: str) -> None:
    with pytest.raises(InvalidArgument, match=rf"^{param}: "):
        call()  # type: ignore[operator]


def test_a_failed_append_leaves_the_builder_unchanged() -> None:
    builder = BatchBuilder()
    builder.append(b"ok", timestamp_ms=7)
    with pytest.raises(InvalidArgument):
        builder.append(b"v", key="k")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        builder.append(b"v", headers=[("k", "v")])  # type: ignore[list-item]
    assert builder.record_count == 1
    assert decode_records(builder.build()) == [Record(b"ok", timestamp_ms=7, offset=0)]
