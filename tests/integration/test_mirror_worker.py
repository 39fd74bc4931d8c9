"""Mirror workers between two real datacenters: two ZooKeepers, two clusters of real
brokers, and ``talos mirror run`` as a real process that the tests kill -9.

Every test ends with the same check: each target partition equals its source
batch for batch, offset for offset (no gap, no duplicate), byte for byte in
the records, with the origin stamped.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mirror.reader import ReadResult, StoreReader
from mirror.state import promote
from talos.client.connection import Connections
from talos.client.routing import Router, partition_error
from talos.config import TopicConfig
from talos.coord.partition_state import PartitionState, PartitionStateStore
from talos.coord.topics import TopicStore
from talos.coord.zk import connect, loads
from talos.errors import TalosError
from talos.proto import talos_pb2 as pb
from talos.record.batch import (
    HEADER_SIZE,
    BatchHeader,
    Record,
    decode_records,
    encode_batch,
    iter_batches,
)
from talos.record.codec import Codec
from talos.storage.posix import PosixLogStore
from talos.storage.segment import fence_marker_path, segment_path
from talos.storage.store import Durability
from talos.testing.cluster import LocalCluster
from talos.testing.hdfs import MiniDfsCluster
from talos.testing.zookeeper import ZooKeeperServer, zookeeper_available

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


# ---- two datacenters ---------------------------------------------------------------------


@dataclass
class DC:
    name: str
    zookeeper: ZooKeeperServer
    cluster: LocalCluster

    @property
    def cluster_name(self) -> str:
        return self.cluster.cluster

    def ensure_brokers(self) -> None:
        """Restart brokers a test killed, so the next test starts with a full DC."""
        for broker in self.cluster.brokers:
            if not broker.alive():
                broker.start()
        self.cluster.wait_for_brokers(len(self.cluster.brokers))


def two_dcs(base: Path, stores: dict[str, str]) -> Iterator[tuple[DC, DC]]:
    """DCs A and B, each its own ZooKeeper and two brokers; ``stores`` maps a DC to its
    log store URI ("" for posix in its data dir)."""
    reason = zookeeper_available()
    if reason is not None:
        pytest.skip(f"needs ZooKeeper: {reason}")
    made: list[DC] = []
    try:
        for name in ("A", "B"):
            zk = ZooKeeperServer(data_dir=str(base / f"zk-{name}"))
            zk.start()
            cluster = LocalCluster(
                brokers=2,
                data_dir=str(base / f"dc-{name}"),
                cluster=f"dc-{name.lower()}",
                session_timeout=3.0,
                zookeeper=zk,
                store=stores.get(name, ""),
            )
            made.append(DC(name, zk, cluster))
            cluster.start()
        yield made[0], made[1]
    finally:
        for dc in made:
            dc.cluster.stop()
            dc.zookeeper.stop()


@pytest.fixture(scope="module")
def dcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DC, DC]]:
    yield from two_dcs(tmp_path_factory.mktemp("mirror-dcs"), {})


@pytest.fixture(scope="module")
def hdfs_dcs(
    tmp_path_factory: pytest.TempPathFactory, hdfs_cluster: MiniDfsCluster
) -> Iterator[tuple[DC, DC]]:
    """Both DCs' logs on HDFS (two roots of the session's MiniDFSCluster)."""
    run = uuid.uuid4().hex[:8]
    stores = {name: hdfs_cluster.url(f"mirror-{run}/{name}") for name in ("A", "B")}
    yield from two_dcs(tmp_path_factory.mktemp("mirror-hdfs-dcs"), stores)


@pytest.fixture
def fresh(dcs: tuple[DC, DC]) -> tuple[DC, DC]:
    for dc in dcs:
        dc.ensure_brokers()
    return dcs


@pytest.fixture(params=["posix", "hdfs"])
def fresh_any_store(request: pytest.FixtureRequest) -> tuple[DC, DC]:
    """``fresh`` on posix, then the same on HDFS."""
    pair: tuple[DC, DC] = request.getfixturevalue("dcs" if request.param == "posix" else "hdfs_dcs")
    for dc in pair:
        dc.ensure_brokers()
    return pair


def write_topology(path: Path, a: DC, b: DC, links: list[dict[str, object]]) -> Path:
    lines = []
    for dc in (a, b):
        brokers = ", ".join(f'"{x.address}"' for x in dc.cluster.brokers)
        lines += [
            f"[dc.{dc.name}]",
            f'zookeeper = "{dc.zookeeper.address}"',
            f'cluster = "{dc.cluster_name}"',
            f'store = "{dc.cluster.store_uri}"',
            f"brokers = [{brokers}]",
            "",
        ]
    for link in links:
        lines.append("[[link]]")
        for key, value in link.items():
            if isinstance(value, list):
                rendered = "[" + ", ".join(f'"{v}"' for v in value) + "]"
            elif isinstance(value, str):
                rendered = f'"{value}"'
            else:
                rendered = str(value)
            lines.append(f"{key} = {rendered}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


# ---- the worker as a process -------------------------------------------------------------


@dataclass
class MirrorProcess:
    topology: Path
    link: str
    worker_id: str
    log_path: Path
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        args = [
            sys.executable,
            "-m",
            "talos",
            "mirror",
            "run",
            "--topology",
            str(self.topology),
            "--link",
            self.link,
            "--worker-id",
            self.worker_id,
            "--session-timeout",
            "4",
            *self.extra,
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )
        self.starts += 1

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> int | None:
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[MirrorProcess]]:
    started: list[MirrorProcess] = []
    yield started
    for worker in started:
        worker.stop()


def spawn(
    started: list[MirrorProcess],
    topology: Path,
    link: str,
    worker_id: str,
    extra: list[str] | None = None,
) -> MirrorProcess:
    worker = MirrorProcess(
        topology, link, worker_id, topology.parent / f"mirror-{worker_id}.log", extra or []
    )
    worker.start()
    started.append(worker)
    return worker


# ---- producing and reading raw batches ---------------------------------------------------


class Client:
    """Raw Produce/Fetch/Metadata against one DC, routing by the partition owner."""

    def __init__(self, dc: DC) -> None:
        self.connections = Connections(dc.cluster.bootstrap, request_timeout=10.0)
        self.router = Router(self.connections)

    def close(self) -> None:
        self.connections.close()

    def produce(self, topic: str, partition: int, batch: bytes, deadline_s: float = 30.0) -> int:
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                address = self.router.owner_address(topic, partition)
                response: pb.ProduceResponse = self.connections.call(
                    address,
                    "Produce",
                    pb.ProduceRequest(
                        batches=[pb.ProduceBatch(topic=topic, partition=partition, records=batch)]
                    ),
                )
                error = partition_error(response.results[0].error)
                if error is None:
                    return int(response.results[0].base_offset)
                if not error.retriable:
                    raise error
            except TalosError as exc:
                if not exc.retriable or time.monotonic() > deadline:
                    raise
            self.router.mark_stale(topic)
            time.sleep(0.05)

    def log_end(self, topic: str, partition: int) -> int:
        """The owner's log end; -1 while unknown."""
        try:
            address = self.router.owner_address(topic, partition)
            response: pb.ListOffsetsResponse = self.connections.call(
                address,
                "ListOffsets",
                pb.ListOffsetsRequest(topic=topic, partition=partition, timestamp_ms=-1),
                timeout=5.0,
            )
        except TalosError:
            self.router.mark_stale(topic)
            return -1
        if response.error.code:
            self.router.mark_stale(topic)
            return -1
        return int(response.offset)

    def read_all(self, topic: str, partition: int) -> list[tuple[BatchHeader, bytes]]:
        end = -1
        deadline = time.monotonic() + 30
        while end < 0:
            end = self.log_end(topic, partition)
            assert time.monotonic() < deadline, f"{topic}/{partition} has no owner"
            if end < 0:
                time.sleep(0.1)
        out: list[tuple[BatchHeader, bytes]] = []
        offset = 0
        while offset < end:
            address = self.router.owner_address(topic, partition)
            response: pb.FetchResponse = self.connections.call(
                address,
                "Fetch",
                pb.FetchRequest(
                    partitions=[
                        pb.FetchPartition(
                            topic=topic, partition=partition, offset=offset, max_bytes=4 << 20
                        )
                    ]
                ),
            )
            result = response.results[0]
            assert not result.error.code, result.error.message
            data = bytes(result.records)
            assert data, f"{topic}/{partition}: nothing at {offset} below the end {end}"
            for position, header in iter_batches(data):
                out.append((header, data[position : position + header.total_size]))
                offset = header.next_offset
        return out


