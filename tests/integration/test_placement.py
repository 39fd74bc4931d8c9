"""Issue 13 §3: traffic-weighted placement with real ZooKeeper and three real brokers.

One hot topic carries nearly all the traffic. It starts on one broker; two more
join. The controller must spread the hot partitions by their measured bytes/s
(two a broker: a partition-count balance would not care which ones), within a
few rounds of at most ``max_moves`` moves each, then hold still, and no
acknowledged message may be lost across the takeovers.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import pytest

from talos.client import Admin, Consumer, Producer, TopicPartition
from talos.client.producer import RecordMetadata
from talos.coord.controller import Assignment, AssignmentWatcher
from talos.coord.traffic import read_broker_traffic
from talos.coord.zk import connect
from talos.testing.cluster import LocalCluster
from talos.testing.zookeeper import ZooKeeperServer

pytestmark = pytest.mark.integration

INTERVAL_S = 1.0
EPSILON = 0.3
MAX_MOVES = 2
HOT, COLD = 6, 6
VALUE_BYTES = 5_000
TICK_S = 0.05  # one message per hot partition per tick: 100 KB/s a hot partition


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


class PacedProducer:
    """Sends to every hot partition every tick, and now and then to a cold one;
    remembers every send's future to check the acknowledged ones afterwards."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = Producer(bootstrap, linger_ms=2, delivery_timeout_s=120)
        self.sent: list[tuple[str, int, bytes, Future[RecordMetadata]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        tick = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            for p in range(HOT):
                tag = f"hot-{p}-{tick:08d}".encode()
                future = self.producer.send("hot", tag.ljust(VALUE_BYTES, b"."), partition=p)
                self.sent.append(("hot", p, tag, future))
            if tick % 20 == 0:
                p = (tick // 20) % COLD
                tag = f"cold-{p}-{tick:08d}".encode()
                self.sent.append(("cold", p, tag, self.producer.send("cold", tag, partition=p)))
            tick += 1
            next_at += TICK_S
            self._stop.wait(max(next_at - time.monotonic(), 0.0))

    def stop(self) -> dict[tuple[str, int, bytes], int]:
        """Stop sending; the offset of every acknowledged message."""
        self._stop.set()
        self._thread.join(10)
        self.producer.flush(timeout=120)
        acked = {}
        for topic, p, tag, future in self.sent:
            if future.exception() is None:
                acked[(topic, p, tag)] = future.result().offset
        self.producer.close()
        return acked


def read_everything(
    bootstrap: str, ends: dict[tuple[str, int], int]
) -> dict[tuple[str, int], dict[int, bytes]]:
    consumer = Consumer(bootstrap, auto_offset_reset="earliest", fetch_max_bytes=4 * 1024 * 1024)
    found: dict[tuple[str, int], dict[int, bytes]] = {key: {} for key in ends}
    try:
        consumer.assign([TopicPartition(t, p) for t, p in ends])
        deadline = time.monotonic() + 120
        while any(len(found[k]) < ends[k] for k in ends) and time.monotonic() < deadline:
            for m in consumer.poll(timeout_s=1.0):
                found[(m.topic, m.partition)][m.offset] = (m.value or b"")[:24]
    finally:
        consumer.close()
    return found


def moves_between(history: list[Assignment]) -> list[tuple[int, list[tuple[str, int]]]]:
    """(version, partitions whose owner changed) for every assignment that moved some."""
    result = []
    for before, after in itertools.pairwise(history):
        moved = [
            p for p in after.owners if p in before.owners and before.owners[p] != after.owners[p]
        ]
        if moved:
            result.append((after.version, moved))
    return result


def hot_per_broker(owners: dict[tuple[str, int], str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for (topic, _p), broker in owners.items():
        if topic == "hot":
            counts[broker] = counts.get(broker, 0) + 1
    return counts


def test_a_hot_topic_spreads_in_few_rounds_with_bounded_moves_and_nothing_lost(
    tmp_path: Path, cluster_name: str, zk_server: ZooKeeperServer
) -> None:
    cluster = LocalCluster(
        brokers=1,
        data_dir=str(tmp_path / "cluster"),
        cluster=cluster_name,
        session_timeout=4.0,
        zookeeper=zk_server,
        broker_args=[
            "--traffic-interval-s",
            str(INTERVAL_S),
            "--balance-epsilon",
            str(EPSILON),
            "--max-moves-per-round",
            str(MAX_MOVES),
        ],
    )
    zk = connect(zk_server.address, cluster_name)
    paced: PacedProducer | None = None
    try:
        cluster.start()
        with Admin(cluster.bootstrap) as admin:
            admin.create_topic("hot", HOT)
            admin.create_topic("cold", COLD)
            admin.wait_until_ready("hot")
            admin.wait_until_ready("cold")
        paced = PacedProducer(cluster.bootstrap)
        paced.start()
        wait_for(
            lambda: (
                read_broker_traffic(zk).get("b1") is not None
                and read_broker_traffic(zk)["b1"].produce_bytes_per_s > HOT * 50_000
            ),
            timeout=30,
            what="b1 to report the hot traffic",
        )

        seen: list[Assignment] = []
        watcher = AssignmentWatcher(zk, seen.append)
        cluster.add_broker()
        cluster.add_broker()
        cluster.wait_for_brokers(3)
        joined = time.monotonic()
        wait_for(
            lambda: bool(seen) and hot_per_broker(seen[-1].owners) == {"b1": 2, "b2": 2, "b3": 2},
            timeout=60,
            what="two hot partitions on each broker",
        )
        converged_s = time.monotonic() - joined
        settled_version = seen[-1].version
        time.sleep(6 * INTERVAL_S)  # three more rounds at least: nothing may move
        watcher.stop()
        history = list(seen)
        acked = paced.stop()
        paced = None

        moves_per_version = moves_between(history)
        total_moves = sum(len(m) for _v, m in moves_per_version)
        print(
            f"\nconverged {converged_s:.1f}s after the joins; {len(moves_per_version)} rounds, "
            f"{total_moves} moves: {moves_per_version}"
        )
        assert all(len(m) <= MAX_MOVES for _v, m in moves_per_version)
        assert 4 <= total_moves <= 8  # 4 hot partitions must leave b1; a few cold ones may
        assert len(moves_per_version) <= 4
        assert all(v <= settled_version for v, _m in moves_per_version), "moved after settling"

        reports = read_broker_traffic(zk)
        loads = {b: reports[b].bytes_per_s for b in ("b1", "b2", "b3")}
        mean = sum(loads.values()) / 3
        assert max(loads.values()) <= (1 + EPSILON) * mean * 1.2, loads  # 20%: measuring noise

        load = subprocess.run(
            [
                sys.executable,
                "-m",
                "talos",
                "cluster",
                "load",
                "--json",
                "--zookeeper",
                zk_server.address,
                "--cluster",
                cluster_name,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=os.environ,
        )
        assert load.returncode == 0, load.stderr
        view = json.loads(load.stdout)
        assert view["controller"] == "b1"
        assert sorted(row["broker"] for row in view["brokers"]) == ["b1", "b2", "b3"]

        ends: dict[tuple[str, int], int] = {}
        for (topic, p, _tag), offset in acked.items():
            ends[(topic, p)] = max(ends.get((topic, p), 0), offset + 1)
        found = read_everything(cluster.bootstrap, ends)
        lost = [
            key
            for key, offset in acked.items()
            if found[key[:2]].get(offset, b"")[: len(key[2])] != key[2]
        ]
        assert len(acked) > 1_000
        assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {lost[:3]}"
    finally:
        if paced is not None:
            paced.stop()
        zk.stop()
        zk.close()
        cluster.stop()


def test_cluster_load_refuses_a_missing_zookeeper_flag() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TALOS_ZOOKEEPER"}
    result = subprocess.run(
        [sys.executable, "-m", "talos", "cluster", "load"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2
    assert "--zookeeper" in result.stderr
