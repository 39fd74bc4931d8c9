"""NATS JetStream and Redis Streams load generators with the same shape as Talos's.

Same shape means: the same message sizes, the same number of producer and
consumer processes, the same number of partitions (Redis: one stream per
partition; NATS: one stream, one subject per partition), the same sticky
partitioning (a run of messages to one partition, then the next), each
client's own pipelining for throughput, and one request at a time for the
fixed-rate latency runs. Each runs inside a talos.bench.pool worker.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from talos import aio
from talos.bench.pacing import Pacer, payload
from talos.bench.pool import Tally, WorkResult

RUN = 1000  # messages per partition before moving on, and per Redis pipeline


@dataclass(frozen=True)
class PeerSpec:
    url: str
    stream: str
    partitions: tuple[int, ...]  # producers: all partitions; consumers: their share
    size: int
    messages: int  # 0: run for ``duration``
    duration: float
    rate: float  # per worker; 0: pipelined, flat out
    sample_every: int
    seed: int = 7
    expected: int = 0  # consumers: read this many (0: until done)
    timeout: float = 600.0


def limits(spec: PeerSpec, start: float) -> tuple[int, float]:
    if spec.messages:
        return spec.messages, math.inf
    return 2**62, start + spec.duration


class Schedule:
    """The load shape every peer's produce loop follows, so only the client calls differ.

    Messages go in runs of RUN to one partition, then the next; the run stops at
    ``spec.messages`` or after ``spec.duration``, checked once per run; the pool's
    tally hears of every finished run. Create it after the start signal.
    """

    def __init__(self, spec: PeerSpec, tally: Tally) -> None:
        self.spec = spec
        self.tally = tally
        self.started = time.time()
        self.start = time.perf_counter()
        self.count, self.end = limits(spec, self.start)
        self.sent = 0

    def runs(self) -> Iterator[tuple[int, int]]:
        """Flat out: (partition, messages) per run; the caller sends them all."""
        partitions = self.spec.partitions
        while self.sent < self.count:
            chunk = min(RUN, self.count - self.sent)
            yield partitions[(self.sent // RUN) % len(partitions)], chunk
            self.sent += chunk
            self.tally.add(chunk)
            if time.perf_counter() >= self.end:
                return

    def paced(self) -> Iterator[tuple[int, float]]:
        """At ``spec.rate``: (partition, perf_counter time it is due) per message."""
        partitions = self.spec.partitions
        pacer = Pacer(self.spec.rate, self.start)
        try:
            while self.sent < self.count:
                yield partitions[(self.sent // RUN) % len(partitions)], pacer.due(self.sent)
                self.sent += 1
                if self.sent % RUN == 0:
                    self.tally.add(RUN)
                    if time.perf_counter() >= self.end:
                        return
        finally:
            self.tally.add(self.sent % RUN)

    def result(self, latencies: list[float], errors: int = 0) -> WorkResult:
        return work_result(self.started, self.sent, self.spec.size, latencies, errors)


def work_result(
    started: float, messages: int, size: int, latencies: list[float], errors: int
) -> WorkResult:
    """What one worker did, ending now."""
    result = WorkResult(started=started, finished=time.time())
    result.messages = messages
    result.bytes = messages * size
    result.latencies_ms = latencies
    result.errors = errors
    return result


def sleep_until(due: float) -> None:
    left = due - time.perf_counter()
    if left > 0:
        time.sleep(left)


async def asleep_until(due: float) -> None:
    left = due - time.perf_counter()
    if left > 0:
        await asyncio.sleep(left)


# ---- NATS JetStream ---------------------------------------------------------


async def ensure_nats_stream(url: str, stream: str, partitions: int) -> None:
    import nats
    from nats.js.api import StorageType

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            name=stream,
            subjects=[f"{stream}.{p}" for p in range(partitions)],
            storage=StorageType.FILE,
        )
    finally:
        await nc.close()


def nats_produce(spec: PeerSpec, tally: Tally) -> WorkResult:
    return aio.run(_nats_produce(spec, tally))  # the loop Talos runs on, for fairness


async def _nats_produce(spec: PeerSpec, tally: Tally) -> WorkResult:
    import nats

    nc = await nats.connect(spec.url, pending_size=64 * 1024 * 1024)
    try:
        js = nc.jetstream()
        body = payload(spec.size, spec.seed)
        await js.publish(f"{spec.stream}.{spec.partitions[0]}", body)  # warm up
        tally.ready_and_wait()
        latencies: list[float] = []
        perf = time.perf_counter
        schedule = Schedule(spec, tally)
        if spec.rate > 0:
            for partition, due in schedule.paced():
                await asleep_until(due)
                t = perf()
                await js.publish(f"{spec.stream}.{partition}", body)
                latencies.append((perf() - t) * 1000)
        else:
            every = max(spec.sample_every, 1)
            for partition, chunk in schedule.runs():
                subject = f"{spec.stream}.{partition}"
                for i in range(chunk):
                    if (schedule.sent + i) % every:
                        await js.publish_async(subject, body)
                    else:
                        t = perf()
                        future = await js.publish_async(subject, body)
                        future.add_done_callback(future_timer(latencies, t))
            await js.publish_async_completed()
        return schedule.result(latencies)
    finally:
        await nc.close()


def future_timer(latencies: list[float], sent: float) -> Any:
    def done(future: Any) -> None:
        if not future.cancelled() and future.exception() is None:
            latencies.append((time.perf_counter() - sent) * 1000)

    return done


def nats_consume(spec: PeerSpec, tally: Tally) -> WorkResult:
    return aio.run(_nats_consume(spec, tally))


async def _nats_consume(spec: PeerSpec, tally: Tally) -> WorkResult:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    nc = await nats.connect(spec.url)
    try:
        js = nc.jetstream()
        subs = []
        expected = 0
        for p in spec.partitions:
            sub = await js.pull_subscribe(
                f"{spec.stream}.{p}",
                stream=spec.stream,
                config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
                pending_msgs_limit=1_000_000,
                pending_bytes_limit=512 * 1024 * 1024,
            )
            info = await sub.consumer_info()
            expected += info.num_pending or 0
            subs.append(sub)
        tally.ready_and_wait()
        result = WorkResult(started=time.time())
        deadline = time.monotonic() + spec.timeout
        count = 0
        done = [False] * len(subs)
        remaining = [0] * len(subs)
        for i, sub in enumerate(subs):
            remaining[i] = (await sub.consumer_info()).num_pending or 0
        while count < expected and time.monotonic() < deadline:
            for i, sub in enumerate(subs):
                if done[i]:
                    continue
                try:
                    msgs = await sub.fetch(batch=min(5000, max(remaining[i], 1)), timeout=1.0)
                except nats.errors.TimeoutError:
                    msgs = []
                count += len(msgs)
                remaining[i] -= len(msgs)
                tally.add(len(msgs))
                if remaining[i] <= 0:
                    done[i] = True
        result.finished = time.time()
        result.messages = count
        result.bytes = count * spec.size
        result.errors = max(expected - count, 0)
        return result
    finally:
        await nc.close()


# ---- Redis Streams ----------------------------------------------------------


def redis_produce(spec: PeerSpec, tally: Tally) -> WorkResult:
    import redis

    client = redis.Redis.from_url(spec.url)
    try:
        body = payload(spec.size, spec.seed)
        client.xadd(f"{spec.stream}:{spec.partitions[0]}", {"v": body})  # warm up
        tally.ready_and_wait()
        latencies: list[float] = []
        perf = time.perf_counter
        schedule = Schedule(spec, tally)
        if spec.rate > 0:
            for partition, due in schedule.paced():
                sleep_until(due)
                t = perf()
                client.xadd(f"{spec.stream}:{partition}", {"v": body})
                latencies.append((perf() - t) * 1000)
        else:
            # Pipelined XADD in groups of RUN; a pipeline's latency is timed whole.
            every_pipeline = max(1, spec.sample_every // RUN)
            for pipelines, (partition, chunk) in enumerate(schedule.runs()):
                pipe = client.pipeline(transaction=False)
                for _ in range(chunk):
                    pipe.xadd(f"{spec.stream}:{partition}", {"v": body})
                t = perf()
                pipe.execute()
                if pipelines % every_pipeline == 0:
                    latencies.append((perf() - t) * 1000)
        return schedule.result(latencies)
    finally:
        client.close()


def redis_consume(spec: PeerSpec, tally: Tally) -> WorkResult:
    import redis

    client = redis.Redis.from_url(spec.url)
    try:
        keys = [f"{spec.stream}:{p}" for p in spec.partitions]
        expected = sum(int(client.xlen(k)) for k in keys)
        last: dict[str, bytes | str] = dict.fromkeys(keys, "0-0")
        tally.ready_and_wait()
        result = WorkResult(started=time.time())
        deadline = time.monotonic() + spec.timeout
        count = 0
        while count < expected and time.monotonic() < deadline:
            replies: Any = client.xread(last, count=5000)  # type: ignore[arg-type]
            for key, entries in replies:
                if entries:
                    name = key.decode() if isinstance(key, bytes) else key
                    last[name] = entries[-1][0]
                    count += len(entries)
                    tally.add(len(entries))
        result.finished = time.time()
        result.messages = count
        result.bytes = count * spec.size
        result.errors = max(expected - count, 0)
        return result
    finally:
        client.close()
