"""Segments roll by size, get indexes, survive takeovers; seeks by offset and time."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from talos.client import Admin, Consumer, Producer, TopicPartition
from talos.config import TopicConfig
from talos.coord.partition_state import PartitionStateStore
from talos.coord.zk import connect
from talos.storage.segment import parse_segment_name
from talos.testing.cluster import LocalCluster

pytestmark = pytest.mark.integration


def read_from(bootstrap: str, topic: str, offset: int, count: int) -> list:
    consumer = Consumer(bootstrap)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        got: list = []
        deadline = time.monotonic() + 30
        while len(got) < count and time.monotonic() < deadline:
            got.extend(consumer.poll(0.5, max_records=count - len(got)))
        return got
    finally:
        consumer.close()


def test_segments_roll_and_reads_cross_them_after_takeover(cluster: LocalCluster) -> None:
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("rolling", 1, TopicConfig(segment_bytes=4096, durability="flush"))
        owner = admin.wait_until_ready("rolling").partitions[0].owner_id
    with Producer(cluster.bootstrap, linger_ms=0) as producer:
        for i in range(600):  # small batches: many segments of ~4 KB
            producer.send("rolling", f"value-{i:04d}".encode(), timestamp_ms=1_000_000 + i)
            if i % 20 == 19:
                producer.flush()

    (partition_dir,) = (Path(cluster.store_dir) / cluster.cluster / "rolling").glob("*/0")
    logs = sorted(n for n in os.listdir(partition_dir) if n.endswith(".log"))
    assert len(logs) >= 3, logs
    sealed = logs[:-1]
    assert all((partition_dir / n.replace(".log", ".index")).exists() for n in sealed)
    assert all((partition_dir / n.replace(".log", ".timeindex")).exists() for n in sealed)
    bases = [parse_segment_name(n) for n in logs]
    assert all(b is not None for b in bases)

    zk = connect(cluster.zookeeper.address, cluster.cluster)
    try:
        state = PartitionStateStore(zk).get("rolling", 0)
    finally:
        zk.stop()
        zk.close()
    assert [s.base_offset for s in state.segments] == sorted(b[0] for b in bases if b)
    assert all(s.end_offset is not None for s in state.segments[:-1])

    # reads from the middle of every sealed segment, and across boundaries
    for offset in (0, 1, 250, 599):
        got = read_from(cluster.bootstrap, "rolling", offset, 600 - offset)
        assert [m.offset for m in got] == list(range(offset, 600))
        assert got[0].value == f"value-{offset:04d}".encode()

    # move the partition: the new owner serves the same history from the same segments
    victim = next(b for b in cluster.brokers if b.broker_id == owner)
    victim.kill()
    others = ",".join(b.address for b in cluster.brokers if b is not victim)
    deadline = time.monotonic() + 30
    with Admin(others) as admin:
        while admin.describe_topic("rolling").partitions[0].owner_id == owner:
            assert time.monotonic() < deadline, "no takeover"
            time.sleep(0.2)
        admin.wait_until_ready("rolling")
    got = read_from(others, "rolling", 123, 477)
    assert [m.value for m in got] == [f"value-{i:04d}".encode() for i in range(123, 600)]

    # seek by time finds the first record at or after the timestamp
    consumer = Consumer(others)
    try:
        tp = TopicPartition("rolling", 0)
        consumer.assign([tp])
        assert consumer.seek_to_timestamp(tp, 1_000_000 + 321) == 321
        assert consumer.poll(5.0, max_records=1)[0].value == b"value-0321"
        assert consumer.seek_to_timestamp(tp, 0) == 0
        assert consumer.seek_to_timestamp(tp, 9_999_999_999) == 600  # past the end: log end
    finally:
        consumer.close()
