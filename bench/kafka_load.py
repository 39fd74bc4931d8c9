"""Kafka load generators with the same shape as the other peers (see peer_load.py).

Two Python clients of the same broker: confluent-kafka (librdkafka, C; what
Kafka users in Python pick for speed) and aiokafka (pure Python, like Talos's
client). Both produce with ``acks=all`` (on a one-broker cluster: the leader
wrote it to its log, i.e. the page cache, under Kafka's default flush policy)
and otherwise their defaults: linger 5 ms, librdkafka's 1 MB / aiokafka's 16 KB
batches. The latency runs send one message at a time with linger 0 and wait
for its acknowledgement, as the other peers do. ``PeerSpec.url`` is the
bootstrap address; ``stream`` the topic; ``partitions`` the partition numbers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from talos import aio
from talos.bench.pacing import payload
from talos.bench.pool import Tally, WorkResult

from .peer_load import (
    RUN,
    PeerSpec,
    Schedule,
    asleep_until,
    future_timer,
    sleep_until,
    work_result,
)

ACKS = "all"


def ensure_kafka_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` with ``partitions`` partitions (replication factor 1) and wait."""
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        meta = admin.list_topics(topic, timeout=10).topics.get(topic)
        if meta is not None and meta.error is None and len(meta.partitions) == partitions:  # noqa: SIM102
            if all(p.leader >= 0 for p in meta.partitions.values()):
                return
        time.sleep(0.1)


# ---- confluent-kafka (librdkafka) ------------------------------------------------------------


def confluent_produce(spec: PeerSpec, tally: Tally) -> WorkResult:
    from confluent_kafka import KafkaException, Producer

    paced = spec.rate > 0
    producer = Producer(
        {"bootstrap.servers": spec.url, "acks": ACKS, "linger.ms": 0 if paced else 5}
    )
    body = payload(spec.size, spec.seed)
    producer.produce(spec.stream, body, partition=spec.partitions[0])  # warm up
    producer.flush(30)
    tally.ready_and_wait()
    latencies: list[float] = []
    failed: list[Any] = []
    perf = time.perf_counter
    schedule = Schedule(spec, tally)

    def timed(t: float) -> Any:
        def done(err: Any, _msg: Any) -> None:
            if err is None:
                latencies.append((perf() - t) * 1000)
            else:
                failed.append(err)

        return done

    if paced:
        for partition, due in schedule.paced():
            sleep_until(due)
            before = len(latencies) + len(failed)
            producer.produce(spec.stream, body, partition=partition, on_delivery=timed(perf()))
            # poll() returns as soon as it served the delivery report (flush() sleeps longer).
            while len(latencies) + len(failed) == before:
                producer.poll(1.0)
    else:
        every = max(spec.sample_every, 1)
        for partition, chunk in schedule.runs():
            i = 0
            while i < chunk:
                try:
                    if (schedule.sent + i) % every:
                        producer.produce(spec.stream, body, partition=partition)
                    else:
                        producer.produce(
                            spec.stream, body, partition=partition, on_delivery=timed(perf())
                        )
                    i += 1
                except BufferError:  # librdkafka's queue is full: serve callbacks, retry
                    producer.poll(0.01)
            producer.poll(0)
    left = producer.flush(spec.timeout)
    if left:
        raise KafkaException(f"{left} messages not acknowledged after {spec.timeout} s")
    return schedule.result(latencies, len(failed))


def _watermarks(consumer: Any, topic: str, partitions: tuple[int, ...]) -> dict[int, int]:
    return {p: consumer.get_watermark_offsets(_tp(topic, p), timeout=30)[1] for p in partitions}


def _tp(topic: str, partition: int, offset: int | None = None) -> Any:
    from confluent_kafka import TopicPartition

    return (
        TopicPartition(topic, partition)
        if offset is None
        else TopicPartition(topic, partition, offset)
    )


