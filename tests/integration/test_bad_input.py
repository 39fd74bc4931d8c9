"""Bad input against a real cluster: every case gets a clear error and loses nothing.

Each test first stores a few messages, feeds the bad input through the client,
the CLI or a raw gRPC call (bypassing client-side validation), and then checks
that the error names the parameter or the problem and that every stored
message is still readable at its offset.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from talos.client import Admin, Consumer, Producer, TopicPartition
from talos.config import MAX_OFFSET, TopicConfig
from talos.errors import ErrorCode, InvalidArgument, MessageTooLarge, UnknownTopic
from talos.proto import talos_pb2 as pb
from talos.proto import talos_pb2_grpc as pb_grpc
from talos.record.batch import HEADER_SIZE, Record, encode_batch, iter_batches
from talos.storage.segment import parse_segment_name
from talos.testing.cluster import LocalCluster
from talos.testing.hdfs import hdfs_available
from talos.testing.zookeeper import ZooKeeperServer, free_port

pytestmark = pytest.mark.integration

Stored = list[tuple[int, bytes]]  # (offset, value) of one partition, in offset order


# ---- helpers ----------------------------------------------------------------------


@contextmanager
def raw_stub(address: str) -> Iterator[pb_grpc.BrokerStub]:
    """A bare gRPC stub: requests reach the broker exactly as built, no client checks."""
    channel = grpc.insecure_channel(address)
    try:
        yield pb_grpc.BrokerStub(channel)
    finally:
        channel.close()


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "talos", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def seed(
    bootstrap: str,
    topic: str,
    partitions: int = 1,
    count: int = 4,
    config: TopicConfig | None = None,
) -> dict[int, Stored]:
    """Create ``topic`` and store ``count`` messages in each partition, one batch each."""
    with Admin(bootstrap) as admin:
        admin.create_topic(topic, partitions, config)
        admin.wait_until_ready(topic)
    stored: dict[int, Stored] = {p: [] for p in range(partitions)}
    with Producer(bootstrap, linger_ms=0) as producer:
        for partition in range(partitions):
            for i in range(count):
                value = f"{topic}-p{partition}-m{i}".encode()
                meta = producer.send(topic, value, partition=partition).result(timeout=30)
                stored[partition].append((meta.offset, value))
    for partition, messages in stored.items():
        assert [o for o, _ in messages] == list(range(count)), (partition, messages)
    return stored


def read_partition(bootstrap: str, topic: str, partition: int, expected: int) -> Stored:
    """Everything in the partition from offset 0: waits for ``expected`` messages, then
    polls once more so that extra messages would show up too."""
    tp = TopicPartition(topic, partition)
    consumer = Consumer(bootstrap, fetch_max_wait_ms=100)
    try:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        out: Stored = []
        deadline = time.monotonic() + 20
        while len(out) < expected and time.monotonic() < deadline:
            out += [(m.offset, m.value or b"") for m in consumer.poll(timeout_s=0.5)]
        out += [(m.offset, m.value or b"") for m in consumer.poll(timeout_s=0.3)]
        return out
    finally:
        consumer.close()


def assert_intact(bootstrap: str, topic: str, stored: dict[int, Stored]) -> None:
    for partition, messages in stored.items():
        assert read_partition(bootstrap, topic, partition, len(messages)) == messages


def owner_address(bootstrap: str, topic: str, partition: int) -> str:
    with Admin(bootstrap) as admin:
        address = admin.wait_until_ready(topic).partitions[partition].owner_address
    assert address
    return address


def log_ends(bootstrap: str, topic: str) -> list[int]:
    with Admin(bootstrap) as admin:
        return [p.log_end for p in admin.wait_until_ready(topic).partitions]


def raw_produce(address: str, topic: str, partition: int, records: bytes) -> pb.ProduceResult:
    with raw_stub(address) as stub:
        request = pb.ProduceRequest()
        request.batches.add(topic=topic, partition=partition, records=records)
        response = stub.Produce(request, timeout=30)
    assert len(response.results) == 1
    result: pb.ProduceResult = response.results[0]
    return result


def raw_fetch(address: str, topic: str, partition: int, offset: int) -> pb.FetchResult:
    with raw_stub(address) as stub:
        request = pb.FetchRequest(max_wait_ms=0)
        request.partitions.add(topic=topic, partition=partition, offset=offset, max_bytes=1 << 20)
        response = stub.Fetch(request, timeout=30)
    assert len(response.results) == 1
    result: pb.FetchResult = response.results[0]
    return result


def batch_of(*values: bytes) -> bytes:
    return encode_batch([Record(v, timestamp_ms=1_700_000_000_000) for v in values])


# ---- 1. topic names ---------------------------------------------------------------

BAD_NAMES = ["bad name!", "a" * 250, ".", "..", "with/slash", "ümlaut"]


def test_invalid_topic_names_are_refused_everywhere(cluster: LocalCluster) -> None:
    stored = seed(cluster.bootstrap, "names-ok")

    with Admin(cluster.bootstrap) as admin:
        for name in BAD_NAMES:
            with pytest.raises(InvalidArgument, match=r"^name: ") as caught:
                admin.create_topic(name, 1)
            if len(name) > 249:
                assert "249" in str(caught.value)

    for name in ("bad name!", "a" * 250, ".."):
        result = run_cli("topic", "create", name, "--bootstrap", cluster.bootstrap)
        assert result.returncode == 2, result
        assert "talos: error: name: " in result.stderr, result.stderr
        assert "Traceback" not in result.stderr

    for broker in cluster.brokers:
        with raw_stub(broker.address) as stub:
            for name in [*BAD_NAMES, ""]:
                response = stub.CreateTopic(
                    pb.CreateTopicRequest(name=name, partitions=1), timeout=30
                )
                assert response.error.code == ErrorCode.INVALID_ARGUMENT, (name, response)
                assert "topic: " in response.error.message or "name: " in response.error.message

    with Admin(cluster.bootstrap) as admin:
        assert admin.list_topics() == ["names-ok"]
    assert_intact(cluster.bootstrap, "names-ok", stored)


# ---- 2. partition counts ----------------------------------------------------------


def test_invalid_partition_counts_change_nothing(cluster: LocalCluster) -> None:
    stored = seed(cluster.bootstrap, "counts", partitions=2, count=3)

    with Admin(cluster.bootstrap) as admin:
        for count in (0, -1, 1025):
            with pytest.raises(InvalidArgument, match=r"^partitions: .*1024.*got") as caught:
                admin.create_topic("fresh", count)
            assert str(count) in str(caught.value)
            with pytest.raises(InvalidArgument, match=r"^partitions: "):
                admin.alter_topic("counts", count)
        # the client cannot know the current count; the broker refuses
        for count in (1, 2):
            with pytest.raises(InvalidArgument, match=r"greater than the current 2"):
                admin.alter_topic("counts", count)

    result = run_cli(
        "topic", "create", "fresh", "--partitions", "0", "--bootstrap", cluster.bootstrap
    )
    assert result.returncode == 2, result
    assert "talos: error: partitions: " in result.stderr

    with raw_stub(cluster.brokers[0].address) as stub:
        for count in (0, -1, 1025):
            response = stub.CreateTopic(
                pb.CreateTopicRequest(name="fresh", partitions=count), timeout=30
            )
            assert response.error.code == ErrorCode.INVALID_ARGUMENT, (count, response)
            assert str(count) in response.error.message
        for count in (-1, 0, 1, 2):
            response = stub.AlterTopic(
                pb.AlterTopicRequest(name="counts", partitions=count), timeout=30
            )
            assert response.error.code == ErrorCode.INVALID_ARGUMENT, (count, response)

    with Admin(cluster.bootstrap) as admin:
        assert admin.list_topics() == ["counts"]
        assert len(admin.describe_topic("counts").partitions) == 2
    assert_intact(cluster.bootstrap, "counts", stored)


def test_alter_to_fewer_partitions_names_the_partitions_parameter(
    cluster: LocalCluster,
) -> None:
    seed(cluster.bootstrap, "shrink", partitions=2, count=1)
    with Admin(cluster.bootstrap) as admin, pytest.raises(InvalidArgument) as caught:
        admin.alter_topic("shrink", 1)
    assert str(caught.value).startswith("partitions: "), str(caught.value)


# ---- 3. offsets -------------------------------------------------------------------


def test_negative_and_out_of_range_offsets(cluster: LocalCluster) -> None:
    stored = seed(cluster.bootstrap, "offsets", count=5)
    tp = TopicPartition("offsets", 0)

    consumer = Consumer(cluster.bootstrap, fetch_max_wait_ms=100)
    try:
        consumer.assign([tp])
        consumer.seek(tp, 2)
        with pytest.raises(InvalidArgument, match=r"^offset: .*got -1"):
            consumer.seek(tp, -1)
        assert consumer.position(tp) == 2  # the bad seek did not move it
        got: list[int] = []
        deadline = time.monotonic() + 20
        while len(got) < 3 and time.monotonic() < deadline:
            got += [m.offset for m in consumer.poll(timeout_s=0.5)]
        assert got == [2, 3, 4]
    finally:
        consumer.close()

    owner = owner_address(cluster.bootstrap, "offsets", 0)
    negative = raw_fetch(owner, "offsets", 0, -5)
    assert negative.error.code == ErrorCode.INVALID_ARGUMENT
    assert negative.error.message.startswith("offset: ")
    assert negative.records == b""

    for offset in (6, 10**12, MAX_OFFSET):
        beyond = raw_fetch(owner, "offsets", 0, offset)
        assert beyond.error.code == ErrorCode.OFFSET_OUT_OF_RANGE, (offset, beyond)
        assert beyond.error.log_end == 5
        assert beyond.error.log_start == 0
        assert str(offset) in beyond.error.message
        assert beyond.records == b""

    at_end = raw_fetch(owner, "offsets", 0, 5)  # the log end itself is a valid position
    assert at_end.error.code == ErrorCode.NONE
    assert at_end.records == b""
    assert at_end.log_end == 5

    assert log_ends(cluster.bootstrap, "offsets") == [5]
    assert_intact(cluster.bootstrap, "offsets", stored)


# ---- 4. message size --------------------------------------------------------------


def test_message_over_max_size(cluster: LocalCluster) -> None:
    stored = seed(cluster.bootstrap, "small", count=3, config=TopicConfig(max_message_bytes=1024))

    with Producer(cluster.bootstrap, linger_ms=0) as producer:
        with pytest.raises(MessageTooLarge, match=r"^value: .*1024"):
            producer.send("small", b"v" * 2000)
        with pytest.raises(MessageTooLarge, match=r"^value: "):
            producer.send("small", b"v" * 2000, key=b"k")
        # the producer is still usable, and nothing of the refused sends was stored
        assert producer.send("small", b"after").result(timeout=30).offset == 3
    stored[0].append((3, b"after"))

    owner = owner_address(cluster.bootstrap, "small", 0)
    for records in (batch_of(b"y" * 2000), batch_of(*[b"z" * 300] * 5)):
        assert len(records) > 1024
        result = raw_produce(owner, "small", 0, records)
        assert result.error.code == ErrorCode.MESSAGE_TOO_LARGE, result
        assert "1024" in result.error.message
    assert log_ends(cluster.bootstrap, "small") == [4]

    # control: the same path takes a batch within the limit, after the stored ones
    accepted = raw_produce(owner, "small", 0, batch_of(b"fits"))
    assert accepted.error.code == ErrorCode.NONE, accepted
    assert accepted.base_offset == 4
    assert_intact(cluster.bootstrap, "small", {0: [*stored[0], (4, b"fits")]})


def test_messages_within_max_size_are_accepted_when_batched(cluster: LocalCluster) -> None:
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("batched", 1, TopicConfig(max_message_bytes=1024))
        admin.wait_until_ready("batched")
    values = [bytes([65 + i]) * 300 for i in range(5)]  # each fits; all together do not
    with Producer(cluster.bootstrap, linger_ms=200) as producer:
        futures = [producer.send("batched", value) for value in values]
        producer.flush()
        offsets = [future.result(timeout=30).offset for future in futures]
    assert offsets == [0, 1, 2, 3, 4]
    assert_intact(cluster.bootstrap, "batched", {0: list(enumerate(values))})


def test_waiting_from_a_send_callback_is_refused_not_deadlocked(cluster: LocalCluster) -> None:
    """Callbacks run on the thread that delivers acknowledgements: flush() there would hang."""
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("callbacks", 1)
        admin.wait_until_ready("callbacks")
    refused: list[BaseException] = []
    with Producer(cluster.bootstrap, linger_ms=0) as producer:

        def flush_from_callback(_future: object) -> None:
            try:
                producer.flush(timeout=5)
            except InvalidArgument as exc:
                refused.append(exc)

        producer.send("callbacks", b"first").add_done_callback(flush_from_callback)
        producer.flush(timeout=30)
        assert producer.send("callbacks", b"second").result(timeout=30).offset == 1
    assert len(refused) == 1
    assert str(refused[0]).startswith("flush: cannot wait from a send callback")


# ---- 5. unknown topic -------------------------------------------------------------


def test_unknown_topic(cluster: LocalCluster) -> None:
    stored = seed(cluster.bootstrap, "known", count=3)

    with Producer(cluster.bootstrap, linger_ms=0) as producer:
        started = time.monotonic()
        with pytest.raises(UnknownTopic, match="missing"):
            producer.send("missing", b"value")
        assert time.monotonic() - started < 10

    for broker in cluster.brokers:
        result = raw_produce(broker.address, "missing", 0, batch_of(b"value"))
        assert result.error.code == ErrorCode.UNKNOWN_TOPIC, result
        assert "missing" in result.error.message
        fetched = raw_fetch(broker.address, "missing", 0, 0)
        assert fetched.error.code == ErrorCode.UNKNOWN_TOPIC, fetched
        # a partition the known topic does not have
        for partition in (1, -1):
            result = raw_produce(broker.address, "known", partition, batch_of(b"value"))
            assert result.error.code == ErrorCode.INVALID_ARGUMENT, result
            assert result.error.message.startswith("partition: ")
            fetched = raw_fetch(broker.address, "known", partition, 0)
            assert fetched.error.code == ErrorCode.INVALID_ARGUMENT, fetched

    with (
        Producer(cluster.bootstrap, linger_ms=0) as producer,
        pytest.raises(InvalidArgument, match=r"^partition: .*got 1"),
    ):
        producer.send("known", b"value", partition=1)

    with Admin(cluster.bootstrap) as admin:
        with pytest.raises(UnknownTopic, match="missing"):
            admin.delete_topic("missing")
        assert admin.list_topics() == ["known"]
    assert_intact(cluster.bootstrap, "known", stored)


# ---- 6. corrupt batches on the wire -----------------------------------------------


def test_corrupt_and_truncated_batches_are_refused(cluster: LocalCluster) -> None:
    stored = seed(cluster.bootstrap, "crc", count=4)
    owner = owner_address(cluster.bootstrap, "crc", 0)
    valid = batch_of(b"first-new", b"second-new", b"third-new")

    flipped = bytearray(valid)
    flipped[HEADER_SIZE + 3] ^= 0xFF  # inside the records
    stamp = bytearray(valid)
    stamp[23] ^= 0x01  # first_timestamp: in the header, under the CRC
    cases = {
        "records byte flipped": (bytes(flipped), "CRC"),
        "header byte flipped": (bytes(stamp), "CRC"),
        "truncated records": (valid[:-4], "truncated"),
        "only part of the header": (valid[:40], "header"),
        "trailing garbage": (valid + b"\x00" * 8, "bytes"),
        "empty": (b"", "header"),
    }
    for what, (records, problem) in cases.items():
        result = raw_produce(owner, "crc", 0, records)
        assert result.error.code == ErrorCode.CORRUPT_BATCH, (what, result)
        assert problem in result.error.message, (what, result.error.message)

    assert log_ends(cluster.bootstrap, "crc") == [4]
    assert_intact(cluster.bootstrap, "crc", stored)

    # control: the untouched batch is accepted, right after the stored messages
    accepted = raw_produce(owner, "crc", 0, valid)
    assert accepted.error.code == ErrorCode.NONE, accepted
    assert accepted.base_offset == 4
    added = [(4, b"first-new"), (5, b"second-new"), (6, b"third-new")]
    assert_intact(cluster.bootstrap, "crc", {0: [*stored[0], *added]})


# ---- 7. and 8. a broker that cannot start -----------------------------------------


def test_broker_exits_when_zookeeper_is_unreachable(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    result = run_cli(
        "broker",
        "--zookeeper",
        f"127.0.0.1:{port}",
        "--cluster",
        "x",
        "--id",
        "b1",
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--data-dir",
        str(tmp_path / "store"),
        "--connect-timeout",
        "2",
        timeout=30,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result
    assert elapsed < 20
    assert "ZooKeeper" in result.stderr
    assert f"127.0.0.1:{port}" in result.stderr
    assert "talos: error: CoordinationError" in result.stderr
    assert "Traceback" not in result.stderr


def test_broker_exits_when_data_dir_is_a_file(tmp_path: Path, zk_server: ZooKeeperServer) -> None:
    not_a_dir = tmp_path / "store"
    not_a_dir.write_bytes(b"precious bytes")
    started = time.monotonic()
    result = run_cli(
        "broker",
        "--zookeeper",
        zk_server.address,
        "--cluster",
        "file-store",
        "--id",
        "b1",
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--data-dir",
        str(not_a_dir),
        "--connect-timeout",
        "5",
        timeout=30,
    )
    assert result.returncode == 1, result
    assert time.monotonic() - started < 20
    assert str(not_a_dir) in result.stderr, result.stderr
    assert "talos: error: StorageError" in result.stderr
    assert "Traceback" not in result.stderr
    assert not_a_dir.read_bytes() == b"precious bytes"


def test_broker_exits_when_the_namenode_is_unreachable(
    tmp_path: Path, zk_server: ZooKeeperServer
) -> None:
    if hdfs_available() is not None:
        pytest.skip(f"needs the Hadoop client: {hdfs_available()}")
    dead = free_port()
    result = run_cli(
        "broker",
        "--zookeeper",
        zk_server.address,
        "--cluster",
        "dead-hdfs",
        "--id",
        "b1",
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--store",
        f"hdfs://127.0.0.1:{dead}/talos",
        timeout=120,
    )
    assert result.returncode == 1, result
    assert f"hdfs://127.0.0.1:{dead}/talos" in result.stderr, result.stderr
    assert "connection refused" in result.stderr
    assert "talos: error: StorageError" in result.stderr
    assert "Traceback" not in result.stderr


# ---- 9. a torn segment after a crash ----------------------------------------------


def _open_segment(cluster: LocalCluster, topic: str) -> Path:
    # one incarnation: <cluster>/<topic>/<incarnation>/<partition>
    (directory,) = (Path(cluster.store_dir) / cluster.cluster / topic).glob("*/0")
    segments = [p for p in directory.iterdir() if parse_segment_name(p.name) is not None]
    assert len(segments) == 1, sorted(p.name for p in directory.iterdir())
    return segments[0]


def _wait_for_new_owner(bootstrap: str, topic: str, old_owner: str) -> None:
    deadline = time.monotonic() + 40
    with Admin(bootstrap) as admin:
        while True:
            partition = admin.describe_topic(topic).partitions[0]
            if partition.owner_id not in ("", old_owner) and partition.log_end >= 0:
                return
            assert time.monotonic() < deadline, f"no new owner for {topic}/0: {partition}"
            time.sleep(0.2)


@pytest.mark.parametrize(
    "damage",
    ["cut-in-last-header", "cut-in-last-records", "garbage-appended", "stale-batch-appended"],
)
def test_torn_segment_recovers_to_last_complete_batch(cluster: LocalCluster, damage: str) -> None:
    topic = "torn"
    count = 5
    stored = seed(cluster.bootstrap, topic, count=count, config=TopicConfig(durability="sync"))
    with Admin(cluster.bootstrap) as admin:
        old_owner = admin.describe_topic(topic).partitions[0].owner_id
    victim = next(b for b in cluster.brokers if b.broker_id == old_owner)
    victim.kill()

    segment = _open_segment(cluster, topic)
    data = segment.read_bytes()
    batches = list(iter_batches(data))
    assert len(batches) == count  # one batch per message
    assert batches[-1][0] + batches[-1][1].total_size == len(data)
    last_position, last = batches[-1]
    if damage == "cut-in-last-header":
        os.truncate(segment, last_position + HEADER_SIZE // 2)
        survivors = stored[0][:-1]
    elif damage == "cut-in-last-records":
        os.truncate(segment, last_position + last.total_size - 3)
        survivors = stored[0][:-1]
    elif damage == "garbage-appended":
        with open(segment, "ab") as f:
            f.write(b"\x01" + b"\xff" * 120)  # looks like a batch start, then nonsense
        survivors = stored[0]
    else:  # a complete batch with a valid CRC, but its offset does not follow on
        with open(segment, "ab") as f:
            f.write(data[: batches[0][1].total_size])
        survivors = stored[0]
    kept = len(survivors)

    _wait_for_new_owner(cluster.bootstrap, topic, old_owner)
    assert log_ends(cluster.bootstrap, topic) == [kept]
    assert read_partition(cluster.bootstrap, topic, 0, kept) == survivors

    more: Stored = []
    with Producer(cluster.bootstrap, linger_ms=0) as producer:
        for i in range(3):
            value = f"after-{i}".encode()
            meta = producer.send(topic, value, partition=0).result(timeout=30)
            more.append((meta.offset, value))
    assert [o for o, _ in more] == [kept, kept + 1, kept + 2]  # dense, nothing reused
    assert_intact(cluster.bootstrap, topic, {0: [*survivors, *more]})


def test_starting_a_running_cluster_again_is_refused(cluster: LocalCluster) -> None:
    """A second start() used to orphan the first ZooKeeper process."""
    with pytest.raises(InvalidArgument, match="already started"):
        cluster.start()
    assert len(cluster.brokers) == 2
    assert all(broker.alive() for broker in cluster.brokers)
    assert cluster.zookeeper.process is not None and cluster.zookeeper.process.poll() is None
