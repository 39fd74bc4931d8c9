"""Operating a mirror link with real processes: two DCs (ZooKeeper + broker each), a real
``talos mirror run`` worker, ``talos mirror status`` as a monitoring check, the consumer
group offset sync, and cross-DC traffic through the WAN-emulating TCP proxy.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mirror.offset_sync import OffsetSync
from talos.cli import main as talos_main
from talos.client import Admin, Consumer, Producer, TopicPartition
from talos.coord.groups import GroupStore
from talos.coord.zk import connect
from talos.errors import TalosError
from talos.testing.multidc import MultiDC, mirror_available
from talos.testing.zookeeper import zookeeper_available

pytestmark = pytest.mark.integration

TOPIC = "orders"


@pytest.fixture(autouse=True)
def _needs_zookeeper_and_worker() -> None:
    reason = zookeeper_available()
    if reason is not None:
        pytest.skip(f"needs ZooKeeper: {reason}")
    reason = mirror_available()
    if reason is None:
        try:
            import mirror.worker  # noqa: F401
        except ImportError as exc:
            reason = f"mirror.worker is not importable: {exc}"
    if reason is not None:
        pytest.skip(f"needs the mirror worker: {reason}")


class SteadyProducer:
    """Produces ``rate`` messages a second to TOPIC in a thread, round robin over partitions."""

    def __init__(self, bootstrap: str, rate: float, partitions: int) -> None:
        self.producer = Producer(bootstrap, linger_ms=2)
        self.rate = rate
        self.partitions = partitions
        self.sent = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            due = started + self.sent / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
                continue
            try:
                self.producer.send(
                    TOPIC, b"m%08d" % self.sent, partition=self.sent % self.partitions
                )
            except TalosError as exc:
                self.errors.append(exc)
                return
            self.sent += 1

    def __enter__(self) -> SteadyProducer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.producer.flush(60)
        self.producer.close()


def status(topology: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """``talos mirror status --json`` through the real CLI entry point, in process."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = talos_main(["mirror", "status", "--topology", str(topology), "--json", *args])
    return code, json.loads(out.getvalue())


def rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    (link,) = document["links"]
    result: list[dict[str, Any]] = link["partitions"]
    return result


def log_ends(bootstrap: str) -> list[int]:
    with Admin(bootstrap, request_timeout_s=5) as admin:
        return [p.log_end for p in admin.describe_topic(TOPIC).partitions]


def caught_up(dcs: MultiDC) -> bool:
    try:
        source, target = log_ends(dcs.bootstrap("A")), log_ends(dcs.bootstrap("B"))
    except TalosError:
        return False
    return min(source) >= 0 and source == target


def create_topic(dcs: MultiDC, partitions: int) -> None:
    with Admin(dcs.bootstrap("A")) as admin:
        admin.create_topic(TOPIC, partitions)
        admin.wait_until_ready(TOPIC)


def produce(dcs: MultiDC, count: int, partitions: int, tag: str = "v") -> None:
    with Producer(dcs.bootstrap("A")) as producer:
        futures = [
            producer.send(TOPIC, f"{tag}{i}".encode(), partition=i % partitions)
            for i in range(count)
        ]
        producer.flush()
        for future in futures:
            future.result()


def read_all(bootstrap: str, partitions: int) -> list[tuple[int, int, bytes | None]]:
    ends = log_ends(bootstrap)
    consumer = Consumer(bootstrap, auto_offset_reset="earliest")
    try:
        consumer.assign([TopicPartition(TOPIC, p) for p in range(partitions)])
        got: list[tuple[int, int, bytes | None]] = []
        deadline = time.monotonic() + 30
        while len(got) < sum(ends) and time.monotonic() < deadline:
            got.extend((m.partition, m.offset, m.value) for m in consumer.poll(0.5))
        return sorted(got)
    finally:
        consumer.close()


def replication_delay(dcs: MultiDC, partition: int = 0) -> float:
    """Seconds until B's end reaches the end A has now."""
    with Admin(dcs.bootstrap("A")) as source, Admin(dcs.bootstrap("B")) as target:
        target.describe_topic(TOPIC)  # connect first: measure the mirror, not the dialing
        wanted = source.describe_topic(TOPIC).partitions[partition].log_end
        started = time.monotonic()
        while target.describe_topic(TOPIC).partitions[partition].log_end < wanted:
            time.sleep(0.01)
        return time.monotonic() - started


