"""Real brokers over real gRPC on a real ZooKeeper: crashes, zombies, groups."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from talos.client import Admin, Consumer, Producer, TopicPartition
from talos.config import TopicConfig
from talos.errors import ErrorCode, TalosError
from talos.proto import talos_pb2 as pb
from talos.proto import talos_pb2_grpc as pb_grpc
from talos.record.batch import Record, encode_batch
from talos.storage.hdfs import HdfsLogStore
from talos.storage.segment import parse_segment_name, partition_dir
from talos.testing.cluster import LocalCluster
from talos.testing.zookeeper import ZooKeeperServer

pytestmark = pytest.mark.integration

SESSION_TIMEOUT = 3.0


@pytest.fixture
def three_brokers(
    zk_server: ZooKeeperServer, cluster_name: str, tmp_path: Path, cluster_store: str
) -> Iterator[LocalCluster]:
    cluster = LocalCluster(
        brokers=3,
        data_dir=str(tmp_path / "cluster"),
        cluster=cluster_name,
        session_timeout=SESSION_TIMEOUT,
        zookeeper=zk_server,
        store=cluster_store,
    )
    with cluster:
        yield cluster


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list:
    consumer = Consumer(bootstrap, auto_offset_reset="earliest")
    try:
        partitions = consumer.router.route(topic).partitions
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        messages: list = []
        deadline = time.monotonic() + timeout
        while len(messages) < expected and time.monotonic() < deadline:
            messages.extend(consumer.poll(timeout_s=1.0))
        # one more poll: nothing beyond what is expected may appear
        messages.extend(consumer.poll(timeout_s=0.5))
        return messages
    finally:
        consumer.close()


def owner_of(cluster: LocalCluster, topic: str, partition: int) -> str:
    with Admin(cluster.bootstrap) as admin:
        return admin.describe_topic(topic).partitions[partition].owner_id


def test_produce_and_consume_round_trip(three_brokers: LocalCluster) -> None:
    with Admin(three_brokers.bootstrap) as admin:
        admin.create_topic("orders", 3, TopicConfig(durability="flush"))
        admin.wait_until_ready("orders")
    sent = {}
    with Producer(three_brokers.bootstrap, compression="zstd") as producer:
        futures = [
            producer.send(
                "orders", f"v{i}".encode(), key=f"k{i % 7}".encode(), headers=[("h", b"x")]
            )
            for i in range(300)
        ]
        producer.flush()
        for i, future in enumerate(futures):
            meta = future.result()
            sent[(meta.partition, meta.offset)] = f"v{i}".encode()
    messages = consume_all(three_brokers.bootstrap, "orders", len(sent))
    got = {(m.partition, m.offset): m.value for m in messages}
    assert got == sent
    assert all(m.headers == (("h", b"x"),) for m in messages)
    # one key always lands on one partition
    by_key: dict[bytes | None, set[int]] = {}
    for m in messages:
        by_key.setdefault(m.key, set()).add(m.partition)
    assert all(len(parts) == 1 for parts in by_key.values())


def test_one_producer_id_serves_every_partition(three_brokers: LocalCluster) -> None:
    """A producer's first write to a partition must not cost an id (a ZooKeeper write)."""
    cluster = three_brokers
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("spread", 6)
        admin.wait_until_ready("spread")
    with Producer(cluster.bootstrap, linger_ms=0) as producer:
        sent = [producer.send("spread", f"p{p}".encode(), partition=p) for p in range(6)]
        assert [f.result(timeout=30).offset for f in sent] == [0] * 6
        again = [producer.send("spread", f"p{p}-2".encode(), partition=p) for p in range(6)]
        assert [f.result(timeout=30).offset for f in again] == [1] * 6
        assert producer.metrics["producer_ids"] == 1
    messages = consume_all(cluster.bootstrap, "spread", 12)
    assert sorted(m.value for m in messages) == sorted(
        [f"p{p}".encode() for p in range(6)] + [f"p{p}-2".encode() for p in range(6)]
    )