def make_batch(rng: random.Random, tag: str, seq: int) -> bytes:
    """A batch with keys, values, headers, timestamps; each codec in turn."""
    count = rng.randint(1, 20)
    now = int(time.time() * 1000)
    records = [
        Record(
            value=f"{tag}-{seq}-{i}-".encode() + rng.randbytes(rng.randint(0, 300)),
            key=None if i % 5 == 0 else f"k{rng.randint(0, 50)}".encode(),
            headers=(("h", f"{seq}".encode()), ("n", None)) if i % 3 == 0 else (),
            timestamp_ms=now + i,
        )
        for i in range(count)
    ]
    codec = (Codec.NONE, Codec.ZSTD, Codec.LZ4)[seq % 3]
    return encode_batch(records, codec=codec, producer_id=-1)


class Stream(threading.Thread):
    """Produces batches to every partition of a topic until stopped."""

    def __init__(self, dc: DC, topic: str, partitions: int, pause_s: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.client = Client(dc)
        self.topic = topic
        self.partitions = partitions
        self.pause_s = pause_s
        self.halt = threading.Event()
        self.sent = 0
        self.failures: list[str] = []
        self.rng = random.Random(f"{topic}")

    def run(self) -> None:
        seq = 0
        try:
            while not self.halt.is_set():
                partition = seq % self.partitions
                try:
                    self.client.produce(
                        self.topic, partition, make_batch(self.rng, self.topic, seq)
                    )
                    self.sent += 1
                except TalosError as exc:  # a failover longer than the produce deadline
                    self.failures.append(str(exc))
                seq += 1
                if self.pause_s:
                    time.sleep(self.pause_s)
        finally:
            self.client.close()

    def finish(self) -> None:
        self.halt.set()
        self.join(timeout=60)


def create_topic(dc: DC, name: str, partitions: int) -> None:
    zk = connect(dc.zookeeper.address, dc.cluster_name)
    try:
        TopicStore(zk).create(
            name,
            partitions,
            TopicConfig(segment_bytes=256 * 1024, durability="flush"),
            int(time.time() * 1000),
        )
    finally:
        zk.stop()
        zk.close()


def wait_caught_up(
    source: DC,
    target: DC,
    pairs: list[tuple[str, str]],
    partitions: int,
    timeout: float = 60.0,
    workers: list[MirrorProcess] | None = None,
) -> None:
    src, dst = Client(source), Client(target)
    try:
        deadline = time.monotonic() + timeout
        while True:
            behind = []
            for source_topic, target_topic in pairs:
                for p in range(partitions):
                    s, t = src.log_end(source_topic, p), dst.log_end(target_topic, p)
                    if s < 0 or s != t:
                        behind.append(f"{target_topic}/{p}: source {s} target {t}")
            if not behind:
                return
            if time.monotonic() > deadline:
                logs = "\n".join(w.tail() for w in workers or [])
                raise AssertionError(f"mirror did not catch up: {behind}\n{logs}")
            time.sleep(0.2)
    finally:
        src.close()
        dst.close()


def assert_identical(
    source: DC, target: DC, source_topic: str, target_topic: str, partitions: int
) -> int:
    """Batch for batch and offset for offset; returns the number of records compared."""
    src, dst = Client(source), Client(target)
    total = 0
    try:
        for p in range(partitions):
            left = src.read_all(source_topic, p)
            right = dst.read_all(target_topic, p)
            assert [h.base_offset for h, _ in left] == [h.base_offset for h, _ in right], (
                f"{target_topic}/{p}: batch offsets differ"
            )
            expected = 0
            for (sh, sb), (th, tb) in zip(left, right, strict=True):
                assert sh.base_offset == expected, f"{source_topic}/{p}: gap at {expected}"
                expected = sh.next_offset
                # Everything but the provenance (and so the CRC) is the source's, byte for byte.
                assert sh._replace(crc=0, origin_cluster="", origin_offset=0) == th._replace(
                    crc=0, origin_cluster="", origin_offset=0
                )
                assert sb[HEADER_SIZE:] == tb[HEADER_SIZE:]
                assert th.origin_cluster == (sh.origin_cluster or source.name)
                assert th.origin_offset == sh.base_offset
                records = decode_records(tb)
                assert [(r.offset, r.key, r.value, r.headers, r.timestamp_ms) for r in records] == [
                    (r.offset, r.key, r.value, r.headers, r.timestamp_ms)
                    for r in decode_records(sb)
                ]
                total += len(records)
        return total
    finally:
        src.close()
        dst.close()


def read_progress(dc: DC, link: str) -> dict[str, dict[str, object]]:
    zk = connect(dc.zookeeper.address, dc.cluster_name)
    try:
        out = {}
        root = f"/mirror/{link}/progress"
        for topic in zk.get_children(root):
            for partition in zk.get_children(f"{root}/{topic}"):
                data, _ = zk.get(f"{root}/{topic}/{partition}")
                out[f"{topic}/{partition}"] = loads(data, "progress")
        return out
    finally:
        zk.stop()
        zk.close()


# ---- tests -------------------------------------------------------------------------------


def owner_of(dc: DC, topic: str, partition: int) -> str:
    client = Client(dc)
    try:
        deadline = time.monotonic() + 20
        while True:
            client.router.mark_stale(topic)
            owner = client.router.route(topic).owners[partition]
            if owner and client.log_end(topic, partition) >= 0:
                return owner
            assert time.monotonic() < deadline, f"{topic}/{partition} has no owner in {dc.name}"
            time.sleep(0.1)
    finally:
        client.close()


def kill_broker(dc: DC, broker_id: str) -> None:
    broker = next(b for b in dc.cluster.brokers if b.broker_id == broker_id)
    broker.kill()


def target_total(target: DC, topic: str, partitions: int) -> int:
    client = Client(target)
    try:
        return sum(max(client.log_end(topic, p), 0) for p in range(partitions))
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.timeout(600)  # the HDFS run starts a MiniDFSCluster and 4 JVM-backed brokers
def test_kill_9_the_worker_many_times_loses_and_duplicates_nothing(
    fresh_any_store: tuple[DC, DC], tmp_path: Path, workers: list[MirrorProcess]
) -> None:
    a, b = fresh_any_store
    on_hdfs = bool(a.cluster.store)
    # On HDFS every restart starts a JVM (the store reader): fewer rounds, longer waits.
    rounds, resume_s = (8, 90.0) if on_hdfs else (22, 30.0)
    create_topic(a, "k9", 3)
    # A quota a little above the produce rate: the worker is busy copying most of the time,
    # so most kills land in the middle of the copy loop.
    topology = write_topology(
        tmp_path / "topology.toml",
        a,
        b,
        [{"source": "A", "target": "B", "topics": ["k9"], "bandwidth_mb_s": 0.6}],
    )
    stream = Stream(a, "k9", 3)
    stream.start()
    # Small reads and appends: many MirrorAppend calls, so kills land in the middle of them.
    worker = spawn(
        workers, topology, "A:B", "w-k9", ["--read-bytes", "65536", "--append-bytes", "16384"]
    )
    rng = random.Random(20)
    kills = mid_copy = 0
    try:
        for i in range(rounds):
            before = target_total(b, "k9", 3)
            if i % 4 == 3:
                time.sleep(rng.uniform(0.0, 0.6))  # while it starts up
            else:
                # once it is copying again (there is always a backlog: it was down)
                deadline = time.monotonic() + resume_s
                while target_total(b, "k9", 3) <= before:
                    assert time.monotonic() < deadline, worker.tail()
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.0, 0.4))
                mid_copy += 1
            assert worker.alive(), worker.tail()
            worker.kill()
            kills += 1
            worker.start()
    finally:
        stream.finish()
    wait_caught_up(a, b, [("k9", "k9")], 3, timeout=resume_s * 2, workers=[worker])
    records = assert_identical(a, b, "k9", "k9", 3)
    assert kills == rounds and mid_copy == len([i for i in range(rounds) if i % 4 != 3])
    assert records > 1000 and not stream.failures

    time.sleep(1.5)  # one more progress write after catching up
    progress = read_progress(b, "A:B")
    client = Client(a)
    try:
        for p in range(3):
            entry = progress[f"k9/{p}"]
            assert entry["worker"] == "w-k9"
            assert entry["target_end"] == client.log_end("k9", p)
            assert entry["state"] == "ok" and entry["error"] == ""
            assert entry["lag_ms"] == 0
    finally:
        client.close()
    assert worker.stop() == 0


