"""Sparse offset and time indexes of a sealed segment.

One entry every ``interval_bytes`` of log (and always the first batch) lets a
reader jump close to an offset or a timestamp and scan forward from there.
An entry's ``max_timestamp`` is the running maximum over the segment up to and
including its batch, so it never decreases and a bisect is valid even when
producers' clocks disagree.

Both files share one layout (little-endian)::

    magic           4 bytes   b"TOI1" (offset index) or b"TTI1" (time index)
    segment_base    i64       base offset of the segment, checked on load
    count           u32       number of entries
    entries         count x 16 bytes
        offset index: relative offset i64, position u64
        time index:   max timestamp i64, relative offset i64
    crc             u32       CRC-32C of everything before it

A missing, short or corrupt file loads as None: the caller rebuilds the
entries with a scan, and never trusts a wrong position.
"""

from __future__ import annotations

import bisect
import itertools
import struct
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import overload

from talos.errors import InvalidArgument
from talos.record.crc import crc32c
from talos.storage.store import LogStore

OFFSET_MAGIC = b"TOI1"
TIME_MAGIC = b"TTI1"
DEFAULT_INTERVAL_BYTES = 4096

_HEAD = struct.Struct("<4sqI")
_ENTRY = struct.Struct("<qq")
_CRC = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class IndexEntry:
    offset: int  # base offset of the indexed batch
    position: int  # its byte position in the segment
    max_timestamp: int  # running max timestamp up to and including this batch


class SparseIndexBuilder:
    """Collects entries while batches are appended or scanned, in log order.

    Entries are kept in three ``array('q')`` columns (24 bytes an entry, no object per
    entry): an open segment's index lives as long as the segment, on every partition.
    """

    def __init__(self, interval_bytes: int = DEFAULT_INTERVAL_BYTES) -> None:
        if isinstance(interval_bytes, bool) or not isinstance(interval_bytes, int):
            raise InvalidArgument(f"interval_bytes: must be an integer, got {interval_bytes!r}")
        if interval_bytes < 1:
            raise InvalidArgument(f"interval_bytes: must be at least 1, got {interval_bytes}")
        self._interval = interval_bytes
        self._offsets = array("q")
        self._positions = array("q")
        self._times = array("q")
        self._bytes_since_entry = 0
        self._max_timestamp: int | None = None

    def add(self, base_offset: int, position: int, batch_size: int, max_timestamp: int) -> None:
        if self._max_timestamp is None or max_timestamp > self._max_timestamp:
            self._max_timestamp = max_timestamp
        if not self._offsets or self._bytes_since_entry >= self._interval:
            # offsets last: a reader on another thread counts entries by them
            self._times.append(self._max_timestamp)
            self._positions.append(position)
            self._offsets.append(base_offset)
            self._bytes_since_entry = 0
        self._bytes_since_entry += batch_size

    @property
    def entries(self) -> list[IndexEntry]:
        return list(self.live_entries)

    @property
    def live_entries(self) -> Sequence[IndexEntry]:
        """The entries as they grow, not a copy: readers on other threads may bisect them
        while the writer appends (entries are only ever appended, in offset order)."""
        return _LiveEntries(self._offsets, self._positions, self._times)

    def __len__(self) -> int:
        return len(self._offsets)


class _LiveEntries(Sequence[IndexEntry]):
    """A read-only view of a builder's columns; an entry is made when it is looked at."""

    def __init__(self, offsets: array[int], positions: array[int], times: array[int]) -> None:
        self._offsets, self._positions, self._times = offsets, positions, times

    def __len__(self) -> int:
        return len(self._offsets)

    @overload
    def __getitem__(self, i: int) -> IndexEntry: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[IndexEntry]: ...

    def __getitem__(self, i: int | slice) -> IndexEntry | Sequence[IndexEntry]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self._offsets):
            raise IndexError(i)
        return IndexEntry(self._offsets[i], self._positions[i], self._times[i])


def _encode(magic: bytes, segment_base: int, rows: Sequence[tuple[int, int]]) -> bytes:
    out = bytearray(_HEAD.pack(magic, segment_base, len(rows)))
    for a, b in rows:
        out += _ENTRY.pack(a, b)
    out += _CRC.pack(crc32c(out))
    return bytes(out)


def _decode(magic: bytes, data: bytes, segment_base: int) -> list[tuple[int, int]] | None:
    if len(data) < _HEAD.size + _CRC.size:
        return None
    body = data[: -_CRC.size]
    if _CRC.unpack_from(data, len(body))[0] != crc32c(body):
        return None
    found_magic, base, count = _HEAD.unpack_from(body)
    if found_magic != magic or base != segment_base:
        return None
    if len(body) != _HEAD.size + count * _ENTRY.size:
        return None
    return list(_ENTRY.iter_unpack(body[_HEAD.size :]))


def _sibling(segment_path: str, suffix: str) -> str:
    if not isinstance(segment_path, str) or not segment_path.endswith(".log"):
        raise InvalidArgument(f"segment_path: must end with '.log', got {segment_path!r}")
    return segment_path[: -len(".log")] + suffix


def index_path(segment_path: str) -> str:
    return _sibling(segment_path, ".index")


def time_index_path(segment_path: str) -> str:
    return _sibling(segment_path, ".timeindex")


