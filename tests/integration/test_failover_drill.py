"""Failover between two real datacenters: promote, failback, regional clients, drills.

Two DCs on this machine (own ZooKeeper, store and brokers each), the real
``talos mirror run`` worker, and the real promote/failback code. Every check
counts messages itself and compares with what the reports say.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mirror.failover import (
    FailbackOptions,
    PromoteOptions,
    failback,
    promote,
)
from mirror.paths import promotion_path
from mirror.state import Phase
from talos.client import Admin, Consumer, Producer, TopicPartition
from talos.client.regions import RegionalConsumer, RegionalProducer, RegionalRecordMetadata
from talos.config import TopicConfig
from talos.coord.groups import GroupStore
from talos.coord.topics import TopicStore
from talos.coord.zk import connect
from talos.errors import InvalidArgument, ReadOnlyMirror, TalosError
from talos.testing.hdfs import MiniDfsCluster
from talos.testing.multidc import MultiDC, mirror_available
from talos.testing.zookeeper import zookeeper_available
from topology import Topology, TopologyError
from topology.drill import parse_plan, run_drill

pytestmark = pytest.mark.integration

TOPIC = "orders"
PARTITIONS = 2


def _skip_reason() -> str | None:
    return zookeeper_available() or mirror_available()


@pytest.fixture
def dcs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MultiDC]:
    """Two DCs on posix stores, or (param "hdfs") under two roots of the session's HDFS."""
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(f"needs ZooKeeper and the mirror worker: {reason}")
    store = "posix"
    if getattr(request, "param", "posix") == "hdfs":
        hdfs: MiniDfsCluster = request.getfixturevalue("hdfs_cluster")
        store = hdfs.url(f"failover-{uuid.uuid4().hex[:8]}")
    with MultiDC(
        str(tmp_path / "dcs"),
        brokers=2,
        links=(("A", "B"), ("B", "A")),
        topics=(TOPIC,),
        offset_sync_interval_s=1.0,
        session_timeout=3.0,
        start_mirror=False,
        store=store,
    ) as deployment:
        yield deployment


def topology_of(dcs: MultiDC) -> Topology:
    assert dcs.topology is not None
    return dcs.topology


def create_topic(dcs: MultiDC) -> None:
    with Admin(dcs.bootstrap("A")) as admin:
        # small segments: truncation has to cut across several of them
        admin.create_topic(TOPIC, PARTITIONS, TopicConfig(segment_bytes=4096))
        admin.wait_until_ready(TOPIC)


def log_ends(bootstrap: str, topic: str = TOPIC) -> list[int]:
    with Admin(bootstrap, request_timeout_s=5) as admin:
        return [p.log_end for p in admin.describe_topic(topic).partitions]


def wait_ends(
    dcs: MultiDC, bootstrap: str, wanted: list[int], what: str, topic: str = TOPIC
) -> None:
    def reached() -> bool:
        try:
            return log_ends(bootstrap, topic) == wanted
        except TalosError:
            return False

    dcs.wait_for(reached, 60, what)


@dataclass
class Sent:
    value: bytes
    key: bytes
    timestamp_ms: int
    partition: int
    offset: int = -1
    region: str = ""


def produce(bootstrap: str, tag: str, count: int, ts0: int) -> list[Sent]:
    """``count`` messages per partition, in small batches; acknowledged offsets filled in."""
    out = []
    with Producer(bootstrap, linger_ms=1) as producer:
        for i in range(count):
            batch = []
            for p in range(PARTITIONS):
                sent = Sent(f"{tag}-{p}-{i}".encode(), f"k{i}".encode(), ts0 + i, p)
                batch.append(
                    (
                        sent,
                        producer.send(
                            TOPIC,
                            sent.value,
                            key=sent.key,
                            partition=p,
                            headers=[("h", sent.value)],
                            timestamp_ms=sent.timestamp_ms,
                        ),
                    )
                )
            if i % 7 == 0:
                producer.flush()
            for sent, future in batch:
                out.append(sent)
                future.add_done_callback(lambda f, s=sent: setattr(s, "offset", f.result().offset))
        producer.flush()
    assert all(s.offset >= 0 for s in out)
    return out


