"""What promote, failback and resync share: the link's znodes, reading a partition
through a DC's brokers or its store, connecting to a DC."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from talos.client.connection import Connections
from talos.coord.partition_state import PartitionState, PartitionStateStore
from talos.coord.topics import TopicMeta, TopicStore
from talos.coord.zk import connect, loads, zk_errors
from talos.errors import (
    TalosError,
    TalosTimeout,
    Unavailable,
    UnknownTopic,
)
from talos.proto import talos_pb2 as pb
from talos.record.batch import (
    iter_batches,
)
from talos.storage.open import open_store
from talos.storage.store import LogStore
from talos.wire import error_from_proto
from topology import Datacenter, Link

from ..paths import control_path, progress_path
from ..reader import StoreReader
from ..state import MirrorState
from ..worker import write_json as write_json
from .plan import Progress, SourceView, StoredBatch

# ==== ZooKeeper layout (target ZooKeeper of a link) ============================================

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 1024 * 1024
#: How long a reader waits for a new owner to record the sealed end of a fenced segment.
SEALED_END_TIMEOUT_S = 10.0


def read_json(zk: KazooClient, path: str) -> dict[str, Any] | None:
    with zk_errors(f"reading {path}"):
        try:
            data, _ = zk.get(path)
        except NoNodeError:
            return None
    value = loads(data, path)
    return value if isinstance(value, dict) else None


def write_control(zk: KazooClient, link: str, state: str, reason: str, now_ms: int) -> None:
    """Workers of ``link`` idle while this says ``stopped``."""
    write_json(zk, control_path(link), {"state": state, "reason": reason, "ms": now_ms})


def read_progress(zk: KazooClient, link: str, topic: str, partition: int) -> Progress | None:
    raw = read_json(zk, progress_path(link, topic, partition))
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


class StoreLogReader:
    """A DC's partitions read straight from its log store, through the one read rule
    (:class:`mirror.reader.StoreReader`, DESIGN §4).

    Used for A during failback (after taking a partition over, the store and
    the partition state are the only truth; pass that state) and for a DC
    whose brokers are down but whose ZooKeeper and store still answer.
    """

    def __init__(self, zk: KazooClient, store: LogStore, cluster: str) -> None:
        self.zk = zk
        self.store = store
        self.cluster = cluster
        self.states = PartitionStateStore(zk)
        self.reader = StoreReader(store, zk, cluster)

    def close(self) -> None:
        self.reader.close()

    def log_end(self, topic: str, partition: int) -> int:
        """The end of the committed data: the sealed end, or the open segment read to its end."""
        state = self.states.get(topic, partition)
        open_segment = state.open_segment
        if open_segment is None:
            return state.sealed_end
        end = open_segment.base_offset
        for batch in self.batches(topic, partition, end):
            end = batch.header.next_offset
        return end

    def batches(
        self, topic: str, partition: int, start: int, state: PartitionState | None = None
    ) -> Iterator[StoredBatch]:
        """Whole committed batches from the one holding ``start``, with their file positions."""
        offset = start
        deadline = time.monotonic() + SEALED_END_TIMEOUT_S
        while True:
            result = self.reader.read(topic, partition, offset, READ_CHUNK_BYTES, state)
            if not result.headers:
                if result.caught_up:
                    return
                if time.monotonic() > deadline:
                    raise TalosTimeout(
                        f"{topic}/{partition}: a segment at {offset} is fenced but no sealed "
                        f"end appeared within {SEALED_END_TIMEOUT_S}s"
                    )
                continue  # a fenced segment whose sealed end is not recorded yet
            deadline = time.monotonic() + SEALED_END_TIMEOUT_S
            for i, header in enumerate(result.headers):
                if header.next_offset <= offset:
                    continue
                yield StoredBatch(
                    header,
                    bytes(result.batch(i)),
                    result.file_position + result.positions[i] if result.file_position >= 0 else -1,
                )
            offset = result.headers[-1].next_offset


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
    """The DC's store when this host reads it (its posix directory is mounted here, or its
    HDFS NameNode answers), else None."""
    if dc.store.kind == "posix" and not os.path.isdir(dc.store.path):
        return None
    try:
        store = open_store(dc.store.uri)
    except TalosError as exc:
        log.warning("%s's log store %s is not readable here: %s", dc.name, dc.store.uri, exc)
        return None
    if dc.store.kind != "posix":
        try:
            store.list_dir("")  # the NameNode answers (opening an HDFS client does not ask)
        except TalosError as exc:
            log.warning("%s's log store %s is not readable here: %s", dc.name, dc.store.uri, exc)
            store.close()
            return None
    return store


@dataclass(frozen=True)
class MirrorTopic:
    """A target topic that mirrors a link, with its typed mirror state."""

    name: str
    meta: TopicMeta
    mirror: MirrorState

    @property
    def partitions(self) -> int:
        return self.meta.partitions

    @property
    def source_topic(self) -> str:
        return self.mirror.source_topic


def mirror_pairs(topics: TopicStore, link: Link, selector: str | None = None) -> list[MirrorTopic]:
    """B's topics that mirror ``link`` (in any phase), optionally narrowed by a glob."""
    import fnmatch

    out = []
    for name in topics.list():
        try:
            meta = topics.get(name)
        except UnknownTopic:
            continue
        mirror = meta.mirror
        if mirror is None or mirror.link != link.name:
            continue
        if selector and not (
            fnmatch.fnmatchcase(name, selector)
            or fnmatch.fnmatchcase(mirror.source_topic, selector)
        ):
            continue
        out.append(MirrorTopic(name, meta, mirror))
    return out