def _check_entries(entries: Sequence[IndexEntry], segment_base: int) -> None:
    for e in entries:
        if e.offset < segment_base or e.position < 0:
            raise InvalidArgument(
                f"entries: offset must be >= segment_base {segment_base} and position >= 0, got {e}"
            )


def encode_offset_index(entries: Sequence[IndexEntry], segment_base: int) -> bytes:
    _check_entries(entries, segment_base)
    rows = [(e.offset - segment_base, e.position) for e in entries]
    return _encode(OFFSET_MAGIC, segment_base, rows)


def decode_offset_index(data: bytes, segment_base: int) -> list[tuple[int, int]] | None:
    """(offset, position) pairs, or None if the data is not a valid index of this segment."""
    rows = _decode(OFFSET_MAGIC, data, segment_base)
    if rows is None or any(rel < 0 or pos < 0 for rel, pos in rows):
        return None
    if any(o2 <= o1 or p2 <= p1 for (o1, p1), (o2, p2) in itertools.pairwise(rows)):
        return None
    return [(segment_base + rel, pos) for rel, pos in rows]


def encode_time_index(entries: Sequence[IndexEntry], segment_base: int) -> bytes:
    _check_entries(entries, segment_base)
    rows = [(e.max_timestamp, e.offset - segment_base) for e in entries]
    return _encode(TIME_MAGIC, segment_base, rows)


def decode_time_index(data: bytes, segment_base: int) -> list[tuple[int, int]] | None:
    """(max_timestamp, offset) pairs, or None if the data is not a valid index of this segment."""
    rows = _decode(TIME_MAGIC, data, segment_base)
    if rows is None or any(rel < 0 for _, rel in rows):
        return None
    if any(o2 <= o1 or t2 < t1 for (t1, o1), (t2, o2) in itertools.pairwise(rows)):
        return None
    return [(ts, segment_base + rel) for ts, rel in rows]


def lookup_position(entries: Sequence[IndexEntry], offset: int) -> int:
    """Byte position of the last indexed batch starting at or before ``offset``; 0 if none."""
    i = bisect.bisect_right(entries, offset, key=lambda e: e.offset)
    return entries[i - 1].position if i else 0


def lookup_time(entries: Sequence[IndexEntry], timestamp_ms: int) -> int:
    """An offset at or before the first batch whose max timestamp is >= ``timestamp_ms``.

    Every batch up to the returned entry has a smaller max timestamp, so the caller
    scans forward from it. 0 when no entry qualifies.
    """
    i = bisect.bisect_left(entries, timestamp_ms, key=lambda e: e.max_timestamp)
    return entries[i - 1].offset if i else 0


def write_indexes(
    store: LogStore, segment_path: str, entries: Sequence[IndexEntry], segment_base: int
) -> None:
    store.write_file(time_index_path(segment_path), encode_time_index(entries, segment_base))
    store.write_file(index_path(segment_path), encode_offset_index(entries, segment_base))


def _read_whole(store: LogStore, path: str) -> bytes | None:
    if not store.exists(path):
        return None
    return store.read(path, 0, store.visible_length(path))


def load_indexes(store: LogStore, segment_path: str, segment_base: int) -> list[IndexEntry] | None:
    """The entries of a sealed segment, or None if either file is missing or corrupt."""
    offset_data = _read_whole(store, index_path(segment_path))
    time_data = _read_whole(store, time_index_path(segment_path))
    if offset_data is None or time_data is None:
        return None
    positions = decode_offset_index(offset_data, segment_base)
    times = decode_time_index(time_data, segment_base)
    if positions is None or times is None or len(positions) != len(times):
        return None
    entries = []
    for (offset, position), (max_timestamp, time_offset) in zip(positions, times, strict=True):
        if offset != time_offset:
            return None
        entries.append(IndexEntry(offset, position, max_timestamp))
    return entries


# --- the broker's cache of sealed segments' indexes ---------------------------------------

# What one cached entry costs in memory: the IndexEntry object and its three ints.
ENTRY_COST_BYTES = 160
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024


CacheKey = tuple[str, int, int]  # segment path, sealed end offset, sealed size


class IndexCache:
    """Sealed segments' index entries, least recently used first out, bounded in bytes:
    a broker that reads many old segments keeps only the hot ones. The key holds the
    sealed end and size with the path, so a file of the same name written later (a
    topic deleted and created again) never meets another's entries."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise InvalidArgument(f"max_bytes: must be an integer >= 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._items: OrderedDict[CacheKey, list[IndexEntry]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: CacheKey, entries: list[IndexEntry]) -> None:
        cost = (len(entries) + 1) * ENTRY_COST_BYTES
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= (len(old) + 1) * ENTRY_COST_BYTES
            if cost > self.max_bytes:
                return
            self._items[key] = entries
            self._bytes += cost
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= (len(evicted) + 1) * ENTRY_COST_BYTES

    def get(self, key: CacheKey, load: Callable[[], list[IndexEntry]]) -> list[IndexEntry]:
        """The cached entries of ``key``, else ``load()``'s (cached for next time)."""
        with self._lock:
            entries = self._items.get(key)
            if entries is not None:
                self._items.move_to_end(key)
                return entries
        entries = load()  # outside the lock: it reads the store
        self.put(key, entries)
        return entries

    def drop(self, key: CacheKey) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= (len(old) + 1) * ENTRY_COST_BYTES


#: One per broker process, shared by all its partitions.
SEALED_INDEXES = IndexCache()
