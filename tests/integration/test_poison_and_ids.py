"""Issue 11 §3 and §5 against a real cluster: poison batches, a consumer that meets a bad
batch, 64-bit producer ids, and a rebalance that must not let a commit move backwards."""

from __future__ import annotations

import glob
import os
import struct
import time

import pytest

from talos.client import Admin, Consumer, Producer, TopicPartition
from talos.coord import paths
from talos.coord.zk import connect
from talos.errors import CorruptRecords, ErrorCode
from talos.proto import talos_pb2 as pb
from talos.record import HEADER_SIZE, Codec, Record, encode_batch, iter_batches
from talos.testing.cluster import LocalCluster
from tests.integration.test_bad_input import (
    assert_intact,
    log_ends,
    owner_address,
    raw_produce,
    raw_stub,
    seed,
)

pytestmark = pytest.mark.integration

TS = 1_700_000_000_000


def reframed(records: bytes, count: int, codec: Codec = Codec.NONE) -> bytes:
    """A batch whose CRC is valid but whose records are ``records``, claiming ``count``."""
    from tests.unit.test_record_validation import reframe

    return reframe(records, count, codec)


def test_poison_batches_are_refused_and_nothing_is_stored(cluster: LocalCluster) -> None:
    stored = seed(cluster.bootstrap, "poison", count=3)
    owner = owner_address(cluster.bootstrap, "poison", 0)
    good = encode_batch([Record(b"a", timestamp_ms=TS), Record(b"b", timestamp_ms=TS)])
    records = good[HEADER_SIZE:]
    poison = {
        "record_count 2^32-1": reframed(records, 2**32 - 1),
        "record_count one short": reframed(records, 1),
        "garbage records": reframed(b"\xff" * 64, 2),
        "zstd of garbage records": reframed(b"\x07" * 64, 2, Codec.ZSTD),
    }
    for case, batch in poison.items():
        result = raw_produce(owner, "poison", 0, batch)
        assert result.error.code == ErrorCode.CORRUPT_BATCH, (case, result)
        assert log_ends(cluster.bootstrap, "poison") == [3], case
    # control: the same records, honestly framed, are taken after the stored ones
    accepted = raw_produce(owner, "poison", 0, reframed(records, 2))
    assert accepted.error.code == ErrorCode.NONE, accepted
    assert accepted.base_offset == 3
    assert_intact(cluster.bootstrap, "poison", {0: [*stored[0], (3, b"a"), (4, b"b")]})


def corrupt_batch_on_disk(store_dir: str, topic: str, base_offset: int) -> None:
    """Flip one byte inside the records of the stored batch at ``base_offset`` (a disk
    fault, or a batch stored before brokers checked records)."""
    (path,) = glob.glob(os.path.join(store_dir, "**", topic, "**", "*.log"), recursive=True)
    with open(path, "r+b") as f:
        data = f.read()
        for position, header in iter_batches(data):
            if header.base_offset == base_offset:
                f.seek(position + HEADER_SIZE + 2)
                f.write(bytes([data[position + HEADER_SIZE + 2] ^ 0xFF]))
                return
    raise AssertionError(f"no batch at offset {base_offset} in {path}")


def test_consumer_returns_the_records_before_a_bad_batch_then_names_it(
    cluster: LocalCluster,
) -> None:
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("bad-on-disk", 1)
        admin.wait_until_ready("bad-on-disk")
    owner = owner_address(cluster.bootstrap, "bad-on-disk", 0)
    for values in ((b"m0", b"m1"), (b"m2", b"m3"), (b"m4",)):
        batch = encode_batch([Record(v, timestamp_ms=TS) for v in values])
        assert raw_produce(owner, "bad-on-disk", 0, batch).error.code == ErrorCode.NONE
    corrupt_batch_on_disk(cluster.store_dir, "bad-on-disk", 2)

    tp = TopicPartition("bad-on-disk", 0)
    consumer = Consumer(cluster.bootstrap, fetch_max_wait_ms=100)
    try:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        got = consumer.poll(timeout_s=5)
        assert [(m.offset, m.value) for m in got] == [(0, b"m0"), (1, b"m1")]
        for _ in range(2):  # raised again and again until the application seeks past it
            with pytest.raises(CorruptRecords) as caught:
                consumer.poll(timeout_s=5)
            error = caught.value
            assert (error.topic, error.partition, error.offset, error.next_offset) == (
                "bad-on-disk",
                0,
                2,
                4,
            )
            assert "bad-on-disk/0" in error.message and "offset 2" in error.message
            assert consumer.position(tp) == 2
        consumer.seek(tp, error.next_offset)
        assert [(m.offset, m.value) for m in consumer.poll(timeout_s=5)] == [(4, b"m4")]
    finally:
        consumer.close()


