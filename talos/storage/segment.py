"""Segment files: naming, the takeover scan, the roll decision and whole-batch reads.

A partition's log is a run of segment files
``<cluster>/<topic>/<incarnation>/<partition>/<base_offset:020d>.<epoch>.log``
(DESIGN §3), each a plain concatenation of record batches. The incarnation keeps a
recreated topic's files apart from the deleted one's; the zero padding makes a
directory listing sort by base offset; the epoch says which owner wrote the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from talos.config import MAX_OFFSET, validate_offset, validate_topic_name
from talos.errors import CorruptBatch, InvalidArgument
from talos.record.batch import HEADER_SIZE, BatchHeader, iter_batches, parse_header
from talos.storage.index import (
    DEFAULT_INTERVAL_BYTES,
    IndexEntry,
    SparseIndexBuilder,
    index_path,
    lookup_position,
    lookup_time,
    time_index_path,
)
from talos.storage.store import LogStore, check_path, check_range

SEGMENT_SUFFIX = ".log"
FENCED_SUFFIX = ".fenced"
_SEGMENT_NAME = re.compile(r"^(\d{20})\.(\d+)\.log$")
_HEADER_READ_BYTES = 64 << 10

__all__ = [
    "FENCED_SUFFIX",
    "SEGMENT_SUFFIX",
    "ScanResult",
    "fence_marker_path",
    "find_position",
    "find_time_position",
    "index_path",
    "parse_segment_name",
    "partition_dir",
    "read_batches",
    "scan_segment",
    "segment_name",
    "segment_of_file",
    "segment_path",
    "should_roll",
    "time_index_path",
    "topic_dir",
]


def _check_int(value: object, param: str, low: int, high: int = MAX_OFFSET) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(
            f"{param}: must be an integer between {low} and {high}, got {value!r}"
        )
    return value


def topic_dir(cluster: str, topic: str, incarnation: str) -> str:
    """Where one incarnation of a topic keeps its files."""
    validate_topic_name(cluster, "cluster")
    validate_topic_name(topic, "topic")
    validate_topic_name(incarnation, "incarnation")
    return f"{cluster}/{topic}/{incarnation}"


def partition_dir(cluster: str, topic: str, partition: int, *, incarnation: str) -> str:
    _check_int(partition, "partition", 0)
    return f"{topic_dir(cluster, topic, incarnation)}/{partition}"


def segment_name(base_offset: int, epoch: int) -> str:
    validate_offset(base_offset, "base_offset")
    _check_int(epoch, "epoch", 0)
    return f"{base_offset:020d}.{epoch}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> tuple[int, int] | None:
    """(base_offset, epoch) of a segment file name; None for any other name."""
    m = _SEGMENT_NAME.match(name)
    if m is None:
        return None
    base, epoch = int(m.group(1)), int(m.group(2))
    if base > MAX_OFFSET or epoch > MAX_OFFSET or segment_name(base, epoch) != name:
        return None  # out of range, or a non-canonical epoch such as "007"
    return base, epoch


_SEGMENT_FILE = re.compile(r"^(\d{20})\.(\d+)\.")


def segment_of_file(name: str) -> tuple[int, int] | None:
    """(base_offset, epoch) of a segment's file or one of its siblings (``.log``,
    ``.index``, ``.timeindex``, ``.log.fenced``); None for any other name."""
    m = _SEGMENT_FILE.match(name)
    return None if m is None else (int(m.group(1)), int(m.group(2)))


def segment_path(
    cluster: str, topic: str, partition: int, base_offset: int, epoch: int, *, incarnation: str
) -> str:
    """``incarnation`` is the topic's (PartitionState.incarnation / TopicMeta.incarnation)."""
    directory = partition_dir(cluster, topic, partition, incarnation=incarnation)
    return f"{directory}/{segment_name(base_offset, epoch)}"


def fence_marker_path(segment_path: str) -> str:
    check_path(segment_path, "segment_path")
    if not segment_path.endswith(SEGMENT_SUFFIX):
        raise InvalidArgument(f"segment_path: must end with '.log', got {segment_path!r}")
    return segment_path + FENCED_SUFFIX


@dataclass(frozen=True)
class ScanResult:
    valid_bytes: int  # length of the valid prefix: the sealed end of a fenced segment
    next_offset: int  # offset after the last valid batch; the segment base if none
    batch_count: int
    max_timestamp: int  # -1 if no batch (timestamps themselves may be negative)
    entries: list[IndexEntry] = field(default_factory=list)


