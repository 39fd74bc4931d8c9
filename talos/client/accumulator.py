"""The producer's batching, as plain state: no I/O, no threads, an injected clock.

Shaped after aiokafka's ``producer/message_accumulator.py``: one open batch per
partition collects records; a sealed batch waits in its partition's queue; the
sender drains the heads of the queues, grouped by owner broker, and answers
come back through :meth:`Accumulator.completed`, which says whether a batch is
done, retried (it stays first in its queue, so order survives) or failed.

The producer calls every method under its own lock; the accumulator takes no
lock and starts nothing, so its tests drive it with a manual clock and no
server. Encoding the sealed batch (``BatchBuilder.build``), routing lookups and
requests are the caller's: :meth:`drain` only takes an ``owner_of`` function
that looks up cached routes.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from talos.clock import Clock
from talos.errors import NotOwner, TalosError, Throttled, Unavailable
from talos.record.batch import HEADER_SIZE, BatchBuilder
from talos.record.codec import Codec

# Headroom under max_message_bytes: a record's timestamp delta may take up to 9
# more bytes than record_size() assumes, and compression adds frame overhead.
BATCH_SLACK_BYTES = 64
#: How long the sender sleeps at most when nothing is due (it also checks deadlines then).
IDLE_WAIT_S = 0.1


class Verdict(enum.Enum):
    """What became of a batch the broker answered (or failed to answer)."""

    DONE = "done"  # acknowledged: complete its records with their offsets
    RETRY = "retry"  # stays first in its partition's queue, sent again byte for byte
    FAILED = "failed"  # complete its records with the error


def retry_delay(error: TalosError, attempt: int) -> float:
    """How long a partition waits before its batch's next attempt.

    A quota's THROTTLED answer says when the quota admits the request again: wait
    exactly that (less is refused again, more under-uses the quota, however many
    attempts came before). Every other retriable error backs off exponentially
    from 40 ms, capped at one second.
    """
    if isinstance(error, Throttled) and error.retry_after_ms > 0:
        return error.retry_after_ms / 1000
    return float(min(1.0, 0.02 * 2 ** min(attempt, 10)))


def needs_new_route(error: TalosError) -> bool:
    """A failure that says our cached owner may be wrong: refresh the topic's metadata."""
    return isinstance(error, NotOwner | Unavailable)


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


class PartitionQueue:
    """One partition's sealed batches, oldest first; at most the first is in flight."""

    __slots__ = (
        "in_flight",
        "next_sequence",
        "partition",
        "producer_id",
        "ready",
        "retry_at",
        "sequence_broken",
        "topic",
    )

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.ready: deque[Batch] = deque()
        self.in_flight = False
        self.retry_at = 0.0
        self.producer_id = -1  # not chosen yet, or dropped with a broken sequence
        self.sequence_broken = False
        self.next_sequence = 0

    def break_sequence(self) -> None:
        """Its next batch starts a new sequence under a fresh producer id."""
        self.producer_id = -1
        self.sequence_broken = True


class Batch:
    """Records for one partition; ``outcome`` and the delivery lists belong to the producer."""

    __slots__ = (
        "attempts",
        "builder",
        "count",
        "created",
        "deadline",
        "delivery_callbacks",
        "delivery_indexes",
        "encoded",
        "held_at",
        "outcome",
        "partition",
        "queue",
        "sealed",
        "sequenced",
        "size",
        "topic",
    )

    def __init__(self, queue: PartitionQueue, codec: Codec, created: float, deadline: float):
        self.queue = queue
        self.topic = queue.topic
        self.partition = queue.partition
        self.builder = BatchBuilder(codec=codec)
        self.count = 0
        self.size = HEADER_SIZE
        self.created = created
        self.deadline = deadline
        self.sealed = False
        self.sequenced = False  # numbered under a producer id: its sequence is spent
        self.encoded: bytes | None = None  # set by the sender; a retry resends these bytes
        self.held_at = -1  # its broker's answer count when its linger ran out while busy
        self.attempts = 0
        self.outcome: Any = None
        # on_delivery callbacks and their records' indexes, in two lists: a tuple per
        # record would be one more object for the garbage collector to walk.
        self.delivery_callbacks: list[Any] | None = None
        self.delivery_indexes: list[int] = []


class TopicBatches:
    """A topic's open batch and queue per partition, indexed by partition for send()."""

    __slots__ = ("cap", "name", "open", "queues", "sticky")

    def __init__(self, name: str, partitions: int, cap: int) -> None:
        self.name = name
        self.cap = cap  # a batch is sealed once it holds this many bytes
        # One list for the object's lifetime (grown in place): the C send lane keeps it.
        self.open: list[Batch | None] = [None] * partitions
        self.queues = [PartitionQueue(name, p) for p in range(partitions)]
        self.sticky = -1  # the partition keyless records go to, until its batch is sealed

    @property
    def partitions(self) -> int:
        return len(self.open)


