"""One partition as its owner broker sees it: takeover, group commit, reads.

This is DESIGN.md section 4 in code. All writes run on the partition's
worker thread (see executor.py); reads run anywhere and see only what was
acknowledged, through immutable snapshots swapped after each group commit.

Takeover: CAS the epoch -> create the previous open segment's ``.fenced``
marker -> scan it to its last valid batch -> CAS its sealed end -> rebuild
producer state from the tail -> register and open our own segment.

Ack rule: write the group, flush it at the topic's durability level, check
that our segment's marker is absent, and only then acknowledge.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from talos import metrics
from talos.clock import Clock
from talos.config import TopicConfig
from talos.coord.partition_state import PartitionState, PartitionStateStore, SegmentInfo
from talos.errors import (
    CorruptBatch,
    Gap,
    MirrorDiverged,
    NotOwner,
    OffsetOutOfRange,
    StorageError,
    TalosError,
)
from talos.record.batch import (
    BatchHeader,
    decode_records,
    iter_batches,
    parse_header,
    stamp_base_offset,
)
from talos.storage import index as seg_index
from talos.storage.segment import (
    fence_marker_path,
    read_batches,
    scan_segment,
    segment_path,
    should_roll,
)
from talos.storage.store import AppendStream, Durability, LogStore

from .executor import PartitionExecutor
from .producer_state import BatchIdentity, ProducerStates

log = logging.getLogger(__name__)

# How much of the log tail is read to rebuild idempotent-producer state.
PRODUCER_STATE_TAIL_BYTES = 64 * 1024 * 1024
READ_CHUNK_BYTES = 1024 * 1024


@dataclass
class PendingAppend:
    data: bytes
    header: BatchHeader
    future: asyncio.Future[int]
    # Mirror appends (DESIGN.md §6) carry every batch's header and the offset
    # they must start at; they resolve to the log end instead of a base offset.
    mirror_headers: list[BatchHeader] | None = None
    expected_offset: int = -1


@dataclass
class SealedSegment:
    base_offset: int
    end_offset: int
    size: int
    path: str
    _entries: list[seg_index.IndexEntry] | None = None

    def entries(self, store: LogStore) -> list[seg_index.IndexEntry]:
        if self._entries is None:
            entries = seg_index.load_indexes(store, self.path, self.base_offset)
            if entries is None:
                entries = scan_segment(store, self.path, self.base_offset).entries
            self._entries = entries
        return self._entries


@dataclass
class OpenSegment:
    """Our own segment; every batch's offset and position are kept for exact seeks."""

    base_offset: int
    path: str
    created_ms: int
    stream: AppendStream
    offsets: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    max_timestamps: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Committed:
    """What readers may see: swapped as a whole after each acknowledged group."""

    log_end: int
    open_size: int


