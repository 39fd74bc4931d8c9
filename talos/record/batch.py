# Record batch, version 1. Little-endian. One CRC-32C covers every byte after the crc field.
#
# offset size field
# 0      1    magic            = 1
# 1      8    base_offset      i64, stamped by the broker (not covered by the CRC)
# 9      4    batch_length     u32, number of bytes after this field (crc .. end of records)
# 13     4    crc              u32, CRC-32C (Castagnoli) of every byte after this field
# 17     2    attributes       u16, bits 0-2: codec (0 none, 1 zstd, 2 lz4); other bits 0
# 19     4    record_count     u32, >= 1
# 23     8    first_timestamp  i64 ms
# 31     8    max_timestamp    i64 ms
# 39     8    producer_id      i64, -1 = none
# 47     2    producer_epoch   i16, -1 = none
# 49     4    base_sequence    i32, -1 = none
# 53     16   origin_cluster   ASCII, NUL-padded; all NUL = local (written in this cluster)
# 69     8    origin_offset    i64, -1 = none (set by mirrors: the base offset in the origin)
# 77          records          record_count records, compressed as a whole per the codec
#
# Total size of a batch = 13 + batch_length. Record i has offset base_offset + i.
#
# Record (varint = base-128, low group first; zvarint = zigzag then varint):
# zvarint  length           bytes of the rest of the record
# zvarint  timestamp_delta  record timestamp - first_timestamp
# zvarint  key_length       -1 = null key
# bytes    key
# zvarint  value_length     -1 = null value
# bytes    value
# varint   header_count
# per header:
#   varint   key_length
#   bytes    key              UTF-8
#   zvarint  value_length     -1 = null
#   bytes    value
"""The record batch: the unit producers build, brokers store as received, consumers decode.

Brokers never re-encode: they check the CRC (:func:`verify_single_batch`),
stamp the base offset (which the CRC leaves out for that reason) and write.
Every decoding error is a :class:`CorruptBatch`, whatever the bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import NotImplementedType
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

from talos.accel import load_native
from talos.config import MAX_OFFSET
from talos.errors import CorruptBatch, InvalidArgument, MessageTooLarge
from talos.record.codec import Codec, check_codec, compress, decompress
from talos.record.crc import Buffer, crc32c, crc32c_extend
from talos.record.varint import ONE_BYTE, read_uvarint, uvarint, zvarint

# Every function below gives the same bytes, records and errors with or without it
# (tests/unit/test_record_native.py); None: the pure-Python code runs.
if TYPE_CHECKING:
    from talos.record import _native
else:
    _native = load_native()

MAGIC = 1
HEADER_SIZE = 77
LENGTH_PREFIX = 13  # magic + base_offset + batch_length: the bytes batch_length does not count
CRC_START = 17  # first byte the CRC covers
ORIGIN_CLUSTER_MAX = 16

_HEADER = struct.Struct("<BqIIHIqqqhi16sq")
_PREFIX = struct.Struct("<BqII")  # magic, base_offset, batch_length, crc
_TAIL = struct.Struct("<HIqqqhi16sq")  # attributes .. origin_offset, under the CRC
_MAGIC_AND_BASE = struct.Struct("<Bq")
_BASE_OFFSET = struct.Struct("<q")
_MIN_BATCH_LENGTH = HEADER_SIZE - LENGTH_PREFIX
_MAX_BATCH_LENGTH = 2**32 - 1
_MAX_RECORD_COUNT = 2**32 - 1
_MIN_RECORD_BYTES = 5  # length, timestamp delta, key length, value length, header count
_CODEC_MASK = 0x7
_MAX_CODEC = max(Codec)
_LOCAL = bytes(ORIGIN_CLUSTER_MAX)
_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_NULL = ONE_BYTE[1]  # zigzag(-1)
_NO_HEADERS = ONE_BYTE[0]
T = TypeVar("T")
# Everything before the value of a record with no key and no headers, by
# (value length << 6 | timestamp delta): producers send many same-sized values.
_VALUE_PREFIXES: dict[int, bytes] = {}
_VALUE_PREFIXES_MAX = 1 << 16


def _value_prefix(size: int, delta: int) -> bytes:
    value_len = uvarint(size << 1)
    body = 3 + len(value_len) + size  # timestamp delta, null key, value length, value, 0 headers
    prefix = b"".join((uvarint(body << 1), ONE_BYTE[delta << 1], _NULL, value_len))
    if len(_VALUE_PREFIXES) >= _VALUE_PREFIXES_MAX:
        _VALUE_PREFIXES.clear()
    _VALUE_PREFIXES[size << 6 | delta] = prefix
    return prefix


@dataclass(frozen=True, slots=True)
class Record:
    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp_ms: int = 0
    offset: int = -1  # filled in when decoded from a stored batch


class BatchHeader(NamedTuple):
    magic: int
    base_offset: int
    batch_length: int
    crc: int
    attributes: int
    record_count: int
    first_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    origin_cluster: str
    origin_offset: int

    @property
    def total_size(self) -> int:
        return LENGTH_PREFIX + self.batch_length

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.record_count

    @property
    def last_sequence(self) -> int:
        if self.base_sequence < 0:
            return -1
        return self.base_sequence + self.record_count - 1

    @property
    def codec(self) -> Codec:
        return Codec(self.attributes & _CODEC_MASK)


# --- validation of caller input -------------------------------------------------------------


def _check_range(value: int, param: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"{param}: must be an integer from {low} to {high}, got {value!r}")


def _check_base_offset(base_offset: int) -> None:
    _check_range(base_offset, "base_offset", 0, MAX_OFFSET)


def _check_producer(producer_id: int, producer_epoch: int, base_sequence: int) -> None:
    _check_range(producer_id, "producer_id", -1, _I64_MAX)
    _check_range(producer_epoch, "producer_epoch", -1, 2**15 - 1)
    _check_range(base_sequence, "base_sequence", -1, 2**31 - 1)


def _origin_field(origin_cluster: str) -> bytes:
    if (
        not isinstance(origin_cluster, str)
        or len(origin_cluster) > ORIGIN_CLUSTER_MAX
        or not origin_cluster.isascii()
        or not origin_cluster.isprintable()
    ):
        raise InvalidArgument(
            f"origin_cluster: must be at most {ORIGIN_CLUSTER_MAX} printable ASCII characters, "
            f"got {origin_cluster!r}"
        )
    return origin_cluster.encode("ascii")  # struct pads it with NULs


def _check_pos(pos: int) -> None:
    if isinstance(pos, bool) or not isinstance(pos, int) or pos < 0:
        raise InvalidArgument(f"pos: must be an integer >= 0, got {pos!r}")


# --- encoding -------------------------------------------------------------------------------


def _encode_headers(headers: Sequence[tuple[str, bytes | None]]) -> bytes:
    parts = [uvarint(len(headers))]
    add = parts.append
    for header in headers:
        try:
            name, value = header
            raw = name.encode("utf-8")
        except (TypeError, ValueError, AttributeError):  # UnicodeEncodeError is a ValueError
            raise InvalidArgument(
                f"headers: each must be a (str, bytes | None) pair, not {header!r}"
            ) from None
        add(uvarint(len(raw)))
        add(raw)
        if value is None:
            add(_NULL)
        elif isinstance(value, bytes | bytearray | memoryview):
            add(zvarint(len(value)))
            add(value)
        else:
            raise InvalidArgument(f"headers: value of {name!r} must be bytes or None")
    return b"".join(parts)


def _varint_size(n: int) -> int:
    return 1 if n < 0x80 else (n.bit_length() + 6) // 7


def _bad_record(
    value: object, key: object, timestamp_ms: object, headers: object = ()
) -> InvalidArgument:
    """Says which argument of an append was wrong (the slow path after a TypeError)."""
    for param, arg in (("value", value), ("key", key)):
        if arg is not None and not isinstance(arg, bytes | bytearray | memoryview):
            return InvalidArgument(f"{param}: must be bytes or None, got {type(arg).__name__}")
    if not isinstance(headers, Sequence):
        return InvalidArgument(
            f"headers: must be a sequence of (str, bytes | None), not {type(headers).__name__}"
        )
    return InvalidArgument(
        f"timestamp_ms: must be an integer from {_I64_MIN} to {_I64_MAX}, got {timestamp_ms!r}"
    )


def bad_record_error(
    value: object, key: object, timestamp_ms: object, headers: object = ()
) -> InvalidArgument:
    """The InvalidArgument for a record whose arguments raised TypeError."""
    return _bad_record(value, key, timestamp_ms, headers)


def _encode_record(
    value: bytes | None,
    key: bytes | None,
    timestamp_ms: int,
    headers: Sequence[tuple[str, bytes | None]],
    count: int,
    first_ts: int,
) -> tuple[bytes, bytes]:
    """(length prefix, rest) of one record, the ``count``-th of a batch whose first
    timestamp is ``first_ts``; InvalidArgument naming the bad argument.

    The general case of :meth:`PureBatchBuilder.append`, and what the native builder
    calls for any input that is not plain bytes/str/int/tuple, so both reject alike.
    """
    try:
        if not _I64_MIN <= timestamp_ms <= _I64_MAX:
            raise _bad_record(None, None, timestamp_ms)
        if count:
            delta = timestamp_ms - first_ts  # a TypeError below if not an int
        elif isinstance(timestamp_ms, int):
            delta = 0
        else:
            raise _bad_record(None, None, timestamp_ms)
        ts = ONE_BYTE[delta << 1] if 0 <= delta < 64 else zvarint(delta)
        if key is None:
            key_len = _NULL
            key = b""
        else:
            n = len(key) << 1
            key_len = ONE_BYTE[n] if n < 0x80 else uvarint(n)
        if value is None:
            value_len = _NULL
            value = b""
        else:
            n = len(value) << 1
            value_len = ONE_BYTE[n] if n < 0x80 else uvarint(n)
        tail = _encode_headers(headers) if headers else _NO_HEADERS
        record = b"".join((ts, key_len, key, value_len, value, tail))
    except TypeError:
        raise _bad_record(value, key, timestamp_ms, headers) from None
    n = len(record) << 1
    return (ONE_BYTE[n] if n < 0x80 else uvarint(n)), record


class _BuilderBase:
    """What both batch builders share: the producer fields, their checks, the header tail."""

    if not TYPE_CHECKING:  # each subclass declares the slots; mypy checks them there
        __slots__ = ()
    _codec: Codec
    _producer_id: int
    _producer_epoch: int
    _base_sequence: int
    _count: int
    _first_ts: int
    _max_ts: int

    def _set_fields(
        self, codec: Codec, producer_id: int, producer_epoch: int, base_sequence: int
    ) -> None:
        self._codec = check_codec(codec)
        self.set_sequence(producer_id, producer_epoch, base_sequence)

    def set_sequence(self, producer_id: int, producer_epoch: int, base_sequence: int) -> None:
        """Idempotent producers number the batch when it is sent, not when it is opened."""
        _check_producer(producer_id, producer_epoch, base_sequence)
        self._producer_id = producer_id
        self._producer_epoch = producer_epoch
        self._base_sequence = base_sequence

    def build(self, base_offset: int = 0) -> bytes:
        return self._finish(base_offset, _LOCAL, -1)

    def _finish(self, base_offset: int, origin: bytes, origin_offset: int) -> bytes:
        raise NotImplementedError

    def _check_finish(self, base_offset: int) -> None:
        _check_base_offset(base_offset)
        if self._count == 0:
            raise InvalidArgument("records: a batch needs at least 1 record, got 0")
        if self._count > _MAX_RECORD_COUNT:
            raise MessageTooLarge(f"records: at most {_MAX_RECORD_COUNT} per batch")

    def _tail(self, origin: bytes, origin_offset: int) -> bytes:
        return _TAIL.pack(
            self._codec,
            self._count,
            self._first_ts,
            self._max_ts,
            self._producer_id,
            self._producer_epoch,
            self._base_sequence,
            origin,
            origin_offset,
        )

    def _assemble(
        self, base_offset: int, records: Buffer, origin: bytes, origin_offset: int
    ) -> bytes:
        """The batch: prefix, tail and ``records`` (compressed already if the codec says so)."""
        batch_length = _checked_batch_length(len(records))
        tail = self._tail(origin, origin_offset)
        crc = crc32c_extend(crc32c(tail), records)
        prefix = _PREFIX.pack(MAGIC, base_offset, batch_length, crc)
        return b"".join((prefix, tail, records))


def _checked_batch_length(records_size: int) -> int:
    batch_length = _MIN_BATCH_LENGTH + records_size
    if batch_length > _MAX_BATCH_LENGTH:
        raise MessageTooLarge(
            f"batch: {LENGTH_PREFIX + batch_length} bytes, more than the format's "
            f"{LENGTH_PREFIX + _MAX_BATCH_LENGTH}"
        )
    return batch_length


class PureBatchBuilder(_BuilderBase):
    """Accumulates records for one partition, cheaply; the producer calls append() per message.

    Records are encoded as they arrive into one bytearray; build() adds the
    header, compresses and computes the CRC once.
    """

    __slots__ = (
        "_base_sequence",
        "_buf",
        "_codec",
        "_count",
        "_first_ts",
        "_max_ts",
        "_producer_epoch",
        "_producer_id",
    )

    def __init__(
        self,
        codec: Codec = Codec.NONE,
        producer_id: int = -1,
        producer_epoch: int = -1,
        base_sequence: int = -1,
    ) -> None:
        self._set_fields(codec, producer_id, producer_epoch, base_sequence)
        self._buf = bytearray()
        self._count = 0
        self._first_ts = 0
        self._max_ts = 0

    @property
    def record_count(self) -> int:
        return self._count

    @property
    def size_in_bytes(self) -> int:
        """Size of the batch if built now, before compression."""
        return HEADER_SIZE + len(self._buf)

    def append(
        self,
        value: bytes | None,
        key: bytes | None = None,
        timestamp_ms: int = 0,
        headers: Sequence[tuple[str, bytes | None]] = (),
    ) -> int:
        """Adds one record; returns its encoded size."""
        count = self._count
        # Fast path, once per message: a bytes value, no key, no headers, a small delta.
        if key is None and not headers and type(value) is bytes and type(timestamp_ms) is int:
            delta = timestamp_ms - self._first_ts if count else 0
            if 0 <= delta < 64 and _I64_MIN <= timestamp_ms <= _I64_MAX:
                size = len(value)
                prefix = _VALUE_PREFIXES.get(size << 6 | delta) or _value_prefix(size, delta)
                buf = self._buf
                buf += prefix
                buf += value
                buf += _NO_HEADERS
                if count == 0:
                    self._first_ts = self._max_ts = timestamp_ms
                elif timestamp_ms > self._max_ts:
                    self._max_ts = timestamp_ms
                self._count = count + 1
                return len(prefix) + size + 1
        length, record = _encode_record(value, key, timestamp_ms, headers, count, self._first_ts)
        buf = self._buf
        buf += length
        buf += record
        if count == 0:
            self._first_ts = self._max_ts = timestamp_ms
        elif timestamp_ms > self._max_ts:
            self._max_ts = timestamp_ms
        self._count = count + 1
        return len(length) + len(record)

    def _finish(self, base_offset: int, origin: bytes, origin_offset: int) -> bytes:
        self._check_finish(base_offset)
        records: Buffer = self._buf
        if self._codec is not Codec.NONE:
            records = compress(self._codec, self._buf)
        return self._assemble(base_offset, records, origin, origin_offset)


NativeBatchBuilder: type[_BuilderBase] | None = None
if _native is not None:

    class _NativeBatchBuilder(_BuilderBase, _native.Builder):
        """PureBatchBuilder with append() in C, writing straight into the batch's bytes:
        an uncompressed batch is handed out by build() without a copy."""

        __slots__ = ("_base_sequence", "_codec", "_producer_epoch", "_producer_id")

        def __init__(
            self,
            codec: Codec = Codec.NONE,
            producer_id: int = -1,
            producer_epoch: int = -1,
            base_sequence: int = -1,
        ) -> None:
            self._set_fields(codec, producer_id, producer_epoch, base_sequence)

        def _finish(self, base_offset: int, origin: bytes, origin_offset: int) -> bytes:
            self._check_finish(base_offset)
            if self._codec is Codec.NONE:
                _checked_batch_length(self.size_in_bytes - HEADER_SIZE)
                return self._seal(base_offset, self._tail(origin, origin_offset))
            records = compress(self._codec, self._records())
            return self._assemble(base_offset, records, origin, origin_offset)

    NativeBatchBuilder = _NativeBatchBuilder

#: The builder producers use: the native one when it was built, else the pure one.
if TYPE_CHECKING:
    BatchBuilder = PureBatchBuilder
else:
    BatchBuilder = NativeBatchBuilder or PureBatchBuilder


def encode_batch(
    records: Sequence[Record],
    *,
    codec: Codec = Codec.NONE,
    base_offset: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    origin_cluster: str = "",
    origin_offset: int = -1,
) -> bytes:
    """One batch holding ``records`` (their ``offset`` is ignored)."""
    origin = _origin_field(origin_cluster)
    _check_range(origin_offset, "origin_offset", -1, MAX_OFFSET)
    builder = BatchBuilder(codec, producer_id, producer_epoch, base_sequence)
    for record in records:
        builder.append(record.value, record.key, record.timestamp_ms, record.headers)
    return builder._finish(base_offset, origin, origin_offset)


def record_size(
    value: bytes | None,
    key: bytes | None = None,
    headers: Sequence[tuple[str, bytes | None]] = (),
) -> int:
    """Encoded size of one record with a one-byte timestamp delta (for max size checks)."""
    size = 1 + (1 if key is None else _varint_size(len(key) << 1) + len(key))
    size += 1 if value is None else _varint_size(len(value) << 1) + len(value)
    size += len(_encode_headers(headers)) if headers else 1
    return _varint_size(size << 1) + size


# --- framing and verification ---------------------------------------------------------------


def parse_header(buf: Buffer, pos: int = 0) -> BatchHeader:
    """The header of the batch at ``pos``: framing only, neither the CRC nor completeness."""
    _check_pos(pos)
    available = len(buf) - pos
    if available < HEADER_SIZE:
        raise CorruptBatch(
            f"batch at {pos}: {max(available, 0)} bytes, shorter than a {HEADER_SIZE}-byte header"
        )
    fields = _HEADER.unpack_from(buf, pos)
    if fields[0] != MAGIC:
        raise CorruptBatch(f"batch at {pos}: magic {fields[0]}, expected {MAGIC}")
    if fields[2] < _MIN_BATCH_LENGTH:
        raise CorruptBatch(
            f"batch at {pos}: batch_length {fields[2]}, less than the minimum {_MIN_BATCH_LENGTH}"
        )
    attributes = fields[4]
    if attributes > _MAX_CODEC:
        raise CorruptBatch(f"batch at {pos}: unknown attributes {attributes:#x}")
    if fields[5] == 0:
        raise CorruptBatch(f"batch at {pos}: record_count is 0")
    raw_origin = fields[11]
    origin = "" if raw_origin == _LOCAL else _decode_origin(raw_origin, pos)
    return BatchHeader._make((*fields[:11], origin, fields[12]))


def _decode_origin(raw: bytes, pos: int) -> str:
    text = raw.rstrip(b"\0")
    if text.isascii():
        origin = text.decode("ascii")
        if origin.isprintable():
            return origin
    raise CorruptBatch(f"batch at {pos}: origin_cluster {raw!r} is not NUL-padded ASCII")


def verify_batch(buf: Buffer, pos: int = 0) -> BatchHeader:
    """The header of the complete, CRC-checked batch at ``pos``."""
    header = parse_header(buf, pos)
    end = pos + LENGTH_PREFIX + header.batch_length
    if end > len(buf):
        raise CorruptBatch(
            f"batch at {pos}: truncated, {len(buf) - pos} of {header.total_size} bytes present"
        )
    actual = crc32c(memoryview(buf)[pos + CRC_START : end])
    if actual != header.crc:
        raise CorruptBatch(f"batch at {pos}: CRC {actual:#010x}, header says {header.crc:#010x}")
    return header


def verify_single_batch(buf: Buffer) -> BatchHeader:
    """Checks that ``buf`` is exactly one valid batch (what a Produce request must carry)."""
    header = verify_batch(buf, 0)
    if header.total_size != len(buf):
        raise CorruptBatch(
            f"batch: {len(buf)} bytes given but the batch is {header.total_size} bytes long"
        )
    return header


def validate_single_batch(buf: Buffer) -> BatchHeader:
    """What a broker accepts from a producer: exactly one CRC-valid batch whose records
    frame exactly as its header says (:func:`check_records`), so no consumer meets a
    batch it cannot decode."""
    header = verify_single_batch(buf)
    check_records(buf, header, 0)
    return header


def check_records(buf: Buffer, header: BatchHeader, pos: int = 0) -> None:
    """CorruptBatch unless the records of the batch at ``pos`` (``header`` parsed there) are
    exactly ``record_count`` well-framed records: every varint and length in bounds, header
    keys UTF-8, no byte left over; a compressed batch is decompressed (bounded) and checked.

    One pass with the common varint cases inlined and nothing built per record: the
    broker runs it on every produced batch.
    """
    data, start, end = _records_span(buf, header, pos)
    count = header.record_count
    try:
        if _native is None or _native.check_records(data, start, end, count) is NotImplemented:
            _check_records(_as_bytes(data), start, end, count)
    except IndexError:
        raise CorruptBatch(f"batch at {pos}: a record runs past the end of the batch") from None
    except CorruptBatch as exc:
        raise CorruptBatch(f"batch at {pos}: {exc.message}") from None


def _records_span(buf: Buffer, header: BatchHeader, pos: int) -> tuple[Buffer, int, int]:
    """(data, start, end): where the records of the batch at ``pos`` are, decompressed.

    An uncompressed batch in ``bytes`` is read in place; in another buffer, through a
    view of just its records (the pure-Python code copies that to bytes, the native
    code reads it as it is: the same bytes, the same bounds).
    """
    start = pos + HEADER_SIZE
    end = pos + header.total_size
    if header.attributes != Codec.NONE:
        data = decompress(header.attributes, memoryview(buf)[start:end])
        return data, 0, len(data)
    if type(buf) is bytes:
        return buf, start, end
    return memoryview(buf)[start:end], 0, end - start


def _as_bytes(data: Buffer) -> bytes:
    return data if type(data) is bytes else bytes(data)


def _check_records(data: bytes, p: int, end: int, count: int) -> None:
    if count > (end - p) // _MIN_RECORD_BYTES:
        raise CorruptBatch(f"{end - p} bytes cannot hold {count} records")
    index = 0
    while index < count:
        record_start = p
        z = z0 = data[p]
        if z < 0x80:
            p += 1
        elif data[p + 1] < 0x80:
            z = (z & 0x7F) | (data[p + 1] << 7)
            p += 2
        else:
            z, p = read_uvarint(data, p)
        record_end = p + (z >> 1)
        if z & 1 or record_end > end:
            raise CorruptBatch(f"record {index}: bad length")
        ts_at = p
        if data[p] < 0x80:
            p += 1
        else:
            _, p = read_uvarint(data, p)
        key_at = p
        z = data[p]
        if z < 0x80:
            p += 1
        else:
            z, p = read_uvarint(data, p)
        key_len_end = p
        if z != 1:
            if z & 1 or p + (z >> 1) > record_end:
                raise CorruptBatch(f"record {index}: bad key length")
            p += z >> 1
        value_at = p
        z = data[p]
        if z < 0x80:
            p += 1
        elif data[p + 1] < 0x80:
            z = (z & 0x7F) | (data[p + 1] << 7)
            p += 2
        else:
            z, p = read_uvarint(data, p)
        value_len_end = p
        if z != 1:
            if z & 1 or p + (z >> 1) > record_end:
                raise CorruptBatch(f"record {index}: bad value length")
            p += z >> 1
        if data[p] != 0:
            p = _check_headers(data, p, record_end, index)
        elif (
            p + 1 == record_end
            and key_at == ts_at + 1
            and index + 1 < count
            and data[record_end] == z0
        ):
            # One-byte timestamp delta, no headers: the records that follow are likely
            # the same shape, and a whole run of them is checked at once.
            size = record_end - record_start
            fixed = (
                *range(record_start, ts_at),
                *range(key_at, key_len_end),
                *range(value_at, value_len_end),
                record_end - 1,
            )
            run = _same_shape_run(data, record_end, end, count - index - 1, size, ts_at, fixed)
            p = record_end + run * size
            index += 1 + run
            continue
        else:
            p += 1
        if p != record_end:
            raise CorruptBatch(f"record {index}: length does not match its fields")
        index += 1
    if p != end:
        raise CorruptBatch(f"{end - p} bytes after the last record")


# Maps each byte to 0 below 0x80 (a one-byte varint) and to 1 above.
_HIGH_BIT = bytes.maketrans(bytes(range(256)), bytes(b >> 7 for b in range(256)))


def _same_shape_run(
    data: bytes, p: int, end: int, limit: int, size: int, ts_at: int, fixed: tuple[int, ...]
) -> int:
    """How many records from ``p`` have the shape of the one just checked, which started
    ``size`` bytes before ``p``: the same bytes at the ``fixed`` positions (length, key
    length, value length varints, the zero header count) and a one-byte timestamp delta
    at ``ts_at``. Such a record is well framed whatever its key and value bytes hold.

    Each position is compared across the whole run with one strided slice (C speed),
    so a batch of same-sized messages costs a few slices, not a loop per record.
    """
    run = min(limit, (end - p) // size)
    for at in fixed:
        if run == 0:
            return 0
        column = data[at + size : at + size * (run + 1) : size]
        # what lstrip leaves starts at the first record that differs here
        run -= len(column.lstrip(data[at : at + 1]))
    if run == 0:
        return 0
    deltas = data[ts_at + size : ts_at + size * (run + 1) : size].translate(_HIGH_BIT)
    first_long = deltas.find(1)
    return run if first_long < 0 else first_long


def _check_headers(data: bytes, p: int, record_end: int, index: int) -> int:
    """Position after a record's well-formed headers (see :func:`_decode_headers`)."""
    count, p = read_uvarint(data, p)
    if count > (record_end - p) // 2:
        raise CorruptBatch(f"record {index}: {count} headers do not fit")
    for _ in range(count):
        size, p = read_uvarint(data, p)
        if p + size > record_end:
            raise CorruptBatch(f"record {index}: bad header key length")
        try:
            data[p : p + size].decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptBatch(f"record {index}: header key is not UTF-8") from None
        p += size
        z, p = read_uvarint(data, p)
        if z != 1:
            if z & 1 or p + (z >> 1) > record_end:
                raise CorruptBatch(f"record {index}: bad header value length")
            p += z >> 1
    return p


