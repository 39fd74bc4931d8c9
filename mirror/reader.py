"""Source readers: whole, CRC-valid, committed batches of a source partition from an offset.

:class:`StoreReader` reads the source DC's segment files straight from its log
store, with the segment list from the source ZooKeeper. Sealed segments are
read up to their sealed size. The open segment follows the read rule of
DESIGN §4: read the batches, then check the ``.fenced`` marker; absent, the
batches are committed (a later takeover scan will include them); present, the
sealed end from ZooKeeper decides and anything past it is dropped (waiting
for the sealed end if the new owner has not written it yet). A torn or
CRC-invalid tail is never returned: only the valid prefix counts.

:class:`FetchReader` asks the source brokers instead (Fetch RPC), for sources
whose store the worker cannot reach.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Protocol

from kazoo.client import KazooClient

from talos.clock import SYSTEM_CLOCK, Clock
from talos.coord.partition_state import PartitionState, PartitionStateStore, SegmentInfo
from talos.errors import (
    CorruptBatch,
    InvalidArgument,
    NotOwner,
    OffsetOutOfRange,
    StorageError,
    TalosError,
    UnknownTopic,
)
from talos.proto import talos_pb2 as pb
from talos.record.batch import HEADER_SIZE, BatchHeader, iter_batches, parse_header
from talos.security.tls import ClientSecurity
from talos.storage import index as seg_index
from talos.storage.segment import fence_marker_path, find_position, segment_path
from talos.storage.store import LogStore
from talos.wire import error_from_proto

log = logging.getLogger(__name__)

MAX_READ_BYTES = 64 * 1024 * 1024
#: How long a reader waits for the sealed end of a fenced segment before giving back control.
SEALED_END_WAIT_S = 1.0
_SEEK_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class ReadResult:
    """Consecutive whole batches. ``positions[i]`` is where batch i starts in ``data``.

    ``source_end`` is the end of committed source data this read saw (-1:
    unknown); ``caught_up`` says the read reached it. ``file_position`` is where
    ``data`` starts in its segment file (-1: not read from a file).
    """

    data: bytes = b""
    headers: tuple[BatchHeader, ...] = ()
    positions: tuple[int, ...] = ()
    source_end: int = -1
    caught_up: bool = False
    file_position: int = -1

    @property
    def next_offset(self) -> int:
        return self.headers[-1].next_offset if self.headers else -1

    def batch(self, index: int) -> bytes:
        start = self.positions[index]
        return self.data[start : start + self.headers[index].total_size]


class SourceReader(Protocol):
    def read(self, topic: str, partition: int, offset: int, max_bytes: int) -> ReadResult: ...

    def forget(self, topic: str, partition: int) -> None:
        """Drop what is cached for a partition this worker no longer copies."""
        ...

    def changed(self, topic: str, partition: int) -> bool:
        """Whether the source's partition state changed since the last call (then the
        worker checks again that the target still holds the source's history)."""
        ...

    def close(self) -> None: ...


def _check_read(offset: int, max_bytes: int) -> None:
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidArgument(f"offset: must be an integer >= 0, got {offset!r}")
    if (
        isinstance(max_bytes, bool)
        or not isinstance(max_bytes, int)
        or not 1 <= max_bytes <= MAX_READ_BYTES
    ):
        raise InvalidArgument(
            f"max_bytes: must be an integer from 1 to {MAX_READ_BYTES}, got {max_bytes!r}"
        )


def valid_batches(
    data: bytes, offset: int, limit_offset: int | None = None
) -> tuple[list[BatchHeader], list[int], int]:
    """The leading batches of ``data`` that are whole, CRC-valid and continue from the
    batch holding ``offset`` without a gap, ending at or before ``limit_offset``.

    Returns (headers, positions, bytes used). Batches wholly below ``offset`` are
    skipped (a read may start at a segment or index boundary). Pure.
    """
    headers: list[BatchHeader] = []
    positions: list[int] = []
    used = 0
    expected: int | None = None
    for position, header in iter_batches(data):
        if position != used and headers:
            break
        if header.next_offset <= offset and not headers:
            used = position + header.total_size
            continue
        if expected is not None and header.base_offset != expected:
            break
        if limit_offset is not None and header.next_offset > limit_offset:
            break
        headers.append(header)
        positions.append(position)
        used = position + header.total_size
        expected = header.next_offset
    return headers, positions, used