@pytest.fixture
def two_dcs(tmp_path: Path) -> Iterator[MultiDC]:
    with MultiDC(str(tmp_path / "dcs"), brokers=1, session_timeout=4.0) as dcs:
        yield dcs


# -- status as a monitoring check --------------------------------------------------------------


def test_status_ok_after_catch_up_and_stalled_within_30s_after_the_worker_dies(
    two_dcs: MultiDC,
) -> None:
    dcs = two_dcs
    create_topic(dcs, 2)
    produce(dcs, 40, 2)
    dcs.wait_for(lambda: caught_up(dcs), 60, "the mirror to catch up")

    # The real command line, as a monitoring system runs it.
    command = [sys.executable, "-m", "talos", "mirror", "status", "--topology"]
    done = subprocess.run(
        [*command, str(dcs.topology_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "link A:B (A -> B): OK" in done.stdout
    assert done.stdout.splitlines()[-1].split()[:2] == ["TOTAL", "2"]
    code, document = status(dcs.topology_path)
    assert code == 0 and document["healthy"]
    assert [
        (r["partition"], r["source_end"], r["target_end"], r["state"]) for r in rows(document)
    ] == [
        (0, 20, 20, "ok"),
        (1, 20, 20, "ok"),
    ]

    with SteadyProducer(dcs.bootstrap("A"), rate=50, partitions=2) as stream:
        time.sleep(1.0)
        dcs.mirrors[0].kill()
        killed = time.monotonic()
        while True:
            code, document = status(dcs.topology_path)
            if code == 1:
                break
            assert time.monotonic() - killed < 30, f"no stall reported: {document}"
            time.sleep(0.5)
        detected = time.monotonic() - killed
        states = {r["state"] for r in rows(document)}
        # The other partition may still be a few ms short of the stall threshold.
        assert "stalled" in states and states <= {"stalled", "lagging"}, document
        assert all(r["lag_messages"] > 0 for r in rows(document))
        assert document["links"][0]["healthy"] is False
        assert detected < 30

        # A restarted worker (same id) resumes from the target's end and catches up.
        dcs.start_worker("A:B", worker_id="w1")
        deadline = time.monotonic() + 60
        while True:
            code, document = status(dcs.topology_path)
            if code == 0 and all(r["state"] == "ok" for r in rows(document)):
                break
            assert time.monotonic() < deadline, f"did not recover: {document}"
            time.sleep(0.5)
    assert not stream.errors
    dcs.wait_for(lambda: caught_up(dcs), 60, "the restarted mirror to catch up")
    assert read_all(dcs.bootstrap("B"), 2) == read_all(dcs.bootstrap("A"), 2)


def test_status_reports_an_unreachable_dc_as_error_rows(tmp_path: Path) -> None:
    with MultiDC(str(tmp_path / "dcs"), brokers=1, start_mirror=False) as dcs:
        create_topic(dcs, 1)
        produce(dcs, 3, 1)
        for broker in dcs.dc("A").cluster.brokers:
            broker.kill()
        code, document = status(dcs.topology_path, "--timeout", "2")
    assert code == 1
    (row,) = rows(document)
    assert row["state"] == "error" and "source" in row["detail"]


# -- consumer group offset sync ------------------------------------------------------------------


def test_offset_sync_copies_group_offsets_forward_and_clamped(tmp_path: Path) -> None:
    with MultiDC(
        str(tmp_path / "dcs"), brokers=1, session_timeout=4.0, offset_sync_interval_s=3600.0
    ) as dcs:
        assert dcs.topology is not None
        link = dcs.topology.link("A:B")
        create_topic(dcs, 2)
        produce(dcs, 20, 2)  # 10 per partition
        dcs.wait_for(lambda: caught_up(dcs), 60, "the mirror to catch up")
        source_zk = connect(dcs.dc("A").zookeeper, "A")
        target_zk = connect(dcs.dc("B").zookeeper, "B")
        target_admin = Admin(dcs.bootstrap("B"))

        def target_end(topic: str, partition: int) -> int | None:
            end = target_admin.describe_topic(topic).partitions[partition].log_end
            return end if end >= 0 else None

        try:
            source_groups, target_groups = GroupStore(source_zk), GroupStore(target_zk)
            source_groups.commit("billing", "", -1, {(TOPIC, 0): 4, (TOPIC, 1): 7})
            sync = OffsetSync(source_zk, target_zk, link, target_end)
            report = sync.run_once()
            assert report.groups == 1
            wanted = [(TOPIC, 0), (TOPIC, 1)]
            assert target_groups.fetch("billing", wanted) == {(TOPIC, 0): 4, (TOPIC, 1): 7}
            assert sync.run_once().written == ()  # idempotent

            # A consumer failing over to B resumes exactly where it committed in A.
            consumer = Consumer(dcs.bootstrap("B"), group_id="billing", enable_auto_commit=False)
            try:
                consumer.assign([TopicPartition(TOPIC, 0)])
                first = []
                deadline = time.monotonic() + 20
                while not first and time.monotonic() < deadline:
                    first = consumer.poll(0.5)
                assert first and first[0].offset == 4
            finally:
                consumer.close()

            # The source runs ahead of the mirror: the target's offset stops at its end.
            dcs.mirrors[0].stop()
            produce(dcs, 10, 2, tag="late")  # source ends 15/15, target still 10/10
            source_groups.commit("billing", "", -1, {(TOPIC, 0): 15, (TOPIC, 1): 15})
            # ...and a consumer in B already went further on partition 1: never moved back.
            target_groups.commit("billing", "", -1, {(TOPIC, 1): 10})
            sync.run_once()
            assert target_groups.fetch("billing", wanted) == {(TOPIC, 0): 10, (TOPIC, 1): 10}
            source_groups.commit("billing", "", -1, {(TOPIC, 1): 2})
            sync.run_once()
            assert target_groups.fetch("billing", wanted)[(TOPIC, 1)] == 10

            dcs.start_worker("A:B", worker_id="w1")
            dcs.wait_for(lambda: caught_up(dcs), 60, "the mirror to catch up again")
            sync.run_once()
            assert target_groups.fetch("billing", wanted) == {(TOPIC, 0): 15, (TOPIC, 1): 10}

            code, document = status(dcs.topology_path)
            assert code == 0
            assert document["links"][0]["offset_sync"]["groups"] == 1
        finally:
            target_admin.close()
            for client in (source_zk, target_zk):
                client.stop()
                client.close()


# -- cross-DC traffic through the WAN proxy ------------------------------------------------------


@pytest.mark.slow
def test_mirror_keeps_up_over_50ms_rtt_and_recovers_from_a_30s_cut(tmp_path: Path) -> None:
    """B's brokers are reachable only through proxies adding 25 ms each way."""
    with MultiDC(
        str(tmp_path / "dcs"), brokers=1, session_timeout=4.0, wan_dcs=("B",), wan_latency_ms=25
    ) as dcs:
        create_topic(dcs, 2)
        with Admin(dcs.bootstrap("B")) as admin:
            admin.list_topics()  # connected; the next call is one round trip
            started = time.monotonic()
            admin.list_topics()
            assert time.monotonic() - started >= 0.05  # 25 ms each way
        with SteadyProducer(dcs.bootstrap("A"), rate=200, partitions=2) as stream:
            # Steady state over the 50 ms round trip: the lag stays well under a second.
            time.sleep(3.0)
            lags = []
            for _ in range(8):
                code, document = status(dcs.topology_path)
                assert code == 0, document
                lags.extend(r["lag_ms"] for r in rows(document))
                assert {r["state"] for r in rows(document)} == {"ok"}, document
                time.sleep(0.5)
            assert all(lag is not None and lag < 1_500 for lag in lags), lags
            # the worker's appends did cross the proxies
            assert sum(p.stats.bytes_up for p in dcs.proxies("B")) > 200 * 3 * 8
            # End to end: how long until what A holds now is in B (reading B costs ~0.1 s).
            delays = [replication_delay(dcs) for _ in range(5)]
            assert max(delays) < 1.5, delays

            # A 30 s cut: every cross-DC connection is closed and new ones are refused.
            dcs.cut_wan()
            cut_at = time.monotonic()
            during_cut = []
            while time.monotonic() - cut_at < 30:
                code, document = status(dcs.topology_path, "--timeout", "2")
                during_cut.append((time.monotonic() - cut_at, code))
                time.sleep(2.0)
            assert any(code == 1 for at, code in during_cut if at > 16), during_cut
            sent_at_heal = stream.sent
            dcs.heal_wan()
            healed = time.monotonic()
            # Caught up again while the stream goes on, and the lag back to normal.
            while True:
                code, document = status(dcs.topology_path)
                now_rows = rows(document)
                if (
                    code == 0
                    and all(r["target_end"] is not None for r in now_rows)
                    and sum(r["target_end"] for r in now_rows) >= sent_at_heal
                    and all(r["lag_ms"] is not None and r["lag_ms"] < 1_500 for r in now_rows)
                ):
                    break
                assert time.monotonic() - healed < 60, document
                time.sleep(0.5)
        assert not stream.errors
        dcs.wait_for(lambda: caught_up(dcs), 60, "the mirror to catch up after the stream")
        source = read_all(dcs.bootstrap("A"), 2)
        assert len(source) == stream.sent
        assert read_all(dcs.bootstrap("B"), 2) == source


# -- a source rewritten under a running link (issue 11, section 2) ---------------------------


def test_a_recreated_source_stops_the_partition_as_diverged_and_resync_copies_it_again(
    two_dcs: MultiDC,
) -> None:
    from mirror.failover import ResyncOptions, resync
    from topology import load_topology

    dcs = two_dcs
    create_topic(dcs, 1)
    produce(dcs, 10, 1, tag="old")
    dcs.wait_for(lambda: caught_up(dcs), 60, "the mirror to catch up")
    with Admin(dcs.bootstrap("A")) as admin:
        admin.delete_topic(TOPIC)
    create_topic(dcs, 1)
    produce(dcs, 3, 1, tag="new")

    deadline = time.monotonic() + 60
    while True:
        code, document = status(dcs.topology_path)
        if code == 1 and rows(document)[0]["state"] == "diverged":
            break
        assert time.monotonic() < deadline, f"no divergence reported: {document}"
        time.sleep(0.5)
    row = rows(document)[0]
    assert (row["topic"], row["partition"], row["source_end"]) == (TOPIC, 0, 3)
    assert "offset 10" in row["detail"], row
    command = [sys.executable, "-m", "talos", "mirror", "status", "--topology"]
    done = subprocess.run(
        [*command, str(dcs.topology_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "diverged" in done.stdout and "offset 10" in done.stdout
    time.sleep(1.0)
    assert log_ends(dcs.bootstrap("B")) == [10]  # nothing more appended

    topology = load_topology(str(dcs.topology_path))
    dry = resync(topology, "A:B", TOPIC, ResyncOptions(dry_run=True))
    assert [(p.target_end, p.restart_at, p.replaced) for p in dry.partitions] == [(10, 0, 10)]
    assert log_ends(dcs.bootstrap("B")) == [10]

    report = resync(topology, "A:B", TOPIC)
    assert report.archived == 10 and report.partitions[0].served_at == 0
    dcs.wait_for(lambda: caught_up(dcs), 60, "the link to copy the new source")
    assert [v for _, _, v in read_all(dcs.bootstrap("B"), 1)] == [b"new0", b"new1", b"new2"]
    assert read_all(dcs.bootstrap("B"), 1) == read_all(dcs.bootstrap("A"), 1)
    archived = read_topic_values(dcs.bootstrap("B"), report.archive_topic, 10)
    assert archived == [f"old{i}".encode() for i in range(10)]
    deadline = time.monotonic() + 30
    while status(dcs.topology_path)[0] != 0:
        assert time.monotonic() < deadline, status(dcs.topology_path)[1]
        time.sleep(0.5)


def read_topic_values(bootstrap: str, topic: str, count: int) -> list[bytes | None]:
    consumer = Consumer(bootstrap, auto_offset_reset="earliest")
    try:
        consumer.assign([TopicPartition(topic, 0)])
        got: list[bytes | None] = []
        deadline = time.monotonic() + 30
        while len(got) < count and time.monotonic() < deadline:
            got.extend(m.value for m in consumer.poll(0.5))
        return got
    finally:
        consumer.close()