def iter_batches(buf: Buffer, pos: int = 0) -> Iterator[tuple[int, BatchHeader]]:
    """(position, header) of each valid batch from ``pos``; stops at the first bad or cut one."""
    size = len(buf)
    while pos < size:
        try:
            header = verify_batch(buf, pos)
        except CorruptBatch:
            return
        yield pos, header
        pos += LENGTH_PREFIX + header.batch_length


def valid_prefix_length(buf: Buffer, pos: int = 0) -> int:
    """Bytes from ``pos`` covered by consecutive valid batches (where recovery truncates)."""
    _check_pos(pos)
    end = pos
    for at, header in iter_batches(buf, pos):
        end = at + LENGTH_PREFIX + header.batch_length
    return end - pos


# --- decoding -------------------------------------------------------------------------------


# Builds one decoded record from (value, key, headers, timestamp_ms, offset), Record's order.
RecordMaker = Callable[
    [bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...], int, int], T
]


TT = TypeVar("TT", bound=tuple[object, ...])


class TupleMaker(Generic[TT]):
    """A RecordMaker that builds ``cls((*prefix, offset, key, value, headers, timestamp_ms))``
    for a tuple subclass ``cls`` (the consumer's Message): the native decoder recognises it
    and builds the tuples itself, with no Python call per record."""

    __slots__ = ("cls", "prefix")

    def __init__(self, cls: type[TT], *prefix: object) -> None:
        self.cls = cls
        self.prefix = prefix

    def __call__(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: tuple[tuple[str, bytes | None], ...],
        timestamp_ms: int,
        offset: int,
    ) -> TT:
        return tuple.__new__(self.cls, (*self.prefix, offset, key, value, headers, timestamp_ms))