class Drained(NamedTuple):
    """What the sender does next, as decided by :meth:`Accumulator.drain`."""

    requests: dict[str, list[Batch]]  # broker address -> batches for one request
    expired: list[Batch]  # past their delivery deadline: fail them
    unrouted: set[str]  # topics with a batch whose owner is unknown: refresh them
    ids_wanted: int  # producer ids needed before some batches can be numbered
    wait: float  # seconds until the next linger or backoff runs out


class Accumulator:
    def __init__(
        self,
        clock: Clock,
        *,
        linger_s: float,
        delivery_timeout_s: float,
        max_in_flight: int,
        idempotent: bool,
        codec: Codec = Codec.NONE,
    ) -> None:
        self.clock = clock
        self.linger_s = linger_s
        self.delivery_timeout_s = delivery_timeout_s
        self.max_in_flight = max_in_flight
        self.idempotent = idempotent
        self.codec = codec
        self.topics: dict[str, TopicBatches] = {}
        self.buffered = 0  # bytes of sealed batches not yet acknowledged or failed
        self.producer_id = -1  # the id every partition's sequence starts under
        self.spare_ids: list[int] = []  # fresh ids for partitions whose sequence broke
        self.closing = False  # no more retries
        self._open: dict[Batch, None] = {}  # open batches, oldest first
        self._queued: dict[PartitionQueue, None] = {}  # queues holding sealed batches
        self._in_flight: dict[str, int] = {}  # requests outstanding per broker
        self._answers: dict[str, int] = {}  # answers (or failures) per broker so far

    # ---- send() side ------------------------------------------------------------------------

    def topic(self, name: str, partitions: int, cap: int) -> TopicBatches:
        """The topic's batches, grown to ``partitions`` (partitions only grow)."""
        entry = self.topics.get(name)
        if entry is None:
            entry = self.topics[name] = TopicBatches(name, partitions, cap)
        entry.cap = cap
        if partitions > entry.partitions:
            old = entry.partitions
            entry.open.extend([None] * (partitions - old))
            entry.queues.extend(PartitionQueue(name, p) for p in range(old, partitions))
        return entry

    def append(
        self,
        topic: TopicBatches,
        partition: int,
        value: bytes | None,
        key: bytes | None,
        timestamp_ms: int,
        headers: Sequence[tuple[str, bytes | None]],
        size: int,
    ) -> Batch:
        """Add one record of ``size`` encoded bytes to the partition's open batch.

        A record that would take the batch past ``topic.cap`` seals it and goes
        into a new one; a batch that reaches the cap is sealed at once. The
        record's index in its batch is ``batch.count - 1``.
        """
        batch = topic.open[partition]
        if batch is not None and batch.size + size > topic.cap:
            self._seal(batch)
            batch = None
        if batch is None:
            now = self.clock.monotonic()
            batch = Batch(topic.queues[partition], self.codec, now, now + self.delivery_timeout_s)
            topic.open[partition] = batch
            self._open[batch] = None
        batch.size += batch.builder.append(value, key, timestamp_ms, headers)
        batch.count += 1
        if batch.size >= topic.cap:
            self._seal(batch)
        return batch

    def would_open(self, topic: TopicBatches, partition: int, size: int) -> bool:
        """Would a record of ``size`` bytes start a new batch (back-pressure applies then)?"""
        batch = topic.open[partition]
        return batch is None or batch.size + size > topic.cap

    def first_in_line(self, batch: Batch) -> bool:
        """Could the batch be sent as soon as it is due (no earlier batch of its partition)?"""
        queue = batch.queue
        if queue.in_flight:
            return False
        return not queue.ready or queue.ready[0] is batch

    def _seal(self, batch: Batch) -> None:
        topic = self.topics[batch.topic]
        if topic.open[batch.partition] is batch:
            topic.open[batch.partition] = None
        self._open.pop(batch, None)
        if topic.sticky == batch.partition:
            topic.sticky = -1
        batch.sealed = True
        if batch.count == 0:  # its only append was refused
            return
        self.buffered += batch.size
        batch.queue.ready.append(batch)
        self._queued[batch.queue] = None

    # ---- sender side ------------------------------------------------------------------------

    def give_producer_id(self, producer_id: int) -> None:
        """An id the broker handed out: the producer's own first, then spares."""
        if self.producer_id < 0:
            self.producer_id = producer_id
        else:
            self.spare_ids.append(producer_id)

    def drain(self, owner_of: Callable[[str, int], str], flush: bool = False) -> Drained:
        """Seal what lingered long enough, and take what can be sent now, by broker.

        A partition sends one batch at a time, its oldest, so a retry keeps
        the order. A broker takes one more request while it has fewer than
        ``max_in_flight`` of ours; each request carries every batch for that
        broker taken in this drain. ``owner_of`` answers from cached routes
        ("" when unknown: the batch waits and its topic is reported).
        """
        now = self.clock.monotonic()
        wait = IDLE_WAIT_S
        for batch in list(self._open):
            due = batch.created + self.linger_s
            if flush or due <= now:
                if not self._held(batch, owner_of(batch.topic, batch.partition)):
                    self._seal(batch)
            else:
                wait = min(wait, due - now)
        requests: dict[str, list[Batch]] = {}
        expired: list[Batch] = []
        unrouted: set[str] = set()
        wanted = 0
        for queue in list(self._queued):
            if queue.in_flight:
                continue
            if not queue.ready:
                del self._queued[queue]
                continue
            if queue.retry_at > now:
                wait = min(wait, queue.retry_at - now)
                continue
            batch = queue.ready[0]
            if now >= batch.deadline:
                expired.append(self._drop(batch))
                continue
            address = owner_of(batch.topic, batch.partition)
            if not address:
                unrouted.add(batch.topic)
                continue
            if address not in requests and self._in_flight.get(address, 0) >= self.max_in_flight:
                continue
            if self.idempotent and not batch.sequenced:
                producer_id = self._producer_id_for(queue)
                if producer_id < 0:
                    wanted += 1
                    continue
                batch.builder.set_sequence(producer_id, 0, queue.next_sequence)
                queue.next_sequence += batch.count
                batch.sequenced = True
            queue.in_flight = True
            requests.setdefault(address, []).append(batch)
        for address in requests:
            self._in_flight[address] = self._in_flight.get(address, 0) + 1
        if wanted and self.producer_id < 0:
            wanted = 1  # the first id serves every partition
        return Drained(requests, expired, unrouted, wanted, max(wait, 0.0))

    def _held(self, batch: Batch, address: str) -> bool:
        """Nagle's rule for produce: keep a lingered batch open while it would only wait.

        It waits while its partition has a batch queued or in flight, or while
        its broker is busy with a request of ours: it grows meanwhile, and the
        broker's next answer lets it go with every other batch waiting for that
        broker, in one request. At modest rates this cuts requests, whose fixed
        cost is most of a produce's CPU, and it adds at most one round trip.
        """
        queue = batch.queue
        if queue.in_flight or queue.ready:
            return True
        hold, batch.held_at = nagle_hold(
            self._in_flight.get(address, 0), self._answers.get(address, 0), batch.held_at
        )
        return hold

    def _producer_id_for(self, queue: PartitionQueue) -> int:
        """The id a partition numbers its next batch under; -1 until one is at hand.

        Every partition keeps its own sequence from 0 under the producer's one
        id, so only the first batch needs an id from a broker. A partition
        whose sequence may have a gap starts anew under a fresh id.
        """
        if queue.producer_id >= 0:
            return queue.producer_id
        if queue.sequence_broken:
            if not self.spare_ids or self.producer_id < 0:
                return -1
            queue.producer_id = self.spare_ids.pop(0)
            queue.sequence_broken = False
        elif self.producer_id < 0:
            return -1
        else:
            queue.producer_id = self.producer_id
        queue.next_sequence = 0
        return queue.producer_id

    def answered(self, address: str) -> None:
        """The broker answered one request of ours (or it failed): a slot is free."""
        self._in_flight[address] -= 1
        self._answers[address] = self._answers.get(address, 0) + 1

    def completed(self, batch: Batch, error: TalosError | None) -> Verdict:
        """Decide a sent batch's fate from the broker's answer for its partition.

        A retriable error within the delivery deadline keeps it first in its
        queue (order survives) and backs the partition off; its bytes and
        sequence stay, so the broker's sequence check drops a duplicate. A
        final failure after the batch was numbered breaks the partition's
        sequence: that sequence may or may not have landed.
        """
        queue = batch.queue
        queue.in_flight = False
        now = self.clock.monotonic()
        if error is None:
            queue.ready.popleft()
            self.buffered -= batch.size
            return Verdict.DONE
        if error.retriable and now < batch.deadline and not self.closing:
            batch.attempts += 1
            queue.retry_at = now + retry_delay(error, batch.attempts)
            return Verdict.RETRY
        self._drop(batch)
        return Verdict.FAILED

    def _drop(self, batch: Batch) -> Batch:
        """Take a queued batch out for good (it will fail)."""
        queue = batch.queue
        if queue.ready[0] is batch:
            queue.ready.popleft()
        else:
            queue.ready.remove(batch)
        self.buffered -= batch.size
        if batch.sequenced:
            queue.break_sequence()
        return batch

    def drop_topic(self, name: str) -> list[Batch]:
        """Every batch of a topic that is not on the wire, out (the topic is gone)."""
        topic = self.topics.get(name)
        if topic is None:
            return []
        for batch in topic.open:
            if batch is not None:
                self._seal(batch)
        dropped: list[Batch] = []
        for queue in topic.queues:
            keep = 1 if queue.in_flight else 0  # the in-flight batch is the first
            dropped.extend(self._drop(batch) for batch in list(queue.ready)[keep:])
        return dropped

    def unsent(self) -> list[Batch]:
        """Every batch not on the wire, out of the queues: the producer is closing."""
        self.closing = True
        dropped: list[Batch] = []
        for name in list(self.topics):
            dropped.extend(self.drop_topic(name))
        return dropped

    def take_waiting_for_id(self) -> list[Batch]:
        """Out of the queues: the batches that wait for a producer id (none can be had)."""
        waiting = [
            queue.ready[0]
            for queue in self._queued
            if queue.ready and not queue.in_flight and not queue.ready[0].sequenced
        ]
        return [self._drop(batch) for batch in waiting]
