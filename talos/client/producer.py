"""The producer: per-partition batching, client-side routing, idempotent retries.

``send()`` appends to the partition's open batch and returns a future. A
sender thread ships batches that are full or have lingered, grouping the
partitions each broker owns into one Produce call, with a bounded number of
calls in flight per broker. One batch per partition is in flight at a time,
so a partition's order survives retries; a retried batch is sent byte for
byte as before, and the broker's sequence check drops the duplicate.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import grpc

from talos.clock import SYSTEM_CLOCK, Clock
from talos.config import validate_partition, validate_topic_name
from talos.errors import (
    InvalidArgument,
    MessageTooLarge,
    TalosError,
    TalosTimeout,
)
from talos.proto import talos_pb2 as pb
from talos.record.batch import HEADER_SIZE, BatchBuilder, record_size
from talos.record.codec import Codec, parse_codec
from talos.record.crc import crc32c
from talos.wire import error_from_proto, from_grpc_error, raise_for

from .connection import Connections, retry_policy
from .routing import Router

log = logging.getLogger(__name__)


# Headroom under max_message_bytes: a record's timestamp delta may take up to 9
# more bytes than record_size() assumes, and compression adds frame overhead.
BATCH_SLACK_BYTES = 64


class RecordMetadata(NamedTuple):
    topic: str
    partition: int
    offset: int


@dataclass
class _Batch:
    topic: str
    partition: int
    builder: BatchBuilder
    futures: list[Future[RecordMetadata]] = field(default_factory=list)
    created: float = 0.0
    encoded: bytes | None = None
    attempts: int = 0
    deadline: float = 0.0


@dataclass
class _PartitionQueue:
    ready: deque[_Batch] = field(default_factory=deque)
    in_flight: bool = False
    retry_at: float = 0.0
    producer_id: int = -1
    next_sequence: int = 0


def key_partition(key: bytes, partitions: int) -> int:
    """Stable across processes and languages: CRC-32C of the key."""
    return crc32c(key) % partitions


class Producer:
    def __init__(
        self,
        bootstrap: str | Sequence[str],
        *,
        linger_ms: float = 5.0,
        batch_bytes: int = 256 * 1024,
        compression: str = "none",
        idempotent: bool = True,
        delivery_timeout_s: float = 120.0,
        request_timeout_s: float = 30.0,
        max_in_flight_per_broker: int = 5,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not 0 <= linger_ms <= 60_000:
            raise InvalidArgument(f"linger_ms: must be between 0 and 60000, got {linger_ms}")
        if not 1024 <= batch_bytes <= 64 * 1024 * 1024:
            raise InvalidArgument(
                f"batch_bytes: must be between 1024 and {64 * 1024 * 1024}, got {batch_bytes}"
            )
        if not 1 <= max_in_flight_per_broker <= 64:
            raise InvalidArgument(
                "max_in_flight_per_broker: must be between 1 and 64, "
                f"got {max_in_flight_per_broker}"
            )
        self.codec: Codec = parse_codec(compression)
        self.linger_s = linger_ms / 1000
        self.batch_bytes = batch_bytes
        self.idempotent = idempotent
        self.delivery_timeout_s = delivery_timeout_s
        self.max_in_flight = max_in_flight_per_broker
        self.clock = clock
        self.connections = Connections(bootstrap, request_timeout=request_timeout_s)
        self.router = Router(self.connections, clock)
        self._open: dict[tuple[str, int], _Batch] = {}
        self._queues: dict[tuple[str, int], _PartitionQueue] = {}
        self._sticky: dict[str, int] = {}
        self._round_robin = itertools.count()
        self._in_flight: dict[str, int] = {}
        self._outstanding = 0
        self._flush_requested = 0
        self._closed = False
        self._producer_id = -1
        self._lock = threading.Condition()
        self._sender = threading.Thread(target=self._run, name="talos-producer-sender", daemon=True)
        self._sender.start()
        self.metrics = {"batches_sent": 0, "retries": 0, "requests": 0}

    # ---- public API ---------------------------------------------------------

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes | None]] = (),
        timestamp_ms: int | None = None,
    ) -> Future[RecordMetadata]:
        if self._closed:
            raise InvalidArgument("producer: already closed")
        route = self.router.route(validate_topic_name(topic))
        limit = route.config.max_message_bytes
        size = record_size(value, key, headers) + HEADER_SIZE
        if size > limit - BATCH_SLACK_BYTES:
            raise MessageTooLarge(
                f"value: message of {size} bytes (with batch header) exceeds topic {topic!r} "
                f"max_message_bytes {limit}"
            )
        if partition is None:
            if key is not None:
                partition = key_partition(key, route.partitions)
            else:
                partition = self._sticky.get(topic)
                if partition is None or partition >= route.partitions:
                    partition = next(self._round_robin) % route.partitions
                    self._sticky[topic] = partition
        else:
            validate_partition(partition, route.partitions)
        future: Future[RecordMetadata] = Future()
        now = self.clock.monotonic()
        timestamp = self.clock.wall_ms() if timestamp_ms is None else timestamp_ms
        tp = (topic, partition)
        # A batch must also fit the topic's limit, which the broker applies to whole
        # batches; keep room for longer timestamp deltas and compression framing.
        cap = min(self.batch_bytes, limit - BATCH_SLACK_BYTES)
        with self._lock:
            batch = self._open.get(tp)
            if batch is not None and batch.builder.size_in_bytes + size - HEADER_SIZE > cap:
                self._seal(tp, batch)
                batch = None
            if batch is None:
                batch = _Batch(topic, partition, BatchBuilder(codec=self.codec), created=now)
                self._open[tp] = batch
            batch.builder.append(value, key, timestamp, headers)
            batch.futures.append(future)
            self._outstanding += 1
            if batch.builder.size_in_bytes >= cap:
                self._seal(tp, batch)
                self._lock.notify()
            elif len(batch.futures) == 1:
                self._lock.notify()
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Send everything buffered and wait for every outstanding send to finish."""
        deadline = None if timeout is None else self.clock.monotonic() + timeout
        with self._lock:
            self._flush_requested += 1
            self._lock.notify_all()
            try:
                while self._outstanding > 0:
                    remaining = None if deadline is None else deadline - self.clock.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TalosTimeout(f"flush: {self._outstanding} sends still outstanding")
                    self._lock.wait(0.05 if remaining is None else min(remaining, 0.05))
            finally:
                self._flush_requested -= 1

    def close(self, timeout: float | None = 30.0) -> None:
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            with self._lock:
                self._closed = True
                self._lock.notify_all()
            self._sender.join(timeout=5)
            self.connections.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- batching (under the lock) ------------------------------------------

    def _seal(self, tp: tuple[str, int], batch: _Batch) -> None:
        del self._open[tp]
        batch.deadline = self.clock.monotonic() + self.delivery_timeout_s
        self._queues.setdefault(tp, _PartitionQueue()).ready.append(batch)
        if self._sticky.get(tp[0]) == tp[1]:
            self._sticky.pop(tp[0], None)

    def _seal_lingering(self, now: float) -> float:
        """Seal open batches whose linger expired; return seconds until the next expires."""
        wait = 0.1
        for tp, batch in list(self._open.items()):
            due = batch.created + self.linger_s
            if self._flush_requested or due <= now:
                self._seal(tp, batch)
            else:
                wait = min(wait, due - now)
        return wait

    # ---- sender thread ------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed and self._outstanding == 0:
                    return
                now = self.clock.monotonic()
                wait = self._seal_lingering(now)
                ready = self._take_ready(now)
                if not ready:
                    self._lock.wait(max(wait, 0.0005))
                    continue
            try:
                self._dispatch(ready)
            except Exception:  # never let the sender die with batches queued
                log.exception("producer sender failed")
                time.sleep(0.1)

    def _take_ready(self, now: float) -> list[_Batch]:
        taken = []
        for tp, queue in self._queues.items():
            if queue.ready and not queue.in_flight and queue.retry_at <= now:
                batch = queue.ready[0]
                if now > batch.deadline:
                    queue.ready.popleft()
                    self._fail(batch, TalosTimeout(f"{tp[0]}/{tp[1]}: delivery timed out"))
                    queue.producer_id = -1  # the sequence may have a gap now
                    continue
                queue.in_flight = True
                taken.append(batch)
        return taken

    def _dispatch(self, batches: list[_Batch]) -> None:
        by_address: dict[str, list[_Batch]] = {}
        for batch in batches:
            try:
                self._encode(batch)
                address = self.router.owner_address(batch.topic, batch.partition)
            except TalosError as exc:
                self._completed(batch, exc)
                continue
            by_address.setdefault(address, []).append(batch)
        for address, group in by_address.items():
            with self._lock:
                while self._in_flight.get(address, 0) >= self.max_in_flight and not self._closed:
                    self._lock.wait(0.05)
                self._in_flight[address] = self._in_flight.get(address, 0) + 1
            request = pb.ProduceRequest()
            for batch in group:
                request.batches.add(
                    topic=batch.topic, partition=batch.partition, records=batch.encoded
                )
            self.metrics["requests"] += 1
            call = self.connections.stub(address).Produce.future(
                request, timeout=self.connections.request_timeout
            )
            call.add_done_callback(self._on_response(address, group))

    def _encode(self, batch: _Batch) -> None:
        if batch.encoded is not None:
            return
        queue = self._queues[(batch.topic, batch.partition)]
        if self.idempotent:
            if queue.producer_id < 0:
                queue.producer_id = self._new_producer_id()
                queue.next_sequence = 0
            batch.builder.set_sequence(queue.producer_id, 0, queue.next_sequence)
            queue.next_sequence += batch.builder.record_count
        batch.encoded = batch.builder.build()

    def _new_producer_id(self) -> int:
        if self._producer_id < 0:
            self._producer_id = self._init_producer_id()
            return self._producer_id
        # a partition whose sequence broke gets a fresh id: the broker starts it anew
        return self._init_producer_id()

    def _init_producer_id(self) -> int:
        def call() -> int:
            response: pb.InitProducerResponse = self.connections.call_any(
                "InitProducer", pb.InitProducerRequest(), list(self.router.brokers.values())
            )
            raise_for(response.error)
            return int(response.producer_id)

        return retry_policy(30.0)(call)

    def _on_response(self, address: str, group: list[_Batch]) -> Callable[[Any], None]:
        def done(call: Any) -> None:
            with self._lock:
                self._in_flight[address] -= 1
                self._lock.notify_all()
            try:
                response: pb.ProduceResponse = call.result()
            except grpc.RpcError as exc:
                error = from_grpc_error(exc, address)
                for batch in group:
                    self._completed(batch, error)
                return
            except Exception as exc:  # cancelled at shutdown
                for batch in group:
                    self._completed(batch, TalosError(repr(exc)))
                return
            for batch, result in zip(group, response.results, strict=True):
                self._completed(batch, error_from_proto(result.error), result.base_offset)

        return done

    def _completed(self, batch: _Batch, error: TalosError | None, base_offset: int = 0) -> None:
        tp = (batch.topic, batch.partition)
        with self._lock:
            queue = self._queues[tp]
            queue.in_flight = False
            if error is None:
                queue.ready.popleft()
                self.metrics["batches_sent"] += 1
            elif error.retriable and self.clock.monotonic() < batch.deadline and not self._closed:
                batch.attempts += 1
                self.metrics["retries"] += 1
                queue.retry_at = self.clock.monotonic() + _backoff(batch.attempts)
                self.router.mark_stale(batch.topic)
                self._lock.notify_all()
                return
            else:
                queue.ready.popleft()
                if batch.encoded is not None:
                    queue.producer_id = -1  # this sequence may never have landed
            self._lock.notify_all()
        if error is None:
            for i, future in enumerate(batch.futures):
                future.set_result(RecordMetadata(batch.topic, batch.partition, base_offset + i))
            with self._lock:
                self._outstanding -= len(batch.futures)
                self._lock.notify_all()
        else:
            self._fail(batch, error)

    def _fail(self, batch: _Batch, error: TalosError) -> None:
        for future in batch.futures:
            if not future.done():
                future.set_exception(error)
        with self._lock:  # reentrant: callers may hold it
            self._outstanding -= len(batch.futures)
            self._lock.notify_all()


def _backoff(attempt: int) -> float:
    """Exponential backoff for a batch's next attempt, capped at one second."""
    return float(min(1.0, 0.02 * 2 ** min(attempt, 10)))
