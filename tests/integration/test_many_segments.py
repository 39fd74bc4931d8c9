"""Issue 12 §3: no ceiling on the number of segments of a partition.

One value holding every segment reached ZooKeeper's 1 MiB limit at about
13,000 segments; after that no roll or takeover succeeded. This drives a real
partition through 20,000 rolls, then a takeover, then reads. It runs only in
``make test-slow`` (TALOS_SLOW_TESTS=1): about 20,000 sequential produce
round trips. The figures are printed (run with -s to see them).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from talos.client import Admin, Producer
from talos.config import TopicConfig
from talos.coord import paths
from talos.coord.partition_state import PartitionStateStore
from talos.coord.zk import connect
from talos.testing.cluster import LocalCluster

from .test_segments import read_from

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("TALOS_SLOW_TESTS") != "1",
        reason="20,000 segments take minutes: run `make test-slow` (TALOS_SLOW_TESTS=1)",
    ),
]

SEGMENTS = 20_000
VALUE = b"v" * 4100  # one batch fills a 4096-byte segment: every produce rolls


@pytest.fixture
def two_brokers(make_cluster: Callable[..., LocalCluster]) -> LocalCluster:
    return make_cluster(brokers=2, session_timeout=4.0)


@pytest.mark.timeout(5400)
def test_twenty_thousand_segments_roll_take_over_and_read(two_brokers: LocalCluster) -> None:
    cluster = two_brokers
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("many", 1, TopicConfig(segment_bytes=4096, durability="flush"))
        owner_id = admin.wait_until_ready("many").partitions[0].owner_id

    started = time.monotonic()
    with Producer(cluster.bootstrap, linger_ms=0) as producer:
        for i in range(SEGMENTS + 1):
            offset = producer.send("many", VALUE, key=str(i).encode(), partition=0).result(60)
            assert offset.offset == i
    produce_s = time.monotonic() - started

    zk = connect(cluster.zookeeper.address, cluster.cluster)
    try:
        state = PartitionStateStore(zk).get("many", 0)
        head, _ = zk.get(paths.partition("many", 0))
        chunk_bytes = [
            len(zk.get(paths.partition_chunk("many", 0, c.name))[0]) for c in state.chunks
        ]
    finally:
        zk.stop()
        zk.close()
    assert len(state.segments) >= SEGMENTS
    assert len(head) < 100_000 and max(chunk_bytes) < 100_000

    owner = next(b for b in cluster.brokers if b.broker_id == owner_id)
    owner.kill()
    started = time.monotonic()
    with Admin(cluster.bootstrap) as admin:
        deadline = time.monotonic() + 120
        while True:
            partition = admin.describe_topic("many").partitions[0]
            if partition.owner_id != owner_id and partition.log_end >= 0:
                break
            assert time.monotonic() < deadline, "no takeover of 20,000 segments within 120 s"
            time.sleep(0.2)
    takeover_s = time.monotonic() - started
    assert partition.log_end == SEGMENTS + 1

    started = time.monotonic()
    for offset in (0, 1, SEGMENTS // 2, SEGMENTS - 1, SEGMENTS):
        (message,) = read_from(cluster.bootstrap, "many", offset, 1)
        assert (message.offset, message.key) == (offset, str(offset).encode())
    read_s = time.monotonic() - started
    with Producer(cluster.bootstrap, linger_ms=0) as producer:  # and it still rolls
        assert producer.send("many", VALUE, partition=0).result(60).offset == SEGMENTS + 1

    print(
        f"\n{len(state.segments)} segments: produce+roll {produce_s:.1f} s "
        f"({SEGMENTS / produce_s:.0f} rolls/s); partition znode {len(head)} B, "
        f"{len(state.chunks)} chunks of at most {max(chunk_bytes)} B; "
        f"takeover after kill -9 (incl. session expiry) {takeover_s:.1f} s; "
        f"5 reads {read_s:.2f} s"
    )
