"""The producer's sender: one coroutine on the producer's I/O loop.

Shaped after aiokafka's ``producer/sender.py``. Everything that talks to
brokers for a producer runs on that one loop thread: the sender coroutine
drains the accumulator, writes requests on each owner broker's produce stream
(``produce_stream.py``), and the streams' answers are handled where they
arrive, on the same thread, which is also where every delivery callback runs.

Metadata and producer ids are asked for by tasks on the loop, from the
cached state: while one topic's route is refreshed, batches for every other
partition and broker keep going, and a partition whose owner is unknown
waits (up to its delivery deadline) without holding anyone else up.

Only :meth:`Sender.wake` and :meth:`Sender.start` / :meth:`Sender.shutdown`
are called from other threads; the accumulator is shared under the
producer's lock.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from talos.aio import IoLoop
from talos.clock import Clock
from talos.errors import TalosError, TalosTimeout, Throttled, Unavailable
from talos.proto import talos_pb2 as pb
from talos.wire import error_from_proto, raise_for

from .accumulator import IDLE_WAIT_S, Accumulator, Batch, Verdict, needs_new_route
from .connection import AioConnections
from .produce_stream import CLOSE_TIMEOUT_S, ProduceStream, close_streams_on_loop
from .routing import Router, partition_error

log = logging.getLogger(__name__)

#: How often stream deadlines and route ages are looked at.
HOUSEKEEPING_S = 0.1
#: A topic's metadata is asked for at most this often.
REFRESH_INTERVAL_S = 0.05

# Complete a batch's records: (batch, base offset, error or None). Runs on the loop, unlocked.
Finish = Callable[[Batch, int, "TalosError | None"], None]
# Count records done: (records, of which failed). Runs on the loop with the lock held.
Settled = Callable[[int, int], None]


class Sender:
    def __init__(
        self,
        accumulator: Accumulator,
        lock: threading.Condition,
        router: Router,
        io: IoLoop,
        clock: Clock,
        request_timeout: float,
        finish: Finish,
        settled: Settled,
        metrics: dict[str, Any],
    ) -> None:
        self.acc = accumulator
        self.lock = lock
        self.router = router
        self.io = io
        self.clock = clock
        self.request_timeout = request_timeout
        self.finish = finish
        self.settled = settled
        # Records completed and not yet counted as done under the lock (loop thread only):
        # counted at the next locked step, so an answer takes the lock twice, not per batch.
        self._done_records = 0
        self._failed_records = 0
        self.metrics = metrics
        self.flush_requested = 0  # flush() callers waiting (under the lock)
        # When the sleeping sender looks again (under the lock); -inf: a wake-up is on its way.
        self.wake_at = float("-inf")
        self._aio = AioConnections(router.connections)
        self._streams: dict[str, ProduceStream] = {}
        self._task: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()  # metadata and producer id calls
        self._refreshing: set[str] = set()
        self._missing: dict[str, float] = {}  # topic -> when a refresh first found it gone
        self._ids_pending = 0
        self._housekept = 0.0

    # ---- any thread -------------------------------------------------------------------------

    def start(self) -> None:
        self.io.call(self._start)

    def wake(self) -> None:
        """From another thread (lock held): the sender should look now."""
        self.wake_at = float("-inf")
        self.io.call(self._wake)

    def shutdown(self) -> None:
        """Stop sending; fail what is not on the wire; let the streams answer what is."""
        try:
            self.io.run(self._shutdown(), timeout=CLOSE_TIMEOUT_S + 2.0)
        except Exception:  # the loop is gone or stuck in a callback
            log.warning("producer: shutting the sender down failed", exc_info=True)

    # ---- the loop ---------------------------------------------------------------------------

    def _start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                wait = self._step()
            except Exception:  # never let the sender die with batches queued
                log.exception("producer sender failed")
                wait = IDLE_WAIT_S
            if wait > 0:
                waiter = self._waiter = loop.create_future()
                timer = loop.call_later(wait, self._wake)
                await waiter
                timer.cancel()
                self._waiter = None

    def _step(self) -> float:
        """One round: drain, then act on what the accumulator decided. Returns the sleep."""
        with self.lock:
            self._count_done()
            drained = self.acc.drain(self.router.cached_owner, flush=self.flush_requested > 0)
            now = self.clock.monotonic()
            self.wake_at = now + drained.wait
        for batch in drained.expired:
            timeout = TalosTimeout(f"{batch.topic}/{batch.partition}: delivery timed out")
            self._complete(batch, 0, timeout)
        if drained.unrouted:
            self._refresh(drained.unrouted)
        while self._ids_pending < drained.ids_wanted:
            self._ids_pending += 1
            self._spawn(self._producer_id())
        for address, group in drained.requests.items():
            self._send(address, group)
        if now - self._housekept >= HOUSEKEEPING_S:
            self._housekept = now
            self._housekeeping()
        return 0.0 if self._done_records else drained.wait

    def _complete(self, batch: Batch, base_offset: int, error: TalosError | None) -> None:
        """Run the batch's callbacks (unlocked); it is counted done at the next locked step."""
        self.finish(batch, base_offset, error)
        self._done_records += batch.count
        if error is not None:
            self._failed_records += batch.count

    def _count_done(self) -> None:
        """Lock held: what completed since the last step is done (flush() may return)."""
        if self._done_records:
            self.settled(self._done_records, self._failed_records)
            self._done_records = self._failed_records = 0

    def _housekeeping(self) -> None:
        """A broker that stopped answering fails its requests (retriable); old routes refresh."""
        for stream in list(self._streams.values()):
            stream.check_deadline()
        stale = {name for name in self.acc.topics if self.router.needs_refresh(name)}
        if stale:
            self._refresh(stale)

    def _send(self, address: str, group: list[Batch]) -> None:
        request = pb.ProduceRequest()
        sendable: list[Batch] = []
        for batch in group:
            try:
                if batch.encoded is None:
                    batch.encoded = batch.builder.build()
            except TalosError as exc:
                self._settle(batch, exc)
                continue
            request.batches.add(topic=batch.topic, partition=batch.partition, records=batch.encoded)
            sendable.append(batch)
        if not sendable:
            with self.lock:
                self.acc.answered(address)
            return
        self.metrics["requests"] += 1
        try:
            stream = self._stream(address)
        except Exception as exc:  # e.g. the channel could not be made: retry, never strand
            self._answered((address, sendable), Unavailable(f"broker {address}: {exc!r}"))
            return
        stream.send(request, (address, sendable))

    def _stream(self, address: str) -> ProduceStream:
        """The broker's produce stream; a broken one is replaced."""
        stream = self._streams.get(address)
        if stream is None or not stream.alive:
            if stream is not None:
                stream.close()  # its channel, in the background
            stream = self._streams[address] = ProduceStream(
                address,
                self.io,
                self._answered,
                self.request_timeout,
                self.clock,
                self.router.connections.security,
                self.router.connections.metadata,
            )
        return stream

    def _answered(
        self, token: tuple[str, list[Batch]], outcome: pb.ProduceResponse | TalosError
    ) -> None:
        """The broker's answer to one request, or why there is none (on the loop)."""
        address, group = token
        if isinstance(outcome, TalosError):
            errors: list[tuple[TalosError | None, int]] = [(outcome, 0)] * len(group)
        else:
            errors = [
                (partition_error(result.error), result.base_offset) for result in outcome.results
            ]
            if len(errors) != len(group):
                why = Unavailable(f"broker {address}: {len(errors)} results for {len(group)}")
                errors = [(why, 0)] * len(group)
        with self.lock:
            self.acc.answered(address)
            verdicts = [
                self.acc.completed(batch, error)
                for batch, (error, _) in zip(group, errors, strict=True)
            ]
        for batch, (error, base_offset), verdict in zip(group, errors, verdicts, strict=True):
            self._act(batch, verdict, error, base_offset)
        self._wake()

    def _settle(self, batch: Batch, error: TalosError | None, base_offset: int = 0) -> None:
        """One batch answered outside a request's answer (it could not be encoded)."""
        with self.lock:
            verdict = self.acc.completed(batch, error)
        self._act(batch, verdict, error, base_offset)

    def _act(
        self, batch: Batch, verdict: Verdict, error: TalosError | None, base_offset: int
    ) -> None:
        """Act on the accumulator's verdict for one answered batch.

        Retries and error classification meet here and in ``accumulator.completed``
        (which decides) and ``accumulator.retry_delay`` (which times the retry).
        """
        if verdict is Verdict.DONE:
            self.metrics["batches_sent"] += 1
        elif verdict is Verdict.RETRY:  # only an error is retried
            self.metrics["retries"] += 1
            if isinstance(error, Throttled):
                self.metrics["throttled"] += 1
            if error is not None and needs_new_route(error):
                self.router.mark_stale(batch.topic)
                self._refresh({batch.topic})
            return
        self._complete(batch, base_offset, error)

    # ---- metadata and producer ids, as tasks on the loop ------------------------------------

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refresh(self, topics: set[str]) -> None:
        fresh = topics - self._refreshing
        if fresh:
            self._refreshing |= fresh
            self._spawn(self._refresh_topics(sorted(fresh)))

    async def _refresh_topics(self, topics: list[str]) -> None:
        """Ask any broker for the topics' routes; others' sends go on meanwhile."""
        try:
            response = await self._aio.call_any(
                "Metadata", pb.MetadataRequest(topics=topics), list(self.router.brokers.values())
            )
            self.router.apply(response)
            self._fail_gone(response)
        except TalosError as exc:
            log.debug("producer: metadata refresh for %s failed: %s", topics, exc)
        finally:
            await asyncio.sleep(REFRESH_INTERVAL_S)
            self._refreshing.difference_update(topics)
            self._wake()

    def _fail_gone(self, response: pb.MetadataResponse) -> None:
        """A topic missing for longer than the router's topic wait fails its queued batches."""
        now = self.clock.monotonic()
        for info in response.topics:
            error = error_from_proto(info.error)
            if error is None:
                self._missing.pop(info.name, None)
                continue
            since = self._missing.setdefault(info.name, now)
            if now - since < self.router.topic_wait_s:
                continue
            with self.lock:
                dropped = self.acc.drop_topic(info.name)
            for batch in dropped:
                self._complete(batch, 0, error)

    async def _producer_id(self) -> None:
        """One producer id from any broker (a ZooKeeper write there)."""
        try:
            response = await self._aio.call_any(
                "InitProducer", pb.InitProducerRequest(), list(self.router.brokers.values())
            )
            raise_for(response.error)
            with self.lock:
                self.acc.give_producer_id(int(response.producer_id))
            self.metrics["producer_ids"] += 1
        except TalosError as exc:
            if exc.retriable:
                log.debug("producer: no producer id yet: %s", exc)
                await asyncio.sleep(0.1)
            else:
                with self.lock:
                    waiting = self.acc.take_waiting_for_id()
                for batch in waiting:
                    self._complete(batch, 0, exc)
        finally:
            self._ids_pending -= 1
            self._wake()

    # ---- closing ----------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for task in list(self._tasks):
            task.cancel()
        with self.lock:
            unsent = self.acc.unsent()
        for batch in unsent:
            closed = TalosTimeout("producer closed before the batch was acknowledged")
            self._complete(batch, 0, closed)
        streams, self._streams = list(self._streams.values()), {}
        await close_streams_on_loop(streams, CLOSE_TIMEOUT_S)  # in-flight answers come in
        with self.lock:
            self._count_done()
        await self._aio.close()
