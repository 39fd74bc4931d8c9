"""Issue 11 §1: a topic is its incarnation, not its name.

A deleted and recreated topic must never be served by an owner that still
holds the old incarnation's log in memory (a broker paused through the
delete and the recreate, for less than its ZooKeeper session).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from talos.client import Admin, Consumer, Producer, TopicPartition
from talos.testing.cluster import LocalCluster

pytestmark = pytest.mark.integration

#: Long enough that the pause below never expires the owner's session.
SESSION_TIMEOUT = 15.0


@pytest.fixture
def slow_sessions(make_cluster: Callable[..., LocalCluster]) -> LocalCluster:
    return make_cluster(brokers=2, session_timeout=SESSION_TIMEOUT)


def _read_all(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list:
    consumer = Consumer(bootstrap, auto_offset_reset="earliest")
    try:
        consumer.assign([TopicPartition(topic, 0)])
        messages: list = []
        deadline = time.monotonic() + timeout
        while len(messages) < expected and time.monotonic() < deadline:
            messages.extend(consumer.poll(timeout_s=1.0))
        messages.extend(consumer.poll(timeout_s=0.5))  # nothing more may appear
        return messages
    finally:
        consumer.close()


def test_paused_owner_never_serves_a_recreated_topic(slow_sessions: LocalCluster) -> None:
    cluster = slow_sessions
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("reborn", 1)
        owner_id = admin.wait_until_ready("reborn").partitions[0].owner_id
    with Producer(cluster.bootstrap) as producer:
        for i in range(10):
            producer.send("reborn", f"old-{i}".encode(), partition=0)
    owner = next(b for b in cluster.brokers if b.broker_id == owner_id)
    other = next(b for b in cluster.brokers if b is not owner)

    owner.signal(signal.SIGSTOP)
    paused_at = time.monotonic()
    try:
        with Admin(other.address) as admin:
            admin.delete_topic("reborn")
            admin.create_topic("reborn", 1)
    finally:
        owner.signal(signal.SIGCONT)
    assert time.monotonic() - paused_at < SESSION_TIMEOUT / 2, "pause outlived the session"

    acked: dict[bytes, int] = {}
    with Producer(cluster.bootstrap, delivery_timeout_s=60) as producer:
        futures = [
            (f"new-{i}".encode(), producer.send("reborn", f"new-{i}".encode(), partition=0))
            for i in range(30)
        ]
        for value, future in futures:
            acked[value] = future.result(timeout=90).offset

    for broker in cluster.brokers:
        cluster.restart(broker)
    cluster.wait_for_brokers(len(cluster.brokers))
    with Admin(cluster.bootstrap) as admin:
        admin.wait_until_ready("reborn", timeout_s=60)

    messages = _read_all(cluster.bootstrap, "reborn", len(acked))
    served = {m.value: m.offset for m in messages}
    assert not [v for v in served if v.startswith(b"old-")], "the old incarnation was served"
    assert served == acked, "acknowledged messages were lost or moved"
    assert sorted(acked.values()) == list(range(30)), "a new incarnation starts at offset 0"