def read_topic(bootstrap: str, topic: str, ends: list[int]) -> list[Any]:
    consumer = Consumer(bootstrap, auto_offset_reset="earliest")
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(len(ends))])
        got: list[Any] = []
        deadline = time.monotonic() + 60
        while len(got) < sum(ends) and time.monotonic() < deadline:
            got.extend(consumer.poll(0.5))
        return sorted(got, key=lambda m: (m.partition, m.offset))
    finally:
        consumer.close()


RETURNING = "returning-group"


def commit_in_a(dcs: MultiDC, group: str, offsets: dict[int, int]) -> None:
    zk = connect(dcs.dc("A").zookeeper, "A")
    try:
        GroupStore(zk).commit(group, "", -1, {(TOPIC, p): o for p, o in offsets.items()})
    finally:
        zk.stop()
        zk.close()


def consume_group(bootstrap: str, group: str, count: int) -> list[bytes]:
    """What a member of ``group`` reads from its committed offsets ("latest" if none)."""
    consumer = Consumer(
        bootstrap, group_id=group, auto_offset_reset="latest", enable_auto_commit=False
    )
    got: list[bytes] = []
    try:
        consumer.subscribe([TOPIC])
        deadline = time.monotonic() + 60
        while len(got) < count and time.monotonic() < deadline:
            got.extend(m.value for m in consumer.poll(0.5) if m.value is not None)
        time.sleep(0.5)
        got.extend(m.value for m in consumer.poll(0.2) if m.value is not None)
    finally:
        consumer.close()
    return got


def a_topic_mirror(dcs: MultiDC) -> Any:
    zk = connect(dcs.dc("A").zookeeper, "A")
    try:
        return TopicStore(zk).get(TOPIC).mirror
    finally:
        zk.stop()
        zk.close()


def b_promotion(dcs: MultiDC) -> Any:
    zk = connect(dcs.dc("B").zookeeper, "B")
    try:
        data = zk.exists(promotion_path("A:B")) and zk.get(promotion_path("A:B"))[0]
        return json.loads(data) if data else None
    finally:
        zk.stop()
        zk.close()


