"""MirrorMaker 2 on the work of ``talos bench mirror``: two Kafka clusters and one MM2 process.

Cluster A and cluster B are one-node KRaft Kafkas (:mod:`talos.testing.kafka`);
one ``connect-mirror-maker`` process (MM2's dedicated mode: one worker, with
``tasks.max`` = the partition count, so each partition gets its own task
thread) copies the topic from A to B under MM2's default replication policy,
so the copy of ``t`` is ``A.t``. The load is the same as for Talos: 100 B
letters, the same partition count, produced with confluent-kafka and
``acks=all``. Needs `make bench-deps` (the jars and the ``bench`` extra).
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from talos.errors import TalosError

from .pacing import payload, stamp_of, stamped
from .progress import Progress

#: MM2's name for the copy of a topic under its default replication policy.
SOURCE_ALIAS = "A"


def remote_topic(topic: str) -> str:
    return f"{SOURCE_ALIAS}.{topic}"


@dataclass
class Mm2Pair:
    """Two running Kafka clusters, the topic in A, and (once started) the MM2 process."""

    a: Any
    b: Any
    topic: str
    partitions: int
    work_dir: Path
    mm2: Any = None
    restarts: int = 0

    def start_mm2(self) -> Any:
        from talos.testing.kafka import MirrorMaker

        self.mm2 = MirrorMaker(
            self.a.bootstrap,
            self.b.bootstrap,
            self.topic,
            str(self.work_dir),
            tasks=self.partitions,
            name=f"mm2-{self.restarts}",
        )
        self.restarts += 1
        self.mm2.start()
        return self.mm2

    def check_mm2(self) -> None:
        if self.mm2 is not None and not self.mm2.alive():
            raise TalosError(f"MirrorMaker 2 exited: {self.mm2.log_tail()}")


def ensure_kafka() -> None:
    from talos.testing.kafka import mirror_maker_available

    reason = mirror_maker_available()
    if reason is None:
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            reason = "confluent-kafka is not installed (the `bench` extra: make bench-deps)"
    if reason is not None:
        raise TalosError(f"--against mm2: {reason}")


@contextlib.contextmanager
def mm2_pair(partitions: int, topic: str = "bench-mirror") -> Iterator[Mm2Pair]:
    """Start clusters A and B, create ``topic`` in A; stop everything on the way out."""
    from talos.testing.kafka import KafkaServer

    ensure_kafka()
    with tempfile.TemporaryDirectory(prefix="talos-bench-mm2-") as tmp:
        a = KafkaServer(data_dir=f"{tmp}/A", partitions=partitions)
        b = KafkaServer(data_dir=f"{tmp}/B", partitions=partitions)
        pair = Mm2Pair(a, b, topic, partitions, Path(tmp) / "mm2")
        try:
            a.start()
            b.start()
            create_topic(a.bootstrap, topic, partitions)
            yield pair
        finally:
            if pair.mm2 is not None:
                pair.mm2.stop()
            b.stop()
            a.stop()


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(60)


class Ends:
    """Sum of a topic's log-end offsets in one cluster (None while it has no such topic)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "talos-bench-ends"})
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]

    def total(self) -> int | None:
        from confluent_kafka import KafkaException

        try:
            ends = [int(self.consumer.get_watermark_offsets(tp, timeout=5)[1]) for tp in self.tps]
            return sum(ends)
        except KafkaException:
            return None

    def close(self) -> None:
        self.consumer.close()


