"""The producer: per-partition batching, client-side routing, idempotent retries.

Three parts, after aiokafka's producer:

- ``send()`` (any thread, synchronous, thread-safe) appends the record to its
  partition's open batch in the :class:`~.accumulator.Accumulator` and
  returns a future, or nothing when given ``on_delivery`` (the fast path: no
  future per message, as confluent-kafka's ``produce(on_delivery=...)``).
- The :class:`~.sender.Sender` is a coroutine on the producer's one I/O loop
  thread. It ships batches that are full or have lingered, grouping the
  partitions each broker owns into one request on that broker's produce
  stream, with a bounded number of requests in flight per broker; metadata
  and producer ids are fetched by tasks on the same loop, from cached routes.
- Answers are handled on that loop thread too. **Every future callback and
  every ``on_delivery`` callback runs on the producer's I/O thread**
  (``talos-producer-io``). Keep callbacks short; waiting on the producer from
  one (``flush()``, ``close()``, ``result()`` or ``exception()`` of a record
  future not yet done, ``concurrent.futures.wait``, a ``send()`` blocked by a
  full buffer) would wait for the thread that is waiting, so it is refused
  with :class:`~talos.errors.InvalidArgument`.

One batch per partition is in flight at a time, so a partition's order
survives retries; a retried batch is sent byte for byte as before, and the
broker's sequence check drops the duplicate.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures._base import FINISHED, PENDING
from typing import Any, NamedTuple

from talos.accel import load_extension
from talos.aio import IoLoop
from talos.clock import SYSTEM_CLOCK, Clock, SystemClock
from talos.config import validate_partition, validate_topic_name
from talos.errors import InvalidArgument, MessageTooLarge, TalosError, TalosTimeout
from talos.record.batch import HEADER_SIZE, bad_record_error, record_size
from talos.record.codec import Codec, parse_codec
from talos.record.crc import crc32c
from talos.security.tls import ClientSecurity

from .accumulator import BATCH_SLACK_BYTES, Accumulator, Batch, TopicBatches, nagle_hold
from .connection import Connections
from .routing import Router, TopicRoute
from .sender import Sender

__all__ = [
    "BATCH_SLACK_BYTES",
    "DeliveryCallback",
    "Producer",
    "RecordFuture",
    "RecordMetadata",
    "key_partition",
    "nagle_hold",
]

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


_time_ns = time.time_ns

# More than a record with no key and no headers adds to its value: length, timestamp
# delta, null key, value length and header count varints (for values under 2 MB).
VALUE_OVERHEAD = 16

_REFUSED = (
    "cannot wait from a send callback (callbacks run on the producer's I/O thread, "
    "which delivers what you would wait for); hand the work to another thread"
)


class RecordMetadata(NamedTuple):
    topic: str
    partition: int
    offset: int


#: ``on_delivery(error, metadata)``: exactly one of the two is None. Runs on the I/O thread.
DeliveryCallback = Callable[[TalosError | None, RecordMetadata | None], None]


class _Outcome:
    """What every record of one batch shares: one lock, one state, one base offset or error."""

    __slots__ = (
        "base_offset",
        "condition",
        "error",
        "io",
        "partition",
        "state",
        "topic",
        "watchers",
    )

    def __init__(self, topic: str, partition: int, io: IoLoop | None = None) -> None:
        self.topic = topic
        self.partition = partition
        self.io = io
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

    def refuse_wait(self, what: str) -> None:
        """Waiting for this outcome on the thread that delivers it would never end."""
        if self.state != FINISHED and self.io is not None and self.io.is_current():
            raise InvalidArgument(f"{what}: {_REFUSED}")

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
        self._outcome.refuse_wait("concurrent.futures.wait")
        return self._outcome.watched(self)[0]

    @property
    def _done_callbacks(self) -> list[Any]:
        return self._outcome.watched(self)[1]

    def result(self, timeout: float | None = None) -> RecordMetadata:
        self._outcome.refuse_wait("result")
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._outcome.refuse_wait("exception")
        return super().exception(timeout)

    def cancel(self) -> bool:
        return False

    def set_running_or_notify_cancel(self) -> bool:
        raise RuntimeError("a record future is completed by the producer only")

    def set_result(self, result: RecordMetadata) -> None:
        raise RuntimeError("a record future is completed by the producer only")

    def set_exception(self, exception: BaseException | None) -> None:
        raise RuntimeError("a record future is completed by the producer only")


class _Topic:
    """What send() needs to know of a topic, looked up once per topic, not per message."""

    __slots__ = ("batches", "fast_value_max", "lane", "limit", "name", "partitions", "route")

    def __init__(self, route: TopicRoute, batches: TopicBatches) -> None:
        self.name = route.name
        self.route = route
        self.partitions = route.partitions
        self.limit = route.config.max_message_bytes
        self.batches = batches
        # Values up to this size need no exact size check (see VALUE_OVERHEAD).
        self.fast_value_max = self.limit - BATCH_SLACK_BYTES - HEADER_SIZE - VALUE_OVERHEAD
        self.lane: Any = None  # its C send lane, when the producer has one (see _entry)


#: The optional C send lane (talos/client/_send_lane.c): send()'s most common case in
#: one call. None when it was not built or TALOS_PURE is set; send() is then all Python.
_send_lane = load_extension("talos.client._send_lane")


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
        tenant: str | None = None,
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
        if not 0 < delivery_timeout_s <= 86_400:
            raise InvalidArgument(
                f"delivery_timeout_s: must be above 0 and at most 86400, got {delivery_timeout_s}"
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
        self._system_clock = type(clock) is SystemClock
        self.connections = Connections(
            bootstrap, request_timeout=request_timeout_s, tenant=tenant, security=security
        )
        self.router = Router(self.connections, clock)
        self._topics: dict[str, _Topic] = {}
        self._round_robin = itertools.count()
        self._outstanding = 0  # records sent and not yet acknowledged or failed
        self._closed = False
        # send() takes the bare lock (cheap); waits and wake-ups go through the condition.
        self._mutex = threading.Lock()
        self._lock = threading.Condition(self._mutex)
        self.metrics: dict[str, Any] = {
            "batches_sent": 0,
            "retries": 0,
            "requests": 0,
            "records_failed": 0,
            "throttled": 0,  # batches the broker pushed back (retried)
            "producer_ids": 0,  # ids asked for: one, plus one per broken partition sequence
        }
        self._acc = Accumulator(
            clock,
            linger_s=self.linger_s,
            delivery_timeout_s=delivery_timeout_s,
            max_in_flight=max_in_flight_per_broker,
            idempotent=idempotent,
            codec=self.codec,
        )
        self._io = IoLoop("talos-producer-io")
        self._sender = Sender(
            self._acc,
            self._lock,
            self.router,
            self._io,
            clock,
            request_timeout_s,
            self._finish,
            self._settled,
            self.metrics,
        )
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
        on_delivery: DeliveryCallback | None = None,
    ) -> Any:
        """Queue one record; the future completes when its batch is acknowledged.

        With ``on_delivery``, no future is made: ``on_delivery(error, metadata)``
        is called once the batch is answered, and send() returns None. Either way
        the callback runs on the producer's I/O thread (see the module doc).

        This runs once per message, so the common case (no key, no headers, a known
        topic, an open batch) does a handful of lookups and one append, in C when
        the send lane was built (it returns None when the case does not apply).
        """
        entry = self._topics.get(topic)
        if (
            entry is not None
            and entry.lane is not None
            and key is None
            and partition is None
            and timestamp_ms is None
            and on_delivery is None
            and not headers
        ):
            future = entry.lane.send(value)
            if future is not None:
                return future
        if self._closed:
            raise InvalidArgument("producer: already closed")
        if entry is None:
            entry = self._topic(topic)
        batches = entry.batches
        try:
            if key is None and not headers and value is not None:
                size = len(value) + VALUE_OVERHEAD
                if size > entry.fast_value_max + VALUE_OVERHEAD:
                    size = self._checked_size(entry, value, key, headers)
            else:
                size = self._checked_size(entry, value, key, headers)
            if partition is None:
                if key is None:
                    partition = batches.sticky
                    if partition < 0:
                        partition = batches.sticky = next(self._round_robin) % entry.partitions
                else:
                    partition = key_partition(key, entry.partitions)
            else:
                validate_partition(partition, entry.partitions)
        except TypeError:
            raise bad_record_error(value, key, timestamp_ms, headers) from None
        if batches.open[partition] is None:
            entry = self._fresh_topic(entry)  # once per batch: has the topic changed?
            batches = entry.batches
        if timestamp_ms is not None:
            timestamp = timestamp_ms
        elif self._system_clock:
            timestamp = _time_ns() // 1_000_000  # SystemClock.wall_ms without its frame
        else:
            timestamp = self._wall_ms()
        with self._mutex:
            batch = batches.open[partition]
            if batch is not None and batch.size + size < batches.cap:
                # Accumulator.append for the common case, inlined (a frame less per
                # message): the open batch has room and stays open.
                batch.size += batch.builder.append(value, key, timestamp, headers)
                index = batch.count
                batch.count = index + 1
            else:
                batch = self._append(batches, partition, value, key, timestamp, headers, size)
                index = batch.count - 1
            self._outstanding += 1
            if on_delivery is not None:
                if batch.delivery_callbacks is None:
                    batch.delivery_callbacks = [on_delivery]
                else:
                    batch.delivery_callbacks.append(on_delivery)
                batch.delivery_indexes.append(index)
                return None
            outcome = batch.outcome
            if outcome is None:
                outcome = batch.outcome = _Outcome(batch.topic, batch.partition, self._io)
        return RecordFuture(outcome, index)

    def flush(self, timeout: float | None = None) -> None:
        """Send everything buffered and wait for every outstanding send to finish."""
        self.refuse_on_io_thread("flush")
        deadline = None if timeout is None else self.clock.monotonic() + timeout
        with self._lock:
            self._sender.flush_requested += 1
            self._sender.wake()
            try:
                while self._outstanding > 0:
                    remaining = None if deadline is None else deadline - self.clock.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TalosTimeout(f"flush: {self._outstanding} sends still outstanding")
                    self._lock.wait(0.05 if remaining is None else min(remaining, 0.05))
            finally:
                self._sender.flush_requested -= 1

    def close(self, timeout: float | None = 30.0) -> None:
        """Send what is buffered (waiting up to ``timeout``), then let go of everything.

        Records not acknowledged by then fail (TalosTimeout, or Unavailable for
        a request cut short), so no future is left pending. A producer still
        open when the process exits is closed then, without waiting.
        """
        if self._closed:
            return
        self.refuse_on_io_thread("close")
        try:
            self.flush(timeout)
        finally:
            self._closed = True
            self._sender.shutdown()
            self._io.close()
            self.connections.close()
            _OPEN.discard(self)

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refuse_on_io_thread(self, what: str) -> None:
        """Waiting for acknowledgements on the thread that delivers them would never end."""
        if self._io.is_current():
            raise InvalidArgument(f"{what}: {_REFUSED}")

    # ---- topics -------------------------------------------------------------

    def _topic(self, topic: str) -> _Topic:
        """A topic seen for the first time: wait for its route (on the caller's thread)."""
        route = self.router.route(validate_topic_name(topic))
        with self._mutex:
            entry = self._topics.get(topic)
            if entry is None or entry.route is not route:
                entry = self._entry(route)
            return entry

    def _fresh_topic(self, entry: _Topic) -> _Topic:
        """The entry for the router's cached route (the sender refreshes it, never send())."""
        route = self.router.cached(entry.name)
        if route is None or route is entry.route:
            return entry
        with self._mutex:
            current = self._topics[entry.name]
            if current.route is not route:
                current = self._entry(route)
            return current

    def _entry(self, route: TopicRoute) -> _Topic:
        """Lock held: the topic's entry for ``route``, with its send lane, stored."""
        # A batch must also fit the topic's limit, which the broker applies to whole
        # batches; keep room for longer timestamp deltas and compression framing.
        cap = min(self.batch_bytes, route.config.max_message_bytes - BATCH_SLACK_BYTES)
        entry = self._topics[route.name] = _Topic(
            route, self._acc.topic(route.name, route.partitions, cap)
        )
        if _send_lane is not None and self._system_clock:
            entry.lane = _send_lane.SendLane(
                self, entry.batches, self._mutex, RecordFuture, entry.fast_value_max, VALUE_OVERHEAD
            )
        return entry

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

    # ---- under the lock -----------------------------------------------------

    def _append(
        self,
        batches: TopicBatches,
        partition: int,
        value: bytes | None,
        key: bytes | None,
        timestamp: int,
        headers: Sequence[tuple[str, bytes | None]],
        size: int,
    ) -> Batch:
        """The record opens or fills a batch: back-pressure first, then wake the sender."""
        acc = self._acc
        if acc.buffered >= self.buffer_bytes and acc.would_open(batches, partition, size):
            self._wait_for_buffer()
        batch = acc.append(batches, partition, value, key, timestamp, headers, size)
        if (batch.sealed or batch.count == 1) and acc.first_in_line(batch):
            # Wake the sender if it sleeps past when this batch is due (a full one: now).
            # A batch behind another of its partition goes after that one's answer, which
            # wakes the sender anyway: waking it now would only contend for this lock.
            due = 0.0 if batch.sealed else batch.created + self.linger_s
            if due < self._sender.wake_at:
                self._sender.wake()
        return batch

    def _wait_for_buffer(self) -> None:
        """Block send() while buffer_bytes are waiting to be acknowledged (back-pressure)."""
        self.refuse_on_io_thread("send (with buffer_bytes full)")
        deadline = self.clock.monotonic() + self.delivery_timeout_s
        while self._acc.buffered >= self.buffer_bytes and not self._closed:
            left = deadline - self.clock.monotonic()
            if left <= 0:
                raise TalosTimeout(
                    f"send: {self._acc.buffered} bytes still unacknowledged after "
                    f"{self.delivery_timeout_s}s (buffer_bytes {self.buffer_bytes})"
                )
            self._lock.wait(min(left, 0.05))

    # ---- on the I/O loop ----------------------------------------------------

    def _finish(self, batch: Batch, base_offset: int, error: TalosError | None) -> None:
        """Complete every record of the batch at once (futures, then on_delivery callbacks)."""
        if batch.outcome is not None:
            batch.outcome.complete(base_offset, error)
        if batch.delivery_callbacks is not None:
            topic, partition = batch.topic, batch.partition
            for index, callback in zip(
                batch.delivery_indexes, batch.delivery_callbacks, strict=True
            ):
                try:
                    if error is None:
                        callback(None, RecordMetadata(topic, partition, base_offset + index))
                    else:
                        callback(error, None)
                except Exception:
                    log.exception("exception calling on_delivery for %s/%s", topic, partition)

    def _settled(self, records: int, failed: int) -> None:
        """Lock held: ``records`` completed (their callbacks ran), ``failed`` of them failed."""
        self._outstanding -= records
        self.metrics["records_failed"] += failed
        self._lock.notify_all()
