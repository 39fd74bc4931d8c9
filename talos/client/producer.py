"""The producer: per-partition batching, client-side routing, idempotent retries.

``send()`` appends to the partition's open batch and returns a future. A
sender thread ships batches that are full or have lingered, grouping the
partitions each broker owns into one request on that broker's produce stream,
with a bounded number of requests in flight per broker. One batch per
partition is in flight at a time, so a partition's order survives retries;
a retried batch is sent byte for byte as before, and the broker's sequence
check drops the duplicate.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures._base import FINISHED, PENDING
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from talos.aio import IoLoop
from talos.clock import SYSTEM_CLOCK, Clock
from talos.config import validate_partition, validate_topic_name
from talos.errors import (
    InvalidArgument,
    MessageTooLarge,
    TalosError,
    TalosTimeout,
    Throttled,
    Unavailable,
)
from talos.proto import talos_pb2 as pb
from talos.record.batch import HEADER_SIZE, BatchBuilder, bad_record_error, record_size
from talos.record.codec import Codec, parse_codec
from talos.record.crc import crc32c
from talos.security.tls import ClientSecurity
from talos.wire import raise_for

from .connection import Connections, retry_policy
from .produce_stream import CLOSE_TIMEOUT_S, ProduceStream, close_streams
from .routing import Router, TopicRoute, partition_error

log = logging.getLogger(__name__)

#: Producers not closed yet. Those still open at exit are closed without waiting:
#: gRPC's asyncio layer must shut down before the interpreter finalizes (see
#: produce_stream.close_streams), and what was never flushed is dropped, as in Kafka.
_OPEN: weakref.WeakSet[Producer] = weakref.WeakSet()


@atexit.register
def _close_open_producers() -> None:
    for producer in list(_OPEN):
        with contextlib.suppress(Exception):
            producer.close(timeout=0)


# Headroom under max_message_bytes: a record's timestamp delta may take up to 9
# more bytes than record_size() assumes, and compression adds frame overhead.
BATCH_SLACK_BYTES = 64
# More than a record with no key and no headers adds to its value: length, timestamp
# delta, null key, value length and header count varints (for values under 2 MB).
VALUE_OVERHEAD = 16


class RecordMetadata(NamedTuple):
    topic: str
    partition: int
    offset: int


class _Outcome:
    """What every record of one batch shares: one lock, one state, one base offset or error."""

    __slots__ = ("base_offset", "condition", "error", "partition", "state", "topic", "watchers")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        # Reentrant like Future's own: concurrent.futures.wait() takes every future's lock.
        self.condition = threading.Condition()
        self.state = PENDING
        self.base_offset = 0
        self.error: BaseException | None = None
        # the few futures someone waits on through callbacks or concurrent.futures.wait()
        self.watchers: dict[RecordFuture, tuple[list[Any], list[Any]]] = {}

    def watched(self, future: RecordFuture) -> tuple[list[Any], list[Any]]:
        lists = self.watchers.get(future)
        if lists is None:
            lists = self.watchers[future] = ([], [])
        return lists

    def complete(self, base_offset: int, error: BaseException | None) -> None:
        with self.condition:
            if self.state == FINISHED:
                return
            self.base_offset = base_offset
            self.error = error
            self.state = FINISHED
            watchers = list(self.watchers.items())
            for future, (waiters, _callbacks) in watchers:
                for waiter in waiters:
                    if error is None:
                        waiter.add_result(future)
                    else:
                        waiter.add_exception(future)
            self.condition.notify_all()
        for future, (_waiters, callbacks) in watchers:
            for callback in callbacks:
                try:
                    callback(future)
                except Exception:
                    log.exception("exception calling callback for %r", future)


class RecordFuture(Future[RecordMetadata]):
    """The future send() returns: cheap to make, completed together with its batch.

    A plain Future builds its own Condition (about 0.8 us, the largest cost of a
    send). These share their batch's lock and state, and concurrent.futures'
    wait() and as_completed() still work: they use the internals below. A record
    that was handed to the producer cannot be cancelled.
    """

    def __init__(self, outcome: _Outcome, index: int) -> None:  # no Future.__init__: on purpose
        self._outcome = outcome
        self._index = index

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        return self._outcome.condition

    @property
    def _state(self) -> str:  # type: ignore[override]
        return self._outcome.state

    @property
    def _result(self) -> RecordMetadata | None:  # type: ignore[override]
        o = self._outcome
        if o.state != FINISHED or o.error is not None:
            return None
        return RecordMetadata(o.topic, o.partition, o.base_offset + self._index)

    @property
    def _exception(self) -> BaseException | None:  # type: ignore[override]
        return self._outcome.error

    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        return self._outcome.watched(self)[0]

    @property
    def _done_callbacks(self) -> list[Any]:
        return self._outcome.watched(self)[1]

    def cancel(self) -> bool:
        return False

    def set_running_or_notify_cancel(self) -> bool:
        raise RuntimeError("a record future is completed by the producer only")

    def set_result(self, result: RecordMetadata) -> None:
        raise RuntimeError("a record future is completed by the producer only")

    def set_exception(self, exception: BaseException | None) -> None:
        raise RuntimeError("a record future is completed by the producer only")


class _Batch:
    __slots__ = (
        "attempts",
        "builder",
        "count",
        "created",
        "deadline",
        "encoded",
        "held_at",
        "outcome",
        "partition",
        "size",
        "topic",
    )

    def __init__(self, topic: str, partition: int, builder: BatchBuilder, created: float) -> None:
        self.topic = topic
        self.partition = partition
        self.builder = builder
        self.outcome = _Outcome(topic, partition)
        self.count = 0
        self.size = HEADER_SIZE
        self.created = created
        self.encoded: bytes | None = None
        self.held_at = -1  # its broker's answer count when its linger ran out while busy
        self.attempts = 0
        self.deadline = 0.0


class _Topic:
    """What send() needs to know of a topic, looked up once per topic, not per message."""

    __slots__ = ("cap", "fast_value_max", "limit", "name", "open", "partitions", "route", "sticky")

    def __init__(self, route: TopicRoute, batch_bytes: int, previous: _Topic | None) -> None:
        self.name = route.name
        self.route = route
        self.partitions = route.partitions
        self.limit = route.config.max_message_bytes
        # A batch must also fit the topic's limit, which the broker applies to whole
        # batches; keep room for longer timestamp deltas and compression framing.
        self.cap = min(batch_bytes, self.limit - BATCH_SLACK_BYTES)
        # Values up to this size need no exact size check (see VALUE_OVERHEAD).
        self.fast_value_max = self.limit - BATCH_SLACK_BYTES - HEADER_SIZE - VALUE_OVERHEAD
        self.open: list[_Batch | None] = [None] * self.partitions
        self.sticky = -1
        if previous is not None:  # partitions only grow
            self.open[: len(previous.open)] = previous.open
            self.sticky = previous.sticky


@dataclass
class _PartitionQueue:
    ready: deque[_Batch] = field(default_factory=deque)
    in_flight: bool = False
    retry_at: float = 0.0
    producer_id: int = -1  # not chosen yet, or dropped with a broken sequence
    sequence_broken: bool = False
    next_sequence: int = 0
    address: str = ""  # the broker its last batch went to

    def break_sequence(self) -> None:
        """Its next batch starts a new sequence under a fresh producer id."""
        self.producer_id = -1
        self.sequence_broken = True


def nagle_hold(in_flight: int, answers: int, held_at: int) -> tuple[bool, int]:
    """Hold a lingered batch? And the broker's answer count to remember for it.

    Held while the broker has requests of ours in flight, but only until its
    next answer (``answers`` passes the count seen when the hold began): a
    broker kept busy by other partitions' requests must not starve it.
    """
    if not in_flight:
        return False, -1
    if held_at < 0:
        return True, answers
    return answers == held_at, held_at


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
        buffer_bytes: int = 32 * 1024 * 1024,
        clock: Clock = SYSTEM_CLOCK,
        security: ClientSecurity | None = None,
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
        if not batch_bytes <= buffer_bytes <= 2**40:
            raise InvalidArgument(
                f"buffer_bytes: must be between batch_bytes ({batch_bytes}) and {2**40}, "
                f"got {buffer_bytes}"
            )
        self.codec: Codec = parse_codec(compression)
        self.buffer_bytes = buffer_bytes
        self.linger_s = linger_ms / 1000
        self.batch_bytes = batch_bytes
        self.idempotent = idempotent
        self.delivery_timeout_s = delivery_timeout_s
        self.max_in_flight = max_in_flight_per_broker
        self.clock = clock
        self._wall_ms = clock.wall_ms
        self.connections = Connections(
            bootstrap, request_timeout=request_timeout_s, security=security
        )
        self.router = Router(self.connections, clock)
        self._topics: dict[str, _Topic] = {}
        self._open: dict[tuple[str, int], _Batch] = {}
        self._queues: dict[tuple[str, int], _PartitionQueue] = {}
        self._round_robin = itertools.count()
        self._in_flight: dict[str, int] = {}
        self._answers: dict[str, int] = {}  # answers (or failures) per broker so far
        self._outstanding = 0
        self._buffered = 0  # bytes of sealed batches not yet acknowledged or failed
        self._flush_requested = 0
        self._closed = False
        self._producer_id = -1
        # send() takes the bare lock (cheap); waits and wake-ups go through the condition.
        self._mutex = threading.Lock()
        self._lock = threading.Condition(self._mutex)
        self.metrics = {
            "batches_sent": 0,
            "retries": 0,
            "requests": 0,
            "records_failed": 0,
            "throttled": 0,  # batches the broker pushed back (retried)
            "producer_ids": 0,  # ids asked for: one, plus one per broken partition sequence
        }
        # One produce stream per broker, opened and reopened by the sender thread,
        # all served by one asyncio loop thread.
        self._io = IoLoop("talos-producer-io")
        self._streams: dict[str, ProduceStream] = {}
        self._deadlines_checked = 0.0
        self._sender = threading.Thread(target=self._run, name="talos-producer-sender", daemon=True)
        self._sender.start()
        _OPEN.add(self)

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
        """Queue one record; the future completes when its batch is acknowledged.

        This runs once per message, so the common case (no key, no headers, a known
        topic, an open batch) does a handful of dictionary lookups and one append.
        Callbacks added to the future run on the producer's I/O thread: keep them
        short, and never wait on this producer from one (as with Kafka's producer).
        """
        if self._closed:
            raise InvalidArgument("producer: already closed")
        entry = self._topics.get(topic)
        if entry is None:
            entry = self._topic(topic)
        try:
            if key is None and not headers and value is not None:
                size = len(value) + VALUE_OVERHEAD
                if size > entry.fast_value_max + VALUE_OVERHEAD:
                    size = self._checked_size(entry, value, key, headers)
            else:
                size = self._checked_size(entry, value, key, headers)
            if partition is None:
                if key is None:
                    partition = entry.sticky
                    if partition < 0:
                        partition = entry.sticky = next(self._round_robin) % entry.partitions
                else:
                    partition = key_partition(key, entry.partitions)
            else:
                validate_partition(partition, entry.partitions)
        except TypeError:
            raise bad_record_error(value, key, timestamp_ms, headers) from None
        if entry.open[partition] is None:
            entry = self._fresh_topic(entry)  # once per batch: has the topic changed?
        timestamp = self._wall_ms() if timestamp_ms is None else timestamp_ms
        with self._mutex:
            batch = entry.open[partition]
            if batch is not None and batch.size + size > entry.cap:
                self._seal(entry, batch)
                batch = None
            if batch is None:
                if self._buffered >= self.buffer_bytes:
                    self._wait_for_buffer()
                batch = self._open_batch(entry, partition)
            batch.size += batch.builder.append(value, key, timestamp, headers)
            index = batch.count
            batch.count = index + 1
            self._outstanding += 1
            if batch.size >= entry.cap:
                self._seal(entry, batch)
                self._lock.notify()
        return RecordFuture(batch.outcome, index)

    def flush(self, timeout: float | None = None) -> None:
        """Send everything buffered and wait for every outstanding send to finish."""
        self._refuse_on_io_thread("flush")
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
        """Send what is buffered (waiting up to ``timeout``), then let go of everything.

        Records not acknowledged by then fail (TalosTimeout, or Unavailable for
        a request cut short), so no future is left pending. A producer still
        open when the process exits is closed then, without waiting.
        """
        if self._closed:
            return
        self._refuse_on_io_thread("close")
        try:
            self.flush(timeout)
        finally:
            with self._lock:
                self._closed = True
                self._lock.notify_all()
            self._sender.join(timeout=5)
            streams, self._streams = list(self._streams.values()), {}
            close_streams(self._io, streams, CLOSE_TIMEOUT_S)
            self._io.close()
            self.connections.close()
            _OPEN.discard(self)

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _refuse_on_io_thread(self, what: str) -> None:
        """Waiting for acknowledgements on the thread that delivers them would never end."""
        if self._io.is_current():
            raise InvalidArgument(
                f"{what}: cannot wait from a send callback (callbacks run on the "
                "producer's I/O thread); hand the work to another thread"
            )

    # ---- topics -------------------------------------------------------------

    def _topic(self, topic: str) -> _Topic:
        route = self.router.route(validate_topic_name(topic))
        with self._mutex:
            entry = self._topics.get(topic)
            if entry is None or entry.route is not route:
                entry = self._topics[topic] = _Topic(route, self.batch_bytes, entry)
            return entry

    def _fresh_topic(self, entry: _Topic) -> _Topic:
        """The entry for the router's current route (it may have refreshed or expired)."""
        route = self.router.route(entry.name)
        if route is entry.route:
            return entry
        with self._mutex:
            current = self._topics[entry.name]
            if current.route is not route:
                current = self._topics[entry.name] = _Topic(route, self.batch_bytes, current)
            return current

    @staticmethod
    def _checked_size(
        entry: _Topic,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes | None]],
    ) -> int:
        """The exact encoded size of a record, refused if its batch could not fit the topic."""
        size = record_size(value, key, headers)
        if size + HEADER_SIZE > entry.limit - BATCH_SLACK_BYTES:
            raise MessageTooLarge(
                f"value: message of {size + HEADER_SIZE} bytes (with batch header) exceeds "
                f"topic {entry.name!r} max_message_bytes {entry.limit}"
            )
        return size

    # ---- batching (under the lock) ------------------------------------------

    def _wait_for_buffer(self) -> None:
        """Block send() while buffer_bytes are waiting to be acknowledged (back-pressure)."""
        self._refuse_on_io_thread("send (with buffer_bytes full)")
        deadline = self.clock.monotonic() + self.delivery_timeout_s
        while self._buffered >= self.buffer_bytes and not self._closed:
            left = deadline - self.clock.monotonic()
            if left <= 0:
                raise TalosTimeout(
                    f"send: {self._buffered} bytes still unacknowledged after "
                    f"{self.delivery_timeout_s}s (buffer_bytes {self.buffer_bytes})"
                )
            self._lock.wait(min(left, 0.05))

    def _open_batch(self, entry: _Topic, partition: int) -> _Batch:
        batch = _Batch(
            entry.name, partition, BatchBuilder(codec=self.codec), self.clock.monotonic()
        )
        entry.open[partition] = batch
        self._open[(entry.name, partition)] = batch
        self._lock.notify()  # the sender times the linger from now
        return batch

    def _seal(self, entry: _Topic, batch: _Batch) -> None:
        tp = (batch.topic, batch.partition)
        if entry.open[batch.partition] is batch:
            entry.open[batch.partition] = None
        self._open.pop(tp, None)
        if entry.sticky == batch.partition:
            entry.sticky = -1
        if batch.count == 0:  # its only append was refused
            return
        batch.deadline = self.clock.monotonic() + self.delivery_timeout_s
        self._buffered += batch.size
        self._queues.setdefault(tp, _PartitionQueue()).ready.append(batch)

    def _seal_lingering(self, now: float) -> float:
        """Seal open batches whose linger expired; return seconds until the next expires.

        A lingered batch stays open while its partition or its broker is busy
        with an earlier request of ours: it grows meanwhile, and the next answer
        from that broker (which wakes this thread) lets it go out together with
        every other batch waiting for that broker, in one request. This is
        Nagle's rule for produce: at modest rates it cuts the requests, whose
        fixed cost is most of a produce's CPU, and it adds at most one round
        trip: a broker kept busy by other partitions' full batches holds a
        batch only until its next answer. Full batches are sealed by send() and
        pipelined up to max_in_flight_per_broker.
        """
        wait = 0.1
        for batch in list(self._open.values()):
            due = batch.created + self.linger_s
            if self._flush_requested or due <= now:
                queue = self._queues.get((batch.topic, batch.partition))
                if queue is not None and (
                    queue.in_flight or queue.ready or self._broker_busy(queue.address, batch)
                ):
                    continue
                self._seal(self._topics[batch.topic], batch)
            else:
                wait = min(wait, due - now)
        return wait

    def _broker_busy(self, address: str, batch: _Batch) -> bool:
        hold, batch.held_at = nagle_hold(
            self._in_flight.get(address, 0), self._answers.get(address, 0), batch.held_at
        )
        return hold

    # ---- sender thread ------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._check_deadlines()
            with self._lock:
                if self._closed:
                    unsent = self._take_unsent()
                    break
                now = self.clock.monotonic()
                wait = self._seal_lingering(now)
                ready, expired = self._take_ready(now)
                if not ready and not expired:
                    self._lock.wait(max(wait, 0.0005))
                    continue
            for batch in expired:
                self._fail(
                    batch, TalosTimeout(f"{batch.topic}/{batch.partition}: delivery timed out")
                )
            if not ready:
                continue
            try:
                self._dispatch(ready)
            except Exception:  # never let the sender die with batches queued
                log.exception("producer sender failed")
                time.sleep(0.1)
        # Closed: what is in flight is answered as the streams close; the rest fails now.
        for batch in unsent:
            self._fail(batch, TalosTimeout("producer closed before the batch was acknowledged"))

    def _take_unsent(self) -> list[_Batch]:
        """Every batch not on the wire, out of the queues (lock held): close() ran out of time."""
        for batch in list(self._open.values()):
            self._seal(self._topics[batch.topic], batch)
        unsent: list[_Batch] = []
        for queue in self._queues.values():
            keep = 1 if queue.in_flight else 0  # the in-flight batch is the first
            while len(queue.ready) > keep:
                unsent.append(queue.ready.pop())
        unsent.reverse()
        return unsent

    def _check_deadlines(self) -> None:
        """A broker that stopped answering fails its requests (retriable) after the timeout."""
        now = self.clock.monotonic()
        if now - self._deadlines_checked > 0.1:
            self._deadlines_checked = now
            for stream in list(self._streams.values()):
                stream.check_deadline()

    def _take_ready(self, now: float) -> tuple[list[_Batch], list[_Batch]]:
        taken: list[_Batch] = []
        expired: list[_Batch] = []
        for queue in self._queues.values():
            if queue.ready and not queue.in_flight and queue.retry_at <= now:
                batch = queue.ready[0]
                if now > batch.deadline:
                    queue.ready.popleft()
                    expired.append(batch)
                    queue.break_sequence()  # the sequence may have a gap now
                    continue
                queue.in_flight = True
                taken.append(batch)
        return taken, expired

    def _dispatch(self, batches: list[_Batch]) -> None:
        by_address: dict[str, list[_Batch]] = {}
        for batch in batches:
            try:
                self._encode(batch)
                address = self.router.owner_address(batch.topic, batch.partition)
                self._queues[(batch.topic, batch.partition)].address = address
            except TalosError as exc:
                self._completed(batch, exc)
                continue
            by_address.setdefault(address, []).append(batch)
        for address, group in by_address.items():
            self._take_slot(address)
            request = pb.ProduceRequest()
            for batch in group:
                request.batches.add(
                    topic=batch.topic, partition=batch.partition, records=batch.encoded
                )
            self.metrics["requests"] += 1
            try:
                stream = self._stream(address)
            except Exception as exc:  # e.g. the I/O loop did not answer: retry, never strand
                self._answered((address, group), Unavailable(f"broker {address}: {exc!r}"))
                continue
            stream.send(request, (address, group))

    def _take_slot(self, address: str) -> None:
        """Wait until the broker has fewer than max_in_flight requests outstanding."""
        while True:
            with self._lock:
                in_flight = self._in_flight.get(address, 0)
                if in_flight < self.max_in_flight or self._closed:
                    self._in_flight[address] = in_flight + 1
                    return
                self._lock.wait(0.05)
            self._check_deadlines()

    def _encode(self, batch: _Batch) -> None:
        if batch.encoded is not None:
            return
        queue = self._queues[(batch.topic, batch.partition)]
        if self.idempotent:
            if queue.producer_id < 0:
                queue.producer_id = self._producer_id_for(queue)
                queue.next_sequence = 0
            batch.builder.set_sequence(queue.producer_id, 0, queue.next_sequence)
            queue.next_sequence += batch.builder.record_count
        batch.encoded = batch.builder.build()

    def _producer_id_for(self, queue: _PartitionQueue) -> int:
        """The producer's one id; a fresh one where a partition's sequence broke.

        Every partition keeps its own sequence from 0 under the same id, so only
        the producer's first batch asks a broker for an id (a ZooKeeper write).
        A partition whose sequence may have a gap starts anew under a fresh id.
        """
        if self._producer_id < 0:
            self._producer_id = self._init_producer_id()
            producer_id = self._producer_id
        elif queue.sequence_broken:
            producer_id = self._init_producer_id()  # may raise: the queue stays broken
        else:
            return self._producer_id
        queue.sequence_broken = False
        return producer_id

    def _init_producer_id(self) -> int:
        def call() -> int:
            response: pb.InitProducerResponse = self.connections.call_any(
                "InitProducer", pb.InitProducerRequest(), list(self.router.brokers.values())
            )
            raise_for(response.error)
            self.metrics["producer_ids"] += 1
            return int(response.producer_id)

        return retry_policy(30.0)(call)

    def _stream(self, address: str) -> ProduceStream:
        """The broker's produce stream; a broken one is replaced (sender thread only)."""
        stream = self._streams.get(address)
        if stream is None or not stream.alive:
            if stream is not None:
                stream.close()  # its channel
            stream = self._streams[address] = ProduceStream(
                address,
                self._io,
                self._answered,
                self.connections.request_timeout,
                self.clock,
                self.connections.security,
            )
        return stream

    def _answered(
        self, token: tuple[str, list[_Batch]], outcome: pb.ProduceResponse | TalosError
    ) -> None:
        """The broker's answer to one request, or why there is none (any thread)."""
        address, group = token
        with self._lock:
            self._in_flight[address] -= 1
            self._answers[address] = self._answers.get(address, 0) + 1
            self._lock.notify_all()
        if isinstance(outcome, TalosError):
            for batch in group:
                self._completed(batch, outcome)
            return
        for batch, result in zip(group, outcome.results, strict=True):
            self._completed(batch, partition_error(result.error), result.base_offset)

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
                if isinstance(error, Throttled):
                    self.metrics["throttled"] += 1
                queue.retry_at = self.clock.monotonic() + _backoff(batch.attempts)
                self.router.mark_stale(batch.topic)
                self._lock.notify_all()
                return
            else:
                queue.ready.popleft()
                if batch.encoded is not None:
                    queue.break_sequence()  # this sequence may never have landed
            self._lock.notify_all()
        self._finish(batch, base_offset, error)

    def _fail(self, batch: _Batch, error: TalosError) -> None:
        self._finish(batch, 0, error)

    def _finish(self, batch: _Batch, base_offset: int, error: TalosError | None) -> None:
        """Complete every record future of the batch at once; then count them done."""
        batch.outcome.complete(base_offset, error)
        with self._lock:
            self._outstanding -= batch.count
            self._buffered -= batch.size
            if error is not None:
                self.metrics["records_failed"] += batch.count
            self._lock.notify_all()


def _backoff(attempt: int) -> float:
    """Exponential backoff for a batch's next attempt, capped at one second."""
    return float(min(1.0, 0.02 * 2 ** min(attempt, 10)))
