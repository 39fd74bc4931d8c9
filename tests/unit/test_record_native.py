"""The native record accelerator (talos/record/_native.c) against the pure-Python code.

Both must give the same bytes for the same records (encode), the same records for the
same bytes (decode), and reject the same bad input and corrupt framing with the same
error and message. The pure side runs with ``batch._native`` set to None, as in a
checkout where the extension was not built or with TALOS_PURE=1.
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import google_crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from talos.errors import CorruptBatch, TalosError
from talos.record import HEADER_SIZE, Codec, Record, compress, crc32c, validate_single_batch
from talos.record import batch as batch_mod
from talos.record.batch import (
    NativeBatchBuilder,
    PureBatchBuilder,
    TupleMaker,
    decode_fetch_as,
    decode_records_as,
)
from talos.record.crc import crc32c_extend

pytestmark = pytest.mark.skipif(
    NativeBatchBuilder is None,
    reason="the native accelerator is not built (make venv builds it; TALOS_PURE=1 hides it)",
)

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
TS = 1_700_000_000_000


@contextlib.contextmanager
def pure() -> Iterator[None]:
    """Run batch.py's functions on the pure-Python path."""
    saved = batch_mod._native
    batch_mod._native = None
    try:
        yield
    finally:
        batch_mod._native = saved


def comparable(value: Any) -> Any:
    """``value`` with every exception in it replaced by its type name and message."""
    if isinstance(value, BaseException):
        return (type(value).__name__, str(value))
    if type(value) in (tuple, list):
        return type(value)(map(comparable, value))
    if isinstance(value, tuple):  # a NamedTuple such as BadBatch
        return type(value)(*map(comparable, value))
    return value


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """What ``fn`` returned, or the type and message of the TalosError it raised."""
    try:
        return ("ok", comparable(fn()))
    except TalosError as exc:
        return (type(exc).__name__, str(exc))


def both(fn: Callable[[], Any]) -> tuple[tuple[str, Any], tuple[str, Any]]:
    native = outcome(fn)
    with pure():
        return native, outcome(fn)


def build_with(builder_class: Any, records: list[Record], codec: Codec, **producer: int) -> Any:
    def run() -> bytes:
        builder = builder_class(codec, **producer)
        sizes = [builder.append(r.value, r.key, r.timestamp_ms, r.headers) for r in records]
        return (builder.build(), sizes, builder.record_count, builder.size_in_bytes)

    return outcome(run)


# --- encode ---------------------------------------------------------------------------------

blobs = st.one_of(st.none(), st.binary(max_size=300))
names = st.text(max_size=8)
headers = st.lists(st.tuples(names, st.one_of(st.none(), st.binary(max_size=20))), max_size=4)
timestamps = st.one_of(
    st.integers(TS - 100, TS + 100), st.integers(I64_MIN, I64_MAX), st.sampled_from([0, -1])
)
records = st.builds(
    Record, value=blobs, key=blobs, headers=headers.map(tuple), timestamp_ms=timestamps
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(records, min_size=0, max_size=12),
    st.sampled_from(list(Codec)),
    st.integers(-1, 2**40),
    st.integers(-1, 2**15 - 1),
    st.integers(-1, 2**31 - 1),
)
def test_both_builders_give_the_same_bytes(
    recs: list[Record], codec: Codec, producer_id: int, epoch: int, sequence: int
) -> None:
    fields = {"producer_id": producer_id, "producer_epoch": epoch, "base_sequence": sequence}
    native = build_with(NativeBatchBuilder, recs, codec, **fields)
    assert native == build_with(PureBatchBuilder, recs, codec, **fields)


def test_edge_records_encode_alike() -> None:
    cases = [
        [Record(b"")],
        [Record(None)],
        [Record(b"", key=b"")],
        [Record(b"v", key=b"k", headers=(("", b""), ("é✓", None)))],
        [Record(b"x" * (3 << 20), key=b"k" * 70_000, timestamp_ms=TS)],  # large value
        [Record(b"a", timestamp_ms=I64_MAX), Record(b"b", timestamp_ms=I64_MIN)],  # 65-bit delta
        [Record(b"a", timestamp_ms=TS), Record(b"b", timestamp_ms=TS - 1)],  # negative delta
        [Record(b"v", headers=tuple((f"h{i}", b"v") for i in range(40)))],  # many headers
    ]
    for recs in cases:
        for codec in Codec:
            native = build_with(NativeBatchBuilder, recs, codec)
            assert native[0] == "ok"
            assert native == build_with(PureBatchBuilder, recs, codec)