def decode_records(buf: Buffer, pos: int = 0) -> list[Record]:
    """The records of the batch at ``pos``, CRC-checked, with their offsets."""
    return decode_records_as(buf, Record, pos)


def decode_records_as(buf: Buffer, make: RecordMaker[T], pos: int = 0) -> list[T]:
    """Like :func:`decode_records`, each record built by ``make`` (say, a cheap tuple)."""
    header = verify_batch(buf, pos)
    data, start, end = _records_span(buf, header, pos)
    try:
        if _native is not None:
            records: list[T] | NotImplementedType = _native.decode_records(
                data,
                start,
                end,
                header.record_count,
                header.base_offset,
                header.first_timestamp,
                make,
            )
            if records is not NotImplemented:
                return records
        return _decode_records(_as_bytes(data), start, end, header, make)
    except IndexError:
        raise CorruptBatch(f"batch at {pos}: a record runs past the end of the batch") from None
    except CorruptBatch as exc:
        raise CorruptBatch(f"batch at {pos}: {exc.message}") from None


def _decode_records(
    data: bytes, p: int, end: int, header: BatchHeader, make: RecordMaker[T]
) -> list[T]:
    count = header.record_count
    if count > (end - p) // _MIN_RECORD_BYTES:
        raise CorruptBatch(f"{end - p} bytes cannot hold {count} records")
    offset = header.base_offset
    first_ts = header.first_timestamp
    records: list[T] = []
    append = records.append
    for index in range(count):
        # The one- and two-byte cases of every varint are inlined: this loop runs per message.
        z = data[p]
        if z < 0x80:
            p += 1
        elif data[p + 1] < 0x80:
            z = (z & 0x7F) | (data[p + 1] << 7)
            p += 2
        else:
            z, p = read_uvarint(data, p)
        record_end = p + (z >> 1)
        if z & 1 or record_end > end:
            raise CorruptBatch(f"record {index}: bad length")
        z = data[p]
        if z < 0x80:
            p += 1
        elif data[p + 1] < 0x80:
            z = (z & 0x7F) | (data[p + 1] << 7)
            p += 2
        else:
            z, p = read_uvarint(data, p)
        timestamp = first_ts + ((z >> 1) ^ -(z & 1))
        z = data[p]
        if z < 0x80:
            p += 1
        elif data[p + 1] < 0x80:
            z = (z & 0x7F) | (data[p + 1] << 7)
            p += 2
        else:
            z, p = read_uvarint(data, p)
        if z == 1:
            key = None
        elif z & 1 or p + (z >> 1) > record_end:
            raise CorruptBatch(f"record {index}: bad key length")
        else:
            key = data[p : p + (z >> 1)]
            p += z >> 1
        z = data[p]
        if z < 0x80:
            p += 1
        elif data[p + 1] < 0x80:
            z = (z & 0x7F) | (data[p + 1] << 7)
            p += 2
        else:
            z, p = read_uvarint(data, p)
        if z == 1:
            value = None
        elif z & 1 or p + (z >> 1) > record_end:
            raise CorruptBatch(f"record {index}: bad value length")
        else:
            value = data[p : p + (z >> 1)]
            p += z >> 1
        z = data[p]
        if z == 0:
            p += 1
            headers: tuple[tuple[str, bytes | None], ...] = ()
        else:
            headers, p = _decode_headers(data, p, record_end, index)
        if p != record_end:
            raise CorruptBatch(f"record {index}: length does not match its fields")
        append(make(value, key, headers, timestamp, offset + index))
    if p != end:
        raise CorruptBatch(f"{end - p} bytes after the last record")
    return records


