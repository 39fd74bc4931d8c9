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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from talos import metrics
from talos.clock import Clock
from talos.config import UNLIMITED, TopicConfig
from talos.coord.partition_state import PartitionState, PartitionStateStore, SegmentInfo
from talos.errors import (
    CoordinationError,
    CorruptBatch,
    Fenced,
    Gap,
    MirrorDiverged,
    NotOwner,
    OffsetOutOfRange,
    StorageError,
    TalosError,
    UnknownTopic,
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
    find_position,
    partition_dir,
    read_batches,
    scan_segment,
    segment_of_file,
    segment_path,
    should_roll,
)
from talos.storage.store import AppendStream, Durability, LogStore

from .executor import PartitionExecutor
from .producer_state import DEFAULT_EXPIRE_MS, ProducerStates, write_snapshot
from .producer_state import identity as _identity
from .producer_state import rebuild as rebuild_producer_states

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 1024 * 1024
RETIRE_ATTEMPTS = 20
#: How long a takeover waits for HDFS to close the previous owner's open segment.
LEASE_RECOVERY_TIMEOUT_S = 60.0


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
    epoch: int = 0
    max_timestamp: int = -1  # -1: not recorded; read from the time index when needed
    sealed_ms: int = -1  # when it was sealed (SegmentInfo.sealed_ms)

    def newest_timestamp(self, store: LogStore) -> int:
        """What time retention counts from: the newest record, or the sealing if later."""
        if self.max_timestamp < 0 and self.size > 0:
            self.max_timestamp = max((e.max_timestamp for e in self.entries(store)), default=-1)
        return max(self.max_timestamp, self.sealed_ms)

    def entries(self, store: LogStore) -> list[seg_index.IndexEntry]:
        """From the broker's byte-bounded LRU of sealed indexes (storage/index.py)."""

        def load() -> list[seg_index.IndexEntry]:
            entries = seg_index.load_indexes(store, self.path, self.base_offset)
            if entries is None:
                entries = scan_segment(store, self.path, self.base_offset).entries
            return entries

        return seg_index.SEALED_INDEXES.get((self.path, self.end_offset, self.size), load)


