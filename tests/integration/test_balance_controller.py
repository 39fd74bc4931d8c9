"""The controller balancing by traffic reports, against a real ZooKeeper (issue 13 §3).

Three registered brokers, each with its own session; a thread writes each one's
traffic report (coord/traffic.py's writer, ephemeral znodes) for the partitions
the assignment gives it, the way a broker reports what it serves. Timing is
fast (0.3 s rounds) so the pacing of rounds and the leave of a broker are quick
to see; the end-to-end test with broker processes is test_placement.py.
"""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from talos.config import TopicConfig
from talos.coord.brokers import BrokerRegistry
from talos.coord.controller import (
    Assignment,
    AssignmentWatcher,
    Balance,
    Controller,
    read_assignment,
)
from talos.coord.topics import TopicStore
from talos.coord.traffic import BrokerTraffic, PartitionRate, write_broker_traffic
from talos.errors import TalosError

from .test_coord import Connect, controllers, new_client, wait_for  # noqa: F401
from .test_placement import hot_per_broker, moves_between

pytestmark = pytest.mark.integration

INTERVAL_S = 0.3
EPSILON = 0.3
MAX_MOVES = 2
HOT_RATE = 100_000.0


def test_controller_moves_by_traffic_a_few_a_round_and_absorbs_a_leaving_broker(
    new_client: Connect,  # noqa: F811
    controllers: list[Controller],  # noqa: F811
) -> None:
    admin = new_client()
    TopicStore(admin).create("hot", 6, TopicConfig(), now_ms=1)
    TopicStore(admin).create("cold", 12, TopicConfig(), now_ms=1)
    clients = {b: new_client() for b in ("a", "b", "c")}
    for broker, client in clients.items():
        BrokerRegistry(client).register(broker, f"{broker}:9000")
    seen: list[Assignment] = []
    watcher = AssignmentWatcher(admin, seen.append)
    controller = Controller(clients["a"], "a", balance=Balance(EPSILON, INTERVAL_S, MAX_MOVES))
    controllers.append(controller)
    controller.start()
    wait_for(lambda: len(read_assignment(admin).owners) == 18, what="everything assigned")

    stop = threading.Event()
    gone: set[str] = set()

    def report() -> None:
        """Each live broker reports what the assignment gives it: hot 100 KB/s, cold 0."""
        while not stop.wait(INTERVAL_S / 2):
            owners = read_assignment(admin).owners
            for broker, client in clients.items():
                if broker in gone:
                    continue
                rates = {
                    p: PartitionRate(HOT_RATE if p[0] == "hot" else 0.0, 0.0)
                    for p, owner in owners.items()
                    if owner == broker
                }
                with contextlib.suppress(TalosError):  # c's session just ended
                    write_broker_traffic(
                        client, BrokerTraffic(broker, int(time.time() * 1000), INTERVAL_S, rates)
                    )

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        # Whatever the count-balanced start, the hot topic ends two a broker.
        wait_for(
            lambda: hot_per_broker(read_assignment(admin).owners) == {"a": 2, "b": 2, "c": 2},
            timeout=30,
            what="hot partitions spread by traffic",
        )
        time.sleep(5 * INTERVAL_S)
        settled = read_assignment(admin).version
        assert all(len(m) <= MAX_MOVES for _v, m in moves_between(list(seen)))
        assert seen[-1].version == settled, "moved again after settling"

        # c leaves: its session ends, and with it its registration and its report.
        before = read_assignment(admin).owners
        gone.add("c")
        clients["c"].stop()
        wait_for(
            lambda: "c" not in read_assignment(admin).owners.values(),
            timeout=15,
            what="c's partitions placed on a and b",
        )
        after = read_assignment(admin).owners
        survivors_moved = [p for p in before if before[p] != "c" and after[p] != before[p]]
        assert len(survivors_moved) <= MAX_MOVES
        # c's hot partitions went one to a and one to b: bytes/s bound the placement.
        assert hot_per_broker(after) == {"a": 3, "b": 3}
        time.sleep(5 * INTERVAL_S)
        last = read_assignment(admin)
        assert hot_per_broker(last.owners) == {"a": 3, "b": 3}
        assert controller.moves <= 8
    finally:
        stop.set()
        reporter.join(5)
        watcher.stop()
