"""Partition surgery on a DC a tool holds: take a partition over like a broker does,
archive a suffix, cut the partition state back, and make the owner serve the cut."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from talos.coord import paths
from talos.coord.partition_state import PartitionState, PartitionStateStore
from talos.coord.topics import TopicMeta, TopicStore
from talos.coord.zk import zk_errors
from talos.errors import (
    CoordinationError,
    InvalidArgument,
    StorageError,
    TalosError,
    TopicExists,
)
from talos.proto import talos_pb2 as pb
from talos.record.batch import (
    Record,
    decode_records,
    encode_batch,
)
from talos.storage import index as seg_index
from talos.storage.segment import (
    fence_marker_path,
    scan_segment,
    segment_path,
)
from talos.storage.store import LogStore
from topology import Datacenter

from .common import BrokerReader, StoreLogReader

log = logging.getLogger(__name__)

#: Owner written into a partition state while a tool (failback, resync) holds the partition.
FAILBACK_OWNER = "failback"
#: How long take_over waits for HDFS to close the previous owner's open segment.
LEASE_RECOVERY_TIMEOUT_S = 60.0


def take_over(
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
    # HDFS: the NameNode closes the file against the previous owner and settles its
    # length before the scan, as a broker's takeover does (posix: nothing to do).
    store.recover_lease(path, LEASE_RECOVERY_TIMEOUT_S)
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


def ensure_archive(
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


def archive_suffix(
    a_dc: Datacenter,
    a_reader: StoreLogReader,
    state: PartitionState,
    topic: str,
    partition: int,
    start: int,
    archive: str,
    timeout: float,
) -> int:
    """Produce the DC's ``[start, end)`` into the archive's same partition, records intact.

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
        for batch in a_reader.batches(topic, partition, start, state):
            for record in decode_records(batch.data):
                if record.offset < start:
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


def nudge_owner(
    a_dc: Datacenter,
    topic: str,
    partition: int,
    common: int,
    failback_epoch: int,
    mirror_epoch: int,
    probe_link: str,
    timeout_s: float,
    serve_timeout_s: float,
) -> int | None:
    """Make A's assigned broker drop its stale view and take the truncated partition over.

    An owner that was fenced by the failback learns it only when it next
    writes. A probe append at its stale end makes it write into its fenced
    segment (past the sealed end: never visible), fail the fence check and
    take the partition over afresh. An owner already past the failback's
    epoch answers GAP or MIRROR_DIVERGED instead and writes nothing.
    Returns the end the new owner serves, or None on timeout.
    """
    reader = BrokerReader(a_dc.bootstrap, timeout_s)
    deadline = time.monotonic() + serve_timeout_s
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
                            link=probe_link,
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


def group_offsets(zk: KazooClient, topic: str, partition: int) -> dict[str, int]:
    """Every group's committed offset on ``topic``/``partition`` (groups without one left out)."""
    found: dict[str, int] = {}
    with zk_errors(f"reading group offsets of {topic}/{partition}"):
        try:
            groups = zk.get_children(paths.GROUPS)
        except NoNodeError:
            return found
        pending = [
            (g, zk.get_async(paths.group_offset(g, topic, partition))) for g in sorted(groups)
        ]
        for group, result in pending:
            try:
                data, _ = result.get()
            except NoNodeError:
                continue
            try:
                found[group] = int(data.decode())
            except (ValueError, UnicodeDecodeError):
                continue
    return found


def truncate(
    zk: KazooClient,
    topic: str,
    partition: int,
    cut: PartitionState,
    held: PartitionState,
    groups: Mapping[str, int],
) -> PartitionState:
    """Write the cut partition state and move ``groups`` back, all in one transaction.

    The partition state is compare-and-set against ``held`` (Fenced if it
    moved). A group offset that changed meanwhile is read again; one already
    at or below its new value is left alone.
    """
    states = PartitionStateStore(zk)
    for _ in range(20):
        moves: list[tuple[str, bytes, int]] = []
        for group, offset in sorted(groups.items()):
            path = paths.group_offset(group, topic, partition)
            with zk_errors(f"reading {path}"):
                try:
                    data, stat = zk.get(path)
                except NoNodeError:
                    continue
            try:
                current = int(data.decode())
            except (ValueError, UnicodeDecodeError):
                current = offset + 1
            if current > offset:
                moves.append((path, str(offset).encode(), stat.version))

        def also(txn: Any, moves: list[tuple[str, bytes, int]] = moves) -> None:
            for path, value, version in moves:
                txn.set_data(path, value, version=version)

        try:
            return states.compare_and_set(topic, partition, cut, held.version, also)
        except CoordinationError:
            if not moves:
                raise
            continue  # a group committed meanwhile: read its offset again
    raise CoordinationError(
        f"{topic}/{partition}: group offsets keep changing while truncating; rerun"
    )