class FallbackReader:
    """Broker reads first (cheap, exact), the store when the brokers do not answer."""

    def __init__(self, brokers: BrokerReader | None, store: StoreLogReader | None) -> None:
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
        if self.store is not None:
            self.store.close()


def target_reader(dc: Datacenter, zk: KazooClient, timeout: float) -> FallbackReader:
    store = local_store(dc)
    return FallbackReader(
        BrokerReader(dc.bootstrap, timeout),
        StoreLogReader(zk, store, dc.cluster) if store is not None else None,
    )


def source_reader(
    dc: Datacenter, zk: KazooClient | None, timeout: float, notes: list[str]
) -> FallbackReader | None:
    """The source's store first when it is mounted here (its brokers may all be dead)."""
    store = local_store(dc)
    store_reader = StoreLogReader(zk, store, dc.cluster) if zk is not None and store else None
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
        return FallbackReader(None, store_reader)
    return FallbackReader(brokers, store_reader)


def settled_ends(
    reader: LogReader, pairs: Sequence[MirrorTopic], settle_s: float, max_s: float
) -> dict[tuple[str, int], int]:
    """Target ends, re-read until they stop moving (an append already admitted may land)."""
    deadline = time.monotonic() + max_s

    def read() -> dict[tuple[str, int], int]:
        return {(t.name, p): reader.log_end(t.name, p) for t in pairs for p in range(t.partitions)}

    ends = read()
    while settle_s > 0 and time.monotonic() < deadline:
        time.sleep(settle_s)
        again = read()
        if again == ends:
            break
        ends = again
    return ends


def newest_ms(reader: LogReader, topic: str, partition: int, end: int) -> int | None:
    if end <= 0:
        return None
    try:
        batch = first_batch(reader, topic, partition, end - 1)
    except TalosError:
        return None
    return batch.header.max_timestamp if batch is not None else None


def source_view(
    reader: FallbackReader | None, topic: str, partition: int, target_end: int, notes: list[str]
) -> SourceView | None:
    if reader is None:
        return None
    try:
        end = reader.log_end(topic, partition)
        newest = newest_ms(reader, topic, partition, end)
        first_missing = None
        if end > target_end:
            batch = first_batch(reader, topic, partition, target_end)
            first_missing = batch.header.first_timestamp if batch is not None else None
        return SourceView(end, newest, first_missing)
    except TalosError as exc:
        notes.append(f"source {topic}/{partition} unreadable ({exc}); using progress")
        return None
