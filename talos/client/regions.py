"""Multi-region clients: a producer and a consumer that follow the topology's failover order.

Both start in their home region and move to the next region of
``Topology.failover_order(home)`` (the home DC's ``failover_to``, else the
targets of its links) when the current one cannot serve them. They stay
where they moved to (sticky) until that region refuses them too; the order
then wraps around, so after a switch back (the old home promoted again and
the other region demoted) they return home by the same rule.

Producer: a region cannot serve a write when it is unreachable (the write
fails with a retriable error after ``failover_after_s``) or when the topic
there is a read-only mirror (READ_ONLY_MIRROR: another region was promoted,
or a failback is under way). The record is then sent again in the next
region. Each region has its own idempotent producer, so idempotence holds
per region; a write that timed out in a dying region may still have landed
there: such a copy lies past the promotion point and failback archives it.

Consumer: see :class:`RegionalConsumer` for the re-delivery bound.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from talos.errors import InvalidArgument, ReadOnlyMirror, TalosError, TalosTimeout
from talos.proto import talos_pb2 as pb
from topology import Topology

from .connection import Connections
from .consumer import Consumer, Message, TopicPartition
from .producer import Producer, RecordMetadata

log = logging.getLogger(__name__)


class RegionalRecordMetadata(NamedTuple):
    """Like RecordMetadata, plus the region that acknowledged the write."""

    topic: str
    partition: int
    offset: int
    region: str


@dataclass(frozen=True)
class Failover:
    at: float  # wall clock seconds
    from_region: str
    to_region: str
    reason: str


def fails_over(error: BaseException) -> bool:
    """Does this error mean "try the next region"? Unreachable, timed out, or read-only."""
    return isinstance(error, ReadOnlyMirror) or (isinstance(error, TalosError) and error.retriable)


def _order(topology: Topology, home: str) -> list[str]:
    if not isinstance(topology, Topology):
        raise InvalidArgument(f"topology: must be a loaded Topology, got {type(topology).__name__}")
    return topology.failover_order(home)


def _check_seconds(value: object, param: str, low: float = 0.1, high: float = 3600.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidArgument(f"{param}: must be between {low} and {high} seconds, got {value!r}")
    return float(value)


def _topic_in(topology: Topology, home: str, region: str, topic: str) -> str:
    """The name ``topic`` of ``home`` has in ``region`` (prefixed naming renames it)."""
    if region == home:
        return topic
    for link in topology.links:
        if link.source == home and link.target == region and link.selects(topic):
            return link.target_topic(topic)
    return topic


@dataclass
class _Record:
    topic: str
    value: bytes | None
    key: bytes | None
    partition: int | None
    headers: Sequence[tuple[str, bytes | None]]
    timestamp_ms: int
    future: Future[RegionalRecordMetadata]
    tried: list[str] = field(default_factory=list)
    last_error: BaseException | None = None


class RegionalProducer:
    """``Producer`` for a home region that fails over along the topology's order.

    ``metrics["writes_by_region"]`` counts acknowledged records per region and
    every result names its region. ``failovers`` lists each switch.
    """

    def __init__(
        self,
        topology: Topology,
        region: str,
        *,
        failover_after_s: float = 10.0,
        producer_factory: Callable[[str, float], Producer] | None = None,
        **producer_options: Any,
    ) -> None:
        self.topology = topology
        self.home = region
        self.order = _order(topology, region)
        self.failover_after_s = _check_seconds(failover_after_s, "failover_after_s")
        self._factory = producer_factory or self._default_factory
        self._options = producer_options
        self._producers: dict[str, Producer] = {}
        self._region = region
        self._lock = threading.Condition()
        self._outstanding = 0
        self._closed = False
        self.failovers: list[Failover] = []
        self.metrics: dict[str, Any] = {"writes_by_region": Counter(), "resent": 0}
        self._resends: queue.Queue[_Record | None] = queue.Queue()
        self._resender = threading.Thread(
            target=self._resend_loop, name="talos-regional-resend", daemon=True
        )
        self._resender.start()

    @property
    def region(self) -> str:
        """Where new writes go now."""
        return self._region

    def _default_factory(self, region: str, delivery_timeout_s: float) -> Producer:
        return Producer(
            self.topology.dc(region).bootstrap,
            delivery_timeout_s=delivery_timeout_s,
            **self._options,
        )

    def _producer(self, region: str) -> Producer:
        with self._lock:
            producer = self._producers.get(region)
            if producer is None:
                producer = self._producers[region] = self._factory(region, self.failover_after_s)
            return producer

    # ---- sending ---------------------------------------------------------------------------

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes | None]] = (),
        timestamp_ms: int | None = None,
    ) -> Future[RegionalRecordMetadata]:
        """Queue one record; the future names the region that acknowledged it."""
        if self._closed:
            raise InvalidArgument("producer: already closed")
        record = _Record(
            topic,
            value,
            key,
            partition,
            tuple(headers),
            int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
            Future(),
        )
        with self._lock:
            self._outstanding += 1
        self._attempt(record)
        return record.future

    def _attempt(self, record: _Record) -> None:
        """Send in the current region; on a failover error move on (sync or async)."""
        while True:
            region = self._region
            if len(record.tried) >= 2 * len(self.order):  # regions keep flapping: give up
                self._finish(record, error=record.last_error)
                return
            record.tried.append(region)
            try:
                inner = self._producer(region).send(
                    _topic_in(self.topology, self.home, region, record.topic),
                    record.value,
                    key=record.key,
                    partition=record.partition,
                    headers=record.headers,
                    timestamp_ms=record.timestamp_ms,
                )
            except TalosError as exc:
                record.last_error = exc
                if not fails_over(exc) or not self._next_region(region, exc, record):
                    self._finish(record, error=exc)
                    return
                continue
            inner.add_done_callback(functools.partial(self._done, record=record, region=region))
            return

    def _done(self, inner: Future[RecordMetadata], *, record: _Record, region: str) -> None:
        error = inner.exception()
        if error is None:
            meta = inner.result()
            with self._lock:
                self.metrics["writes_by_region"][region] += 1
            self._finish(
                record,
                RegionalRecordMetadata(record.topic, meta.partition, meta.offset, region),
            )
            return
        if not fails_over(error) or self._closed:
            self._finish(record, error=error)
            return
        record.last_error = error
        if not self._next_region(region, error, record):
            self._finish(record, error=error)
            return
        self.metrics["resent"] += 1
        self._resends.put(record)  # not from the producer's callback thread

    def _next_region(self, failed: str, error: BaseException, record: _Record) -> bool:
        """Move on from ``failed`` (once, however many records saw it fail); False when
        ``record`` has been refused by every region."""
        with self._lock:
            if self._region == failed:
                index = self.order.index(failed) if failed in self.order else -1
                nxt = self.order[(index + 1) % len(self.order)]
                if nxt != failed:
                    self._region = nxt
                    self.failovers.append(Failover(time.time(), failed, nxt, repr(error)))
                    log.warning(
                        "producer homed in %s: %s -> %s (%s)", self.home, failed, nxt, error
                    )
            return len(set(record.tried)) < len(self.order)

    def _resend_loop(self) -> None:
        while True:
            record = self._resends.get()
            if record is None:
                return
            try:
                self._attempt(record)
            except Exception as exc:  # never lose a record's future
                self._finish(record, error=exc)

    def _finish(
        self,
        record: _Record,
        result: RegionalRecordMetadata | None = None,
        error: BaseException | None = None,
    ) -> None:
        if not record.future.done():
            if error is not None:
                record.future.set_exception(error)
            else:
                record.future.set_result(result)  # type: ignore[arg-type]
        with self._lock:
            self._outstanding -= 1
            self._lock.notify_all()

    # ---- lifecycle -------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record sent so far is acknowledged somewhere or failed."""
        self._refuse_on_io_thread("flush")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if self._outstanding == 0:
                    return
                producers = list(self._producers.values())
            for producer in producers:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                # its records fail over or fail; they are waited for below
                with contextlib.suppress(TalosError):
                    producer.flush(remaining if remaining is None else min(remaining, 1.0))
            with self._lock:
                if self._outstanding == 0:
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    raise TalosTimeout(f"flush: {self._outstanding} sends still outstanding")
                self._lock.wait(0.05)

    def close(self, timeout: float | None = 30.0) -> None:
        if self._closed:
            return
        self._refuse_on_io_thread("close")
        try:
            self.flush(timeout)
        finally:
            self._closed = True
            self._resends.put(None)
            for producer in list(self._producers.values()):
                try:
                    producer.close(timeout=1.0)
                except TalosError as exc:
                    log.warning("closing the producer failed: %s", exc)

    def _refuse_on_io_thread(self, what: str) -> None:
        """Callbacks run on a region producer's I/O thread: waiting there would never end."""
        with self._lock:
            producers = list(self._producers.values())
        for producer in producers:
            producer.refuse_on_io_thread(what)

    def __enter__(self) -> RegionalProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ==== consumer ==================================================================================