def test_producer_ids_are_64_bit(cluster: LocalCluster) -> None:
    """Ids come from a 64-bit counter, not from a znode version that wraps at 2^31."""
    zk = connect(cluster.zookeeper.address, cluster.cluster)
    try:
        if not zk.exists(paths.PRODUCER_IDS):
            zk.create(paths.PRODUCER_IDS, b"")
        zk.set(paths.PRODUCER_IDS, struct.pack(">q", 2**31 - 2))
    finally:
        zk.stop()
        zk.close()
    ids = []
    with raw_stub(cluster.brokers[0].address) as stub:
        for _ in range(3):
            response = stub.InitProducer(pb.InitProducerRequest(), timeout=30)
            assert response.error.code == ErrorCode.NONE, response
            ids.append(response.producer_id)
    assert ids == [2**31 - 1, 2**31, 2**31 + 1]
    # an idempotent producer works with an id past 32 bits
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("wide-ids", 1)
        admin.wait_until_ready("wide-ids")
    with Producer(cluster.bootstrap, linger_ms=0) as producer:
        assert producer.send("wide-ids", b"x").result(timeout=30).offset == 0
    assert_intact(cluster.bootstrap, "wide-ids", {0: [(0, b"x")]})


def test_a_rebalance_drops_fetched_messages_so_commits_never_move_back(
    cluster: LocalCluster,
) -> None:
    with Admin(cluster.bootstrap) as admin:
        for name in ("rebal", "other"):
            admin.create_topic(name, 1)
            admin.wait_until_ready(name)
    owner = owner_address(cluster.bootstrap, "rebal", 0)
    batch = encode_batch([Record(b"%d" % i, timestamp_ms=TS) for i in range(100)])
    assert raw_produce(owner, "rebal", 0, batch).error.code == ErrorCode.NONE
    tp = TopicPartition("rebal", 0)

    a = Consumer(
        cluster.bootstrap, group_id="g", auto_offset_reset="earliest", enable_auto_commit=False
    )
    b = Consumer(cluster.bootstrap, group_id="g", enable_auto_commit=False)
    standalone = Consumer(cluster.bootstrap, group_id="g", enable_auto_commit=False)
    try:
        a.subscribe(["rebal"])
        got = []
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            got = a.poll(timeout_s=1, max_records=10)
        assert [m.offset for m in got] == list(range(10))  # 10..99 stay fetched in a
        # meanwhile the group's offset moves on (as another member that held the
        # partition would move it)
        standalone.commit({tp: 60})
        b.subscribe(["other"])  # a new generation; "rebal" stays with a
        a.subscribe(["rebal"])  # a rejoins: its positions restart from the commits
        assert a.assignment() == [tp]
        assert a.position(tp) == 60
        assert [m.offset for m in a.poll(timeout_s=5, max_records=10)] == list(range(60, 70))
        a.commit()
        assert a.committed([tp]) == {tp: 70}
    finally:
        for consumer in (a, b, standalone):
            consumer.close()


def test_a_retry_is_deduplicated_after_an_owner_move_past_64_mib(cluster: LocalCluster) -> None:
    """Dedup state used to come from the last 64 MiB of the log only; producer-state
    snapshots at each roll carry it across owner moves however much was written since."""
    from talos.config import TopicConfig

    with Admin(cluster.bootstrap) as admin:
        admin.create_topic(
            "dedup", 1, TopicConfig(durability="flush", segment_bytes=4 * 1024 * 1024)
        )
        admin.wait_until_ready("dedup")
    owner = owner_address(cluster.bootstrap, "dedup", 0)
    first = encode_batch(
        [Record(b"first", timestamp_ms=TS)],
        producer_id=2**40 + 7,
        producer_epoch=0,
        base_sequence=0,
    )
    assert raw_produce(owner, "dedup", 0, first).base_offset == 0
    filler = Record(b"f" * 900_000, timestamp_ms=TS)
    for i in range(110):  # about 99 MB (> 64 MiB + a segment), from another producer
        batch = encode_batch([filler], producer_id=99, producer_epoch=0, base_sequence=i)
        result = raw_produce(owner, "dedup", 0, batch)
        assert result.error.code == ErrorCode.NONE and result.base_offset == i + 1, result

    (old_owner,) = [b for b in cluster.brokers if b.address == owner]
    old_owner.stop()
    deadline = time.monotonic() + 60
    new_owner = owner
    while new_owner == owner and time.monotonic() < deadline:
        time.sleep(0.5)
        with Admin(cluster.bootstrap) as admin:
            new_owner = admin.wait_until_ready("dedup").partitions[0].owner_address or owner
    assert new_owner != owner
    retry = raw_produce(new_owner, "dedup", 0, first)
    assert retry.error.code == ErrorCode.NONE, retry
    assert retry.base_offset == 0  # the original offset, not a second copy at 111
    assert log_ends(cluster.bootstrap, "dedup") == [111]
