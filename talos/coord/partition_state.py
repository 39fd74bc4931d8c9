"""Partition state: owner, epoch and segment list, changed only by compare-and-set.

This znode is the arbiter of the single-writer protocol (DESIGN §4): a
takeover bumps the epoch, a roll seals the open segment and registers the
next one, and a stale owner learns it was fenced because its CAS fails.
The transitions are pure methods; :class:`PartitionStateStore` does the I/O.

Layout (issue 12 §3: no ceiling on the number of segments): the partition
znode holds the owner, epoch, log start and the newest segments; older sealed
segments move, CHUNK_SEGMENTS at a time, into immutable child znodes
(``chunks``) that the partition znode lists. Every write is one transaction
(set the partition znode at its version, check the incarnation, create or
delete chunks), so readers see whole states only and no value grows forever.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NoNodeError

from talos.config import validate_topic_name
from talos.coord import paths
from talos.coord.zk import dumps, loads, txn_failure, zk_errors
from talos.errors import CoordinationError, Fenced, InvalidArgument, UnknownTopic

_READ_ATTEMPTS = 20


def _check_nonneg(value: object, param: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{param}: must be an integer >= 0, got {value!r}")
    return value


@dataclass(frozen=True)
class SegmentInfo:
    """One segment file. ``end_offset`` is exclusive (the next offset after it).

    An open segment has neither ``end_offset`` nor ``size`` yet.
    """

    base_offset: int
    epoch: int
    end_offset: int | None = None
    size: int | None = None
    #: The newest record timestamp of a sealed segment (time retention); -1: not known.
    max_timestamp: int = -1
    #: The sealing owner's wall clock when it sealed the segment; -1: not known. Time
    #: retention counts from the later of the two, so records stamped long ago by their
    #: producer (or a skewed producer clock) are not deleted the moment they arrive.
    sealed_ms: int = -1

    @property
    def sealed(self) -> bool:
        return self.end_offset is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentInfo:
        return cls(
            base_offset=int(data["base_offset"]),
            epoch=int(data["epoch"]),
            end_offset=None if data.get("end_offset") is None else int(data["end_offset"]),
            size=None if data.get("size") is None else int(data["size"]),
            max_timestamp=int(data.get("max_timestamp", -1)),
            sealed_ms=int(data.get("sealed_ms", -1)),
        )


#: Sealed segments per chunk znode (about 80 bytes each: ~20 KB a chunk). The
#: partition znode keeps fewer than 2 * CHUNK_SEGMENTS sealed segments itself.
CHUNK_SEGMENTS = 256


def below_log_start(segment: SegmentInfo, log_start: int) -> bool:
    """Whether retention removed ``segment`` (a sealed one wholly below the log start)."""
    return (
        segment.end_offset is not None
        and segment.end_offset <= log_start
        and segment.base_offset < log_start
    )


@dataclass(frozen=True)
class Chunk:
    """An immutable child znode holding a run of older sealed segments."""

    name: str
    segments: tuple[SegmentInfo, ...]

    def to_json(self) -> bytes:
        return dumps([segment.to_dict() for segment in self.segments])

    @classmethod
    def from_json(cls, name: str, data: bytes) -> Chunk:
        raw = loads(data, f"segment chunk {name}")
        try:
            return cls(name, tuple(SegmentInfo.from_dict(s) for s in raw))
        except (KeyError, TypeError, ValueError) as exc:
            raise CoordinationError(f"segment chunk {name}: malformed ({exc!r})") from None

    def live(self, log_start: int) -> tuple[SegmentInfo, ...]:
        return tuple(s for s in self.segments if not below_log_start(s, log_start))


@dataclass(frozen=True)
class Layout:
    """Where a state's segments go: chunks kept, dropped and created, and the head."""

    keep: tuple[Chunk, ...]
    drop: tuple[str, ...]
    create: tuple[Chunk, ...]
    next_chunk: int