def _result(
    data: bytes,
    headers: list[BatchHeader],
    positions: list[int],
    source_end: int,
    caught_up: bool,
    file_position: int = -1,
) -> ReadResult:
    if not headers:
        return ReadResult(source_end=source_end, caught_up=caught_up)
    start = positions[0]
    end = positions[-1] + headers[-1].total_size
    rebased = tuple(p - start for p in positions)
    body = data[start:end] if (start, end) != (0, len(data)) else data
    return ReadResult(
        body,
        tuple(headers),
        rebased,
        max(source_end, headers[-1].next_offset),
        caught_up,
        file_position + start if file_position >= 0 else -1,
    )


@dataclass
class _Cursor:
    """Where the last read of a partition stopped: saves a seek on the next one."""

    base_offset: int
    epoch: int
    position: int
    next_offset: int


@dataclass
class _PartitionView:
    state: PartitionState | None = None
    changed: threading.Event = field(default_factory=threading.Event)
    cancel: object = None
    cursor: _Cursor | None = None
    known_end: int = -1  # committed end seen in the open segment
    state_changed: bool = False  # a watch event since the last changed() call


class StoreReader:
    """Reads a source DC's log store directly (DESIGN §4 read rule)."""

    def __init__(
        self, store: LogStore, zk: KazooClient, cluster: str, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.store = store
        self.cluster = cluster
        self.clock = clock
        self._states = PartitionStateStore(zk)
        self._views: dict[tuple[str, int], _PartitionView] = {}
        self._entries: dict[str, list[seg_index.IndexEntry]] = {}
        self._lock = threading.Lock()

    # ---- partition state, kept fresh by a ZooKeeper watch --------------------------------

    def _view(self, topic: str, partition: int) -> _PartitionView:
        key = (topic, partition)
        with self._lock:
            view = self._views.get(key)
            if view is not None:
                return view
            view = _PartitionView()
            self._views[key] = view

        def on_change(state: PartitionState | None) -> None:
            if view.state is not None and state != view.state:
                view.state_changed = True
            if state is None:  # deleted: nothing read so far describes what may come next
                view.cursor, view.known_end = None, -1
            view.state = state
            view.changed.set()

        try:
            view.cancel = self._states.watch(topic, partition, on_change)
        except TalosError:
            with self._lock:
                self._views.pop(key, None)
            raise
        if view.state is None:
            view.state = self._states.get(topic, partition)
        return view

    def changed(self, topic: str, partition: int) -> bool:
        with self._lock:
            view = self._views.get((topic, partition))
        if view is None or not view.state_changed:
            return False
        view.state_changed = False
        return True

    def forget(self, topic: str, partition: int) -> None:
        with self._lock:
            view = self._views.pop((topic, partition), None)
        if view is not None and callable(view.cancel):
            view.cancel()

    def close(self) -> None:
        with self._lock:
            keys = list(self._views)
        for topic, partition in keys:
            self.forget(topic, partition)

    def _path(self, topic: str, partition: int, state: PartitionState, segment: SegmentInfo) -> str:
        return segment_path(
            self.cluster,
            topic,
            partition,
            segment.base_offset,
            segment.epoch,
            incarnation=state.incarnation,
        )

    # ---- reading ------------------------------------------------------------------------

    def read(
        self,
        topic: str,
        partition: int,
        offset: int,
        max_bytes: int,
        state: PartitionState | None = None,
    ) -> ReadResult:
        """Committed batches from the one holding ``offset``.

        ``state``: read under this partition state instead of the watched one
        (a tool that holds the partition and just sealed it knows it best).
        """
        _check_read(offset, max_bytes)
        view = self._view(topic, partition)
        pinned = state
        for _ in range(8):  # a segment boundary or a seal moves us on; never loops for long
            state = pinned or view.state
            if state is None:
                raise UnknownTopic(f"source partition {topic}/{partition} no longer exists")
            if offset < state.log_start:
                raise OffsetOutOfRange(
                    f"offset: {offset} is below the source's log start {state.log_start} "
                    f"of {topic}/{partition}",
                    log_start=state.log_start,
                    log_end=state.sealed_end,
                )
            segment = _segment_for(state, offset)
            known = max(view.known_end, state.sealed_end)
            if segment is None:
                return ReadResult(source_end=known, caught_up=True)
            path = self._path(topic, partition, state, segment)
            if segment.sealed:
                return self._read_sealed(view, segment, path, offset, max_bytes, known)
            result, moved = self._read_open(
                view, topic, partition, segment, path, offset, max_bytes
            )
            if not moved:
                return result
        return ReadResult(source_end=max(view.known_end, 0))

    def _read_sealed(
        self,
        view: _PartitionView,
        segment: SegmentInfo,
        path: str,
        offset: int,
        max_bytes: int,
        known_end: int,
    ) -> ReadResult:
        end_offset = segment.end_offset if segment.end_offset is not None else offset
        size = segment.size or 0
        cursor = view.cursor
        if cursor is not None and (cursor.base_offset, cursor.epoch, cursor.next_offset) == (
            segment.base_offset,
            segment.epoch,
            offset,
        ):
            position = cursor.position
        else:
            position = find_position(self.store, path, self._index(path, segment), offset, size)
        if position >= size:
            raise CorruptBatch(
                f"source segment {path}: ends before offset {offset}, inside its sealed range "
                f"{segment.base_offset}..{end_offset - 1}"
            )
        data = self._read_whole(path, position, max_bytes, size)
        headers, positions, used = valid_batches(data, offset, end_offset)
        if not headers:
            raise CorruptBatch(
                f"source segment {path}: no valid batch at position {position} although it is "
                f"sealed at {size} bytes"
            )
        view.cursor = _Cursor(
            segment.base_offset, segment.epoch, position + used, headers[-1].next_offset
        )
        return _result(data, headers, positions, known_end, False, position)

    def _index(self, path: str, segment: SegmentInfo) -> list[seg_index.IndexEntry]:
        entries = self._entries.get(path)
        if entries is None:
            loaded = seg_index.load_indexes(self.store, path, segment.base_offset)
            if loaded is None:
                return []  # not written yet (or lost): scan from the start this time
            if len(self._entries) > 4096:
                self._entries.clear()
            self._entries[path] = entries = loaded
        return entries

    def _read_whole(self, path: str, position: int, max_bytes: int, limit: int) -> bytes:
        """Up to ``max_bytes`` from ``position``, or the whole first batch if it is bigger."""
        data = self.store.read(path, position, min(max_bytes, limit - position))
        if len(data) >= HEADER_SIZE:
            try:
                total = parse_header(data).total_size
            except CorruptBatch:
                return data
            if total > len(data) and position + total <= limit:
                data += self.store.read(path, position + len(data), total - len(data))
        return data

    def _seek_open(self, path: str, offset: int, length: int, base: int) -> tuple[int, int]:
        """(byte position, end seen) of the batch holding ``offset`` in the open segment.

        The end seen is ``offset`` when a batch holds it, else the offset after
        the last whole valid batch: where the committed data ends for now.
        """
        position = 0
        end_seen = base
        while position < length:
            data = self._read_whole(path, position, _SEEK_CHUNK, length)
            used = 0
            for at, header in iter_batches(data):
                if header.next_offset > offset:
                    return position + at, offset
                used = at + header.total_size
                end_seen = header.next_offset
            if used == 0:
                return position, end_seen  # a torn or incomplete tail: the data ends here
            position += used
        return position, end_seen

    def _read_open(
        self,
        view: _PartitionView,
        topic: str,
        partition: int,
        segment: SegmentInfo,
        path: str,
        offset: int,
        max_bytes: int,
    ) -> tuple[ReadResult, bool]:
        """(result, moved): moved means the segment turned out sealed; read again."""
        try:
            length = self.store.visible_length(path)
        except StorageError:
            if not self.store.exists(path):
                length = 0  # registered, but the owner has not created the file yet
            else:
                raise
        cursor = view.cursor
        if cursor is not None and (cursor.base_offset, cursor.epoch, cursor.next_offset) == (
            segment.base_offset,
            segment.epoch,
            offset,
        ):
            position, end_seen = cursor.position, offset
        elif offset == segment.base_offset:
            position, end_seen = 0, offset
        else:
            position, end_seen = self._seek_open(path, offset, length, segment.base_offset)
        data = self._read_whole(path, position, max_bytes, length) if position < length else b""
        headers, positions, used = valid_batches(data, offset)
        # The read rule: the batches just read are committed unless the segment was fenced.
        if not self.store.exists(fence_marker_path(path)):
            if headers:
                view.cursor = _Cursor(
                    segment.base_offset, segment.epoch, position + used, headers[-1].next_offset
                )
                view.known_end = headers[-1].next_offset
                return _result(data, headers, positions, -1, False, position), False
            # Only what was read counts: a source cut back below ``offset`` reports its end.
            view.known_end = end_seen
            latest = view.state
            if latest is not None:
                now = _find(latest, segment)
                if now is not None and now.sealed:
                    return ReadResult(), True  # rolled meanwhile: read it as sealed
            return ReadResult(source_end=view.known_end, caught_up=True), False
        sealed = self._wait_sealed(view, topic, partition, segment)
        if sealed is None or sealed.end_offset is None:
            return ReadResult(source_end=view.known_end), False
        headers, positions, used = valid_batches(data, offset, sealed.end_offset)
        if headers:
            view.cursor = _Cursor(
                segment.base_offset, segment.epoch, position + used, headers[-1].next_offset
            )
            return _result(data, headers, positions, sealed.end_offset, False, position), False
        return ReadResult(), True

    def _wait_sealed(
        self, view: _PartitionView, topic: str, partition: int, segment: SegmentInfo
    ) -> SegmentInfo | None:
        """The fenced segment's sealed entry, read fresh from ZooKeeper; waits a little."""
        deadline = self.clock.monotonic() + SEALED_END_WAIT_S
        while True:
            view.changed.clear()
            state = self._states.get(topic, partition)
            view.state = state
            found = _find(state, segment)
            if found is None:
                return None  # gone from the list (the log was cut back): re-plan
            if found.sealed:
                return found
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                log.info(
                    "%s/%d: segment %s is fenced, waiting for its sealed end",
                    topic,
                    partition,
                    segment.base_offset,
                )
                return None
            view.changed.wait(min(remaining, 0.1))


def _find(state: PartitionState, segment: SegmentInfo) -> SegmentInfo | None:
    """The same segment in a newer state: same base and epoch (a base alone can repeat)."""
    for candidate in state.segments:
        if (candidate.base_offset, candidate.epoch) == (segment.base_offset, segment.epoch):
            return candidate
    return None


def _segment_for(state: PartitionState, offset: int) -> SegmentInfo | None:
    """The segment holding ``offset``: a non-empty sealed one, else the open one past it."""
    for segment in state.segments:
        if segment.sealed:
            end = segment.end_offset if segment.end_offset is not None else segment.base_offset
            if segment.base_offset <= offset < end:
                return segment
        elif offset >= segment.base_offset:
            return segment
    return None


class FetchReader:
    """Reads through the source brokers' Fetch RPC (committed data only)."""

    def __init__(
        self,
        bootstrap: str,
        *,
        max_wait_ms: int = 200,
        request_timeout_s: float = 30.0,
        clock: Clock = SYSTEM_CLOCK,
        security: ClientSecurity | None = None,
    ) -> None:
        from talos.client.connection import Connections
        from talos.client.routing import Router

        self.connections = Connections(
            bootstrap, request_timeout=request_timeout_s, security=security
        )
        self.router = Router(self.connections, clock)
        self.max_wait_ms = max_wait_ms

    def read(self, topic: str, partition: int, offset: int, max_bytes: int) -> ReadResult:
        _check_read(offset, max_bytes)
        address = self.router.owner_address(topic, partition)
        request = pb.FetchRequest(
            partitions=[
                pb.FetchPartition(
                    topic=topic, partition=partition, offset=offset, max_bytes=max_bytes
                )
            ],
            max_wait_ms=self.max_wait_ms,
        )
        try:
            response: pb.FetchResponse = self.connections.call(address, "Fetch", request)
        except TalosError:
            self.router.mark_stale(topic)
            raise
        result = response.results[0]
        error = error_from_proto(result.error)
        if error is not None:
            if isinstance(error, NotOwner | UnknownTopic) or error.retriable:
                self.router.mark_stale(topic)
            raise error
        data = bytes(result.records)
        headers, positions, _ = valid_batches(data, offset)
        if data and not headers:
            raise CorruptBatch(f"{topic}/{partition}: fetch at {offset} returned no valid batch")
        caught_up = bool(
            result.log_end >= 0
            and (headers[-1].next_offset if headers else offset) >= result.log_end
        )
        return _result(data, headers, positions, result.log_end, caught_up)

    def forget(self, topic: str, partition: int) -> None:
        return None

    def changed(self, topic: str, partition: int) -> bool:
        return False  # the brokers do not show the partition state; checked on start only

    def close(self) -> None:
        self.connections.close()
