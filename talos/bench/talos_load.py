"""The Talos load generators that run inside :class:`~talos.bench.pool.Pool` workers."""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from talos.client import Consumer, Producer, TopicPartition
from talos.heap import keep_freed_memory

from .pacing import Pacer, payload, stamp_of, stamped
from .pool import Tally, WorkResult

TICK = 1024  # messages between progress reports and clock checks


@dataclass(frozen=True)
class ProduceSpec:
    bootstrap: str
    topic: str
    size: int
    messages: int  # 0: run for ``duration`` seconds instead
    duration: float
    rate: float  # offered messages/s of this worker; 0: as fast as it goes
    linger_ms: float
    batch_bytes: int
    compression: str
    max_in_flight: int
    sample_every: int  # time one send in this many (every one in fixed-rate mode)
    stamp: bool  # write the send time into the value (end-to-end latency)
    seed: int = 7


@dataclass(frozen=True)
class ConsumeSpec:
    bootstrap: str
    topic: str
    partitions: tuple[int, ...]
    size: int
    expected: int  # stop after this many messages; 0: until told to stop
    fetch_bytes: int
    from_end: bool  # e2e: read what is produced from now on
    stamp: bool  # measure produce-time-to-poll latency from the value
    timeout: float


def _timer(latencies: list[float], sent: float) -> Callable[[Future[Any]], None]:
    def done(future: Future[Any]) -> None:
        if future.exception() is None:
            latencies.append((time.perf_counter() - sent) * 1000.0)

    return done


def produce(spec: ProduceSpec, tally: Tally) -> WorkResult:
    keep_freed_memory()  # what Talos recommends for a producer process (talos/heap.py)
    producer = Producer(
        spec.bootstrap,
        linger_ms=spec.linger_ms,
        batch_bytes=spec.batch_bytes,
        compression=spec.compression,
        max_in_flight_per_broker=spec.max_in_flight,
    )
    try:
        body = payload(spec.size, spec.seed)
        # Warm up outside the timed part: channel, metadata, producer id. End-to-end
        # consumers skip the warm-up message by its zero stamp.
        warm_up = stamped(body, 0) if spec.stamp else body
        producer.send(spec.topic, warm_up).result(timeout=60)
        # As the README recommends to a producer application that cares for latency: a
        # full GC collection walking the start-up heap stalls every send in flight.
        gc.freeze()
        tally.ready_and_wait()
        latencies: list[float] = []
        result = WorkResult(started=time.time())
        start = time.perf_counter()
        if spec.rate > 0 or spec.stamp:
            sent = _paced(producer, spec, body, latencies, tally, start)
        else:
            sent = _flat_out(producer, spec, body, latencies, tally, start)
        producer.flush()
        result.finished = time.time()
        tally.add(sent % TICK)
        result.messages = sent
        result.bytes = sent * spec.size
        result.latencies_ms = latencies
        result.errors = producer.metrics.get("records_failed", 0)
        result.extra = dict(producer.metrics)
        return result
    finally:
        producer.close()


def _limits(spec: ProduceSpec, start: float) -> tuple[int, float]:
    if spec.messages:
        return spec.messages, math.inf
    return 2**62, start + spec.duration


def _flat_out(
    producer: Producer,
    spec: ProduceSpec,
    body: bytes,
    latencies: list[float],
    tally: Tally,
    start: float,
) -> int:
    """As fast as send() goes; one send in ``sample_every`` is timed."""
    send, topic, perf = producer.send, spec.topic, time.perf_counter
    count, end = _limits(spec, start)
    every = max(spec.sample_every, 1)
    sent = 0
    while sent < count:
        chunk = min(TICK, count - sent)
        for i in range(chunk):
            if i % every:
                send(topic, body)
            else:
                t = perf()
                send(topic, body).add_done_callback(_timer(latencies, t))
        sent += chunk
        if chunk == TICK:
            tally.add(TICK)
        if perf() >= end:
            break
    return sent


def _paced(
    producer: Producer,
    spec: ProduceSpec,
    body: bytes,
    latencies: list[float],
    tally: Tally,
    start: float,
) -> int:
    """Fixed offered rate (open loop); one send in ``sample_every`` is timed."""
    send, topic, perf = producer.send, spec.topic, time.perf_counter
    count, end = _limits(spec, start)
    pacer = Pacer(spec.rate, start) if spec.rate > 0 else None
    every = max(spec.sample_every, 1)
    sent = 0
    while sent < count:
        if pacer is not None:
            pacer.wait(sent)
        value = stamped(body, time.time_ns()) if spec.stamp else body
        if sent % every:
            send(topic, value)
        else:
            t = perf()
            send(topic, value).add_done_callback(_timer(latencies, t))
        sent += 1
        if sent % TICK == 0:
            tally.add(TICK)
            if perf() >= end:
                break
    return sent


def consume(spec: ConsumeSpec, tally: Tally) -> WorkResult:
    consumer = Consumer(
        spec.bootstrap,
        fetch_max_bytes=spec.fetch_bytes,
        fetch_max_wait_ms=100,
        auto_offset_reset="earliest",
    )
    try:
        tps = [TopicPartition(spec.topic, p) for p in spec.partitions]
        consumer.assign(tps)
        if spec.from_end:
            consumer.seek_to_end(tps)
        else:
            consumer.seek_to_beginning(tps)
        tally.ready_and_wait()
        latencies: list[float] = []
        result = WorkResult(started=time.time())
        deadline = time.monotonic() + spec.timeout
        count = 0
        idle_since: float | None = None
        while not spec.expected or count < spec.expected:
            messages = consumer.poll(timeout_s=0.2, max_records=1_000_000)
            if spec.stamp:
                messages = [m for m in messages if stamp_of(m.value or b"") > 0]
            if messages:
                count += len(messages)
                tally.add(len(messages))
                idle_since = None
                if spec.stamp:
                    now = time.time_ns()
                    latencies.extend([(now - stamp_of(m.value or b"")) / 1e6 for m in messages])
            elif tally.stopping():
                if idle_since is None:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > 1.0:
                    break  # producers are done and nothing more arrives
            if time.monotonic() > deadline:
                break
        result.finished = time.time()
        result.messages = count
        result.bytes = count * spec.size
        result.latencies_ms = latencies
        if spec.expected and count < spec.expected:
            result.errors = spec.expected - count
        return result
    finally:
        consumer.close()