def plan_layout(
    chunks: tuple[Chunk, ...],
    segments: tuple[SegmentInfo, ...],
    log_start: int,
    next_chunk: int,
    chunk_segments: int = CHUNK_SEGMENTS,
) -> Layout:
    """Lay ``segments`` out over the existing ``chunks`` (pure; no I/O).

    A chunk stays while its live segments are still the next ones in the
    list; a chunk wholly below the log start, or one a truncation cut into
    (and every chunk after it), is dropped and its live segments return to the
    head. The head then sheds its oldest sealed segments into new chunks
    until fewer than ``2 * chunk_segments`` sealed ones remain.
    """
    at = 0
    keep: list[Chunk] = []
    drop: list[str] = []
    intact = True
    for chunk in chunks:
        live = chunk.live(log_start)
        if intact and live and segments[at : at + len(live)] == live:
            keep.append(chunk)
            at += len(live)
            continue
        if live:
            intact = False  # everything from here on is laid out again
        drop.append(chunk.name)
    head = segments[at:]
    create: list[Chunk] = []
    sealed = len(head) - (1 if head and not head[-1].sealed else 0)
    while sealed >= 2 * chunk_segments:
        create.append(Chunk(f"c{next_chunk:010d}", head[:chunk_segments]))
        head = head[chunk_segments:]
        sealed -= chunk_segments
        next_chunk += 1
    return Layout(tuple(keep), tuple(drop), tuple(create), next_chunk)


