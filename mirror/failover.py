"""Failover of a mirror link A->B: promote B, later fail back the old primary A.

The decisions are pure functions over plain values (recovery point,
divergence, truncation, refusals), so they are tested with hand-made logs.
The second half of the module does the I/O that executes them against the
ZooKeepers, log stores and brokers named in the topology.

Promote (on B's ZooKeeper): tell the link's workers to stop (control
znode), bump each mirror topic's epoch and mark it promoted - the broker
then refuses the old link's appends (FENCED) and accepts producers - and
report the recovery point per partition. When A's ZooKeeper answers, A's
topics are made read-only at once (a pending mirror of the reverse link),
so producers homed in A move to B instead of writing a history B will
never see.

Failback (once A is back): per partition, take A's partition over the way a
broker does (new epoch, fence marker, scan, seal), find where A's log
stops matching B's copy, archive A's suffix into ``<topic>.diverged.<stamp>``
on A, then cut A's partition state back to the common point and release
it; the assigned broker takes it over again under a newer epoch and opens a
new segment there. No byte is rewritten in place. A's topic becomes a
mirror of the reverse link B:A, whose worker copies what B wrote since.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError

from talos.client.connection import Connections
from talos.config import MAX_TOPIC_NAME_LENGTH, validate_topic_name
from talos.coord.partition_state import PartitionState, PartitionStateStore
from talos.coord.topics import TopicMeta, TopicStore
from talos.coord.zk import connect, dumps, loads, zk_errors
from talos.errors import (
    CoordinationError,
    Fenced,
    InvalidArgument,
    StorageError,
    TalosError,
    TalosTimeout,
    TopicExists,
    Unavailable,
    UnknownTopic,
)
from talos.proto import talos_pb2 as pb
from talos.record.batch import (
    HEADER_SIZE,
    BatchHeader,
    Record,
    decode_records,
    encode_batch,
    iter_batches,
)
from talos.storage import index as seg_index
from talos.storage.posix import PosixLogStore
from talos.storage.segment import (
    fence_marker_path,
    find_position,
    read_batches,
    scan_segment,
    segment_path,
)
from talos.storage.store import LogStore
from talos.wire import error_from_proto
from topology import Datacenter, Link, Topology

from .paths import control_path, failback_path, progress_path, promotion_path

log = logging.getLogger(__name__)

#: Owner written into A's partition state while failback holds a partition.
FAILBACK_OWNER = "failback"
#: Mirror-dict marker on A's topic between promote and the end of failback:
#: read-only for producers, and no reverse worker may append yet.
FAILBACK_PENDING = "pending"
#: Suffix of a mirror's link while promotion has fenced it but not opened it yet.
PROMOTING = " (promoting)"
READ_CHUNK_BYTES = 1024 * 1024

Basis = Literal["source", "progress", "unknown"]


# ==== pure: recovery point =====================================================================


@dataclass(frozen=True)
class SourceView:
    """What was read from the source partition itself (A's store or brokers)."""

    end: int
    #: max timestamp of the source's last batch (None when the log is empty)
    newest_ms: int | None = None
    #: first timestamp of the first batch the target does not have
    first_missing_ms: int | None = None


@dataclass(frozen=True)
class Progress:
    """The mirror worker's last heartbeat for a partition (target ZooKeeper)."""

    source_end: int
    target_end: int
    lag_ms: int
    updated_ms: int


@dataclass(frozen=True)
class PartitionRecovery:
    """The recovery point of one partition at promotion.

    Offsets ``[0, target_end)`` are in B; ``target_end - 1`` is the last
    mirrored offset. The gap is what A had beyond that: lost for B's
    readers until failback archives it.
    """

    topic: str
    source_topic: str
    partition: int
    target_end: int
    source_end: int | None
    gap_messages: int | None
    gap_ms: int | None
    basis: Basis

    @property
    def last_mirrored(self) -> int:
        return self.target_end - 1

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["last_mirrored"] = self.last_mirrored
        return data


def recovery_point(
    topic: str,
    source_topic: str,
    partition: int,
    target_end: int,
    target_newest_ms: int | None,
    source: SourceView | None,
    progress: Progress | None,
) -> PartitionRecovery:
    """Gap in messages and in seconds (RPO) between the source and what B holds.

    From the source itself when it could be read: messages are
    ``source_end - target_end``; seconds run from B's newest mirrored record
    (or the first missing batch when B has none) to A's newest record. Else
    from the worker's last progress heartbeat (its source end and lag).
    Else unknown.
    """
    _nonneg(target_end, "target_end")
    if source is not None:
        gap = max(0, source.end - target_end)
        gap_ms: int | None = 0
        if gap:
            start = target_newest_ms if target_newest_ms is not None else source.first_missing_ms
            if source.newest_ms is None or start is None:
                gap_ms = progress.lag_ms if progress is not None else None
            else:
                gap_ms = max(0, source.newest_ms - start)
        return PartitionRecovery(
            topic, source_topic, partition, target_end, source.end, gap, gap_ms, "source"
        )
    if progress is not None:
        gap = max(0, progress.source_end - target_end)
        return PartitionRecovery(
            topic,
            source_topic,
            partition,
            target_end,
            None,
            gap,
            progress.lag_ms if gap else 0,
            "progress",
        )
    return PartitionRecovery(
        topic, source_topic, partition, target_end, None, None, None, "unknown"
    )


@dataclass(frozen=True)
class RecoveryReport:
    link: str
    promoted_ms: int
    dry_run: bool
    partitions: tuple[PartitionRecovery, ...]
    #: topic -> (old epoch, new epoch); already promoted topics keep theirs
    epochs: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    already_promoted: tuple[str, ...] = ()
    source_demoted: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def gap_messages(self) -> int | None:
        gaps = [p.gap_messages for p in self.partitions]
        return None if any(g is None for g in gaps) else sum(g for g in gaps if g is not None)

    @property
    def rpo_ms(self) -> int | None:
        """The worst partition's gap in time: what the drill calls the RPO."""
        gaps = [p.gap_ms for p in self.partitions]
        if any(g is None for g in gaps):
            return None
        return max((g for g in gaps if g is not None), default=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "link": self.link,
            "promoted_ms": self.promoted_ms,
            "dry_run": self.dry_run,
            "epochs": {t: list(e) for t, e in self.epochs.items()},
            "already_promoted": list(self.already_promoted),
            "source_demoted": list(self.source_demoted),
            "gap_messages": self.gap_messages,
            "rpo_ms": self.rpo_ms,
            "partitions": [p.to_dict() for p in self.partitions],
            "notes": list(self.notes),
        }


def fencing_mirror(mirror: Mapping[str, Any]) -> dict[str, Any]:
    """Promotion, step 1: the next epoch (old appends are FENCED), still read-only.

    The link is relabelled so that a worker still running does not adopt the
    new epoch as its own and go on copying.
    """
    link = str(mirror.get("link", ""))
    return {
        **mirror,
        "link": link if link.endswith(PROMOTING) else link + PROMOTING,
        "epoch": int(mirror.get("epoch", 0)) + 1,
        "promoted": False,
    }


def promoted_mirror(mirror: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    """Promotion, step 2 (after the recovery point is read): writable.

    Takes the dict :func:`fencing_mirror` made (same epoch, link label
    restored) or, for a one-step promotion, a plain mirror dict (next epoch).
    """
    link = str(mirror.get("link", ""))
    fenced = link.endswith(PROMOTING)
    return {
        **mirror,
        "link": link[: -len(PROMOTING)] if fenced else link,
        "epoch": int(mirror.get("epoch", 0)) + (0 if fenced else 1),
        "promoted": True,
        "promoted_ms": now_ms,
    }


def pending_reverse_mirror(
    current: Mapping[str, Any] | None, reverse: str, source: str, source_topic: str
) -> dict[str, Any]:
    """A's topic between promote and failback: read-only, and no worker may append yet.

    Producers get READ_ONLY_MIRROR. The link is named ``"B:A (failback
    pending)"``, so a worker of the reverse link B:A does not take the topic
    for its own (it would append after A's diverged suffix) until failback
    has truncated A and names the link plainly. The epoch continues from
    whatever mirror epoch the topic had, so an older worker is fenced too.
    """
    label = pending_link(reverse)
    if current and current.get("failback") == FAILBACK_PENDING and current.get("link") == label:
        return dict(current)
    epoch = int(current.get("epoch", 0)) + 1 if current else 1
    return {
        "link": label,
        "source": source,
        "source_topic": source_topic,
        "epoch": epoch,
        "promoted": False,
        "failback": FAILBACK_PENDING,
    }


def pending_link(reverse: str) -> str:
    return f"{reverse} (failback pending)"


def final_reverse_mirror(pending: Mapping[str, Any], reverse: str) -> dict[str, Any]:
    """A's topic once failback is done: a plain mirror of the reverse link."""
    final = {k: v for k, v in pending.items() if k != "failback"}
    final["link"] = reverse
    return final


# ==== pure: divergence =========================================================================


@dataclass(frozen=True)
class StoredBatch:
    """One batch as a log holds it; ``position`` is its byte offset in its segment (-1: unknown)."""

    header: BatchHeader
    data: bytes
    position: int = -1


def is_copy_of(a: StoredBatch, b: StoredBatch, source_cluster: str) -> bool:
    """Is ``b`` (in B) the mirror's copy of ``a`` (in A)?

    The mirror keeps every byte but the origin fields and hence the CRC, so
    compare the rest field by field, the records byte for byte, and check
    that B's copy names A (or A's own origin) as its origin.
    """
    x, y = a.header, b.header
    if y.origin_cluster != (x.origin_cluster or source_cluster):
        return False
    same_header = (
        x.base_offset,
        x.batch_length,
        x.attributes,
        x.record_count,
        x.first_timestamp,
        x.max_timestamp,
        x.producer_id,
        x.producer_epoch,
        x.base_sequence,
    ) == (
        y.base_offset,
        y.batch_length,
        y.attributes,
        y.record_count,
        y.first_timestamp,
        y.max_timestamp,
        y.producer_id,
        y.producer_epoch,
        y.base_sequence,
    )
    return same_header and a.data[HEADER_SIZE:] == b.data[HEADER_SIZE:]


@dataclass(frozen=True)
class Divergence:
    """Where A's log stops being B's history.

    A keeps ``[.., common)``; A's ``[common, a_end)`` never reached B (it is
    archived); B's ``[common, b_end)`` is what the reverse link copies to A.
    ``position`` is the byte position of A's batch at ``common`` in its
    segment (-1 when A has nothing past ``common``).
    """

    start: int
    common: int
    a_end: int
    b_end: int
    matched_batches: int
    position: int = -1

    @property
    def diverged_messages(self) -> int:
        return self.a_end - self.common

    @property
    def reverse_messages(self) -> int:
        return self.b_end - self.common

    @property
    def certain(self) -> bool:
        """False when the very first compared batch differed: the split may lie earlier."""
        return self.matched_batches > 0 or self.common == self.start == 0


def find_divergence(
    a: Iterable[StoredBatch],
    b: Iterable[StoredBatch],
    *,
    source_cluster: str,
    start: int,
    a_end: int,
    b_end: int,
) -> Divergence:
    """Walk A's and B's batches from ``start`` (a batch boundary in both) in step.

    Stops at the first pair that is not copy and original; the iterables are
    consumed lazily, so a long suffix is never read. When one log ends, the
    common point is its end.
    """
    _nonneg(start, "start")
    if not start <= a_end or not start <= b_end:
        raise InvalidArgument(
            f"start: must be at most both log ends ({a_end}, {b_end}), got {start}"
        )
    common = start
    matched = 0
    position = -1
    b_iter = iter(b)
    for x in a:
        if x.header.base_offset != common:
            raise InvalidArgument(
                f"a: batches must continue at {common}, got one at {x.header.base_offset}"
            )
        position = x.position
        y = next(b_iter, None)
        if y is None:
            break
        if y.header.base_offset != common:
            raise InvalidArgument(
                f"b: batches must continue at {common}, got one at {y.header.base_offset}"
            )
        if not is_copy_of(x, y, source_cluster):
            break
        common = x.header.next_offset
        matched += 1
        position = -1
    if common > min(a_end, b_end):
        raise InvalidArgument(
            f"a_end/b_end: the batches run to {common}, past the log ends ({a_end}, {b_end})"
        )
    return Divergence(start, common, a_end, b_end, matched, position if common < a_end else -1)


def truncated_state(state: PartitionState, divergence: Divergence) -> PartitionState:
    """A's partition state cut back to the common point and released (owner "").

    The owner that the controller assigned takes it over afresh: a newer
    epoch and a new segment starting at ``common``.
    """
    size_at = 0
    if divergence.common < state.sealed_end:
        if divergence.position < 0:
            raise InvalidArgument(
                "divergence: the byte position of A's batch at the common point is unknown"
            )
        holder = next(
            (
                s
                for s in state.segments
                if s.base_offset <= divergence.common < (s.end_offset or s.base_offset)
            ),
            None,
        )
        if holder is not None and holder.base_offset != divergence.common:
            size_at = divergence.position
    cut = state.with_truncation(divergence.common, size_at)
    return dataclasses.replace(cut, owner="")


def archive_topic_name(topic: str, stamp: str) -> str:
    """``<topic>.diverged.<stamp>``, checked against the topic name rules."""
    name = f"{topic}.diverged.{stamp}"
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        raise InvalidArgument(
            f"topic: {topic!r} is too long for an archive topic {name!r} "
            f"(at most {MAX_TOPIC_NAME_LENGTH} characters)"
        )
    return validate_topic_name(name, "archive topic")


def failback_stamp(now_ms: int) -> str:
    return datetime.fromtimestamp(now_ms / 1000, UTC).strftime("%Y%m%dT%H%M%SZ")


def failback_refusal(
    *,
    link: Link,
    promotion: Mapping[str, Any] | None,
    reverse: Link | None,
    pairs: Sequence[tuple[str, str]],
) -> str | None:
    """Why failback must not start (nothing is changed then), or None.

    ``pairs`` are (A's topic, B's topic) of the promoted mirrors.
    """
    if promotion is None or not promotion.get("topics"):
        return (
            f"link {link.name} was never promoted (no promotion record in "
            f"{link.target}'s ZooKeeper); run `talos mirror promote --link {link.name}` first"
        )
    if promotion.get("failed_back_ms"):
        return f"link {link.name} was already failed back; nothing to do"
    reverse_name = f"{link.target}:{link.source}"
    if reverse is None:
        return (
            f"failback needs the reverse link {reverse_name} in the topology to copy "
            f"{link.target}'s writes back to {link.source}; add a [[link]] with "
            f'source = "{link.target}" and target = "{link.source}"'
        )
    for a_topic, b_topic in pairs:
        if reverse.source_topic(a_topic) != b_topic:
            return (
                f"the reverse link {reverse_name} does not map {link.target}'s topic "
                f"{b_topic!r} back onto {link.source}'s {a_topic!r} (its topics: "
                f"{', '.join(reverse.topics)}, naming {reverse.naming}); fix its selector "
                "or naming"
            )
    return None


@dataclass
class PartitionFailback:
    topic: str
    partition: int
    common: int
    a_end: int
    b_end: int
    archived: int = 0
    truncated: bool = False
    served_at: int | None = None
    note: str = ""

    @property
    def diverged(self) -> int:
        return self.a_end - self.common

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["diverged"] = self.diverged
        return data


@dataclass
class FailbackReport:
    link: str
    reverse_link: str
    dry_run: bool
    stamp: str
    archive_topics: dict[str, str] = field(default_factory=dict)
    partitions: list[PartitionFailback] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reverse: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def archived(self) -> int:
        return sum(p.archived for p in self.partitions)

    @property
    def diverged(self) -> int:
        return sum(p.diverged for p in self.partitions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "link": self.link,
            "reverse_link": self.reverse_link,
            "dry_run": self.dry_run,
            "stamp": self.stamp,
            "archive_topics": dict(self.archive_topics),
            "diverged": self.diverged,
            "archived": self.archived,
            "partitions": [p.to_dict() for p in self.partitions],
            "skipped": list(self.skipped),
            "reverse": self.reverse,
            "notes": list(self.notes),
        }


def _nonneg(value: object, param: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{param}: must be an integer >= 0, got {value!r}")
    return value


# ==== ZooKeeper layout (target ZooKeeper of a link) ============================================


def _read_json(zk: KazooClient, path: str) -> dict[str, Any] | None:
    with zk_errors(f"reading {path}"):
        try:
            data, _ = zk.get(path)
        except NoNodeError:
            return None
    value = loads(data, path)
    return value if isinstance(value, dict) else None


def _write_json(zk: KazooClient, path: str, value: Mapping[str, Any]) -> None:
    data = dumps(dict(value))
    with zk_errors(f"writing {path}"):
        try:
            zk.set(path, data)
        except NoNodeError:
            try:
                zk.create(path, data, makepath=True)
            except NodeExistsError:
                zk.set(path, data)


def write_control(zk: KazooClient, link: str, state: str, reason: str, now_ms: int) -> None:
    """Workers of ``link`` idle while this says ``stopped``."""
    _write_json(zk, control_path(link), {"state": state, "reason": reason, "ms": now_ms})


def read_progress(zk: KazooClient, link: str, topic: str, partition: int) -> Progress | None:
    raw = _read_json(zk, progress_path(link, topic, partition))
    if raw is None:
        return None
    try:
        return Progress(
            int(raw["source_end"]),
            int(raw["target_end"]),
            int(raw.get("lag_ms", 0)),
            int(raw.get("updated_ms", 0)),
        )
    except (KeyError, TypeError, ValueError):
        return None


# ==== reading a partition ======================================================================


class LogReader(Protocol):
    def log_end(self, topic: str, partition: int) -> int: ...

    def batches(self, topic: str, partition: int, start: int) -> Iterator[StoredBatch]:
        """Whole batches from the one holding ``start`` to the log end."""
        ...


def _chunk_batches(data: bytes, positions_from: int) -> Iterator[StoredBatch]:
    for pos, header in iter_batches(data):
        yield StoredBatch(
            header,
            bytes(data[pos : pos + header.total_size]),
            -1 if positions_from < 0 else positions_from + pos,
        )


class StoreReader:
    """Reads a DC's partitions straight from its log store under the read rule (DESIGN §4).

    Used for A during failback (after taking the partition over, the store
    and the partition state are the only truth) and for a source whose
    brokers are down but whose ZooKeeper and store still answer.
    """

    def __init__(self, zk: KazooClient, store: LogStore, cluster: str) -> None:
        self.zk = zk
        self.store = store
        self.cluster = cluster
        self.states = PartitionStateStore(zk)

    def _path(
        self, topic: str, partition: int, state: PartitionState, base: int, epoch: int
    ) -> str:
        return segment_path(
            self.cluster, topic, partition, base, epoch, incarnation=state.incarnation
        )

    def _segments(
        self, topic: str, partition: int, state: PartitionState | None = None
    ) -> list[tuple[int, int, int, str]]:
        """(base, end, size, path) of every segment, the open one scanned to its valid end."""
        state = state or self.states.get(topic, partition)
        out: list[tuple[int, int, int, str]] = []
        for segment in state.segments:
            path = self._path(topic, partition, state, segment.base_offset, segment.epoch)
            if segment.end_offset is not None:
                out.append((segment.base_offset, segment.end_offset, segment.size or 0, path))
                continue
            if not self.store.exists(path):
                out.append((segment.base_offset, segment.base_offset, 0, path))
                continue
            if self.store.exists(fence_marker_path(path)):
                # A new owner is sealing it; the first sealed end recorded wins.
                sealed = self._wait_sealed(topic, partition, segment.base_offset)
                out.append((segment.base_offset, sealed[0], sealed[1], path))
                continue
            scan = scan_segment(self.store, path, segment.base_offset)
            out.append((segment.base_offset, scan.next_offset, scan.valid_bytes, path))
        return out

    def _wait_sealed(
        self, topic: str, partition: int, base: int, timeout: float = 10.0
    ) -> tuple[int, int]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.states.get(topic, partition).segment(base)
            if found is not None and found.end_offset is not None:
                return found.end_offset, found.size or 0
            if time.monotonic() > deadline:
                raise TalosTimeout(
                    f"{topic}/{partition}: segment {base} is fenced but no sealed end appeared "
                    f"within {timeout}s"
                )
            time.sleep(0.05)

    def log_end(self, topic: str, partition: int) -> int:
        state = self.states.get(topic, partition)
        segments = self._segments(topic, partition, state)
        return segments[-1][1] if segments else state.log_start

    def batches(
        self, topic: str, partition: int, start: int, state: PartitionState | None = None
    ) -> Iterator[StoredBatch]:
        for base, end, size, path in self._segments(topic, partition, state):
            if end <= start or size == 0:
                continue
            entries = seg_index.load_indexes(self.store, path, base) or []
            position = find_position(self.store, path, entries, max(start, base), size)
            while position < size:
                chunk = read_batches(self.store, path, position, READ_CHUNK_BYTES, size)
                if not chunk:
                    break
                consumed = 0
                for batch in _chunk_batches(chunk, position):
                    consumed = batch.position - position + batch.header.total_size
                    yield batch
                if consumed == 0:
                    break
                position += consumed


class BrokerReader:
    """Reads through a DC's brokers (Metadata + Fetch), each call bounded by ``timeout``."""

    def __init__(self, bootstrap: str, timeout: float = 5.0) -> None:
        self.connections = Connections(bootstrap, request_timeout=timeout)
        self.timeout = timeout

    def close(self) -> None:
        self.connections.close()

    def owner(self, topic: str, partition: int) -> tuple[str, str, int, int]:
        """(owner id, owner address, epoch, log end) as the owner itself reports them."""
        meta: pb.MetadataResponse = self.connections.call_any(
            "Metadata", pb.MetadataRequest(topics=[topic]), timeout=self.timeout
        )
        brokers = {b.id: b.address for b in meta.brokers}
        owner_id = ""
        for info in meta.topics:
            error = error_from_proto(info.error)
            if error is not None:
                raise error
            for p in info.partitions:
                if p.partition == partition:
                    owner_id = p.owner_id
        address = brokers.get(owner_id, "")
        if not address:
            raise Unavailable(f"{topic}/{partition} has no live owner")
        own: pb.MetadataResponse = self.connections.call(
            address, "Metadata", pb.MetadataRequest(topics=[topic]), timeout=self.timeout
        )
        for info in own.topics:
            for p in info.partitions:
                if p.partition == partition:
                    return owner_id, address, int(p.epoch), int(p.log_end)
        raise UnknownTopic(f"topic {topic!r} partition {partition} does not exist")

    def log_end(self, topic: str, partition: int) -> int:
        _, _, _, end = self.owner(topic, partition)
        if end < 0:
            raise Unavailable(f"{topic}/{partition}: its owner is not serving it yet")
        return end

    def batches(self, topic: str, partition: int, start: int) -> Iterator[StoredBatch]:
        offset = start
        end = self.log_end(topic, partition)
        _, address, _, _ = self.owner(topic, partition)
        while offset < end:
            request = pb.FetchRequest(max_wait_ms=0)
            request.partitions.add(
                topic=topic, partition=partition, offset=offset, max_bytes=READ_CHUNK_BYTES
            )
            response: pb.FetchResponse = self.connections.call(
                address, "Fetch", request, timeout=self.timeout
            )
            result = response.results[0]
            error = error_from_proto(result.error)
            if error is not None:
                raise error
            progressed = offset
            for batch in _chunk_batches(result.records, -1):
                if batch.header.next_offset <= offset:
                    continue
                progressed = batch.header.next_offset
                yield batch
            if progressed == offset:
                break
            offset = progressed


def first_batch(reader: LogReader, topic: str, partition: int, offset: int) -> StoredBatch | None:
    """The batch holding ``offset``, or None past the end."""
    return next(iter(reader.batches(topic, partition, offset)), None)


# ==== connecting to a DC =======================================================================


def open_zk(dc: Datacenter, timeout: float) -> KazooClient:
    return connect(
        dc.zookeeper,
        dc.cluster,
        connect_timeout=timeout,
        session_timeout=max(4.0, timeout),
    )


def close_zk(zk: KazooClient | None) -> None:
    if zk is None:
        return
    try:
        zk.stop()
        zk.close()
    except Exception:  # a dead session must not fail the command
        log.debug("closing ZooKeeper failed", exc_info=True)


def local_store(dc: Datacenter) -> LogStore | None:
    """The DC's posix store when this host mounts it, else None."""
    if dc.store.kind != "posix" or not os.path.isdir(dc.store.path):
        return None
    return PosixLogStore(dc.store.path)


def mirror_pairs(
    topics: TopicStore, link: Link, selector: str | None = None
) -> list[tuple[str, TopicMeta]]:
    """B's topics that mirror ``link`` (target name, meta), optionally narrowed by a glob."""
    import fnmatch

    out = []
    for name in topics.list():
        try:
            meta = topics.get(name)
        except UnknownTopic:
            continue
        mirror = meta.mirror
        if not mirror or mirror.get("link") not in (link.name, link.name + PROMOTING):
            continue
        source_topic = str(mirror.get("source_topic", name))
        if selector and not (
            fnmatch.fnmatchcase(name, selector) or fnmatch.fnmatchcase(source_topic, selector)
        ):
            continue
        out.append((name, meta))
    return out


# ==== promote ==================================================================================


@dataclass
class PromoteOptions:
    topics: str | None = None
    dry_run: bool = False
    #: bound on each attempt to reach the source (A), which may be down
    source_timeout_s: float = 5.0
    #: bound on reaching the target (B), which must answer
    target_timeout_s: float = 10.0
    #: how long target ends must stay still after fencing before they are reported
    settle_s: float = 0.5
    settle_max_s: float = 15.0


def promote(
    topology: Topology,
    link_spec: str,
    options: PromoteOptions | None = None,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> RecoveryReport:
    """Promote the target of ``link_spec``; with ``dry_run`` only report.

    Refuses (changing nothing) an unknown link, or a link with no mirror
    topic in the target.
    """
    options = options or PromoteOptions()
    link = topology.link(link_spec)
    target_dc = topology.dc(link.target)
    source_dc = topology.dc(link.source)
    zk_b = open_zk(target_dc, options.target_timeout_s)
    zk_a: KazooClient | None = None
    notes: list[str] = []
    try:
        topics_b = TopicStore(zk_b)
        pairs = mirror_pairs(topics_b, link, options.topics)
        if not pairs:
            narrowed = f" matching {options.topics!r}" if options.topics else ""
            raise InvalidArgument(
                f"link: {link.name} has no mirror topics{narrowed} in {link.target}; "
                "nothing to promote"
            )
        stamp = now_ms()
        already = tuple(n for n, m in pairs if (m.mirror or {}).get("promoted"))
        epochs: dict[str, tuple[int, int]] = {}
        try:
            zk_a = open_zk(source_dc, options.source_timeout_s)
        except TalosError as exc:
            notes.append(f"{link.source}'s ZooKeeper is unreachable ({exc})")
        demoted: list[str] = []
        fenced: dict[str, dict[str, Any]] = {}
        if not options.dry_run:
            write_control(zk_b, link.name, "stopped", "promoted", stamp)
            for name, meta in pairs:
                mirror = dict(meta.mirror or {})
                if mirror.get("promoted"):
                    same = int(mirror.get("epoch", 0))
                    epochs[name] = (same, same)
                    continue
                # Fence first and keep producers out, so the ends read next are
                # exactly what the mirror copied; open the topic only after that.
                fenced[name] = fencing_mirror(mirror)
                topics_b.set_mirror(name, fenced[name])
                epochs[name] = (int(mirror.get("epoch", 0)), int(fenced[name]["epoch"]))
        else:
            for name, meta in pairs:
                epoch = int((meta.mirror or {}).get("epoch", 0))
                promoted = bool((meta.mirror or {}).get("promoted"))
                epochs[name] = (epoch, epoch if promoted else epoch + 1)
        target = _target_reader(target_dc, zk_b, options.target_timeout_s)
        ends = _settled_ends(
            target, pairs, options.settle_s if not options.dry_run else 0.0, options.settle_max_s
        )
        if not options.dry_run:
            for name, mirror in fenced.items():
                topics_b.set_mirror(name, promoted_mirror(mirror, stamp))
            if zk_a is not None:
                demoted = _demote_source(zk_a, link, pairs, notes)
            else:
                notes.append(
                    f"{link.source}'s topics stay writable until failback makes them read-only"
                )
        source = _source_reader(source_dc, zk_a, options.source_timeout_s, notes)
        partitions: list[PartitionRecovery] = []
        for name, meta in pairs:
            source_topic = str((meta.mirror or {}).get("source_topic", name))
            for p in range(meta.partitions):
                target_end = ends[(name, p)]
                partitions.append(
                    recovery_point(
                        name,
                        source_topic,
                        p,
                        target_end,
                        _newest_ms(target, name, p, target_end),
                        _source_view(source, source_topic, p, target_end, notes),
                        read_progress(zk_b, link.name, name, p),
                    )
                )
        report = RecoveryReport(
            link=link.name,
            promoted_ms=stamp,
            dry_run=options.dry_run,
            partitions=tuple(partitions),
            epochs=epochs,
            already_promoted=already,
            source_demoted=tuple(demoted),
            notes=tuple(notes),
        )
        if not options.dry_run:
            _record_promotion(zk_b, link, pairs, report)
        return report
    finally:
        close_zk(zk_a)
        close_zk(zk_b)


def link_name_of(pairs: Sequence[tuple[str, TopicMeta]]) -> str:
    links = sorted({str((m.mirror or {}).get("link", "?")) for _, m in pairs})
    return ", ".join(links)


def _demote_source(
    zk_a: KazooClient, link: Link, pairs: Sequence[tuple[str, TopicMeta]], notes: list[str]
) -> list[str]:
    """Make A's topics read-only (pending mirrors of B:A) so nobody writes A's old history."""
    topics_a = TopicStore(zk_a)
    reverse = f"{link.target}:{link.source}"
    demoted = []
    for name, meta in pairs:
        source_topic = str((meta.mirror or {}).get("source_topic", name))
        try:
            current = topics_a.get(source_topic)
        except UnknownTopic:
            notes.append(f"{link.source} has no topic {source_topic!r} to make read-only")
            continue
        if (
            current.mirror
            and not current.mirror.get("failback")
            and not current.mirror.get("promoted")
        ):
            continue  # already someone's read-only mirror
        topics_a.set_mirror(
            source_topic, pending_reverse_mirror(current.mirror, reverse, link.target, name)
        )
        demoted.append(source_topic)
    return demoted


def _record_promotion(
    zk_b: KazooClient, link: Link, pairs: Sequence[tuple[str, TopicMeta]], report: RecoveryReport
) -> None:
    record = _read_json(zk_b, promotion_path(link.name)) or {"topics": {}}
    if record.get("failed_back_ms"):
        record = {"topics": {}}
    topics = dict(record.get("topics") or {})
    by_topic: dict[str, list[int]] = {}
    for p in report.partitions:
        by_topic.setdefault(p.topic, []).append(p.target_end)
    for name, meta in pairs:
        if name in topics:
            continue  # the first promotion's recovery point stays
        topics[name] = {
            "source_topic": str((meta.mirror or {}).get("source_topic", name)),
            "epoch": report.epochs.get(name, (0, 0))[1],
            "target_ends": by_topic.get(name, []),
        }
    record.update(
        {
            "link": link.name,
            "promoted_ms": record.get("promoted_ms") or report.promoted_ms,
            "topics": topics,
            "failed_back_ms": None,
            "report": report.to_dict(),
        }
    )
    _write_json(zk_b, promotion_path(link.name), record)


class _FallbackReader:
    """Broker reads first (cheap, exact), the store when the brokers do not answer."""

    def __init__(self, brokers: BrokerReader | None, store: StoreReader | None) -> None:
        self.brokers = brokers
        self.store = store

    def log_end(self, topic: str, partition: int) -> int:
        error: TalosError | None = None
        if self.brokers is not None:
            try:
                return self.brokers.log_end(topic, partition)
            except TalosError as exc:
                error = exc
        if self.store is not None:
            return self.store.log_end(topic, partition)
        raise error or Unavailable(f"{topic}/{partition}: no way to read it")

    def batches(self, topic: str, partition: int, start: int) -> Iterator[StoredBatch]:
        if self.brokers is not None:
            try:
                self.brokers.log_end(topic, partition)
                use_brokers = True
            except TalosError:
                if self.store is None:
                    raise
                use_brokers = False
            if use_brokers:
                return self.brokers.batches(topic, partition, start)
        if self.store is not None:
            return self.store.batches(topic, partition, start)
        raise Unavailable(f"{topic}/{partition}: no way to read it")

    def close(self) -> None:
        if self.brokers is not None:
            self.brokers.close()


def _target_reader(dc: Datacenter, zk: KazooClient, timeout: float) -> _FallbackReader:
    store = local_store(dc)
    return _FallbackReader(
        BrokerReader(dc.bootstrap, timeout),
        StoreReader(zk, store, dc.cluster) if store is not None else None,
    )


def _source_reader(
    dc: Datacenter, zk: KazooClient | None, timeout: float, notes: list[str]
) -> _FallbackReader | None:
    """The source's store first when it is mounted here (its brokers may all be dead)."""
    store = local_store(dc)
    store_reader = StoreReader(zk, store, dc.cluster) if zk is not None and store else None
    brokers = BrokerReader(dc.bootstrap, timeout)
    try:
        brokers.connections.call_any(
            "Metadata", pb.MetadataRequest(topics=[]), timeout=min(timeout, 2.0)
        )
    except TalosError:
        brokers.close()
        if store_reader is None:
            notes.append(
                f"{dc.name}'s brokers do not answer and its store is not readable here; "
                "source ends come from the mirror's last progress heartbeat"
            )
            return None
        return _FallbackReader(None, store_reader)
    return _FallbackReader(brokers, store_reader)


def _settled_ends(
    reader: LogReader, pairs: Sequence[tuple[str, TopicMeta]], settle_s: float, max_s: float
) -> dict[tuple[str, int], int]:
    """Target ends, re-read until they stop moving (an append already admitted may land)."""
    deadline = time.monotonic() + max_s

    def read() -> dict[tuple[str, int], int]:
        return {
            (name, p): reader.log_end(name, p)
            for name, meta in pairs
            for p in range(meta.partitions)
        }

    ends = read()
    while settle_s > 0 and time.monotonic() < deadline:
        time.sleep(settle_s)
        again = read()
        if again == ends:
            break
        ends = again
    return ends


def _newest_ms(reader: LogReader, topic: str, partition: int, end: int) -> int | None:
    if end <= 0:
        return None
    try:
        batch = first_batch(reader, topic, partition, end - 1)
    except TalosError:
        return None
    return batch.header.max_timestamp if batch is not None else None


def _source_view(
    reader: _FallbackReader | None, topic: str, partition: int, target_end: int, notes: list[str]
) -> SourceView | None:
    if reader is None:
        return None
    try:
        end = reader.log_end(topic, partition)
        newest = _newest_ms(reader, topic, partition, end)
        first_missing = None
        if end > target_end:
            batch = first_batch(reader, topic, partition, target_end)
            first_missing = batch.header.first_timestamp if batch is not None else None
        return SourceView(end, newest, first_missing)
    except TalosError as exc:
        notes.append(f"source {topic}/{partition} unreadable ({exc}); using progress")
        return None


# ==== failback =================================================================================


@dataclass
class FailbackOptions:
    dry_run: bool = False
    start_reverse: bool = False
    timeout_s: float = 10.0
    #: how long to wait for A's assigned broker to serve the truncated partition
    serve_timeout_s: float = 30.0
    takeover_attempts: int = 5


def failback(
    topology: Topology,
    link_spec: str,
    options: FailbackOptions | None = None,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> FailbackReport:
    """Fail the promoted link ``A:B`` back: archive A's divergence, truncate, reverse.

    Refuses, changing nothing: an unknown link, a link never promoted, an
    unreachable A (ZooKeeper, brokers or store), a missing reverse link.
    """
    options = options or FailbackOptions()
    link = topology.link(link_spec)
    a_dc, b_dc = topology.dc(link.source), topology.dc(link.target)
    reverse = next(
        (x for x in topology.links if x.source == link.target and x.target == link.source), None
    )
    reverse_name = f"{link.target}:{link.source}"
    zk_b = open_zk(b_dc, options.timeout_s)
    zk_a: KazooClient | None = None
    b_reader: _FallbackReader | None = None
    try:
        promotion = _read_json(zk_b, promotion_path(link.name))
        topics_b = TopicStore(zk_b)
        promoted = {
            name: meta
            for name, meta in mirror_pairs(topics_b, link)
            if (meta.mirror or {}).get("promoted")
        }
        pairs = [
            (str((meta.mirror or {}).get("source_topic", name)), name)
            for name, meta in sorted(promoted.items())
            if promotion is not None and name in (promotion.get("topics") or {})
        ]
        if promotion is not None and not pairs and not promotion.get("failed_back_ms"):
            promotion = None
        refusal = failback_refusal(link=link, promotion=promotion, reverse=reverse, pairs=pairs)
        if refusal is not None:
            raise InvalidArgument(f"link: {refusal}")
        if promotion is None or reverse is None:  # failback_refusal said why already
            raise InvalidArgument(f"link: {link.name} cannot be failed back")
        zk_a, store_a = _reach_source(a_dc, options.timeout_s)
        stamp = str(
            (_read_json(zk_a, failback_path(link.name)) or {}).get("stamp")
            or failback_stamp(now_ms())
        )
        report = FailbackReport(link.name, reverse_name, options.dry_run, stamp)
        b_reader = _target_reader(b_dc, zk_b, options.timeout_s)
        a_reader = StoreReader(zk_a, store_a, a_dc.cluster)
        topics_a = TopicStore(zk_a)
        if not options.dry_run:
            _write_json(
                zk_a,
                failback_path(link.name),
                {"stamp": stamp, "started_ms": now_ms(), "done_ms": None},
            )
        for a_topic, b_topic in pairs:
            try:
                a_meta = topics_a.get(a_topic)
            except UnknownTopic:
                report.skipped.append(f"{a_topic}: does not exist in {link.source}")
                continue
            if (
                a_meta.mirror
                and a_meta.mirror.get("link") == reverse_name
                and not a_meta.mirror.get("failback")
            ):
                report.skipped.append(f"{a_topic}: already a mirror of {reverse_name}")
                continue
            starts = [int(x) for x in promotion["topics"][b_topic].get("target_ends", [])]
            _failback_topic(
                report,
                options,
                link,
                reverse_name,
                zk_a,
                a_dc,
                a_reader,
                b_reader,
                a_meta,
                b_topic,
                starts,
                now_ms,
            )
        if not options.dry_run:
            write_control(zk_a, reverse_name, "running", "failback", now_ms())
            record = dict(promotion)
            record["failed_back_ms"] = now_ms()
            _write_json(zk_b, promotion_path(link.name), record)
            done = _read_json(zk_a, failback_path(link.name)) or {}
            done.update({"done_ms": now_ms(), "report": report.to_dict()})
            _write_json(zk_a, failback_path(link.name), done)
        report.reverse = _reverse_link(topology, reverse_name, options)
        return report
    finally:
        if b_reader is not None:
            b_reader.close()
        close_zk(zk_a)
        close_zk(zk_b)


def _reach_source(dc: Datacenter, timeout: float) -> tuple[KazooClient, LogStore]:
    """A's ZooKeeper, brokers and store must all answer; otherwise refuse."""
    store = local_store(dc)
    if store is None:
        raise InvalidArgument(
            f"link: cannot fail back while {dc.name}'s log store {dc.store.uri} is not readable "
            "on this host (failback truncates A's partitions and must read their segments)"
        )
    try:
        zk = open_zk(dc, timeout)
    except TalosError as exc:
        raise InvalidArgument(
            f"link: cannot fail back while {dc.name} is unreachable: {exc}"
        ) from None
    connections = Connections(dc.bootstrap, request_timeout=timeout)
    try:
        connections.call_any("Metadata", pb.MetadataRequest(topics=[]), timeout=timeout)
    except TalosError as exc:
        close_zk(zk)
        raise InvalidArgument(
            f"link: cannot fail back while {dc.name}'s brokers are unreachable: {exc}"
        ) from None
    finally:
        connections.close()
    return zk, store


def _failback_topic(
    report: FailbackReport,
    options: FailbackOptions,
    link: Link,
    reverse_name: str,
    zk_a: KazooClient,
    a_dc: Datacenter,
    a_reader: StoreReader,
    b_reader: LogReader,
    a_meta: TopicMeta,
    b_topic: str,
    starts: Sequence[int],
    now_ms: Callable[[], int],
) -> None:
    topic = a_meta.name
    topics_a = TopicStore(zk_a)
    archive = archive_topic_name(topic, report.stamp)
    pending = pending_reverse_mirror(a_meta.mirror, reverse_name, link.target, b_topic)
    if not options.dry_run and a_meta.mirror != pending:
        topics_a.set_mirror(topic, pending)  # producers are refused from here on
    archive_ready = False
    for p in range(a_meta.partitions):
        promoted_end = starts[p] if p < len(starts) else 0
        if options.dry_run:
            divergence = _divergence(
                a_reader, b_reader, topic, b_topic, p, promoted_end, link.source, None
            )
            report.partitions.append(
                PartitionFailback(topic, p, divergence.common, divergence.a_end, divergence.b_end)
            )
            if divergence.diverged_messages:
                report.archive_topics[topic] = archive
            continue
        outcome = _failback_partition(
            options,
            link,
            zk_a,
            a_dc,
            a_reader,
            b_reader,
            a_meta,
            b_topic,
            p,
            promoted_end,
            archive,
            archive_ready,
            int(pending["epoch"]),
            now_ms,
        )
        archive_ready = archive_ready or outcome.archived > 0 or outcome.diverged > 0
        if outcome.diverged:
            report.archive_topics[topic] = archive
        report.partitions.append(outcome)
    if not options.dry_run:
        topics_a.set_mirror(topic, final_reverse_mirror(pending, reverse_name))


def _divergence(
    a_reader: StoreReader,
    b_reader: LogReader,
    topic: str,
    b_topic: str,
    partition: int,
    promoted_end: int,
    source_cluster: str,
    state: PartitionState | None,
) -> Divergence:
    """Compare from the batch before the promotion point; from the log start if that differs."""
    a_end = a_reader.log_end(topic, partition) if state is None else state.sealed_end
    b_end = b_reader.log_end(b_topic, partition)
    start = 0
    if promoted_end > 0:
        before = first_batch(b_reader, b_topic, partition, promoted_end - 1)
        start = before.header.base_offset if before is not None else 0
    start = min(start, a_end, b_end)
    while True:
        divergence = find_divergence(
            a_reader.batches(topic, partition, start, state),
            b_reader.batches(b_topic, partition, start),
            source_cluster=source_cluster,
            start=start,
            a_end=a_end,
            b_end=b_end,
        )
        floor = state.log_start if state is not None else 0
        if divergence.certain or start <= floor:
            return divergence
        start = floor


def _failback_partition(
    options: FailbackOptions,
    link: Link,
    zk_a: KazooClient,
    a_dc: Datacenter,
    a_reader: StoreReader,
    b_reader: LogReader,
    a_meta: TopicMeta,
    b_topic: str,
    partition: int,
    promoted_end: int,
    archive: str,
    archive_ready: bool,
    mirror_epoch: int,
    now_ms: Callable[[], int],
) -> PartitionFailback:
    topic = a_meta.name
    states = PartitionStateStore(zk_a)
    for _attempt in range(options.takeover_attempts):
        state = _take_over(states, a_reader.store, a_dc.cluster, topic, partition)
        divergence = _divergence(
            a_reader, b_reader, topic, b_topic, partition, promoted_end, link.source, state
        )
        outcome = PartitionFailback(
            topic, partition, divergence.common, divergence.a_end, divergence.b_end
        )
        if divergence.diverged_messages:
            if not archive_ready:
                _ensure_archive(zk_a, a_dc, a_meta, archive, options.timeout_s, now_ms)
                archive_ready = True
            outcome.archived = _archive_suffix(
                a_dc, a_reader, state, topic, partition, divergence, archive, options.timeout_s
            )
        try:
            states.compare_and_set(
                topic, partition, truncated_state(state, divergence), state.version
            )
        except Fenced:
            log.info("%s/%d moved while failing back; taking it over again", topic, partition)
            continue
        outcome.truncated = divergence.common < divergence.a_end
        outcome.served_at = _nudge_owner(
            a_dc, topic, partition, divergence.common, state.epoch, mirror_epoch, link, options
        )
        if outcome.served_at is None:
            outcome.note = (
                "the assigned broker has not served the partition again yet; it takes it over "
                "at its next write"
            )
        return outcome
    raise CoordinationError(
        f"{topic}/{partition}: moved by someone else {options.takeover_attempts} times while "
        "failing back; stop A's brokers' churn and rerun (it resumes where it stopped)"
    )


def _take_over(
    states: PartitionStateStore, store: LogStore, cluster: str, topic: str, partition: int
) -> PartitionState:
    """Takeover steps 1-3 of DESIGN §4 under the owner "failback": every segment sealed."""
    state = states.get(topic, partition)
    state = states.compare_and_set(
        topic, partition, state.with_owner(FAILBACK_OWNER), state.version
    )
    previous = state.open_segment
    if previous is None:
        return state
    path = segment_path(
        cluster,
        topic,
        partition,
        previous.base_offset,
        previous.epoch,
        incarnation=state.incarnation,
    )
    store.create_exclusive(fence_marker_path(path))
    if store.exists(path):
        scan = scan_segment(store, path, previous.base_offset)
        end, size = scan.next_offset, scan.valid_bytes
        if scan.entries:
            with contextlib.suppress(StorageError):
                seg_index.write_indexes(store, path, scan.entries, previous.base_offset)
    else:
        end, size = previous.base_offset, 0
    sealed = state.with_sealed(previous.base_offset, end, size)
    if sealed is state:
        return state
    return states.compare_and_set(topic, partition, sealed, state.version)


def _ensure_archive(
    zk_a: KazooClient,
    a_dc: Datacenter,
    a_meta: TopicMeta,
    archive: str,
    timeout: float,
    now_ms: Callable[[], int],
) -> None:
    from talos.client import Admin

    with contextlib.suppress(TopicExists):
        TopicStore(zk_a).create(archive, a_meta.partitions, a_meta.config, now_ms())
    with Admin(a_dc.bootstrap, request_timeout_s=timeout) as admin:
        admin.wait_until_ready(archive, timeout_s=max(30.0, timeout))


def _archive_suffix(
    a_dc: Datacenter,
    a_reader: StoreReader,
    state: PartitionState,
    topic: str,
    partition: int,
    divergence: Divergence,
    archive: str,
    timeout: float,
) -> int:
    """Produce A's ``[common, a_end)`` into the archive's same partition, records intact.

    Resumable: a rerun skips as many records as the archive partition
    already holds (an idempotent producer lands them in order).
    """
    from talos.client import Producer

    reader = BrokerReader(a_dc.bootstrap, timeout)
    try:
        already = reader.log_end(archive, partition)
    finally:
        reader.close()
    skip = already
    count = 0
    with Producer(a_dc.bootstrap, linger_ms=2.0, request_timeout_s=timeout) as producer:
        futures = []
        for batch in a_reader.batches(topic, partition, divergence.common, state):
            for record in decode_records(batch.data):
                if record.offset < divergence.common:
                    continue
                count += 1
                if skip > 0:
                    skip -= 1
                    continue
                futures.append(
                    producer.send(
                        archive,
                        record.value,
                        key=record.key,
                        partition=partition,
                        headers=record.headers,
                        timestamp_ms=record.timestamp_ms,
                    )
                )
        producer.flush()
        for future in futures:
            future.result()
    if already > count:
        raise InvalidArgument(
            f"archive: {archive}/{partition} already holds {already} records, more than the "
            f"{count} diverged ones; it is not this failback's archive"
        )
    return count


def _nudge_owner(
    a_dc: Datacenter,
    topic: str,
    partition: int,
    common: int,
    failback_epoch: int,
    mirror_epoch: int,
    link: Link,
    options: FailbackOptions,
) -> int | None:
    """Make A's assigned broker drop its stale view and take the truncated partition over.

    An owner that was fenced by the failback learns it only when it next
    writes. A probe append at its stale end makes it write into its fenced
    segment (past the sealed end: never visible), fail the fence check and
    take the partition over afresh. An owner already past the failback's
    epoch answers GAP or MIRROR_DIVERGED instead and writes nothing.
    Returns the end the new owner serves, or None on timeout.
    """
    reader = BrokerReader(a_dc.bootstrap, options.timeout_s)
    deadline = time.monotonic() + options.serve_timeout_s
    poked = False
    try:
        while True:
            try:
                _owner_id, address, epoch, end = reader.owner(topic, partition)
            except TalosError:
                address, epoch, end = "", 0, -1
            if end >= 0 and epoch > failback_epoch:
                return end
            if end >= 0 and end != common and not poked:
                poked = True
                probe = encode_batch(
                    [Record(value=None, headers=(("talos-failback-probe", None),))],
                    base_offset=end,
                )
                with contextlib.suppress(TalosError):
                    reader.connections.call(
                        address,
                        "MirrorAppend",
                        pb.MirrorAppendRequest(
                            topic=topic,
                            partition=partition,
                            expected_offset=end,
                            link=f"{link.target}:{link.source}",
                            mirror_epoch=mirror_epoch,
                            records=probe,
                        ),
                    )
            elif end == common and epoch <= failback_epoch:
                # Its in-memory view already ends at the cut: identical to the
                # truncated log; its next write fails the fence check and it
                # takes the partition over then.
                return end
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)
    finally:
        reader.close()


def reverse_command(topology: Topology, reverse_name: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "talos",
        "mirror",
        "run",
        "--topology",
        str(Path(topology.path).resolve()),
        "--link",
        reverse_name,
    ]


def _reverse_link(topology: Topology, reverse_name: str, options: FailbackOptions) -> str:
    command = reverse_command(topology, reverse_name)
    shown = " ".join(["talos", *command[3:]])
    if options.dry_run or not options.start_reverse:
        return f"start the reverse link with: {shown}"
    log_path = Path(topology.path).resolve().parent / f"mirror-{reverse_name.replace(':', '-')}.log"
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return f"started the reverse link {reverse_name} (pid {process.pid}, log {log_path})"


# ==== text output ==============================================================================


def format_recovery(report: RecoveryReport) -> str:
    lines = []
    head = "DRY RUN: would promote" if report.dry_run else "promoted"
    lines.append(f"{head} link {report.link}")
    for topic, (old, new) in sorted(report.epochs.items()):
        lines.append(f"  {topic}: mirror epoch {old} -> {new}")
    for topic in report.already_promoted:
        lines.append(f"  {topic}: was already promoted")
    if report.source_demoted:
        lines.append(f"  made read-only in the source: {', '.join(report.source_demoted)}")
    lines.append("")
    lines.append(
        f"{'topic':<24} {'part':>4} {'last mirrored':>13} {'source end':>10} "
        f"{'gap msgs':>9} {'gap s':>8}  basis"
    )
    for p in report.partitions:
        lines.append(
            f"{p.topic:<24} {p.partition:>4} {p.last_mirrored:>13} "
            f"{_show(p.source_end):>10} {_show(p.gap_messages):>9} "
            f"{_seconds(p.gap_ms):>8}  {p.basis}"
        )
    lines.append(
        f"total gap: {_show(report.gap_messages)} message(s); "
        f"RPO: {_seconds(report.rpo_ms)} s (worst partition)"
    )
    lines.extend(f"note: {note}" for note in report.notes)
    return "\n".join(lines)


def format_failback(report: FailbackReport) -> str:
    head = "DRY RUN: would fail back" if report.dry_run else "failed back"
    lines = [f"{head} link {report.link} (reverse link {report.reverse_link})"]
    lines.append(
        f"{'topic':<24} {'part':>4} {'common':>8} {'A end':>8} {'B end':>8} "
        f"{'diverged':>8} {'archived':>8}  truncated"
    )
    for p in report.partitions:
        lines.append(
            f"{p.topic:<24} {p.partition:>4} {p.common:>8} {p.a_end:>8} {p.b_end:>8} "
            f"{p.diverged:>8} {p.archived:>8}  {'yes' if p.truncated else 'no'}"
            + (f"  ({p.note})" if p.note else "")
        )
    for topic, archive in sorted(report.archive_topics.items()):
        lines.append(f"archive of {topic}'s diverged messages: {archive}")
    lines.append(f"diverged: {report.diverged} message(s); archived: {report.archived}")
    lines.extend(f"skipped {s}" for s in report.skipped)
    lines.extend(f"note: {n}" for n in report.notes)
    if report.reverse:
        lines.append(report.reverse)
    return "\n".join(lines)


def _show(value: int | None) -> str:
    return "?" if value is None else str(value)


def _seconds(ms: int | None) -> str:
    return "?" if ms is None else f"{ms / 1000:.3f}"


def report_json(report: RecoveryReport | FailbackReport) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=True)