@pytest.mark.parametrize("reader", ["store", "fetch"])
def test_source_broker_failover_during_mirroring(
    fresh: tuple[DC, DC], tmp_path: Path, workers: list[MirrorProcess], reader: str
) -> None:
    a, b = fresh
    topic = f"sf-{reader}"
    create_topic(a, topic, 2)
    topology = write_topology(
        tmp_path / "topology.toml", a, b, [{"source": "A", "target": "B", "topics": [topic]}]
    )
    stream = Stream(a, topic, 2)
    stream.start()
    worker = spawn(workers, topology, "A:B", f"w-sf-{reader}", ["--reader", reader])
    try:
        time.sleep(2)
        victim = owner_of(a, topic, 0)
        kill_broker(a, victim)
        time.sleep(6)  # the other broker takes over (session timeout 3 s) while we produce
    finally:
        stream.finish()
    wait_caught_up(a, b, [(topic, topic)], 2, workers=[worker])
    assert owner_of(a, topic, 0) != victim
    assert assert_identical(a, b, topic, topic, 2) > 0
    assert not stream.failures
    assert worker.stop() == 0


def test_target_broker_failover_during_mirroring(
    fresh: tuple[DC, DC], tmp_path: Path, workers: list[MirrorProcess]
) -> None:
    a, b = fresh
    create_topic(a, "tf", 2)
    topology = write_topology(
        tmp_path / "topology.toml", a, b, [{"source": "A", "target": "B", "topics": ["tf"]}]
    )
    stream = Stream(a, "tf", 2)
    stream.start()
    worker = spawn(workers, topology, "A:B", "w-tf")
    try:
        time.sleep(2)
        victim = owner_of(b, "tf", 0)
        kill_broker(b, victim)
        time.sleep(6)
    finally:
        stream.finish()
    wait_caught_up(a, b, [("tf", "tf")], 2, workers=[worker])
    assert owner_of(b, "tf", 0) != victim
    assert assert_identical(a, b, "tf", "tf", 2) > 0
    assert worker.stop() == 0