@dataclass(frozen=True)
class PartitionState:
    epoch: int = 0
    owner: str = ""
    segments: tuple[SegmentInfo, ...] = ()
    #: The znode version this state was read at; not serialized. -1: never stored.
    version: int = -1
    #: Offsets below it were removed by retention; readers below it get OFFSET_OUT_OF_RANGE.
    log_start: int = 0
    #: The topic incarnation this partition belongs to (a name is not an identity);
    #: every compare-and-set checks it, see :meth:`PartitionStateStore.compare_and_set`.
    incarnation: str = ""
    #: The chunk znodes holding the oldest of ``segments`` (as stored; see plan_layout).
    chunks: tuple[Chunk, ...] = ()
    #: The number of the next chunk znode to create (names are never reused).
    next_chunk: int = 0

    @property
    def head_segments(self) -> tuple[SegmentInfo, ...]:
        """The segments the partition znode itself holds: those after the chunks."""
        in_chunks = sum(len(chunk.live(self.log_start)) for chunk in self.chunks)
        return self.segments[in_chunks:]

    def to_json(self) -> bytes:
        """The partition znode's value (the chunks are stored beside it)."""
        return dumps(
            {
                "incarnation": self.incarnation,
                "epoch": self.epoch,
                "owner": self.owner,
                "log_start": self.log_start,
                "chunks": [chunk.name for chunk in self.chunks],
                "next_chunk": self.next_chunk,
                "segments": [segment.to_dict() for segment in self.head_segments],
            }
        )

    @staticmethod
    def chunk_names(data: bytes) -> list[str]:
        """The chunk znodes a partition znode's value refers to."""
        raw = loads(data, "partition state")
        names = raw.get("chunks", []) if isinstance(raw, dict) else []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise CoordinationError(f"partition state: malformed chunk list {names!r}")
        return names

    @classmethod
    def from_json(cls, data: bytes, version: int, chunks: tuple[Chunk, ...] = ()) -> PartitionState:
        """The state from the partition znode's value and the chunks it lists, in order."""
        raw = loads(data, "partition state")
        try:
            log_start = int(raw["log_start"])
            if [chunk.name for chunk in chunks] != list(raw.get("chunks", [])):
                raise ValueError(f"chunks {raw.get('chunks')} were not all given")
            older = tuple(s for chunk in chunks for s in chunk.live(log_start))
            return cls(
                epoch=int(raw["epoch"]),
                owner=str(raw["owner"]),
                segments=older + tuple(SegmentInfo.from_dict(s) for s in raw["segments"]),
                version=version,
                log_start=log_start,
                incarnation=str(raw["incarnation"]),
                chunks=chunks,
                next_chunk=int(raw.get("next_chunk", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CoordinationError(
                f"partition state: malformed ({exc!r}); a topic created before incarnations "
                "must be recreated"
            ) from None

    @property
    def open_segment(self) -> SegmentInfo | None:
        if self.segments and not self.segments[-1].sealed:
            return self.segments[-1]
        return None

    @property
    def sealed_end(self) -> int:
        for segment in reversed(self.segments):
            if segment.end_offset is not None:
                return segment.end_offset
        return self.log_start

    def segment(self, base_offset: int) -> SegmentInfo | None:
        for segment in self.segments:
            if segment.base_offset == base_offset:
                return segment
        return None

    def with_owner(self, owner: str) -> PartitionState:
        """Takeover step 1: the next epoch belongs to ``owner``."""
        if not isinstance(owner, str) or not owner:
            raise InvalidArgument(f"owner: must be a non-empty broker id, got {owner!r}")
        return dataclasses.replace(self, epoch=self.epoch + 1, owner=owner)

    def retired(self) -> PartitionState:
        """The next epoch belongs to nobody: a topic being deleted fences its owner.

        Any later compare-and-set by the old owner (a roll, a takeover's
        registration) fails on the version, like after a takeover.
        """
        return dataclasses.replace(self, epoch=self.epoch + 1, owner="")

    def with_log_start(self, log_start: int) -> PartitionState:
        """Retention: the log now starts at ``log_start``; the sealed segments wholly
        below it leave the list (their files are deleted only after this is stored).

        It must be the end of a sealed segment (whole segments go), never behind
        the current start and never past the sealed end.
        """
        _check_nonneg(log_start, "log_start")
        if log_start == self.log_start:
            return self
        ends = {s.end_offset for s in self.segments if s.end_offset is not None}
        if log_start < self.log_start or log_start not in ends:
            raise InvalidArgument(
                f"log_start: must be the end of a sealed segment after the current log start "
                f"{self.log_start}, got {log_start}"
            )
        return dataclasses.replace(
            self,
            log_start=log_start,
            segments=tuple(s for s in self.segments if not below_log_start(s, log_start)),
        )

    def with_start_skipped(self, log_start: int) -> PartitionState:
        """A mirror target restarts its log, empty, at ``log_start`` (issue 12 §2).

        Used when the source no longer holds the offsets from this log's end up
        to ``log_start`` (its retention deleted them: the first copy of a source
        that starts above 0, or a link with ``on_gap = "skip"``). A log is dense
        from its start, so the hole cannot sit inside it: the hole becomes the
        new log start, and every segment below it leaves the list as retention
        removes them (their files are deleted only after this is stored).
        Offsets stay equal to the source's; readers below get OFFSET_OUT_OF_RANGE.
        Every segment must be sealed first, and ``log_start`` is at or past the end.
        """
        _check_nonneg(log_start, "log_start")
        if self.open_segment is not None:
            raise InvalidArgument(
                f"log_start: the segment at {self.open_segment.base_offset} is still open; "
                "seal it before moving the log start past the end"
            )
        if log_start < self.sealed_end:
            raise InvalidArgument(
                f"log_start: must be at or past the log end {self.sealed_end}, got {log_start}"
            )
        return dataclasses.replace(
            self,
            log_start=log_start,
            segments=tuple(s for s in self.segments if not below_log_start(s, log_start)),
        )

    def with_sealed(
        self,
        base_offset: int,
        end_offset: int,
        size: int,
        max_timestamp: int = -1,
        sealed_ms: int = -1,
    ) -> PartitionState:
        """Record a segment's sealed end; an already sealed segment keeps its first end."""
        _check_nonneg(base_offset, "base_offset")
        _check_nonneg(end_offset, "end_offset")
        _check_nonneg(size, "size")
        # The last one: an owner fenced before writing leaves an empty sealed segment
        # at the same base offset as its successor's.
        index = next(
            (
                i
                for i in reversed(range(len(self.segments)))
                if self.segments[i].base_offset == base_offset
            ),
            None,
        )
        if index is None:
            raise InvalidArgument(
                f"base_offset: no segment starts at {base_offset}; segments start at "
                f"{[s.base_offset for s in self.segments]}"
            )
        segment = self.segments[index]
        if segment.sealed:
            return self
        if end_offset < base_offset:
            raise InvalidArgument(
                f"end_offset: must be >= base_offset {base_offset}, got {end_offset}"
            )
        sealed = dataclasses.replace(
            segment,
            end_offset=end_offset,
            size=size,
            max_timestamp=max_timestamp,
            sealed_ms=sealed_ms,
        )
        return dataclasses.replace(
            self, segments=(*self.segments[:index], sealed, *self.segments[index + 1 :])
        )

    def with_new_segment(self, base_offset: int, epoch: int) -> PartitionState:
        """Register the next open segment; it must start where the log ends."""
        _check_nonneg(base_offset, "base_offset")
        _check_nonneg(epoch, "epoch")
        if self.open_segment is not None:
            raise InvalidArgument(
                f"base_offset: the segment at {self.open_segment.base_offset} is still open; "
                "seal it before adding another"
            )
        if base_offset != self.sealed_end:
            raise InvalidArgument(
                f"base_offset: must equal the end of the log {self.sealed_end}, got {base_offset}"
            )
        low = self.segments[-1].epoch if self.segments else 0
        if not low <= epoch <= self.epoch:
            raise InvalidArgument(
                f"epoch: must be between {low} (last segment) and {self.epoch} (partition), "
                f"got {epoch}"
            )
        return dataclasses.replace(
            self, segments=(*self.segments, SegmentInfo(base_offset=base_offset, epoch=epoch))
        )

    def with_truncation(self, offset: int, size_at: int) -> PartitionState:
        """Cut the log back to end at ``offset`` (failback of a diverged primary).

        No byte is rewritten: whole segments from ``offset`` on leave the list
        and the segment holding ``offset`` keeps its first ``size_at`` bytes
        (the position of the batch starting at ``offset``; 0 when ``offset``
        is a segment base or the current end). The next owner opens a new
        segment at ``offset`` under a newer epoch. Every segment must be
        sealed first (take the partition over), so no writer is cut short.
        """
        _check_nonneg(offset, "offset")
        _check_nonneg(size_at, "size_at")
        if self.open_segment is not None:
            raise InvalidArgument(
                f"offset: the segment at {self.open_segment.base_offset} is still open; "
                "take the partition over and seal it before truncating"
            )
        if not self.log_start <= offset <= self.sealed_end:
            raise InvalidArgument(
                f"offset: must be between the log start {self.log_start} and the log end "
                f"{self.sealed_end}, got {offset}"
            )
        if offset == self.sealed_end:
            if size_at != 0:
                raise InvalidArgument(
                    f"size_at: must be 0 when truncating at the log end {offset}, got {size_at}"
                )
            return self
        kept: list[SegmentInfo] = []
        cut_inside = False
        for segment in self.segments:
            if segment.base_offset >= offset:
                break
            if (segment.end_offset or segment.base_offset) <= offset:
                kept.append(segment)
                continue
            size = segment.size or 0
            if not 0 < size_at < size:
                raise InvalidArgument(
                    f"size_at: the segment at {segment.base_offset} holds {size} bytes, so a cut "
                    f"inside it must keep between 1 and {size - 1} bytes; got {size_at}"
                )
            kept.append(dataclasses.replace(segment, end_offset=offset, size=size_at))
            cut_inside = True
            break
        if not cut_inside and size_at != 0:
            raise InvalidArgument(
                f"size_at: {offset} is a segment boundary, so size_at must be 0; got {size_at}"
            )
        if (kept[-1].end_offset if kept else self.log_start) != offset:
            raise InvalidArgument(
                f"offset: {offset} is not inside any segment (the log has a hole there)"
            )
        return dataclasses.replace(self, segments=tuple(kept))


class PartitionStateStore:
    """Reads and compare-and-sets ``/topics/<topic>/partitions/<p>``."""

    def __init__(self, zk: KazooClient, chunk_segments: int = CHUNK_SEGMENTS) -> None:
        self._zk = zk
        self._chunk_segments = chunk_segments
        self._lock = threading.Lock()
        # (topic, partition) -> the chunks its last read state listed, by (incarnation, name)
        self._chunks: dict[tuple[str, int], dict[tuple[str, str], Chunk]] = {}

    @staticmethod
    def _path(topic: str, partition: int) -> str:
        validate_topic_name(topic)
        _check_nonneg(partition, "partition")
        return paths.partition(topic, partition)

    def get(self, topic: str, partition: int) -> PartitionState:
        path = self._path(topic, partition)
        with zk_errors(f"reading partition state of {topic}/{partition}"):
            for _ in range(_READ_ATTEMPTS):
                try:
                    data, stat = self._zk.get(path)
                except NoNodeError:
                    raise UnknownTopic(
                        f"topic {topic!r} partition {partition} does not exist"
                    ) from None
                state = self._assemble(topic, partition, data, stat.version)
                if state is not None:
                    return state
        raise CoordinationError(
            f"reading partition state of {topic}/{partition}: it kept changing, retry"
        )

    def _assemble(
        self, topic: str, partition: int, data: bytes, version: int
    ) -> PartitionState | None:
        """The state whose partition znode holds ``data``; None if one of its chunks
        was dropped meanwhile (read again). Chunks are immutable, so they are cached."""
        names = PartitionState.chunk_names(data)
        incarnation = loads(data, "partition state").get("incarnation", "")
        key = (topic, partition)
        with self._lock:
            cached = self._chunks.get(key, {})
        wanted = {(incarnation, name) for name in names}
        missing = [
            (name, self._zk.get_async(paths.partition_chunk(topic, partition, name)))
            for name in names
            if (incarnation, name) not in cached
        ]
        fetched = dict(cached)
        for name, result in missing:
            try:
                chunk_data, _ = result.get()
            except NoNodeError:
                return None
            fetched[(incarnation, name)] = Chunk.from_json(name, chunk_data)
        kept = {k: v for k, v in fetched.items() if k in wanted}
        with self._lock:
            self._chunks[key] = kept
        chunks = tuple(kept[(incarnation, name)] for name in names)
        return PartitionState.from_json(data, version, chunks)

    def compare_and_set(
        self,
        topic: str,
        partition: int,
        new: PartitionState,
        expected_version: int,
        also: Callable[[Any], None] | None = None,
    ) -> PartitionState:
        """Write ``new`` if the znode is still at ``expected_version``.

        ``also(txn)`` adds operations that must commit with it or not at all
        (failback moves group offsets back in the step that truncates).

        Raises Fenced when someone else changed it first. A CoordinationError
        (connection lost) leaves it unknown whether the write landed: re-read
        and compare before retrying.
        """
        path = self._path(topic, partition)
        if isinstance(expected_version, bool) or not isinstance(expected_version, int):
            raise InvalidArgument(f"expected_version: must be an integer, got {expected_version!r}")
        paths.validate_name(new.incarnation, "incarnation")
        layout = plan_layout(
            new.chunks, new.segments, new.log_start, new.next_chunk, self._chunk_segments
        )
        laid = dataclasses.replace(
            new, chunks=layout.keep + layout.create, next_chunk=layout.next_chunk
        )
        txn = self._zk.transaction()
        txn.set_data(path, laid.to_json(), version=expected_version)
        # The version alone is not an identity: a deleted and recreated topic's
        # znode reaches the same versions again. The incarnation znode is.
        txn.check(paths.incarnation(topic, new.incarnation), 0)
        for name in layout.drop:
            txn.delete(paths.partition_chunk(topic, partition, name))
        for chunk in layout.create:
            txn.create(paths.partition_chunk(topic, partition, chunk.name), chunk.to_json())
        if also is not None:
            also(txn)
        with zk_errors(f"writing partition state of {topic}/{partition}"):
            results = txn.commit()
        set_result, check_result = results[0], results[1]
        if isinstance(set_result, BadVersionError):
            raise Fenced(
                f"partition {topic}/{partition} was moved by someone else "
                f"(expected state version {expected_version})"
            )
        if isinstance(set_result, NoNodeError):
            raise UnknownTopic(f"topic {topic!r} partition {partition} does not exist")
        if isinstance(check_result, NoNodeError):
            raise Fenced(
                f"partition {topic}/{partition}: incarnation {new.incarnation} of topic "
                f"{topic!r} no longer exists (the topic was deleted and recreated)"
            )
        failure = txn_failure(results)
        if failure is not None:
            raise CoordinationError(f"writing partition state of {topic}/{partition}: {failure!r}")
        stat = set_result
        return dataclasses.replace(laid, version=stat.version)

    def watch(
        self, topic: str, partition: int, callback: Callable[[PartitionState | None], None]
    ) -> Callable[[], None]:
        """Call ``callback`` now and on every change (None once the partition is gone).

        For readers waiting for a sealed end. Returns a function that stops
        the watch (effective at the next change).
        """
        path = self._path(topic, partition)
        stopped = threading.Event()

        def on_change(data: bytes | None, stat: Any, event: Any = None) -> bool | None:
            if stopped.is_set():
                return False
            if data is None or stat is None:
                callback(None)
                return None
            state = self._assemble(topic, partition, data, stat.version)
            if state is None:  # a chunk went meanwhile: a newer version is on its way
                return None
            callback(state)
            return None

        with zk_errors(f"watching partition state of {topic}/{partition}"):
            self._zk.DataWatch(path, on_change)
        return stopped.set