@pytest.mark.parametrize(
    "dcs",
    [
        "posix",
        pytest.param(
            "hdfs",
            marks=[
                pytest.mark.slow,
                pytest.mark.skipif(
                    not os.environ.get("TALOS_SLOW_TESTS"),
                    reason="about 4 minutes on 2 cores: `make test-slow` (TALOS_SLOW_TESTS=1)",
                ),
            ],
        ),
    ],
    indirect=True,
)
def test_promote_and_failback_archive_and_truncate_what_b_never_got(dcs: MultiDC) -> None:
    topology = topology_of(dcs)
    create_topic(dcs)
    worker = dcs.start_worker("A:B")
    # Recent timestamps: the topics' time retention (7 days) would delete older ones.
    now = int(time.time() * 1000)
    mirrored = produce(dcs.bootstrap("A"), "m", 40, now)
    wait_ends(dcs, dcs.bootstrap("B"), log_ends(dcs.bootstrap("A")), "the mirror to catch up")
    worker.kill()  # the link is cut: what follows in A never reaches B
    promote_point = log_ends(dcs.bootstrap("B"))
    lost = produce(dcs.bootstrap("A"), "lost", 30, now + 1_000_000)
    a_end = log_ends(dcs.bootstrap("A"))
    assert a_end == [promote_point[p] + 30 for p in range(PARTITIONS)]
    # a group in A read all of it, inside the suffix B never received (issue 11, section 4)
    commit_in_a(dcs, RETURNING, {p: a_end[p] for p in range(PARTITIONS)})

    # refused, changing nothing: unknown link, failback before promote
    with pytest.raises(TopologyError, match="no link A:C"):
        promote(topology, "A:C")
    with pytest.raises(InvalidArgument, match="never promoted"):
        failback(topology, "A:B")
    assert a_topic_mirror(dcs) is None and b_promotion(dcs) is None

    # dry run: the same report, nothing changed
    dry = promote(topology, "A:B", PromoteOptions(dry_run=True))
    assert dry.dry_run and dry.gap_messages == 60
    assert a_topic_mirror(dcs) is None and b_promotion(dcs) is None

    report = promote(topology, "A:B")
    # the figures match what this test counted
    assert [p.target_end for p in report.partitions] == promote_point
    assert [p.source_end for p in report.partitions] == a_end
    assert [p.gap_messages for p in report.partitions] == [30, 30]
    newest_mirrored = max(s.timestamp_ms for s in mirrored)
    newest_lost = max(s.timestamp_ms for s in lost)
    assert report.rpo_ms == newest_lost - newest_mirrored
    assert {p.basis for p in report.partitions} == {"source"}
    assert report.epochs == {TOPIC: (1, 2)}
    assert report.source_demoted == (TOPIC,)

    # B takes writes now, after the mirrored offsets; A refuses them
    b_writes = produce(dcs.bootstrap("B"), "b", 5, now + 2_000_000)
    assert sorted({s.offset for s in b_writes if s.partition == 0})[0] == promote_point[0]
    with (
        Producer(dcs.bootstrap("A"), delivery_timeout_s=10) as producer,
        pytest.raises(ReadOnlyMirror),
    ):
        producer.send(TOPIC, b"late", partition=0).result(timeout=30)

    # failback while A is down: refused, nothing changed
    for broker in dcs.dc("A").cluster.brokers:
        broker.kill()
    with pytest.raises(InvalidArgument, match="unreachable"):
        failback(topology, "A:B", FailbackOptions(timeout_s=2.0))
    assert b_promotion(dcs)["failed_back_ms"] is None
    for broker in dcs.dc("A").cluster.brokers:
        broker.start()
    dcs.dc("A").cluster.wait_for_brokers(2)
    wait_ends(dcs, dcs.bootstrap("A"), a_end, "A to serve its partitions again")

    dry_back = failback(topology, "A:B", FailbackOptions(dry_run=True))
    assert [(p.common, p.a_end, p.diverged) for p in dry_back.partitions] == [
        (promote_point[p], a_end[p], 30) for p in range(PARTITIONS)
    ]
    assert log_ends(dcs.bootstrap("A")) == a_end

    back = failback(topology, "A:B")
    assert [(p.common, p.diverged, p.archived, p.truncated) for p in back.partitions] == [
        (promote_point[p], 30, 30, True) for p in range(PARTITIONS)
    ]
    assert back.archived == len(lost)
    assert all(p.served_at == promote_point[p.partition] for p in back.partitions)
    # the group's offsets were cut back with the log, in the same step
    assert [p.groups_clamped for p in back.partitions] == [
        {RETURNING: promote_point[p]} for p in range(PARTITIONS)
    ]
    archive = back.archive_topics[TOPIC]
    assert archive.startswith(f"{TOPIC}.diverged.")
    # A serves the truncated log: a new epoch, a new segment at the cut
    assert log_ends(dcs.bootstrap("A")) == promote_point
    mirror = a_topic_mirror(dcs)
    assert (mirror.link, mirror.source, mirror.phase) == ("B:A", "B", Phase.MIRRORING)

    # the archive holds exactly A's diverged messages, everything intact
    archived = read_topic(dcs.bootstrap("A"), archive, [30, 30])
    by_partition = {p: [s for s in lost if s.partition == p] for p in range(PARTITIONS)}
    for p in range(PARTITIONS):
        got = [m for m in archived if m.partition == p]
        want = sorted(by_partition[p], key=lambda s: s.offset)
        assert [(m.value, m.key, m.timestamp_ms, m.headers) for m in got] == [
            (s.value, s.key, s.timestamp_ms, (("h", s.value),)) for s in want
        ]

    # refused: a second failback
    with pytest.raises(InvalidArgument, match="already failed back"):
        failback(topology, "A:B")

    # the reverse link copies what B wrote since the promotion; A equals B again
    dcs.start_worker("B:A")
    b_end = log_ends(dcs.bootstrap("B"))
    wait_ends(dcs, dcs.bootstrap("A"), b_end, "the reverse link to catch up")
    in_a = [(m.partition, m.offset, m.value) for m in read_topic(dcs.bootstrap("A"), TOPIC, b_end)]
    in_b = [(m.partition, m.offset, m.value) for m in read_topic(dcs.bootstrap("B"), TOPIC, b_end)]
    assert in_a == in_b
    values = Counter(v for _, _, v in in_b)
    assert all(values[s.value] == 1 for s in [*mirrored, *b_writes])
    assert not any(values[s.value] for s in lost)

    # the group returns to A and sees every one of B's messages (none skipped)
    returned = consume_group(dcs.bootstrap("A"), RETURNING, len(b_writes))
    assert sorted(returned) == sorted(s.value for s in b_writes)