def test_source_partitions_grow_while_mirroring_and_foreign_topics_are_refused(
    fresh: tuple[DC, DC], tmp_path: Path, workers: list[MirrorProcess]
) -> None:
    a, b = fresh
    create_topic(a, "grow", 2)
    create_topic(a, "clash", 1)
    create_topic(b, "clash", 1)  # a topic of B's own with the name the mirror would take
    Client(a).produce("clash", 0, make_batch(random.Random(1), "clash", 0))
    topology = write_topology(
        tmp_path / "topology.toml",
        a,
        b,
        [{"source": "A", "target": "B", "topics": ["grow", "clash"]}],
    )
    stream = Stream(a, "grow", 2)
    stream.start()
    worker = spawn(workers, topology, "A:B", "w-grow")
    try:
        time.sleep(2)
        zk = connect(a.zookeeper.address, a.cluster_name)
        try:
            TopicStore(zk).add_partitions("grow", 4)
        finally:
            zk.stop()
            zk.close()
        stream.partitions = 4
        time.sleep(3)
    finally:
        stream.finish()
    wait_caught_up(a, b, [("grow", "grow")], 4, workers=[worker])
    assert assert_identical(a, b, "grow", "grow", 4) > 0
    zk = connect(b.zookeeper.address, b.cluster_name)
    try:
        meta = TopicStore(zk).get("grow")
        assert meta.partitions == 4
        assert meta.mirror is not None and meta.mirror.source_topic == "grow"
        assert TopicStore(zk).get("clash").mirror is None
    finally:
        zk.stop()
        zk.close()
    clash = read_progress(b, "A:B")["clash/0"]
    assert clash["state"] == "error" and "not a mirror" in str(clash["error"])
    assert target_total(b, "clash", 1) == 0  # nothing was written into B's own topic

    # Promotion (failover to B) fences the link: the worker stops copying that topic.
    zk = connect(b.zookeeper.address, b.cluster_name)
    try:
        topics = TopicStore(zk)
        topics.update_mirror("grow", lambda m: None if m is None else promote(m, 1))
    finally:
        zk.stop()
        zk.close()
    promoted_end = target_total(b, "grow", 4)
    producer = Client(a)
    try:
        for p in range(4):
            producer.produce("grow", p, make_batch(random.Random(p), "late", p))
    finally:
        producer.close()
    deadline = time.monotonic() + 20
    while True:
        states = [read_progress(b, "A:B")[f"grow/{p}"] for p in range(4)]
        if all(s["state"] == "error" and "promoted" in str(s["error"]) for s in states):
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.2)
    assert target_total(b, "grow", 4) == promoted_end
    assert worker.stop() == 0