@dataclass
class OpenSegment:
    """Our own segment, with a sparse index built as batches are appended (one entry
    per 4 KiB of log, not one per batch: memory stays bounded however small the batches)."""

    base_offset: int
    path: str
    created_ms: int
    stream: AppendStream
    index: seg_index.SparseIndexBuilder = field(default_factory=seg_index.SparseIndexBuilder)
    max_timestamp: int = -1  # the newest record timestamp written so far


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
        incarnation: str,
        partition: int,
        config: TopicConfig,
        broker_id: str,
        store: LogStore,
        states: PartitionStateStore,
        executor: PartitionExecutor,
        loop: asyncio.AbstractEventLoop,
        clock: Clock,
        on_lost: Callable[[PartitionLog, str], None],
        producer_expire_ms: int = DEFAULT_EXPIRE_MS,
    ) -> None:
        self.cluster = cluster
        self.topic = topic
        #: The topic incarnation this log belongs to: part of its identity and paths.
        self.incarnation = incarnation
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
        self._producers = ProducerStates(producer_expire_ms)
        self._lock = threading.Lock()
        self._pending: list[PendingAppend] = []
        self._scheduled = False
        self._release_requested = False
        self._retention_requested = False
        self._waiters: list[asyncio.Future[None]] = []
        self.ready = asyncio.Event()  # set (on the loop) once serving or given up

    # ---- called on the event loop -------------------------------------------

    def start(self) -> None:
        self.executor.pin(self.key)
        self._schedule()

    def enforce_retention(self) -> None:
        """Ask the worker to delete what the topic's retention no longer keeps."""
        if self.status == "serving":
            self._retention_requested = True
            self._schedule()

    def release(self) -> None:
        """Stop serving (the assignment moved); the next owner fences our segment."""
        self._release_requested = True
        self._schedule()

    def tick(self) -> None:
        """Run the periodic upkeep (producer expiry) on the worker, even when idle."""
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
            if self.status == "serving" and self._retention_requested:
                self._retention_requested = False
                self._apply_retention()
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
        if self.status == "serving":
            self._producers.expire_due(self.clock.wall_ms())
        self.loop.call_soon_threadsafe(self.ready.set)

    def _not_owner(self, why: str) -> NotOwner:
        return NotOwner(
            f"broker {self.broker_id} does not own {self.topic}/{self.partition}: {why}"
        )

    def _take_over(self) -> None:
        states, topic, partition = self.states, self.topic, self.partition
        state = states.get(topic, partition)
        if state.incarnation != self.incarnation:
            raise self._not_owner(
                f"topic incarnation is {state.incarnation}, this log belongs to "
                f"{self.incarnation} (the topic was deleted and recreated)"
            )
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
            SealedSegment(
                s.base_offset,
                s.end_offset or s.base_offset,
                s.size or 0,
                self._path(s),
                epoch=s.epoch,
                max_timestamp=s.max_timestamp,
                # not recorded (sealed by a failback): counted from this takeover
                sealed_ms=s.sealed_ms if s.sealed_ms >= 0 else self.clock.wall_ms(),
            )
            for s in state.segments
        )
        self._remove_dead_files(state)  # a crash between retention's CAS and its deletes
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
        # HDFS: the NameNode also closes the file, cutting the old owner's pipeline, and
        # settles its length (posix: nothing to do).
        self.store.recover_lease(path, LEASE_RECOVERY_TIMEOUT_S)
        # Step 3: only now scan; whatever the old owner acknowledged is inside.
        if self.store.exists(path):
            scan = scan_segment(self.store, path, previous.base_offset)
        else:  # registered, but the old owner died before creating the file
            scan = None
        end = scan.next_offset if scan else previous.base_offset
        size = scan.valid_bytes if scan else 0
        sealed = state.with_sealed(
            previous.base_offset,
            end,
            size,
            scan.max_timestamp if scan else -1,
            self.clock.wall_ms(),
        )
        if sealed is not state:
            state = self.states.compare_and_set(self.topic, self.partition, sealed, state.version)
        if scan is not None and scan.entries:
            try:
                seg_index.write_indexes(self.store, path, scan.entries, previous.base_offset)
            except StorageError as exc:  # indexes are rebuilt by a scan when missing
                log.warning("could not write indexes for %s: %s", path, exc)
        return state

    def _rebuild_producer_state(self) -> None:
        """From the newest producer snapshot and the batches after it (producer_state.py)."""
        self._producers = rebuild_producer_states(
            self.store, self._sealed, self.clock.wall_ms(), self._producers.expire_ms
        )

    def _open_segment(self, base_offset: int) -> None:
        """Create our registered segment, then confirm we still own the partition.

        A topic delete that fenced the registered segment before its file
        existed removes the marker with the topic's files; the confirmation
        read sees the delete's epoch bump instead, so we never serve a file
        nobody will fence.
        """
        path = self._path(SegmentInfo(base_offset, self.epoch))
        stream = self.store.open_append(path, create=True)
        self._open = OpenSegment(base_offset, path, self.clock.wall_ms(), stream)
        now = self.states.get(self.topic, self.partition)
        if (now.incarnation, now.epoch, now.owner) != (
            self.incarnation,
            self.epoch,
            self.broker_id,
        ):
            raise self._not_owner(
                f"partition moved to epoch {now.epoch} ({now.owner or 'no owner'}) "
                "while our segment was being created"
            )

    def _path(self, segment: SegmentInfo) -> str:
        return segment_path(
            self.cluster,
            self.topic,
            self.partition,
            segment.base_offset,
            segment.epoch,
            incarnation=self.incarnation,
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
        if not self.store.exists(segment.path):  # the topic was deleted (markers and all)
            raise self._not_owner(f"segment {segment.path} was deleted with its topic")

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
            now_ms = self.clock.wall_ms()
            segment = self._writable_segment()
            committed = self._committed
            self._write_and_check(segment, memoryview(pending.data)[skip_bytes:])
            position = committed.open_size
            for header in rest:
                segment.index.add(
                    header.base_offset, position, header.total_size, header.max_timestamp
                )
                segment.max_timestamp = max(segment.max_timestamp, header.max_timestamp)
                self._producers.record(_identity(header), header.base_offset, now_ms)
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
        indexed: list[tuple[int, int, int, int]] = []  # (offset, position, size, max ts)
        now_ms = self.clock.wall_ms()
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
            header = pending.header
            indexed.append(
                (next_offset, committed.open_size + at, header.total_size, header.max_timestamp)
            )
            self._producers.record(identity, next_offset, now_ms)
            results.append((pending, next_offset))
            next_offset += pending.header.record_count
        if buffer:
            self._write_and_check(segment, buffer)
            add = segment.index.add
            for entry in indexed:
                add(*entry)
                segment.max_timestamp = max(segment.max_timestamp, entry[3])
            self._committed = Committed(next_offset, committed.open_size + len(buffer))
        self._resolve(results)

    def _roll(self) -> None:
        """Seal our segment and open the next, CAS first (a stale owner learns it was fenced)."""
        segment, state, committed = self._open, self._state, self._committed
        assert segment is not None and state is not None
        new_state = state.with_sealed(
            segment.base_offset,
            committed.log_end,
            committed.open_size,
            segment.max_timestamp,
            self.clock.wall_ms(),
        ).with_new_segment(committed.log_end, self.epoch)
        try:
            self._state = self.states.compare_and_set(
                self.topic, self.partition, new_state, state.version
            )
        except TalosError as exc:
            raise self._not_owner(f"roll refused: {exc}") from exc
        segment.stream.close()
        entries = segment.index.entries
        seg_index.SEALED_INDEXES.put(
            (segment.path, committed.log_end, committed.open_size), entries
        )
        try:
            seg_index.write_indexes(self.store, segment.path, entries, segment.base_offset)
        except StorageError as exc:
            log.warning("could not write indexes for %s: %s", segment.path, exc)
        write_snapshot(self.store, segment.path, self._producers, committed.log_end)
        sealed = SealedSegment(
            segment.base_offset,
            committed.log_end,
            committed.open_size,
            segment.path,
            epoch=self.epoch,
            max_timestamp=segment.max_timestamp,
            sealed_ms=new_state.segments[-2].sealed_ms,
        )
        self._open_segment(committed.log_end)
        self._sealed = (*self._sealed, sealed)
        self._committed = Committed(committed.log_end, 0)

    def _apply_retention(self) -> None:
        """Retention (issue 12 §1): CAS the new log start first, then delete the files.

        A crash in between leaves only orphan files below the log start, which the
        next owner removes at takeover; no reader is served below the new start.
        """
        state, sealed = self._state, self._sealed
        assert state is not None
        cut = retention_cut(
            sealed,
            self._committed.open_size,
            self.clock.wall_ms(),
            self.config.retention_ms,
            self.config.retention_bytes,
            lambda segment: segment.newest_timestamp(self.store),
        )
        if cut is None or cut <= self.log_start:
            return
        try:
            self._state = self.states.compare_and_set(
                self.topic, self.partition, state.with_log_start(cut), state.version
            )
        except TalosError as exc:
            raise self._not_owner(f"retention refused: {exc}") from exc
        self.log_start = cut
        self._sealed = tuple(s for s in sealed if not (s.base_offset < cut and s.end_offset <= cut))
        log.info("%s/%d: retention moved the log start to %d", self.topic, self.partition, cut)
        self._remove_dead_files(self._state)

    def _remove_dead_files(self, state: PartitionState) -> None:
        """Delete the files of segments below the log start that the state no longer lists
        (retention's deletes, or their orphans after a crash). Failures are left for the
        next run: the state no longer refers to these files."""
        live = {(s.base_offset, s.epoch) for s in state.segments}
        directory = partition_dir(
            self.cluster, self.topic, self.partition, incarnation=self.incarnation
        )
        try:
            names = self.store.list_dir(directory)
        except StorageError as exc:
            log.warning("listing %s for retention failed: %s", directory, exc)
            return
        for name in names:
            owner = segment_of_file(name)
            if owner is None or owner[0] >= state.log_start or owner in live:
                continue
            try:
                self.store.delete(f"{directory}/{name}")
            except StorageError as exc:
                log.warning("deleting %s/%s failed: %s", directory, name, exc)

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
        self.executor.unpin(self.key)
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
        if offset < self.log_start:
            raise OffsetOutOfRange(
                f"offset: {offset} is below the log start {self.log_start} of "
                f"{self.topic}/{self.partition} (removed by retention)",
                log_start=self.log_start,
                log_end=committed.log_end,
            )
        if offset > committed.log_end:
            raise OffsetOutOfRange(
                f"offset: {offset} is outside {self.topic}/{self.partition} "
                f"[{self.log_start}, {committed.log_end}]",
                log_start=self.log_start,
                log_end=committed.log_end,
            )
        if segment is not None and offset >= segment.base_offset:
            position = find_position(
                self.store, segment.path, segment.index.live_entries, offset, committed.open_size
            )
            return read_batches(self.store, segment.path, position, max_bytes, committed.open_size)
        # The last segment starting at or before offset (an empty fenced segment shares
        # its base with its successor, which comes after it); a bisect, not a walk:
        # a partition may hold tens of thousands of segments.
        at = bisect.bisect_right(sealed, offset, key=lambda s: s.base_offset) - 1
        if at >= 0:
            sealed_segment = sealed[at]
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


def retention_cut(
    sealed: Sequence[SealedSegment],
    open_size: int,
    now_ms: int,
    retention_ms: int,
    retention_bytes: int,
    newest_timestamp: Callable[[SealedSegment], int],
) -> int | None:
    """The new log start retention asks for (the end of the last sealed segment to
    delete, oldest first), or None to delete nothing.

    A segment goes when its newest record is more than ``retention_ms`` old, or
    while the partition (sealed sizes plus the open segment) exceeds
    ``retention_bytes`` (UNLIMITED: never). The walk stops at the first segment
    that stays, so the log keeps no holes; the open segment always stays.
    """
    total = sum(segment.size for segment in sealed) + open_size
    cut: int | None = None
    for segment in sealed:
        if segment.size == 0:
            continue  # an empty fenced segment: goes with the next one that goes
        too_big = retention_bytes != UNLIMITED and total > retention_bytes
        if not too_big:
            newest = newest_timestamp(segment)
            if newest < 0 or now_ms - newest <= retention_ms:
                break
        cut = segment.end_offset
        total -= segment.size
    return cut


def retire_partition(
    states: PartitionStateStore,
    store: LogStore,
    cluster: str,
    topic: str,
    incarnation: str,
    partition: int,
) -> None:
    """Fence a partition of a topic being deleted, as a takeover would (DESIGN §4).

    The epoch moves to nobody first, so the owner's next compare-and-set
    fails; then its open segment gets its ``.fenced`` marker, so an owner
    paused through the delete acknowledges nothing more on resuming. Deleting
    the files afterwards removes the marker, so the ack check also refuses a
    segment file that no longer exists.
    """
    for _ in range(RETIRE_ATTEMPTS):
        try:
            state = states.get(topic, partition)
            if state.incarnation != incarnation:
                return  # that incarnation is gone already
            state = states.compare_and_set(topic, partition, state.retired(), state.version)
            break
        except Fenced:
            continue  # the owner rolled meanwhile: retire what it registered
        except UnknownTopic:
            return
    else:
        raise CoordinationError(
            f"deleting {topic}/{partition}: its owner kept moving it; retry the delete"
        )
    segment = state.open_segment
    if segment is not None:
        path = segment_path(
            cluster,
            topic,
            partition,
            segment.base_offset,
            segment.epoch,
            incarnation=state.incarnation,
        )
        store.create_exclusive(fence_marker_path(path))


def _position_of(data: bytes, wanted: BatchHeader) -> int:
    for position, header in iter_batches(data):
        if header.base_offset == wanted.base_offset:
            return position
    return 0