def _decode_headers(
    data: bytes, p: int, record_end: int, index: int
) -> tuple[tuple[tuple[str, bytes | None], ...], int]:
    count, p = read_uvarint(data, p)
    if count > (record_end - p) // 2:
        raise CorruptBatch(f"record {index}: {count} headers do not fit")
    headers: list[tuple[str, bytes | None]] = []
    for _ in range(count):
        size, p = read_uvarint(data, p)
        if p + size > record_end:
            raise CorruptBatch(f"record {index}: bad header key length")
        try:
            name = data[p : p + size].decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptBatch(f"record {index}: header key is not UTF-8") from None
        p += size
        z, p = read_uvarint(data, p)
        value: bytes | None
        if z == 1:
            value = None
        elif z & 1 or p + (z >> 1) > record_end:
            raise CorruptBatch(f"record {index}: bad header value length")
        else:
            value = data[p : p + (z >> 1)]
            p += z >> 1
        headers.append((name, value))
    return tuple(headers), p


class BadBatch(NamedTuple):
    """The first batch of a fetch that could not be decoded, and where it ends."""

    offset: int  # the first wanted offset inside it
    next_offset: int  # the offset after it, per its header; offset + 1 if that is unreadable
    error: CorruptBatch


def decode_fetch_as(
    buf: Buffer, make: RecordMaker[T], min_offset: int = 0
) -> tuple[list[T], BadBatch | None]:
    """Records from ``min_offset`` on of the consecutive batches filling ``buf`` (a fetch),
    up to the first batch that cannot be decoded, and that batch (None if all are good).

    Batches wholly before ``min_offset`` are skipped without being decoded; the
    rest are CRC-checked and decoded. A consumer returns the good records first and
    then reports the bad batch, so one poison batch does not hide the ones before it.
    """
    records: list[T] = []
    pos = 0
    size = len(buf)
    at = min_offset
    while pos < size:
        try:
            header = parse_header(buf, pos)
        except CorruptBatch as exc:
            return records, BadBatch(at, at + 1, exc)
        if header.next_offset > min_offset:
            try:
                decoded = decode_records_as(buf, make, pos)
            except CorruptBatch as exc:
                start = max(header.base_offset, min_offset)
                return records, BadBatch(start, max(header.next_offset, start + 1), exc)
            if header.base_offset < min_offset:
                decoded = decoded[min_offset - header.base_offset :]
            records += decoded
        at = max(at, header.next_offset)
        pos += header.total_size
    return records, None