def topic_names(dc: DC) -> list[str]:
    zk = connect(dc.zookeeper.address, dc.cluster_name)
    try:
        return TopicStore(zk).list()
    finally:
        zk.stop()
        zk.close()


@pytest.mark.parametrize("naming", ["identity", "prefixed"])
def test_active_active_has_no_loops(
    fresh: tuple[DC, DC], tmp_path: Path, workers: list[MirrorProcess], naming: str
) -> None:
    a, b = fresh
    tag = f"aa-{naming}"
    create_topic(a, f"{tag}-a", 2)
    create_topic(b, f"{tag}-b", 2)
    selector = [f"*{tag}-*"]  # would also match the mirrors ("A.aa-..."): the rules must hold
    topology = write_topology(
        tmp_path / "topology.toml",
        a,
        b,
        [
            {"source": "A", "target": "B", "topics": selector, "naming": naming},
            {"source": "B", "target": "A", "topics": selector, "naming": naming},
        ],
    )
    in_b = f"A.{tag}-a" if naming == "prefixed" else f"{tag}-a"
    in_a = f"B.{tag}-b" if naming == "prefixed" else f"{tag}-b"
    streams = [Stream(a, f"{tag}-a", 2), Stream(b, f"{tag}-b", 2)]
    for stream in streams:
        stream.start()
    ab = spawn(workers, topology, "A:B", f"w-{tag}-ab")
    ba = spawn(workers, topology, "B:A", f"w-{tag}-ba")
    try:
        time.sleep(3)
    finally:
        for stream in streams:
            stream.finish()
    wait_caught_up(a, b, [(f"{tag}-a", in_b)], 2, workers=[ab, ba])
    wait_caught_up(b, a, [(f"{tag}-b", in_a)], 2, workers=[ab, ba])
    time.sleep(3)  # longer than a rescan: a loop would have shown by now
    assert assert_identical(a, b, f"{tag}-a", in_b, 2) > 0
    assert assert_identical(b, a, f"{tag}-b", in_a, 2) > 0
    # Exactly one copy of each topic per DC: no B.A.x chains, nothing copied back.
    assert sorted(t for t in topic_names(a) if tag in t) == sorted([f"{tag}-a", in_a])
    assert sorted(t for t in topic_names(b) if tag in t) == sorted([f"{tag}-b", in_b])
    # The sources hold only what their own producers wrote.
    for dc, topic, stream in ((a, f"{tag}-a", streams[0]), (b, f"{tag}-b", streams[1])):
        batches = [h for p in range(2) for h, _ in Client(dc).read_all(topic, p)]
        assert len(batches) == stream.sent
        assert all(h.origin_cluster == "" for h in batches)
    for dc, link, mirrored in ((b, "A:B", in_b), (a, "B:A", in_a)):
        progress = {k: v for k, v in read_progress(dc, link).items() if tag in k}
        assert {key.rsplit("/", 1)[0] for key in progress} == {mirrored}
        assert all(entry["state"] != "error" for entry in progress.values()), progress
    assert ab.stop() == 0 and ba.stop() == 0


