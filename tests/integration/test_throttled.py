"""Back-pressure: past its queued-bytes bound a broker answers THROTTLED, and the producer
retries through it without losing, duplicating or reordering anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from talos.client import Admin, Consumer, Producer, TopicPartition
from talos.config import TopicConfig
from talos.testing.cluster import LocalCluster
from talos.testing.zookeeper import ZooKeeperServer

pytestmark = pytest.mark.integration

PARTITIONS = 4
MESSAGES = 6000
VALUE_BYTES = 1000


def test_producer_retries_through_throttled_without_loss(
    tmp_path: Path, cluster_name: str, zk_server: ZooKeeperServer
) -> None:
    # 64 KiB may be queued on the broker; requests carry up to 4 batches of 32 KiB.
    cluster = LocalCluster(
        brokers=1,
        data_dir=str(tmp_path / "cluster"),
        cluster=cluster_name,
        zookeeper=zk_server,
        max_queued_bytes=64 * 1024,
    )
    try:
        cluster.start()
        with Admin(cluster.bootstrap) as admin:
            admin.create_topic("pressed", PARTITIONS, TopicConfig(durability="sync"))
            admin.wait_until_ready("pressed")
        padding = b"." * (VALUE_BYTES - 8)
        with Producer(
            cluster.bootstrap, linger_ms=20, batch_bytes=32 * 1024, max_in_flight_per_broker=8
        ) as producer:
            futures = [
                producer.send("pressed", f"{i:08d}".encode() + padding, partition=i % PARTITIONS)
                for i in range(MESSAGES)
            ]
            producer.flush(timeout=120)
            offsets = [f.result(timeout=1) for f in futures]
            throttled = producer.metrics["throttled"]
        assert throttled > 0, f"the broker never pushed back: {producer.metrics}"

        # Every message is stored exactly once, in send order within its partition.
        by_partition: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
        consumer = Consumer(cluster.bootstrap, auto_offset_reset="earliest")
        try:
            consumer.assign([TopicPartition("pressed", p) for p in range(PARTITIONS)])
            received = 0
            for _ in range(200):
                for message in consumer.poll(timeout_s=0.5):
                    assert message.value is not None
                    by_partition[message.partition].append(int(message.value[:8]))
                    received += 1
                if received >= MESSAGES:
                    break
        finally:
            consumer.close()
        for partition, indexes in by_partition.items():
            assert indexes == list(range(partition, MESSAGES, PARTITIONS)), partition
        for i, meta in enumerate(offsets):
            assert (meta.partition, meta.offset) == (i % PARTITIONS, i // PARTITIONS)
    finally:
        cluster.stop()