BAD_APPENDS: list[tuple[Any, ...]] = [
    ("text",),
    (b"v", "key"),
    (b"v", None, 1.5),
    (b"v", None, 2**63),
    (b"v", None, -(2**63) - 1),
    (b"v", None, 0, [("h", "text")]),
    (b"v", None, 0, [("h",)]),
    (b"v", None, 0, [(b"h", b"v")]),
    (b"v", None, 0, [("\ud800", b"v")]),  # a lone surrogate cannot be UTF-8
    (b"v", None, 0, "not headers"),
    (b"v", None, 0, 5),
]


@pytest.mark.parametrize("args", BAD_APPENDS, ids=repr)
@pytest.mark.parametrize("first", [False, True], ids=["first", "after-one"])
def test_bad_appends_are_refused_alike(args: tuple[Any, ...], first: bool) -> None:
    def run(cls: Any) -> tuple[str, Any]:
        builder = cls()
        if first:
            builder.append(b"before", None, TS)
        result = outcome(lambda: builder.append(*args))
        return result, builder.record_count, builder.size_in_bytes

    assert run(NativeBatchBuilder) == run(PureBatchBuilder)


def test_other_buffer_types_and_int_likes_encode_alike() -> None:
    def run(cls: Any) -> Any:
        builder = cls()
        builder.append(bytearray(b"value"), memoryview(b"key"), True)
        builder.append(b"v", None, TS, [("h", bytearray(b"x"))])
        builder.append(b"v", None, TS, [("h", b"x"), ("n", None)])  # a list of headers
        builder.append(b"v", None, TS, [])
        builder.append(value=b"kw", timestamp_ms=TS + 1, key=b"k", headers=(("a", None),))
        return builder.build()

    assert run(NativeBatchBuilder) == run(PureBatchBuilder)


def test_build_twice_and_append_after_build() -> None:
    def run(cls: Any) -> list[bytes]:
        builder = cls()
        builder.append(b"one", None, TS)
        first = builder.build()
        again = builder.build(5)
        builder.append(b"two", b"k", TS + 1)
        builder.set_sequence(7, 1, 100)
        return [first, again, builder.build(9), first]

    native = run(NativeBatchBuilder)
    assert native == run(PureBatchBuilder)
    assert native[0] != native[2]  # the first batch handed out was not changed afterwards


def test_empty_batch_is_refused_alike() -> None:
    assert outcome(lambda: NativeBatchBuilder().build()) == outcome(
        lambda: PureBatchBuilder().build()
    )


# --- decode and check -----------------------------------------------------------------------


class Msg(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_ms: int


MAKERS: list[Any] = [Record, TupleMaker(Msg, "t", 3), lambda *fields: fields]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, min_size=1, max_size=12), st.sampled_from(list(Codec)))
def test_decode_gives_the_same_records(recs: list[Record], codec: Codec) -> None:
    data = PureBatchBuilder(codec)
    for r in recs:
        data.append(r.value, r.key, r.timestamp_ms, r.headers)
    batch = data.build(1000)
    for make in MAKERS:
        native, python = both(lambda make=make: decode_records_as(batch, make))
        assert native == python
        assert native[0] == "ok"
    native_records = decode_records_as(batch, Record)
    assert [(r.value, r.key, r.headers, r.timestamp_ms) for r in native_records] == [
        (r.value, r.key, r.headers, r.timestamp_ms) for r in recs
    ]
    assert [r.offset for r in native_records] == list(range(1000, 1000 + len(recs)))


def test_tuple_maker_builds_the_consumers_tuples() -> None:
    builder = PureBatchBuilder()
    builder.append(b"v", b"k", TS, (("h", None),))
    batch = builder.build(42)
    native = decode_records_as(batch, TupleMaker(Msg, "t", 3))
    assert native == [Msg("t", 3, 42, b"k", b"v", (("h", None),), TS)]
    assert type(native[0]) is Msg


def reseal(template: bytes, records: bytes, count: int) -> bytes:
    """A batch with a valid CRC around raw ``records``, claiming ``count`` records."""
    out = bytearray(template[:HEADER_SIZE]) + records
    struct.pack_into("<I", out, 9, len(out) - 13)
    struct.pack_into("<I", out, 19, count)
    struct.pack_into("<H", out, 17, 0)
    struct.pack_into("<I", out, 13, crc32c(bytes(out[17:])))
    return bytes(out)