# ---- the store reader and the read rule (DESIGN section 4), on real files and ZooKeeper ---


class Partition:
    """One source partition written by hand: the owners' side of the protocol."""

    def __init__(self, zk_address: str, root: Path) -> None:
        self.cluster = f"rd-{uuid.uuid4().hex[:8]}"
        self.zk = connect(zk_address, self.cluster)
        meta = TopicStore(self.zk).create("t", 1, TopicConfig(), int(time.time() * 1000))
        self.incarnation = meta.incarnation
        self.states = PartitionStateStore(self.zk)
        self.store = PosixLogStore(str(root))
        self.streams: dict[tuple[int, int], object] = {}

    def close(self) -> None:
        self.zk.stop()
        self.zk.close()

    def cas(self, change: object) -> PartitionState:
        state = self.states.get("t", 0)
        return self.states.compare_and_set("t", 0, change(state), state.version)  # type: ignore[operator]

    def path(self, base: int, epoch: int) -> str:
        return segment_path(self.cluster, "t", 0, base, epoch, incarnation=self.incarnation)

    def write(self, base: int, epoch: int, data: bytes) -> None:
        key = (base, epoch)
        stream = self.streams.get(key)
        if stream is None:
            stream = self.store.open_append(self.path(base, epoch), create=True)
            self.streams[key] = stream
        stream.append(data)  # type: ignore[attr-defined]
        stream.flush(Durability.FLUSH)  # type: ignore[attr-defined]

    def size(self, base: int, epoch: int) -> int:
        return self.store.visible_length(self.path(base, epoch))


def rec_batch(base: int, count: int = 2, tag: str = "v") -> bytes:
    return encode_batch(
        [Record(value=f"{tag}{base + i}".encode(), timestamp_ms=5) for i in range(count)],
        base_offset=base,
    )


