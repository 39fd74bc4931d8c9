"""MirrorAppend on a real broker: the conditional append of DESIGN.md §6."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from kazoo.client import KazooClient

from mirror.state import new_mirror, promote
from talos.broker.partition import CRASH_AT_ENV
from talos.client import Admin, Consumer, Producer, TopicPartition
from talos.config import TopicConfig
from talos.coord.partition_state import PartitionStateStore
from talos.coord.topics import TopicStore
from talos.coord.zk import connect
from talos.errors import ErrorCode, ReadOnlyMirror
from talos.proto import talos_pb2 as pb
from talos.proto import talos_pb2_grpc as pb_grpc
from talos.record.batch import Record, encode_batch, with_origin
from talos.storage.segment import segment_of_file
from talos.testing.cluster import LocalCluster

pytestmark = pytest.mark.integration

MIRROR = new_mirror("A:B", "A", "orders")


@pytest.fixture
def zk(cluster: LocalCluster) -> Iterator[KazooClient]:
    client = connect(cluster.zookeeper.address, cluster.cluster)
    yield client
    client.stop()
    client.close()


def source_batches(start: int, sizes: list[int], tag: str = "v") -> list[bytes]:
    """Batches as a source log holds them (base offsets set), stamped with origin A."""
    out = []
    offset = start
    for size in sizes:
        records = [
            Record(value=f"{tag}{offset + i}".encode(), timestamp_ms=1000) for i in range(size)
        ]
        out.append(with_origin(encode_batch(records, base_offset=offset), "A", offset))
        offset += size
    return out


def mirror_append(
    stub: pb_grpc.BrokerStub, expected: int, batches: list[bytes], epoch: int = 1
) -> pb.MirrorAppendResponse:
    response: pb.MirrorAppendResponse = stub.MirrorAppend(
        pb.MirrorAppendRequest(
            topic="orders",
            partition=0,
            expected_offset=expected,
            link="A:B",
            mirror_epoch=epoch,
            records=b"".join(batches),
        ),
        timeout=30,
    )
    return response


def owner_stub(cluster: LocalCluster) -> pb_grpc.BrokerStub:
    with Admin(cluster.bootstrap) as admin:
        address = admin.wait_until_ready("orders").partitions[0].owner_address
    return pb_grpc.BrokerStub(grpc.insecure_channel(address))


def read_all(cluster: LocalCluster, expected: int) -> list[tuple[int, bytes | None]]:
    consumer = Consumer(cluster.bootstrap, auto_offset_reset="earliest")
    try:
        consumer.assign([TopicPartition("orders", 0)])
        got: list = []
        deadline = time.monotonic() + 20
        while len(got) < expected and time.monotonic() < deadline:
            got.extend(consumer.poll(0.5))
        got.extend(consumer.poll(0.3))
        return [(m.offset, m.value) for m in got]
    finally:
        consumer.close()


def test_conditional_append_keeps_source_offsets(cluster: LocalCluster, zk: KazooClient) -> None:
    TopicStore(zk).create("orders", 1, TopicConfig(), int(time.time() * 1000), mirror=MIRROR)
    stub = owner_stub(cluster)
    first = source_batches(0, [3, 2])  # offsets 0..4
    more = source_batches(5, [4])  # offsets 5..8

    # at the end: appended with the source offsets
    assert mirror_append(stub, 0, first).log_end == 5
    # the same again (a restarted worker): compared by CRC, acknowledged as present
    again = mirror_append(stub, 0, first)
    assert (again.error.code, again.log_end) == (0, 5)
    # overlapping and new: only the new part is written
    assert mirror_append(stub, 3, [first[1], *more]).log_end == 9
    # past the end: GAP with the current end, nothing written
    gap = mirror_append(stub, 12, source_batches(12, [1]))
    assert (gap.error.code, gap.error.log_end) == (ErrorCode.GAP, 9)
    # an overlap that differs: the logs diverged; nothing written
    other = source_batches(5, [4], tag="other")
    diverged = mirror_append(stub, 5, other)
    assert diverged.error.code == ErrorCode.MIRROR_DIVERGED
    # a batch straddling the end is a divergence too
    straddle = mirror_append(stub, 7, source_batches(7, [3]))
    assert straddle.error.code == ErrorCode.MIRROR_DIVERGED
    # a stale link epoch is fenced
    stale = mirror_append(stub, 9, source_batches(9, [1]), epoch=0)
    assert stale.error.code == ErrorCode.FENCED

    assert read_all(cluster, 9) == [(o, f"v{o}".encode()) for o in range(9)]


def test_mirror_topic_is_read_only_until_promoted(cluster: LocalCluster, zk: KazooClient) -> None:
    topics = TopicStore(zk)
    topics.create("orders", 1, TopicConfig(), int(time.time() * 1000), mirror=MIRROR)
    stub = owner_stub(cluster)
    assert mirror_append(stub, 0, source_batches(0, [2])).log_end == 2
    with Producer(cluster.bootstrap) as producer:
        with pytest.raises(ReadOnlyMirror):
            producer.send("orders", b"local").result(timeout=30)

        topics.set_mirror("orders", promote(MIRROR, 1))
        deadline = time.monotonic() + 10
        while True:  # brokers see the promotion through their ZooKeeper watch
            try:
                meta = producer.send("orders", b"local").result(timeout=30)
                break
            except ReadOnlyMirror:
                assert time.monotonic() < deadline, "promotion never made the topic writable"
                time.sleep(0.1)
    assert meta.offset == 2  # writes continue right after the mirrored offsets
    refused = mirror_append(stub, 3, source_batches(3, [1]))
    assert refused.error.code == ErrorCode.FENCED
    assert read_all(cluster, 3) == [(0, b"v0"), (1, b"v1"), (2, b"local")]


def test_a_skip_restarts_the_target_empty_at_the_sources_log_start(
    cluster: LocalCluster, zk: KazooClient
) -> None:
    """Issue 12 §2: the source deleted [5, 20) before it was copied; the skip moves the
    target's log start to 20 (only if it still ends at 5) and appends continue there."""
    TopicStore(zk).create("orders", 1, TopicConfig(), int(time.time() * 1000), mirror=MIRROR)
    stub = owner_stub(cluster)
    assert mirror_append(stub, 0, source_batches(0, [5])).log_end == 5

    def skip(skip_from: int, to: int, records: bytes = b"") -> pb.MirrorAppendResponse:
        response: pb.MirrorAppendResponse = stub.MirrorAppend(
            pb.MirrorAppendRequest(
                topic="orders",
                partition=0,
                expected_offset=to,
                link="A:B",
                mirror_epoch=1,
                records=records,
                skip_from=skip_from,
            ),
            timeout=30,
        )
        return response

    stale = skip(3, 20)  # the worker's view of the end is stale
    assert (stale.error.code, stale.error.log_end) == (ErrorCode.GAP, 5)
    carrying = skip(5, 20, source_batches(20, [1])[0])
    assert carrying.error.code == ErrorCode.INVALID_ARGUMENT
    assert "records: a mirror skip" in carrying.error.message
    assert skip(5, 20).log_end == 20
    assert (skip(5, 20).error.code, skip(5, 20).log_end) == (0, 20)  # a retry: done
    assert mirror_append(stub, 20, source_batches(20, [2])).log_end == 22
    with Admin(cluster.bootstrap) as admin:
        partition = admin.describe_topic("orders").partitions[0]
    assert (partition.log_start, partition.log_end) == (20, 22)
    consumer = Consumer(cluster.bootstrap, auto_offset_reset="earliest")
    try:
        consumer.assign([TopicPartition("orders", 0)])
        got: list = []
        deadline = time.monotonic() + 20
        while len(got) < 2 and time.monotonic() < deadline:
            got.extend(consumer.poll(0.5))
    finally:
        consumer.close()
    assert [(m.offset, m.value) for m in got] == [(20, b"v20"), (21, b"v21")]