def decode_batches_as(buf: Buffer, make: RecordMaker[T], min_offset: int = 0) -> list[T]:
    """Like :func:`decode_fetch_as`, all or nothing: CorruptBatch on any bad batch."""
    records, bad = decode_fetch_as(buf, make, min_offset)
    if bad is not None:
        raise bad.error
    return records


def decode_all(buf: Buffer) -> list[Record]:
    """Every record of the consecutive batches filling ``buf``; CorruptBatch on any bad one."""
    records: list[Record] = []
    pos = 0
    size = len(buf)
    while pos < size:
        records += decode_records(buf, pos)
        pos += parse_header(buf, pos).total_size
    return records


# --- rewriting the parts outside the records -------------------------------------------------


def _check_stampable(buf: Buffer, pos: int) -> None:
    if len(buf) - pos < HEADER_SIZE or buf[pos] != MAGIC:
        raise CorruptBatch(f"batch at {pos}: not the start of a batch")


def with_base_offset(batch: Buffer, base_offset: int) -> bytes:
    """A copy of ``batch`` with a new base offset; the CRC stays valid as it leaves it out."""
    _check_base_offset(base_offset)
    _check_stampable(batch, 0)
    return _MAGIC_AND_BASE.pack(MAGIC, base_offset) + memoryview(batch)[_MAGIC_AND_BASE.size :]