@pytest.fixture
def part(dcs: tuple[DC, DC], tmp_path: Path) -> Iterator[Partition]:
    partition = Partition(dcs[0].zookeeper.address, tmp_path / "store")
    yield partition
    partition.close()


def read_until(reader: StoreReader, offset: int, timeout: float = 5.0) -> ReadResult:
    deadline = time.monotonic() + timeout
    while True:
        result = reader.read("t", 0, offset, 1 << 20)
        if result.headers or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


def values(result: ReadResult) -> list[bytes | None]:
    return [r.value for i in range(len(result.headers)) for r in decode_records(result.batch(i))]


def test_store_reader_follows_rolls_and_seeks_in_sealed_segments(part: Partition) -> None:
    part.cas(lambda s: s.with_owner("b1"))
    part.cas(lambda s: s.with_new_segment(0, 1))
    part.write(0, 1, rec_batch(0) + rec_batch(2) + rec_batch(4))
    reader = StoreReader(part.store, part.zk, part.cluster)
    try:
        first = reader.read("t", 0, 0, 1 << 20)
        assert [h.base_offset for h in first.headers] == [0, 2, 4]
        idle = reader.read("t", 0, 6, 1 << 20)
        assert (idle.headers, idle.caught_up, idle.source_end) == ((), True, 6)
        # the owner rolls: seal at the known size, then the next segment
        part.cas(lambda s: s.with_sealed(0, 6, part.size(0, 1)))
        part.cas(lambda s: s.with_new_segment(6, 1))
        part.write(6, 1, rec_batch(6) + rec_batch(8))
        rolled = read_until(reader, 6)
        assert values(rolled) == [b"v6", b"v7", b"v8", b"v9"]
        # a fresh reader seeks into the sealed segment (no index file: it scans)
        middle = StoreReader(part.store, part.zk, part.cluster)
        try:
            assert values(middle.read("t", 0, 2, 1 << 20)) == [b"v2", b"v3", b"v4", b"v5"]
            assert values(middle.read("t", 0, 8, 1 << 20)) == [b"v8", b"v9"]
        finally:
            middle.close()
    finally:
        reader.close()


def test_store_reader_never_returns_a_torn_or_corrupt_tail(part: Partition) -> None:
    part.cas(lambda s: s.with_owner("b1"))
    part.cas(lambda s: s.with_new_segment(0, 1))
    second = rec_batch(2)
    part.write(0, 1, rec_batch(0) + second[:40])  # the owner is in the middle of a write
    reader = StoreReader(part.store, part.zk, part.cluster)
    try:
        assert values(reader.read("t", 0, 0, 1 << 20)) == [b"v0", b"v1"]
        assert reader.read("t", 0, 2, 1 << 20).headers == ()
        part.write(0, 1, second[40:])
        assert values(reader.read("t", 0, 2, 1 << 20)) == [b"v2", b"v3"]
        bad = bytearray(rec_batch(4))
        bad[-2] ^= 0xFF  # a CRC-invalid batch (a torn sector, a bug): never copied
        part.write(0, 1, bytes(bad))
        assert reader.read("t", 0, 4, 1 << 20).headers == ()
    finally:
        reader.close()


def test_store_reader_drops_a_fenced_zombies_writes_past_the_sealed_end(part: Partition) -> None:
    part.cas(lambda s: s.with_owner("b1"))
    part.cas(lambda s: s.with_new_segment(0, 1))
    part.write(0, 1, rec_batch(0) + rec_batch(2))
    reader = StoreReader(part.store, part.zk, part.cluster)
    try:
        assert values(reader.read("t", 0, 0, 1 << 20))[:1] == [b"v0"]
        # b2 takes over: epoch, marker, scan (offsets 0..3, this many bytes) ...
        part.cas(lambda s: s.with_owner("b2"))
        assert part.store.create_exclusive(fence_marker_path(part.path(0, 1)))
        scanned = part.size(0, 1)
        # ... while the zombie b1 still writes (it will never acknowledge this batch)
        part.write(0, 1, rec_batch(4, tag="zombie"))
        # marker present, no sealed end yet: the reader waits and returns nothing
        assert reader.read("t", 0, 0, 1 << 20).headers == ()

        def seal() -> None:
            time.sleep(0.3)
            part.cas(lambda s: s.with_sealed(0, 4, scanned))
            part.cas(lambda s: s.with_new_segment(4, 2))
            part.write(4, 2, rec_batch(4, tag="new"))

        sealer = threading.Thread(target=seal)
        sealer.start()
        got = reader.read("t", 0, 0, 1 << 20)  # waits for the sealed end, then cuts there
        sealer.join()
        assert values(got) == [b"v0", b"v1", b"v2", b"v3"]
        assert values(read_until(reader, 4)) == [b"new4", b"new5"]
    finally:
        reader.close()