def confluent_consume(spec: PeerSpec, tally: Tally) -> WorkResult:
    from confluent_kafka import OFFSET_BEGINNING, Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": spec.url,
            "group.id": f"bench-{spec.seed}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        expected = sum(_watermarks(consumer, spec.stream, spec.partitions).values())
        consumer.assign([_tp(spec.stream, p, OFFSET_BEGINNING) for p in spec.partitions])
        tally.ready_and_wait()
        started = time.time()
        deadline = time.monotonic() + spec.timeout
        count = errors = 0
        while count < expected and time.monotonic() < deadline:
            msgs = consumer.consume(5000, 1.0)
            good = sum(1 for m in msgs if m.error() is None)
            errors += len(msgs) - good
            count += good
            tally.add(good)
        return work_result(started, count, spec.size, [], errors + max(expected - count, 0))
    finally:
        consumer.close()


# ---- aiokafka (pure Python) ------------------------------------------------------------------


def aiokafka_produce(spec: PeerSpec, tally: Tally) -> WorkResult:
    return aio.run(_aiokafka_produce(spec, tally))  # the loop Talos runs on, for fairness


async def _aiokafka_produce(spec: PeerSpec, tally: Tally) -> WorkResult:
    from aiokafka import AIOKafkaProducer

    paced = spec.rate > 0
    producer = AIOKafkaProducer(bootstrap_servers=spec.url, acks=ACKS, linger_ms=0 if paced else 5)
    await producer.start()
    try:
        body = payload(spec.size, spec.seed)
        await producer.send_and_wait(spec.stream, body, partition=spec.partitions[0])
        tally.ready_and_wait()
        latencies: list[float] = []
        failed = 0
        perf = time.perf_counter
        schedule = Schedule(spec, tally)
        if paced:
            for partition, due in schedule.paced():
                await asleep_until(due)
                t = perf()
                await producer.send_and_wait(spec.stream, body, partition=partition)
                latencies.append((perf() - t) * 1000)
        else:
            every = max(spec.sample_every, 1)
            pending: list[asyncio.Future[Any]] = []
            for partition, chunk in schedule.runs():
                for i in range(chunk):
                    # send() waits while the accumulator is full: that is the back-pressure.
                    future = await producer.send(spec.stream, body, partition=partition)
                    if (schedule.sent + i) % every == 0:
                        future.add_done_callback(future_timer(latencies, perf()))
                    pending.append(future)
                if len(pending) > 50 * RUN:
                    failed += await _settle(pending[: 25 * RUN])
                    del pending[: 25 * RUN]
            await producer.flush()
            failed += await _settle(pending)
        return schedule.result(latencies, failed)
    finally:
        await producer.stop()


async def _settle(futures: list[asyncio.Future[Any]]) -> int:
    """Wait for ``futures``; how many failed."""
    results = await asyncio.gather(*futures, return_exceptions=True)
    return sum(1 for r in results if isinstance(r, BaseException))


def aiokafka_consume(spec: PeerSpec, tally: Tally) -> WorkResult:
    return aio.run(_aiokafka_consume(spec, tally))


async def _aiokafka_consume(spec: PeerSpec, tally: Tally) -> WorkResult:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    # 4 MiB per partition, as Talos's fetches: a librdkafka batch (up to 1 MB of records)
    # with its framing does not fit aiokafka's default 1 MiB, and the read stalls.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=spec.url,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        parts = [TopicPartition(spec.stream, p) for p in spec.partitions]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        expected = sum(ends.values())
        await consumer.seek_to_beginning(*parts)
        # Wait for the go signal off the loop: aiokafka's fetcher keeps running meanwhile.
        await asyncio.get_running_loop().run_in_executor(None, tally.ready_and_wait)
        started = time.time()
        deadline = time.monotonic() + spec.timeout
        count = 0
        while count < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            got = sum(len(msgs) for msgs in batches.values())
            count += got
            tally.add(got)
        return work_result(started, count, spec.size, [], max(expected - count, 0))
    finally:
        await consumer.stop()