# A process that sends, closes its producer and then exits; it prints the
# threads still alive after close().
CLOSE_THEN_EXIT = """
import sys, threading
from talos.client import Producer
producer = Producer(sys.argv[1], linger_ms=0)
producer.send("closing", b"x", partition=0).result(timeout=30)
producer.close()
print(sorted(t.name for t in threading.enumerate()))
"""


# A process that exits with its producer open; a hook registered before talos
# is imported runs after talos's own exit hook and prints the threads left.
EXIT_WITHOUT_CLOSE = """
import atexit, threading
atexit.register(lambda: print(sorted(t.name for t in threading.enumerate()), flush=True))
import sys
from talos.client import Producer
producer = Producer(sys.argv[1], linger_ms=0)
producer.send("closing", b"x", partition=0).result(timeout=30)
"""


@pytest.mark.parametrize("script", [CLOSE_THEN_EXIT, EXIT_WITHOUT_CLOSE], ids=["close", "exit"])
def test_grpc_asyncio_shuts_down_while_the_process_runs(cluster: LocalCluster, script: str) -> None:
    """Left to the garbage collector at exit, gRPC's asyncio shutdown can wait forever
    for its poller thread (the likely hang of a chaos client): close(), or the exit hook for a
    producer left open, must finish it first."""
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("closing", 1)
        admin.wait_until_ready("closing")
    done = subprocess.run(
        [sys.executable, "-c", script, cluster.bootstrap],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['MainThread']"


def test_close_that_runs_out_of_time_completes_every_future(cluster: LocalCluster) -> None:
    """Kafka's forced close: what was not acknowledged in time fails, nothing hangs."""
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("stuck", 1)
        admin.wait_until_ready("stuck")
    owner = next(b for b in cluster.brokers if b.broker_id == owner_of(cluster, "stuck", 0))
    producer = Producer(cluster.bootstrap, linger_ms=1, batch_bytes=16384, request_timeout_s=5.0)
    producer.send("stuck", b"warm", partition=0).result(timeout=30)
    owner.signal(signal.SIGSTOP)
    try:
        futures = [producer.send("stuck", b"x" * 10_000, partition=0) for _ in range(20)]
        with pytest.raises(TalosError):
            producer.close(timeout=1.0)
        assert all(f.done() for f in futures)  # one in flight, nineteen never sent
        assert all(isinstance(f.exception(), TalosError) for f in futures)
        assert not [t.name for t in threading.enumerate() if t.name.startswith("talos-producer")]
    finally:
        owner.signal(signal.SIGCONT)


@pytest.mark.parametrize("cluster_store", ["posix", "hdfs"], indirect=True)
def test_kill9_during_produce_loses_nothing_acknowledged(three_brokers: LocalCluster) -> None:
    cluster = three_brokers
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("events", 6)
        admin.wait_until_ready("events")
    victim_id = owner_of(cluster, "events", 0)
    victim = next(b for b in cluster.brokers if b.broker_id == victim_id)

    acked: dict[str, tuple[int, int]] = {}
    failed: list[str] = []
    stop = threading.Event()

    def produce() -> None:
        with Producer(cluster.bootstrap, linger_ms=2, delivery_timeout_s=60) as producer:
            i = 0
            pending = []
            while not stop.is_set():
                value = f"m{i}"
                pending.append(
                    (value, producer.send("events", value.encode(), key=f"k{i % 16}".encode()))
                )
                i += 1
                if len(pending) >= 50:
                    for v, f in pending:
                        try:
                            meta = f.result(timeout=90)
                            acked[v] = (meta.partition, meta.offset)
                        except TalosError:
                            failed.append(v)
                    pending = []
            producer.flush()
            for v, f in pending:
                try:
                    meta = f.result(timeout=90)
                    acked[v] = (meta.partition, meta.offset)
                except TalosError:
                    failed.append(v)

    thread = threading.Thread(target=produce)
    thread.start()
    deadline = time.monotonic() + 30
    while len(acked) < 500 and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.kill()  # SIGKILL mid-stream
    acked_at_kill = len(acked)
    deadline = time.monotonic() + 60
    while len(acked) < acked_at_kill + 1500 and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert len(acked) >= acked_at_kill + 1500, "producing did not resume after the kill"
    assert owner_of(cluster, "events", 0) != victim_id

    messages = consume_all(cluster.bootstrap, "events", len(acked))
    values = [m.value.decode() for m in messages]
    assert len(values) == len(set(values)), "a message was stored twice"
    where = {m.value.decode(): (m.partition, m.offset) for m in messages}
    lost = [v for v in acked if v not in where]
    assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {lost[:5]}"
    assert all(where[v] == acked[v] for v in acked), "a message moved to another offset"
    for partition in {m.partition for m in messages}:
        offsets = sorted(m.offset for m in messages if m.partition == partition)
        assert offsets == list(range(len(offsets))), f"offsets of {partition} are not dense"
        # one producer: within a partition, offsets follow send order, retries included
        in_order = sorted((m for m in messages if m.partition == partition), key=lambda m: m.offset)
        sequence = [int(m.value.decode()[1:]) for m in in_order]
        assert sequence == sorted(sequence), f"partition {partition} is out of send order"


def _raw_produce(address: str, topic: str, partition: int, value: bytes) -> grpc.Future:
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.BrokerStub(channel)
    batch = encode_batch([Record(value=value, timestamp_ms=int(time.time() * 1000))])
    request = pb.ProduceRequest(
        batches=[pb.ProduceBatch(topic=topic, partition=partition, records=batch)]
    )
    return stub.Produce.future(request, timeout=60)


def assert_zombie_segment_closed_by_lease_recovery(cluster: LocalCluster, topic: str) -> None:
    """While the zombie is still frozen, its segment is closed on the NameNode: only the
    takeover's lease recovery can have done that."""
    store = HdfsLogStore(cluster.store)
    try:
        (incarnation,) = store.list_dir(f"{cluster.cluster}/{topic}")
        directory = partition_dir(cluster.cluster, topic, 0, incarnation=incarnation)
        segments = sorted(
            (parsed[1], name)
            for name in store.list_dir(directory)
            if (parsed := parse_segment_name(name)) is not None
        )
        assert len(segments) >= 2, segments
        (_, zombies), (_, newest) = segments[0], segments[-1]
        assert store.is_closed(f"{directory}/{zombies}"), f"{zombies} still open"
        assert not store.is_closed(f"{directory}/{newest}")  # the new owner writes it
    finally:
        store.close()


@pytest.mark.parametrize("cluster_store", ["posix", "hdfs"], indirect=True)
def test_paused_zombie_acknowledges_nothing(three_brokers: LocalCluster) -> None:
    cluster = three_brokers
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("ledger", 1)
        admin.wait_until_ready("ledger")
    with Producer(cluster.bootstrap) as producer:
        for i in range(20):
            producer.send("ledger", f"before-{i}".encode())
    zombie_id = owner_of(cluster, "ledger", 0)
    zombie = next(b for b in cluster.brokers if b.broker_id == zombie_id)
    others = ",".join(b.address for b in cluster.brokers if b is not zombie)

    zombie.signal(signal.SIGSTOP)
    try:
        # A write reaches the zombie while it is frozen; it will run it on resume.
        zombie_call = _raw_produce(zombie.address, "ledger", 0, b"from-the-zombie")
        deadline = time.monotonic() + SESSION_TIMEOUT * 6
        new_owner = zombie_id
        while time.monotonic() < deadline:
            with Admin(others) as admin:
                description = admin.describe_topic("ledger")
            partition = description.partitions[0]
            if partition.owner_id != zombie_id and partition.log_end >= 0:
                new_owner = partition.owner_id
                break
            time.sleep(0.2)
        assert new_owner != zombie_id, "no other broker took over from the frozen one"
        with Producer(others) as producer:
            after = [producer.send("ledger", f"after-{i}".encode()) for i in range(20)]
            producer.flush()
            assert [f.result().offset for f in after] == list(range(20, 40))
        if cluster.store:
            assert_zombie_segment_closed_by_lease_recovery(cluster, "ledger")
    finally:
        zombie.signal(signal.SIGCONT)

    response = None
    # the zombie may also fail the call outright; either way no ack
    with contextlib.suppress(grpc.RpcError):
        response = zombie_call.result(timeout=30)
    if response is not None:
        result = response.results[0]
        # On HDFS the NameNode cut the zombie's pipeline in the takeover's lease
        # recovery, so its hflush fails before it even checks the marker.
        refusals = {ErrorCode.NOT_OWNER} | ({ErrorCode.STORAGE} if cluster.store else set())
        assert result.error.code in refusals, f"zombie acknowledged: {result}"

    messages = consume_all(others, "ledger", 40)
    assert [m.value for m in messages] == [f"before-{i}".encode() for i in range(20)] + [
        f"after-{i}".encode() for i in range(20)
    ]
    assert [m.offset for m in messages] == list(range(40))


def test_producer_moves_on_from_a_frozen_broker(three_brokers: LocalCluster) -> None:
    """Requests waiting on a frozen broker's stream time out and go to the new owner, once."""
    cluster = three_brokers
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("frozen", 1)
        admin.wait_until_ready("frozen")
    frozen_id = owner_of(cluster, "frozen", 0)
    frozen = next(b for b in cluster.brokers if b.broker_id == frozen_id)
    with Producer(cluster.bootstrap, linger_ms=0, request_timeout_s=2.0) as producer:
        for i in range(20):
            producer.send("frozen", f"m{i}".encode())
        producer.flush()  # the stream to the owner is open
        frozen.signal(signal.SIGSTOP)
        try:
            later = [producer.send("frozen", f"m{i}".encode()) for i in range(20, 40)]
            offsets = [f.result(timeout=60).offset for f in later]
        finally:
            frozen.signal(signal.SIGCONT)
    assert offsets == list(range(20, 40))
    assert owner_of(cluster, "frozen", 0) != frozen_id
    messages = consume_all(cluster.bootstrap, "frozen", 40)
    assert [m.value for m in messages] == [f"m{i}".encode() for i in range(40)]


def test_consumer_group_splits_partitions_and_resumes(three_brokers: LocalCluster) -> None:
    cluster = three_brokers
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("jobs", 4, TopicConfig(durability="flush"))
        admin.wait_until_ready("jobs")
    with Producer(cluster.bootstrap) as producer:
        for i in range(200):
            producer.send("jobs", f"a{i}".encode(), partition=i % 4)

    first = Consumer(
        cluster.bootstrap,
        group_id="workers",
        auto_offset_reset="earliest",
        heartbeat_interval_ms=200,
    )
    second = Consumer(
        cluster.bootstrap,
        group_id="workers",
        auto_offset_reset="earliest",
        heartbeat_interval_ms=200,
    )
    try:
        first.subscribe(["jobs"])
        second.subscribe(["jobs"])
        seen: dict[str, list] = {"first": [], "second": []}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen["first"].extend(first.poll(0.2))
            seen["second"].extend(second.poll(0.2))
            if len(first.assignment()) == 2 and len(second.assignment()) == 2:
                values = {m.value for m in seen["first"] + seen["second"]}
                if len(values) == 200:
                    break
        assert sorted(first.assignment() + second.assignment()) == [
            TopicPartition("jobs", p) for p in range(4)
        ]
        assert not set(first.assignment()) & set(second.assignment())
        values = {m.value for m in seen["first"] + seen["second"]}
        assert values == {f"a{i}".encode() for i in range(200)}
        first.commit()
        second.commit()
    finally:
        first.close()
        second.close()

    with Producer(cluster.bootstrap) as producer:
        for i in range(40):
            producer.send("jobs", f"b{i}".encode(), partition=i % 4)
    resumed = Consumer(cluster.bootstrap, group_id="workers", auto_offset_reset="earliest")
    try:
        resumed.subscribe(["jobs"])
        got: list = []
        deadline = time.monotonic() + 30
        while len(got) < 40 and time.monotonic() < deadline:
            got.extend(resumed.poll(0.5))
        got.extend(resumed.poll(0.5))
        assert sorted(m.value for m in got) == sorted(f"b{i}".encode() for i in range(40))
    finally:
        resumed.close()