def sample_batch() -> bytes:
    builder = PureBatchBuilder()
    builder.append(b"v" * 100, None, TS)
    builder.append(b"v" * 100, None, TS)
    builder.append(None, b"key", TS + 5, (("h", b"1"), ("é", None)))
    builder.append(b"w" * 200, b"", TS - 300)
    return builder.build()


SAMPLE = sample_batch()


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, 500), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(-40, 10),
    st.integers(0, 6),
)
def test_corrupt_framing_is_rejected_alike(
    changes: list[tuple[int, int]], resize: int, count: int
) -> None:
    records = bytearray(SAMPLE[HEADER_SIZE:])
    for at, byte in changes:
        records[at % len(records)] = byte
    if resize < 0:
        del records[resize:]
    else:
        records += bytes([0x81] * resize)
    batch = reseal(SAMPLE, bytes(records), count)
    native, python = both(lambda: validate_single_batch(batch))
    assert native == python
    for make in MAKERS[:2]:
        native, python = both(lambda make=make: decode_records_as(batch, make))
        assert native == python
    # the same batch inside a fetch: the bytes after it are there to be misread
    fetch = batch + SAMPLE
    native, python = both(lambda: decode_fetch_as(fetch, Record))
    assert native == python
    native, python = both(lambda: decode_fetch_as(memoryview(bytearray(fetch)), Record))
    assert native == python


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def test_varints_wider_than_64_bits_fall_back_to_the_same_answer() -> None:
    # a timestamp delta of 2^68 (a 10-byte varint): Python's ints hold it, C's do not
    ts = varint(2**68)
    body = ts + b"\x01" + b"\x02v" + b"\x00"
    wide_ts = reseal(SAMPLE, varint(len(body) << 1) + body, 1)
    # a header count of 2^66: the message prints it
    body = b"\x00\x01\x01" + varint(2**66)
    wide_count = reseal(SAMPLE, varint(len(body) << 1) + body, 1)
    # an i64 timestamp that overflows once the delta is added
    body = varint((2**63 - 1) << 1) + b"\x01\x01\x00"
    template = bytearray(SAMPLE)
    struct.pack_into("<q", template, 23, 2**62)
    overflow = reseal(bytes(template), varint(len(body) << 1) + body, 1)
    for batch in (wide_ts, wide_count, overflow):
        native, python = both(lambda batch=batch: decode_records_as(batch, Record))
        assert native == python
        native, python = both(lambda batch=batch: validate_single_batch(batch))
        assert native == python
    assert outcome(lambda: decode_records_as(wide_ts, Record))[1][0].timestamp_ms > I64_MAX


def test_corrupt_compressed_records_are_rejected_alike() -> None:
    records = bytearray(SAMPLE[HEADER_SIZE:])
    records[3] = 0x7F  # a key length past the record
    for codec in (Codec.ZSTD, Codec.LZ4):
        out = bytearray(SAMPLE[:HEADER_SIZE]) + compress(codec, bytes(records))
        struct.pack_into("<I", out, 9, len(out) - 13)
        struct.pack_into("<H", out, 17, codec)
        struct.pack_into("<I", out, 13, crc32c(bytes(out[17:])))
        batch = bytes(out)
        native, python = both(lambda batch=batch: validate_single_batch(batch))
        assert native == python
        assert native[0] == CorruptBatch.__name__


# --- CRC ------------------------------------------------------------------------------------


@given(st.binary(max_size=3000), st.integers(0, 40), st.integers(0, 2**32 - 1))
def test_crc_of_views_matches_google_crc32c(data: bytes, skip: int, seed: int) -> None:
    view = memoryview(bytearray(data))[skip:]
    expected = google_crc32c.extend(seed, bytes(view))
    assert crc32c_extend(seed, view) == expected
    assert crc32c(view) == google_crc32c.value(bytes(view))


def test_crc_of_a_large_buffer() -> None:
    data = os.urandom(5 << 20)
    assert crc32c(bytearray(data)) == google_crc32c.value(data)


def test_talos_pure_selects_the_python_code() -> None:
    code = (
        "from talos.record import batch, crc; "
        "print(batch.BatchBuilder is batch.PureBatchBuilder, batch._native, crc._native)"
    )
    env = {**os.environ, "TALOS_PURE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "None", "None"]