def stamp_base_offset(buf: bytearray, pos: int, base_offset: int) -> None:
    """Sets the base offset of the batch at ``pos`` in place (group commit of many batches)."""
    _check_pos(pos)
    _check_base_offset(base_offset)
    _check_stampable(buf, pos)
    try:
        _BASE_OFFSET.pack_into(buf, pos + 1, base_offset)
    except TypeError:
        raise InvalidArgument(
            f"buf: must be a writable buffer such as bytearray, got {type(buf).__name__}"
        ) from None


def with_origin(batch: Buffer, origin_cluster: str, origin_offset: int) -> bytes:
    """A copy of ``batch`` marked as mirrored from ``origin_cluster``, with a new CRC.

    The old CRC is checked first, so a batch damaged on the way is never
    given a fresh, valid checksum.
    """
    origin = _origin_field(origin_cluster)
    _check_range(origin_offset, "origin_offset", -1, MAX_OFFSET)
    header = verify_single_batch(batch)
    tail = _TAIL.pack(
        header.attributes,
        header.record_count,
        header.first_timestamp,
        header.max_timestamp,
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
        origin,
        origin_offset,
    )
    records = memoryview(batch)[HEADER_SIZE:]
    crc = crc32c_extend(crc32c(tail), records)
    prefix = _PREFIX.pack(MAGIC, header.base_offset, header.batch_length, crc)
    return b"".join((prefix, tail, records))


if _native is not None:
    _native.init(CorruptBatch, _encode_record, TupleMaker)