# ---- the drill of the issue: continuous traffic, region A lost, promote, failback --------------


@dataclass
class Traffic:
    """A producer homed in A and a group consumer over [A, B], each in its own thread."""

    topology: Topology
    acked: dict[bytes, RegionalRecordMetadata] = field(default_factory=dict)
    failed: list[bytes] = field(default_factory=list)
    consumed: list[tuple[bytes, str, int, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    stop_reading: threading.Event = field(default_factory=threading.Event)
    producer: RegionalProducer | None = None
    consumer: RegionalConsumer | None = None

    def start(self) -> Traffic:
        self.producer = RegionalProducer(self.topology, "A", failover_after_s=3.0, linger_ms=2)
        self.consumer = RegionalConsumer(
            self.topology,
            ["A", "B"],
            "drill-group",
            failover_after_s=3.0,
            auto_offset_reset="earliest",
            auto_commit_interval_ms=300,
        )
        self.consumer.subscribe([TOPIC])
        self._threads = [
            threading.Thread(target=self._produce, daemon=True),
            threading.Thread(target=self._consume, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def _produce(self) -> None:
        assert self.producer is not None
        i = 0
        while not self.stop.is_set():
            value = f"e{i}".encode()
            future = self.producer.send(TOPIC, value, key=f"k{i % 5}".encode())

            def done(f: Any, v: bytes = value) -> None:
                if f.exception() is None:
                    self.acked[v] = f.result()
                else:
                    self.failed.append(v)

            future.add_done_callback(done)
            i += 1
            time.sleep(0.004)
        self.producer.flush(120)

    def _consume(self) -> None:
        assert self.consumer is not None
        while not self.stop_reading.is_set():
            for m in self.consumer.poll(0.3):
                assert m.value is not None
                self.consumed.append((m.value, m.region, m.partition, m.offset))

    def stop_producing(self) -> None:
        self.stop.set()
        self._threads[0].join(150)
        if self.producer is not None:
            self.producer.close()

    def finish(self) -> None:
        self.stop_producing()
        self.stop_reading.set()
        self._threads[1].join(60)
        if self.consumer is not None:
            self.consumer.close()


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def drill(topology: Topology, tmp_path: Path, name: str, steps: str) -> Any:
    import sys

    plan = parse_plan(
        f'[drill]\nname = "{name}"\ntalos = "{sys.executable} -m talos"\n'
        f'[probe]\ntopics = ["{TOPIC}"]\ninterval_s = 0.25\n' + steps,
        topology,
        str(tmp_path / f"{name}.toml"),
    )
    result = asyncio.run(run_drill(plan, topology))
    assert result.ok, result.error
    return result


@pytest.mark.slow
def test_drill_lose_region_a_promote_b_and_fail_back(dcs: MultiDC, tmp_path: Path) -> None:
    from mirror.failover import BrokerReader
    from mirror.offset_sync import OffsetSync

    topology = topology_of(dcs)
    create_topic(dcs)
    worker = dcs.start_worker("A:B")
    zk_a = connect(dcs.dc("A").zookeeper, "A")
    zk_b = connect(dcs.dc("B").zookeeper, "B")
    b_reader = BrokerReader(dcs.bootstrap("B"), 5.0)
    wait_ends(dcs, dcs.bootstrap("B"), [0] * PARTITIONS, "the worker to create B's mirror")
    sync = OffsetSync(zk_a, zk_b, topology.link("A:B"), lambda t, p: b_reader.log_end(t, p))
    sync.start()
    traffic = Traffic(topology).start()
    try:
        wait_until(lambda: len(traffic.consumed) > 200, 60, "traffic to flow in A")
        time.sleep(1.0)
        worker.kill()  # replication stops a moment before the region goes
        time.sleep(1.0)
        for broker in dcs.dc("A").cluster.brokers:
            broker.kill()  # region A is lost
        lost_at = time.monotonic()

        promoted = drill(
            topology,
            tmp_path,
            "promote",
            '[[step]]\naction = "promote"\nlink = "A:B"\ntimeout_s = 60\n'
            '[[step]]\naction = "wait"\nseconds = 3\n',
        )
        sync.stop()
        promote_figures = promoted.steps[0].figures

        # producers moved to B and consumers resumed in B
        wait_until(
            lambda: any(m.region == "B" for m in list(traffic.acked.values())), 60, "writes in B"
        )
        wait_until(lambda: any(r == "B" for _, r, _, _ in list(traffic.consumed)), 90, "reads in B")
        assert traffic.consumer is not None and traffic.consumer.failovers
        assert traffic.producer is not None and traffic.producer.region == "B"

        # A comes back and is failed back
        for broker in dcs.dc("A").cluster.brokers:
            broker.start()
        dcs.dc("A").cluster.wait_for_brokers(2)
        wait_until(lambda: min(log_ends(dcs.bootstrap("A"))) >= 0, 60, "A to serve again")
        a_end = log_ends(dcs.bootstrap("A"))
        failed_back = drill(
            topology,
            tmp_path,
            "failback",
            '[[step]]\naction = "failback"\nlink = "A:B"\ntimeout_s = 120\n',
        )
        back = failed_back.steps[0].figures
        traffic.stop_producing()
        b_end = log_ends(dcs.bootstrap("B"))
        history = read_topic(dcs.bootstrap("B"), TOPIC, b_end)
        # the consumer reads on until it has seen the whole surviving history
        wanted = {m.value for m in history}
        wait_until(
            lambda: wanted <= {v for v, _, _, _ in list(traffic.consumed)}, 90, "the consumer"
        )
    finally:
        traffic.finish()
        sync.stop()
        b_reader.close()
        for zk in (zk_a, zk_b):
            zk.stop()
            zk.close()

    in_b = Counter(m.value for m in history)
    archive_topic = back["archive_topics"][TOPIC]
    archive_ends = log_ends(dcs.bootstrap("A"), archive_topic)
    archived = read_topic(dcs.bootstrap("A"), archive_topic, archive_ends)
    in_archive = Counter(m.value for m in archived)

    # every acknowledged message is present exactly once in the surviving history or the archive
    assert max(in_b.values()) == 1, "the surviving history holds a message twice"
    for value, meta in traffic.acked.items():
        if meta.region == "A":
            assert in_b[value] + in_archive[value] == 1, value
        else:  # a write that failed over may also have landed in A before it died
            assert in_b[value] == 1 and in_archive[value] <= 1, value
    acked_in_a_only = [v for v, m in traffic.acked.items() if m.region == "A" and not in_b[v]]
    assert acked_in_a_only, "losing region A lost no acknowledged write: the drill proved nothing"

    # the reports' figures match what this test counted
    report = json.loads(promoted.steps[0].stdout)
    targets = [p["target_end"] for p in report["partitions"]]
    assert [p["source_end"] for p in report["partitions"]] == a_end
    assert promote_figures["gap_messages"] == sum(a_end) - sum(targets)
    assert back["diverged"] == back["archived"] == promote_figures["gap_messages"]
    assert sum(archive_ends) == len(archived) == back["archived"]
    assert len(acked_in_a_only) <= back["archived"]

    # consumers skipped nothing of the surviving history, and re-read at most the bound
    seen = Counter(v for v, _, _, _ in traffic.consumed)
    assert all(seen[m.value] >= 1 for m in history), "a consumer skipped a message"
    assert traffic.consumer is not None
    bound = sum(f.redelivery_bound for f in traffic.consumer.failovers)
    redelivered = sum(n - 1 for v, n in seen.items() if n > 1 and in_b[v])
    assert redelivered <= bound

    # the drill measured the outage of every partition, and it ended
    assert set(promoted.unavailable_s) == {f"{TOPIC}/{p}" for p in range(PARTITIONS)}
    outage = time.monotonic() - lost_at
    assert all(0 < s < outage for s in promoted.unavailable_s.values())


# ---- the README's drill plan, as written, over a real OpenSSH server (issue 15) ---------------

README = Path(__file__).resolve().parents[2] / "README.md"
PLAN_MARK = "<!-- drill-plan"


def readme_plan() -> str:
    """The TOML block that follows the drill-plan marker in the README."""
    text = README.read_text()
    after = text[text.index(PLAN_MARK) :]
    start = after.index("```toml\n") + len("```toml\n")
    return after[start : after.index("```\n", start)]


def with_hosts(dcs: MultiDC, path: Path, port: int) -> Topology:
    """The deployment's topology plus one SSH host per DC (the loopback sshd, no user)."""
    import dataclasses

    from topology import HostSpec, dump_topology, load_topology

    topology = topology_of(dcs)
    datacenters = {
        name: dataclasses.replace(
            dc, hosts={f"{name.lower()}1": HostSpec(f"{name.lower()}1", None, "127.0.0.1", port)}
        )
        for name, dc in topology.datacenters.items()
    }
    path.write_text(dump_topology(dataclasses.replace(topology, datacenters=datacenters)))
    return load_topology(path)


def test_the_readme_drill_plan_works_over_openssh(
    tmp_path: Path, sshd: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cut the link, produce 137 in A, promote B, verify, fail back: every figure checked."""
    import os
    import signal
    import sys

    from talos.cli import main

    reason = _skip_reason()
    if reason is not None:
        pytest.skip(f"needs ZooKeeper and the mirror worker: {reason}")
    repo = Path(__file__).resolve().parents[2]
    talos = f"env PYTHONPATH={repo} {sys.executable} -m talos"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with MultiDC(
        str(tmp_path / "dcs"),
        brokers=1,
        links=(("A", "B"), ("B", "A")),
        topics=(TOPIC,),
        session_timeout=3.0,
        start_mirror=False,
    ) as dcs:
        topology_path = tmp_path / "topology.toml"
        with_hosts(dcs, topology_path, sshd.port)
        create_topic(dcs)
        worker = dcs.start_worker("A:B")
        (run_dir / "mirror-A:B.pid").write_text(f"{worker.pid}\n")
        produce(dcs.bootstrap("A"), "m", 20, 1_000_000)
        a_before = log_ends(dcs.bootstrap("A"))
        wait_ends(dcs, dcs.bootstrap("B"), a_before, "the mirror to catch up")

        # the README's plan; only the paths and accounts of this machine differ
        plan_text = (
            readme_plan()
            .replace("/etc/talos/topology.toml", str(topology_path))
            .replace('talos = "talos"', f'talos = "{talos}"')
            .replace('username = "talos"', f'username = "{sshd.user}"')
            .replace("~/.ssh/known_hosts", str(sshd.known_hosts))
            .replace("~/.ssh/id_ed25519", str(sshd.client_key))
            .replace("/run/talos", str(run_dir))
        )
        plan = tmp_path / "drill.toml"
        plan.write_text(plan_text)
        reverse_pid = 0
        try:
            code = main(["drill", "run", str(plan), "--topology", str(topology_path), "--json"])
            out, err = capsys.readouterr()
            timeline = json.loads(out)
            back = timeline["steps"][-1]["figures"]
            reverse_pid = (back.get("reverse_worker") or {}).get("pid", 0)
            assert code == 0, err + json.dumps(timeline["steps"], indent=1)

            steps = timeline["steps"]
            assert [(s["action"], s["status"]) for s in steps] == [
                ("cut_link", "ok"),
                ("exec", "ok"),
                ("promote", "ok"),
                ("verify", "ok"),
                ("failback", "ok"),
            ]
            assert [s["host"] for s in steps] == ["b1", "a1", "b1", "b1", "a1"]
            assert steps[0]["label"] == 'step 1 "cut the link" (cut_link A:B) on b1'
            assert not worker.alive()
            promote_figures = steps[2]["figures"]
            assert promote_figures["gap_messages"] == 137
            assert steps[3]["figures"]["links"] == {"A:B": "promoted", "B:A": "failback_pending"}
            assert back["archived"] == back["diverged"] == 137
            assert back["reverse_worker"]["host"] == "a1"
            assert back["reverse_worker"]["link"] == "B:A"
            os.kill(reverse_pid, 0)  # the reverse worker runs
            assert set(timeline["unavailable_s"]) == {f"{TOPIC}/{p}" for p in range(PARTITIONS)}

            # A was cut back to where B took over, and the reverse link copies B into A
            assert log_ends(dcs.bootstrap("B")) == a_before
            with Producer(dcs.bootstrap("B")) as producer:
                for p in range(PARTITIONS):
                    producer.send(TOPIC, b"after", partition=p)
            b_end = log_ends(dcs.bootstrap("B"))
            wait_ends(dcs, dcs.bootstrap("A"), b_end, "the reverse link to copy B into A")
        finally:
            if reverse_pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(reverse_pid, signal.SIGTERM)
                wait_until(lambda: not _alive(reverse_pid), 20, "the reverse worker to stop")


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