def produce(bootstrap: str, topic: str, count: int, size: int, keyed: bool = False) -> int:
    """Write ``count`` messages (letters; keyed ``k<i>`` with the index as value if ``keyed``)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    body = payload(size)
    for i in range(count):
        value = f"{i:012d}".encode() + body[12:] if keyed else body
        while True:
            try:
                if keyed:
                    producer.produce(topic, value, key=f"k{i}".encode())
                else:
                    producer.produce(topic, value)
                break
            except BufferError:
                producer.poll(0.01)
    left: int = producer.flush(120)
    if left:
        raise TalosError(f"{left} messages to {topic} not acknowledged by Kafka")
    return count


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, pair: Mm2Pair) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        pair.check_mm2()
        if time.monotonic() > deadline:
            raise TalosError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def mm2_throughput(
    messages: int, size: int, partitions: int, progress: bool, timeout: float
) -> dict[str, Any]:
    """Load a backlog into A with MM2 stopped, then time one MM2 process copying it to B."""
    from .mirror import copy_rate

    with mm2_pair(partitions) as pair:
        produce(pair.a.bootstrap, pair.topic, messages, size)
        target = Ends(pair.b.bootstrap, remote_topic(pair.topic), partitions)
        try:
            bar = Progress("mm2 loopback", messages, enabled=progress)
            started = time.monotonic()
            pair.start_mm2()
            first: tuple[float, int] | None = None
            done = 0
            deadline = started + timeout
            while done < messages:
                pair.check_mm2()
                if time.monotonic() > deadline:
                    raise TalosError(f"mm2 bench: not caught up after {timeout} s")
                done = target.total() or 0
                now = time.monotonic()
                if first is None and done > 0:
                    first = (now, done)
                bar.update(done)
                if done < messages:
                    time.sleep(0.05)
            finished = time.monotonic()
            bar.close(done)
        finally:
            target.close()
    seconds = finished - started
    figures: dict[str, Any] = {
        "messages": messages,
        "seconds": round(seconds, 3),
        "msgs_per_s": round(messages / seconds),
        "mb_per_s": round(messages * size / seconds / 1e6, 2),
        "tasks": partitions,
    }
    if first is not None:
        steady = copy_rate(messages, size, first[1], finished - first[0])
        figures["startup_s"] = round(first[0] - started, 3)
        figures["copy_msgs_per_s"] = round(steady["msgs_per_s"])
        figures["copy_mb_per_s"] = round(steady["mb_per_s"], 2)
    return figures


def mm2_lag(
    rate: float, duration: float, size: int, partitions: int, progress: bool, timeout: float
) -> dict[str, Any]:
    """Produce into A at ``rate`` msg/s; a consumer of B's copy times produce-to-readable."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    from .mirror import lag_figures

    with mm2_pair(partitions) as pair:
        remote = remote_topic(pair.topic)
        warm = stamped(payload(size), 0)
        producer = Producer({"bootstrap.servers": pair.a.bootstrap, "acks": "all"})
        for p in range(partitions):
            producer.produce(pair.topic, warm, partition=p)
        producer.flush(30)
        pair.start_mm2()
        source = Ends(pair.a.bootstrap, pair.topic, partitions)
        target = Ends(pair.b.bootstrap, remote, partitions)
        consumer = Consumer(
            {
                "bootstrap.servers": pair.b.bootstrap,
                "group.id": "talos-bench-lag",
                "enable.auto.commit": False,
            }
        )
        try:
            wait_until(
                lambda: target.total() == partitions,
                timeout,
                "MM2 to copy the first messages",
                pair,
            )
            # offset 1: past the warm-up message of each partition
            consumer.assign([TopicPartition(remote, p, 1) for p in range(partitions)])
            latencies: list[float] = []
            stop = threading.Event()

            def read() -> None:
                while not stop.is_set():
                    for msg in consumer.consume(1000, 0.2):
                        if msg.error() is None:
                            stamp = stamp_of(msg.value() or b"")
                            if stamp > 0:
                                latencies.append((time.time_ns() - stamp) / 1e6)

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            bar = Progress("mm2 lag", None, duration, enabled=progress)
            message_lag: list[int] = []
            body = payload(size)
            sent = 0
            start = time.monotonic()
            next_sample = start
            while (now := time.monotonic()) < start + duration:
                due = int((now - start) * rate)
                while sent < due:
                    producer.produce(
                        pair.topic,
                        stamped(body, time.time_ns()),
                        partition=(sent // 1000) % partitions,
                    )
                    sent += 1
                producer.poll(0)
                if now >= next_sample:
                    s, t = source.total(), target.total()
                    if s is not None and t is not None:
                        message_lag.append(max(s - t, 0))
                    next_sample = now + 0.1
                    bar.update(len(latencies))
                time.sleep(0.005)
            producer.flush(60)
            seconds = time.monotonic() - start
            wait_until(
                lambda: len(latencies) >= sent, 60, "the consumer in B to read every message", pair
            )
            stop.set()
            reader.join(10)
            bar.close(len(latencies))
        finally:
            consumer.close()
            source.close()
            target.close()
    figures: dict[str, Any] = {
        "rate": rate,
        "duration": duration,
        "sent": sent,
        "received": len(latencies),
        "offered_msgs_per_s": round(sent / seconds),
    }
    figures.update(lag_figures(latencies, message_lag))
    return figures