def scan_segment(
    store: LogStore,
    path: str,
    base_offset: int,
    chunk_bytes: int = 4 << 20,
    interval_bytes: int = DEFAULT_INTERVAL_BYTES,
) -> ScanResult:
    """Walk the CRC-valid batches from position 0 to the first torn or corrupt one.

    Offsets must continue without a gap from ``base_offset``; a batch that does not
    ends the valid prefix like a bad CRC does. Reads ``chunk_bytes`` at a time, more
    when a single batch is larger.
    """
    validate_offset(base_offset, "base_offset")
    _check_int(chunk_bytes, "chunk_bytes", 1)
    file_length = store.visible_length(path)
    builder = SparseIndexBuilder(interval_bytes)
    next_offset = base_offset
    count = 0
    max_timestamp = -1
    buf = b""
    buf_start = 0  # file position of buf[0]

    while True:
        consumed = 0
        for pos, header in iter_batches(buf):
            if header.base_offset != next_offset:
                return ScanResult(
                    buf_start + pos, next_offset, count, max_timestamp, builder.entries
                )
            builder.add(
                header.base_offset, buf_start + pos, header.total_size, header.max_timestamp
            )
            if count == 0 or header.max_timestamp > max_timestamp:
                max_timestamp = header.max_timestamp
            next_offset = header.next_offset
            count += 1
            consumed = pos + header.total_size
        buf = buf[consumed:]
        buf_start += consumed

        # The walk stopped at buf_start: an incomplete batch (read more), or the end.
        read_at = buf_start + len(buf)
        if read_at >= file_length:
            break
        want = chunk_bytes
        if len(buf) >= HEADER_SIZE:
            try:
                header = parse_header(buf)
            except CorruptBatch:
                break
            if header.total_size <= len(buf) or buf_start + header.total_size > file_length:
                break  # complete but invalid, or torn at the end of the file
            want = max(want, header.total_size - len(buf))
        data = store.read(path, read_at, min(want, file_length - read_at))
        if not data:
            break
        buf += data

    return ScanResult(buf_start, next_offset, count, max_timestamp, builder.entries)


def should_roll(size_bytes: int, age_ms: int, segment_bytes: int, segment_ms: int) -> bool:
    """Roll when the open segment is full, or old and not empty (no empty segments)."""
    _check_int(size_bytes, "size_bytes", 0)
    _check_int(age_ms, "age_ms", 0)
    _check_int(segment_bytes, "segment_bytes", 1)
    _check_int(segment_ms, "segment_ms", 1)
    return size_bytes >= segment_bytes or (size_bytes > 0 and age_ms >= segment_ms)


def _torn(path: str, position: int, limit: int) -> CorruptBatch:
    return CorruptBatch(
        f"segment {path}: batch at position {position} does not end within limit {limit}"
    )


def read_batches(store: LogStore, path: str, position: int, max_bytes: int, limit: int) -> bytes:
    """Whole batches from ``position`` (a batch boundary), ending at or before ``limit``.

    At most ``max_bytes``, except that the first batch is returned whole even if it
    is larger, so a reader always makes progress. Empty at ``limit``.
    """
    check_range(position, "position")
    check_range(limit, "limit")
    _check_int(max_bytes, "max_bytes", 1)
    if position >= limit:
        return b""
    data = store.read(path, position, min(max(max_bytes, HEADER_SIZE), limit - position))
    end = 0
    while end + HEADER_SIZE <= len(data):
        batch_end = end + parse_header(data, end).total_size
        if position + batch_end > limit:
            raise _torn(path, position + end, limit)
        if batch_end > len(data):
            break
        end = batch_end
    if end:
        return data[:end]
    if len(data) < HEADER_SIZE:
        raise _torn(path, position, limit)
    total = parse_header(data).total_size
    data += store.read(path, position + len(data), total - len(data))
    if len(data) < total:
        raise _torn(path, position, limit)
    return data


def _iter_headers(
    store: LogStore, path: str, position: int, limit: int
) -> Iterator[tuple[int, BatchHeader]]:
    """(position, header) of each batch from ``position`` to ``limit``, reading headers only."""
    buf = b""
    buf_start = position
    while position < limit:
        rel = position - buf_start
        if rel + HEADER_SIZE > len(buf):
            buf = store.read(path, position, min(_HEADER_READ_BYTES, limit - position))
            buf_start, rel = position, 0
            if len(buf) < HEADER_SIZE:
                raise _torn(path, position, limit)
        header = parse_header(buf, rel)
        if position + header.total_size > limit:
            raise _torn(path, position, limit)
        yield position, header
        position += header.total_size


def find_position(
    store: LogStore, path: str, entries: Sequence[IndexEntry], offset: int, limit: int
) -> int:
    """Byte position of the batch holding ``offset`` (or the first one after it); ``limit``
    if the segment ends before it. ``entries`` may be empty (scan from the start)."""
    for pos, header in _iter_headers(store, path, lookup_position(entries, offset), limit):
        if header.next_offset > offset:
            return pos
    return limit


def find_time_position(
    store: LogStore, path: str, entries: Sequence[IndexEntry], timestamp_ms: int, limit: int
) -> tuple[int, int] | None:
    """(position, base offset) of the first batch whose max timestamp is >= ``timestamp_ms``;
    None if no batch before ``limit`` qualifies."""
    start = lookup_position(entries, lookup_time(entries, timestamp_ms))
    for pos, header in _iter_headers(store, path, start, limit):
        if header.max_timestamp >= timestamp_ms:
            return pos, header.base_offset
    return None