def test_kill_9_between_the_skip_cas_and_the_deletes_leaves_only_orphans(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    """The target owner dies by SIGKILL right after the skip's compare-and-set (the
    TALOS_CRASH_AT hook): the next owner removes the files below the new start and
    serves nothing there; the link appends at the new start."""
    cluster = make_cluster(brokers=1)
    owner = cluster.brokers[0]
    owner.stop()
    owner.extra_env[CRASH_AT_ENV] = "skip-after-cas"
    owner.start()
    cluster.wait_for_brokers(1)
    zk = connect(cluster.zookeeper.address, cluster.cluster)
    try:
        TopicStore(zk).create("orders", 1, TopicConfig(), int(time.time() * 1000), mirror=MIRROR)
        stub = owner_stub(cluster)
        assert mirror_append(stub, 0, source_batches(0, [5])).log_end == 5
        with pytest.raises(grpc.RpcError):
            stub.MirrorAppend(
                pb.MirrorAppendRequest(
                    topic="orders",
                    partition=0,
                    expected_offset=20,
                    link="A:B",
                    mirror_epoch=1,
                    skip_from=5,
                ),
                timeout=30,
            )
        assert owner.process is not None and owner.process.wait(timeout=30) == -signal.SIGKILL
        assert PartitionStateStore(zk).get("orders", 0).log_start == 20
    finally:
        zk.stop()
        zk.close()
    (directory,) = (Path(cluster.store_dir) / cluster.cluster / "orders").glob("*/0")

    def bases() -> set[int]:
        found = (segment_of_file(p.name) for p in directory.iterdir())
        return {f[0] for f in found if f is not None}

    assert 0 in bases(), "the kill did not come before the deletes"
    owner.extra_env.clear()
    owner.start()  # the next owner: same id, a new process without the hook
    cluster.wait_for_brokers(1)
    stub = owner_stub(cluster)
    deadline = time.monotonic() + 60
    while 0 in bases():
        assert time.monotonic() < deadline, f"orphans below the start remain: {bases()}"
        time.sleep(0.2)
    assert mirror_append(stub, 20, source_batches(20, [2])).log_end == 22
    stale = stub.Fetch(
        pb.FetchRequest(partitions=[pb.FetchPartition(topic="orders", partition=0, offset=3)]),
        timeout=30,
    ).results[0]
    assert (stale.error.code, stale.error.log_start) == (ErrorCode.OFFSET_OUT_OF_RANGE, 20)