class PartitionLog:
    def __init__(
        self,
        *,
        cluster: str,
        topic: str,
        partition: int,
        config: TopicConfig,
        broker_id: str,
        store: LogStore,
        states: PartitionStateStore,
        executor: PartitionExecutor,
        loop: asyncio.AbstractEventLoop,
        clock: Clock,
        on_lost: Callable[[PartitionLog, str], None],
    ) -> None:
        self.cluster = cluster
        self.topic = topic
        self.partition = partition
        self.key = (topic, partition)
        self.config = config
        self.broker_id = broker_id
        self.store = store
        self.states = states
        self.executor = executor
        self.loop = loop
        self.clock = clock
        self.on_lost = on_lost
        self.status = "new"  # new -> serving -> (fenced | released | failed)
        self.epoch = 0
        self.log_start = 0
        self._state: PartitionState | None = None
        self._sealed: tuple[SealedSegment, ...] = ()
        self._open: OpenSegment | None = None
        self._committed = Committed(0, 0)
        self._producers = ProducerStates()
        self._lock = threading.Lock()
        self._pending: list[PendingAppend] = []
        self._scheduled = False
        self._release_requested = False
        self._waiters: list[asyncio.Future[None]] = []
        self.ready = asyncio.Event()  # set (on the loop) once serving or given up

    # ---- called on the event loop -------------------------------------------

    def start(self) -> None:
        self.executor.pin(self.key)
        self._schedule()

    def release(self) -> None:
        """Stop serving (the assignment moved); the next owner fences our segment."""
        self._release_requested = True
        self._schedule()

    def submit(self, data: bytes, header: BatchHeader) -> asyncio.Future[int]:
        self.executor.reserve(self.key, len(data))
        future: asyncio.Future[int] = self.loop.create_future()
        with self._lock:
            self._pending.append(PendingAppend(data, header, future))
        self._schedule()
        return future

    def submit_mirror(
        self, data: bytes, headers: list[BatchHeader], expected_offset: int
    ) -> asyncio.Future[int]:
        """Conditionally append source batches that keep their source offsets."""
        self.executor.reserve(self.key, len(data))
        future: asyncio.Future[int] = self.loop.create_future()
        with self._lock:
            self._pending.append(PendingAppend(data, headers[0], future, headers, expected_offset))
        self._schedule()
        return future

    async def wait_for_data(self, offset: int, timeout: float) -> None:
        """Return once the log end passes offset, or after timeout."""
        if self._committed.log_end > offset or self.status not in ("new", "serving"):
            return
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            pass
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    @property
    def log_end(self) -> int:
        return self._committed.log_end

    # ---- worker thread ------------------------------------------------------

    def _schedule(self) -> None:
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        self.executor.submit(self.key, self._service)

    def _service(self) -> None:
        with self._lock:
            self._scheduled = False
            group, self._pending = self._pending, []
        try:
            if self.status == "new" and not self._release_requested:
                metrics.timed_takeover(self._take_over)
            if self._release_requested and self.status in ("new", "serving"):
                self._give_up("released", "partition was reassigned")
            if self.status == "serving" and group:
                self._append_all(group)
        except TalosError as exc:
            self._give_up("fenced" if isinstance(exc, NotOwner) else "failed", str(exc))
            self._finish(group, exc)
            return
        except Exception as exc:  # keep the protocol: any surprise ends our tenure
            log.exception("partition %s/%d failed", self.topic, self.partition)
            self._give_up("failed", repr(exc))
            self._finish(group, StorageError(f"{self.topic}/{self.partition}: {exc!r}"))
            return
        if group:
            self._finish(group, self._not_owner("not serving"))
        self.loop.call_soon_threadsafe(self.ready.set)

    def _not_owner(self, why: str) -> NotOwner:
        return NotOwner(
            f"broker {self.broker_id} does not own {self.topic}/{self.partition}: {why}"
        )

    def _take_over(self) -> None:
        states, topic, partition = self.states, self.topic, self.partition
        state = states.get(topic, partition)
        state = states.compare_and_set(
            topic, partition, state.with_owner(self.broker_id), state.version
        )
        self.epoch = state.epoch
        previous = state.open_segment
        if previous is not None:
            state = self._seal_previous(state, previous)
        log_end = state.sealed_end
        self.log_start = state.log_start
        self._sealed = tuple(
            SealedSegment(s.base_offset, s.end_offset or s.base_offset, s.size or 0, self._path(s))
            for s in state.segments
        )
        self._rebuild_producer_state()
        state = states.compare_and_set(
            topic, partition, state.with_new_segment(log_end, self.epoch), state.version
        )
        self._state = state
        self._open_segment(log_end)
        self._committed = Committed(log_end, 0)
        self.status = "serving"
        log.info(
            "broker %s took over %s/%d at epoch %d, log end %d",
            self.broker_id,
            topic,
            partition,
            self.epoch,
            log_end,
        )

    def _seal_previous(self, state: PartitionState, previous: SegmentInfo) -> PartitionState:
        path = self._path(previous)
        # Step 2: the marker first; an existing marker counts as created.
        self.store.create_exclusive(fence_marker_path(path))
        # Step 3: only now scan; whatever the old owner acknowledged is inside.
        if self.store.exists(path):
            scan = scan_segment(self.store, path, previous.base_offset)
        else:  # registered, but the old owner died before creating the file
            scan = None
        end = scan.next_offset if scan else previous.base_offset
        size = scan.valid_bytes if scan else 0
        sealed = state.with_sealed(previous.base_offset, end, size)
        if sealed is not state:
            state = self.states.compare_and_set(self.topic, self.partition, sealed, state.version)
        if scan is not None and scan.entries:
            try:
                seg_index.write_indexes(self.store, path, scan.entries, previous.base_offset)
            except StorageError as exc:  # indexes are rebuilt by a scan when missing
                log.warning("could not write indexes for %s: %s", path, exc)
        return state

    def _rebuild_producer_state(self) -> None:
        budget = PRODUCER_STATE_TAIL_BYTES
        tail: list[SealedSegment] = []
        for segment in reversed(self._sealed):
            if budget <= 0:
                break
            tail.append(segment)
            budget -= segment.size
        for segment in reversed(tail):
            position = 0
            while position < segment.size:
                chunk = self.store.read(
                    segment.path, position, min(READ_CHUNK_BYTES, segment.size - position)
                )
                consumed = 0
                for batch_pos, header in iter_batches(chunk):
                    self._producers.record(_identity(header), header.base_offset)
                    consumed = batch_pos + header.total_size
                if consumed == 0:
                    if len(chunk) < READ_CHUNK_BYTES:
                        break
                    # one batch larger than the chunk: read it whole
                    chunk = self.store.read(segment.path, position, segment.size - position)
                    for batch_pos, header in iter_batches(chunk):
                        self._producers.record(_identity(header), header.base_offset)
                        consumed = batch_pos + header.total_size
                    if consumed == 0:
                        break
                position += consumed

    def _open_segment(self, base_offset: int) -> None:
        path = segment_path(self.cluster, self.topic, self.partition, base_offset, self.epoch)
        stream = self.store.open_append(path, create=True)
        self._open = OpenSegment(base_offset, path, self.clock.wall_ms(), stream)

    def _path(self, segment: SegmentInfo) -> str:
        return segment_path(
            self.cluster, self.topic, self.partition, segment.base_offset, segment.epoch
        )

    def _append_all(self, group: list[PendingAppend]) -> None:
        """Group-commit runs of produce batches; each mirror append gets its own write.

        Items leave ``group`` once answered, so on a fatal error the caller
        fails exactly the ones still waiting.
        """
        while group:
            if group[0].mirror_headers is not None:
                self._mirror_append(group[0])
                del group[0]
                continue
            run = next((i for i, p in enumerate(group) if p.mirror_headers is not None), len(group))
            self._append_group(group[:run])
            del group[:run]

    def _writable_segment(self) -> OpenSegment:
        """Our open segment, rolled first when it is too big or too old."""
        segment = self._open
        assert segment is not None and self._state is not None
        committed = self._committed
        if committed.open_size > 0 and should_roll(
            committed.open_size,
            # a wall clock that jumped back makes the age unknown, not negative
            max(0, self.clock.wall_ms() - segment.created_ms),
            self.config.segment_bytes,
            self.config.segment_ms,
        ):
            self._roll()
            segment = self._open
            assert segment is not None
        return segment

    def _write_and_check(self, segment: OpenSegment, data: bytes | bytearray | memoryview) -> None:
        """Write, flush at the topic's durability, then the ack rule's fence check."""
        segment.stream.append(data)
        segment.stream.flush(Durability(self.config.durability))
        if self.store.exists(fence_marker_path(segment.path)):
            raise self._not_owner(f"segment {segment.path} was fenced by a newer owner")

    def _mirror_append(self, pending: PendingAppend) -> None:
        headers = pending.mirror_headers
        assert headers is not None
        end = self._committed.log_end
        if pending.expected_offset > end:
            self._resolve(
                [
                    (
                        pending,
                        Gap(
                            f"offset: mirror append at {pending.expected_offset} "
                            f"is past the log end {end}",
                            log_end=end,
                        ),
                    )
                ]
            )
            return
        try:
            skip_count, skip_bytes = self._compare_overlap(headers, end)
        except MirrorDiverged as exc:
            self._resolve([(pending, exc)])
            return
        rest = headers[skip_count:]
        if rest:
            segment = self._writable_segment()
            committed = self._committed
            self._write_and_check(segment, memoryview(pending.data)[skip_bytes:])
            position = committed.open_size
            for header in rest:
                segment.offsets.append(header.base_offset)
                segment.positions.append(position)
                segment.max_timestamps.append(header.max_timestamp)
                self._producers.record(_identity(header), header.base_offset)
                position += header.total_size
            self._committed = Committed(rest[-1].next_offset, position)
        self._resolve([(pending, self._committed.log_end)])

    def _compare_overlap(self, headers: list[BatchHeader], end: int) -> tuple[int, int]:
        """How many incoming batches (and bytes) are already stored, CRC for CRC."""
        start = headers[0].base_offset
        if start >= end:
            return 0, 0
        stored: dict[int, tuple[int, int]] = {}
        offset = start
        until = min(end, headers[-1].next_offset)
        while offset < until:
            chunk = self.read(offset, READ_CHUNK_BYTES)
            progressed = offset
            for _, header in iter_batches(chunk):
                stored[header.base_offset] = (header.crc, header.record_count)
                progressed = header.next_offset
            if progressed == offset:
                break
            offset = progressed
        count = size = 0
        for header in headers:
            if header.next_offset <= end:
                if stored.get(header.base_offset) != (header.crc, header.record_count):
                    raise MirrorDiverged(
                        f"{self.topic}/{self.partition}: the batch at offset "
                        f"{header.base_offset} differs from the one stored"
                    )
                count += 1
                size += header.total_size
            elif header.base_offset < end:
                raise MirrorDiverged(
                    f"{self.topic}/{self.partition}: the batch {header.base_offset}.."
                    f"{header.next_offset - 1} straddles the log end {end}"
                )
            else:
                break
        return count, size

    def _append_group(self, group: list[PendingAppend]) -> None:
        """Group commit: one write and one flush for every batch waiting."""
        metrics.group_committed(len(group))
        segment = self._writable_segment()
        committed = self._committed
        buffer = bytearray()
        results: list[tuple[PendingAppend, int | TalosError]] = []
        next_offset = committed.log_end
        new_offsets: list[int] = []
        new_positions: list[int] = []
        new_timestamps: list[int] = []
        for pending in group:
            identity = _identity(pending.header)
            try:
                duplicate = self._producers.check(identity)
            except TalosError as exc:
                results.append((pending, exc))
                continue
            if duplicate is not None:
                results.append((pending, duplicate.base_offset))
                continue
            at = len(buffer)
            buffer += pending.data
            stamp_base_offset(buffer, at, next_offset)
            new_offsets.append(next_offset)
            new_positions.append(committed.open_size + at)
            new_timestamps.append(pending.header.max_timestamp)
            self._producers.record(identity, next_offset)
            results.append((pending, next_offset))
            next_offset += pending.header.record_count
        if buffer:
            self._write_and_check(segment, buffer)
            segment.offsets.extend(new_offsets)
            segment.positions.extend(new_positions)
            segment.max_timestamps.extend(new_timestamps)
            self._committed = Committed(next_offset, committed.open_size + len(buffer))
        self._resolve(results)

    def _roll(self) -> None:
        """Seal our segment and open the next, CAS first (a stale owner learns it was fenced)."""
        segment, state, committed = self._open, self._state, self._committed
        assert segment is not None and state is not None
        new_state = state.with_sealed(
            segment.base_offset, committed.log_end, committed.open_size
        ).with_new_segment(committed.log_end, self.epoch)
        try:
            self._state = self.states.compare_and_set(
                self.topic, self.partition, new_state, state.version
            )
        except TalosError as exc:
            raise self._not_owner(f"roll refused: {exc}") from exc
        segment.stream.close()
        entries = _sparse_entries(segment)
        try:
            seg_index.write_indexes(self.store, segment.path, entries, segment.base_offset)
        except StorageError as exc:
            log.warning("could not write indexes for %s: %s", segment.path, exc)
        sealed = SealedSegment(
            segment.base_offset, committed.log_end, committed.open_size, segment.path, entries
        )
        self._open_segment(committed.log_end)
        self._sealed = (*self._sealed, sealed)
        self._committed = Committed(committed.log_end, 0)

    def _give_up(self, status: str, why: str) -> None:
        if self.status in ("fenced", "released", "failed"):
            return
        self.status = status
        if self._open is not None:
            with contextlib.suppress(TalosError):
                self._open.stream.close()
        log.info("broker %s gave up %s/%d: %s", self.broker_id, self.topic, self.partition, why)
        self.loop.call_soon_threadsafe(self._after_give_up, why)

    def _after_give_up(self, why: str) -> None:
        self.ready.set()
        self._wake_waiters()
        self.on_lost(self, why)

    def _finish(self, group: list[PendingAppend], error: TalosError) -> None:
        if group:
            self._resolve([(pending, error) for pending in group])

    def _resolve(self, results: list[tuple[PendingAppend, int | TalosError]]) -> None:
        self.executor.release(self.key, sum(len(p.data) for p, _ in results))
        self.loop.call_soon_threadsafe(self._resolve_on_loop, results)

    def _resolve_on_loop(self, results: list[tuple[PendingAppend, int | TalosError]]) -> None:
        for pending, outcome in results:
            if pending.future.done():
                continue
            if isinstance(outcome, TalosError):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # ---- reads (any thread) -------------------------------------------------

    def read(self, offset: int, max_bytes: int) -> bytes:
        """Whole acknowledged batches from the one holding ``offset``."""
        committed, sealed, segment = self._committed, self._sealed, self._open
        if offset == committed.log_end:
            return b""
        if offset < self.log_start or offset > committed.log_end:
            raise OffsetOutOfRange(
                f"offset: {offset} is outside {self.topic}/{self.partition} "
                f"[{self.log_start}, {committed.log_end}]",
                log_start=self.log_start,
                log_end=committed.log_end,
            )
        if segment is not None and offset >= segment.base_offset:
            count = len(segment.offsets)
            index = bisect.bisect_right(segment.offsets, offset, 0, count) - 1
            position = segment.positions[max(index, 0)]
            return read_batches(self.store, segment.path, position, max_bytes, committed.open_size)
        for sealed_segment in sealed:
            if sealed_segment.base_offset <= offset < sealed_segment.end_offset:
                entries = sealed_segment.entries(self.store)
                i = bisect.bisect_right(entries, offset, key=lambda e: e.offset)
                if i:
                    position, base = entries[i - 1].position, entries[i - 1].offset
                else:
                    position, base = 0, sealed_segment.base_offset
                return self._read_sealed(sealed_segment, position, base, offset, max_bytes)
        return b""

    def _read_sealed(
        self, segment: SealedSegment, position: int, base: int, offset: int, max_bytes: int
    ) -> bytes:
        """Batches from an indexed one (at ``position``, starting at offset ``base``) on,
        until they reach ``offset``; each must continue the offsets of the one before.

        The CRC leaves the base offset out, so a damaged one is caught here, not
        delivered as records at other offsets. A segment file shorter than its
        sealed size must end in an error too: returning only the batches before
        ``offset`` would leave a reader asking for the same offset forever.
        """
        expected = base
        while True:
            data = read_batches(self.store, segment.path, position, max_bytes, segment.size)
            if not data:
                raise CorruptBatch(
                    f"segment {segment.path}: ends at position {position} before offset "
                    f"{offset}, inside its sealed size {segment.size}"
                )
            at = 0
            while at < len(data):
                header = parse_header(data, at)
                if header.base_offset != expected:
                    raise CorruptBatch(
                        f"segment {segment.path}: the batch at position {position + at} "
                        f"says base offset {header.base_offset}, expected {expected}"
                    )
                expected, at = header.next_offset, at + header.total_size
            if expected > offset:
                return data
            position += len(data)

    def offset_for_time(self, timestamp_ms: int) -> int:
        """The first offset whose record timestamp is at or after timestamp_ms."""
        offset = self.log_start
        while offset < self._committed.log_end:
            data = self.read(offset, READ_CHUNK_BYTES)
            if not data:
                break
            for _, header in iter_batches(data):
                if header.next_offset <= offset:
                    continue
                if header.max_timestamp >= timestamp_ms:
                    for record in decode_records(data, _position_of(data, header)):
                        if record.offset >= offset and record.timestamp_ms >= timestamp_ms:
                            return record.offset
                offset = header.next_offset
        return self._committed.log_end

    def describe(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "status": self.status,
            "epoch": self.epoch,
            "log_start": self.log_start,
            "log_end": self._committed.log_end,
            "segments": len(self._sealed) + (1 if self._open else 0),
        }


def _identity(header: BatchHeader) -> BatchIdentity:
    """The batch's producer identity; a mirrored batch's ids belong to another cluster's
    id space, so they are not tracked here (they would clash with ours after promotion)."""
    producer_id = header.producer_id if not header.origin_cluster else -1
    return BatchIdentity(
        producer_id, header.producer_epoch, header.base_sequence, header.record_count
    )


def _position_of(data: bytes, wanted: BatchHeader) -> int:
    for position, header in iter_batches(data):
        if header.base_offset == wanted.base_offset:
            return position
    return 0


def _sparse_entries(segment: OpenSegment) -> list[seg_index.IndexEntry]:
    builder = seg_index.SparseIndexBuilder()
    positions = [*segment.positions]
    for i, offset in enumerate(segment.offsets):
        end = positions[i + 1] if i + 1 < len(positions) else positions[i]
        builder.add(offset, positions[i], max(end - positions[i], 0), segment.max_timestamps[i])
    entries: list[seg_index.IndexEntry] = builder.entries
    return entries