@dataclass(frozen=True)
class RegionalMessage:
    """A message and the region it was read in; ``topic`` is the home region's name."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_ms: int
    region: str


@dataclass(frozen=True)
class ConsumerFailover:
    """One switch: where the consumer was and where the synced offsets let it resume.

    ``redelivery_bound`` is how many messages it may see again: per partition,
    what it had read beyond the offset it resumed from.
    """

    at: float
    from_region: str
    to_region: str
    reason: str
    positions: dict[TopicPartition, int]
    resumed: dict[TopicPartition, int]

    @property
    def redelivery_bound(self) -> int:
        return sum(
            max(0, position - self.resumed.get(tp, position))
            for tp, position in self.positions.items()
            if self.resumed.get(tp, -1) >= 0
        )


class RegionalConsumer:
    """A group consumer over ``regions`` (the first is home) that switches when one is down.

    The switch: when the current region has not answered for
    ``failover_after_s`` (a Metadata probe every ``probe_interval_s``, or a
    poll that fails), it leaves that region and subscribes in the next one
    with the same group id. It resumes there from the group offsets the
    link's offset sync copied, which are valid as they are because mirrors
    keep offsets. A message is never skipped (synced offsets never pass the
    mirror's end); the messages it may see again are those it read after
    the last offset sync that reached the new region: at most
    ``offset_sync_interval_s`` of the link plus ``auto_commit_interval_ms``
    of consumption. Each switch is recorded in ``failovers`` with that bound
    per partition. Partitions with no synced offset start from the earliest
    offset in a failover region, so nothing is skipped there either.
    """

    def __init__(
        self,
        topology: Topology,
        regions: Sequence[str],
        group_id: str,
        *,
        failover_after_s: float = 10.0,
        probe_interval_s: float = 0.5,
        request_timeout_s: float = 5.0,
        failover_offset_reset: str = "earliest",
        consumer_factory: Callable[[str, str], Consumer] | None = None,
        **consumer_options: Any,
    ) -> None:
        if isinstance(regions, str) or not regions:
            raise InvalidArgument(f"regions: must be a non-empty list of DC names, got {regions!r}")
        if len(set(regions)) != len(regions):
            raise InvalidArgument(f"regions: each DC may appear once, got {list(regions)}")
        for name in regions:
            topology.dc(name)
        if not isinstance(group_id, str) or not group_id:
            raise InvalidArgument(f"group_id: must be a non-empty group name, got {group_id!r}")
        self.topology = topology
        self.regions = list(regions)
        self.home = self.regions[0]
        self.group_id = group_id
        self.failover_after_s = _check_seconds(failover_after_s, "failover_after_s")
        self.probe_interval_s = _check_seconds(probe_interval_s, "probe_interval_s", 0.01)
        self.request_timeout_s = _check_seconds(request_timeout_s, "request_timeout_s")
        self.failover_offset_reset = failover_offset_reset
        self._options = consumer_options
        self._factory = consumer_factory or self._default_factory
        self._region = self.home
        self._topics: list[str] = []
        self._consumer: Consumer | None = None
        self._probe: Connections | None = None
        self._last_ok = time.monotonic()
        self._last_probe = 0.0
        self._down = False
        self._positions: dict[TopicPartition, int] = {}
        self.failovers: list[ConsumerFailover] = []
        self.metrics: dict[str, Any] = {"messages_by_region": Counter()}

    @property
    def region(self) -> str:
        return self._region

    def _default_factory(self, region: str, offset_reset: str) -> Consumer:
        options = {"request_timeout_s": self.request_timeout_s, **self._options}
        if region != self.home:
            options["auto_offset_reset"] = offset_reset
        return Consumer(self.topology.dc(region).bootstrap, group_id=self.group_id, **options)

    def subscribe(self, topics: Iterable[str]) -> None:
        self._topics = sorted(set(topics))
        self._open(self._region)

    def _open(self, region: str) -> None:
        self._consumer = self._factory(region, self.failover_offset_reset)
        self._probe = Connections(
            self.topology.dc(region).bootstrap, request_timeout=self.request_timeout_s
        )
        self._consumer.subscribe(
            [_topic_in(self.topology, self.home, region, t) for t in self._topics]
        )
        self._last_ok = time.monotonic()
        self._down = False

    def _alive(self) -> bool:
        probe = self._probe
        if probe is None:
            return False
        try:
            probe.call_any(
                "Metadata", pb.MetadataRequest(topics=[]), timeout=min(self.request_timeout_s, 2.0)
            )
            return True
        except TalosError:
            return False

    def poll(self, timeout_s: float = 1.0, max_records: int = 10_000) -> list[RegionalMessage]:
        if self._consumer is None:
            raise InvalidArgument("subscribe: call subscribe() before poll()")
        now = time.monotonic()
        if now - self._last_probe >= self.probe_interval_s:
            self._last_probe = now
            if self._alive():
                self._last_ok, self._down = now, False
            else:
                self._down = True
        if self._down:
            if now - self._last_ok >= self.failover_after_s:
                self._switch(f"{self._region} did not answer for {now - self._last_ok:.1f}s")
            else:
                time.sleep(min(timeout_s, self.probe_interval_s))
            return []
        consumer = self._consumer
        try:
            messages = consumer.poll(timeout_s=timeout_s, max_records=max_records)
        except TalosError as exc:
            if not fails_over(exc):
                raise
            self._down = True
            if time.monotonic() - self._last_ok >= self.failover_after_s:
                self._switch(f"{self._region}: {exc}")
            return []
        out = []
        for m in messages:
            tp = TopicPartition(m.topic, m.partition)
            self._positions[tp] = m.offset + 1
            out.append(self._wrap(m))
        if out:
            self.metrics["messages_by_region"][self._region] += len(out)
        return out

    def _wrap(self, m: Message) -> RegionalMessage:
        home_topic = m.topic
        if self._region != self.home:
            for topic in self._topics:
                if _topic_in(self.topology, self.home, self._region, topic) == m.topic:
                    home_topic = topic
        return RegionalMessage(
            home_topic,
            m.partition,
            m.offset,
            m.key,
            m.value,
            m.headers,
            m.timestamp_ms,
            self._region,
        )

    def _switch(self, reason: str) -> None:
        old, consumer = self._region, self._consumer
        index = self.regions.index(old)
        new = self.regions[(index + 1) % len(self.regions)]
        if consumer is not None:
            _abandon(consumer)
        if self._probe is not None:
            self._probe.close()
        log.warning("consumer of group %s: %s -> %s (%s)", self.group_id, old, new, reason)
        positions = dict(self._positions)
        self._region = new
        self._open(new)
        resumed: dict[TopicPartition, int] = {}
        if positions and self._consumer is not None:
            mapped = {
                TopicPartition(_topic_in(self.topology, self.home, new, tp.topic), tp.partition): tp
                for tp in positions
            }
            try:
                found = self._consumer.committed(list(mapped))
                resumed = {mapped[tp]: offset for tp, offset in found.items() if tp in mapped}
            except TalosError as exc:
                log.warning("could not read the synced offsets in %s: %s", new, exc)
        self._positions = {}
        self.failovers.append(ConsumerFailover(time.time(), old, new, reason, positions, resumed))

    def commit(self) -> None:
        if self._consumer is not None and not self._down:
            self._consumer.commit()

    def close(self) -> None:
        if self._consumer is not None:
            if self._down:
                _abandon(self._consumer)
            else:
                self._consumer.close()
            self._consumer = None
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    def __enter__(self) -> RegionalConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _abandon(consumer: Consumer) -> None:
    """Close a consumer of a dead region without its final commit (it would retry for 30 s)."""
    consumer.enable_auto_commit = False
    try:
        consumer.close()
    except TalosError as exc:
        log.debug("closing the abandoned consumer: %s", exc)