# ---- the one read rule serves failback too (issue 11, section 5) ----------------------------


class _FencedDuringTheCheck(PosixLogStore):
    """A real directory store where a takeover happens at the instant a reader checks the
    fence marker: the zombie owner writes one more batch, the new owner creates the marker
    and seals the segment at what it scanned before that batch."""

    def __init__(self, root: str, on_check: Any) -> None:
        super().__init__(root)
        self.on_check = on_check

    def exists(self, path: str) -> bool:
        if path.endswith(".fenced") and self.on_check is not None:
            hook, self.on_check = self.on_check, None
            answer = super().exists(path)
            hook()
            return answer
        return super().exists(path)


def test_failback_reads_only_what_was_committed_when_fenced_during_the_marker_check(
    part: Partition,
) -> None:
    from mirror.failover.common import StoreLogReader

    part.cas(lambda s: s.with_owner("b1"))
    part.cas(lambda s: s.with_new_segment(0, 1))
    part.write(0, 1, rec_batch(0) + rec_batch(2))
    scanned = part.size(0, 1)

    def takeover() -> None:
        part.cas(lambda s: s.with_owner("b2"))
        part.store.create_exclusive(fence_marker_path(part.path(0, 1)))
        part.write(0, 1, rec_batch(4, tag="zombie"))  # never acknowledged
        part.cas(lambda s: s.with_sealed(0, 4, scanned))

    store = _FencedDuringTheCheck(str(part.store.root), takeover)
    reader = StoreLogReader(part.zk, store, part.cluster)
    try:
        assert reader.log_end("t", 0) == 4
        assert [b.header.base_offset for b in reader.batches("t", 0, 0)] == [0, 2]
    finally:
        reader.close()


def test_failback_picks_the_right_one_of_two_segments_sharing_a_base_offset(
    part: Partition,
) -> None:
    from mirror.failover.common import StoreLogReader

    part.cas(lambda s: s.with_owner("b1"))
    part.cas(lambda s: s.with_new_segment(0, 1))
    part.write(0, 1, rec_batch(0) + rec_batch(2))
    part.cas(lambda s: s.with_sealed(0, 4, part.size(0, 1)))
    part.cas(lambda s: s.with_new_segment(4, 1))  # b1 rolls, then is fenced before writing
    part.cas(lambda s: s.with_owner("b2"))
    part.cas(lambda s: s.with_sealed(4, 4, 0))  # an empty sealed segment at 4 ...
    part.cas(lambda s: s.with_new_segment(4, 2))  # ... and b2's open one, also at 4
    part.write(4, 2, rec_batch(4) + rec_batch(6))
    part.cas(lambda s: s.with_owner("b3"))  # b3 takes over: marker now, sealed end soon
    assert part.store.create_exclusive(fence_marker_path(part.path(4, 2)))
    size = part.size(4, 2)

    def seal() -> None:
        time.sleep(0.3)
        part.cas(lambda s: s.with_sealed(4, 8, size))

    sealer = threading.Thread(target=seal)
    sealer.start()
    reader = StoreLogReader(part.zk, part.store, part.cluster)
    try:
        assert reader.log_end("t", 0) == 8
        got = [(b.header.base_offset, b.position) for b in reader.batches("t", 0, 4)]
        assert got == [(4, 0), (6, len(rec_batch(4)))]
    finally:
        sealer.join()
        reader.close()


def test_store_reader_reports_the_source_end_it_read_not_the_offset_asked_for(
    part: Partition,
) -> None:
    part.cas(lambda s: s.with_owner("b1"))
    part.cas(lambda s: s.with_new_segment(0, 1))
    part.write(0, 1, rec_batch(0) + rec_batch(2))
    reader = StoreReader(part.store, part.zk, part.cluster)
    try:
        # asked past the end (a target that holds more than this source): the end is 4
        beyond = reader.read("t", 0, 10, 1 << 20)
        assert (beyond.headers, beyond.source_end) == ((), 4)
        assert reader.read("t", 0, 0, 1 << 20).source_end == 4
    finally:
        reader.close()
