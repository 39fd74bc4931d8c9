"""One long-lived, pipelined Produce stream to one broker.

A unary gRPC call costs about three times what a message on an open stream
costs (call set-up, headers, a completion-queue round on both sides), and on
a small machine that cost is most of a produce's latency. So the producer
keeps one bidirectional stream per broker: requests go out tagged with an id,
answers come back tagged with it, in whatever order the broker finishes them.

When the stream breaks (broker gone, deadline passed, channel closed), every
request still waiting is answered with a retriable error and the stream is
dead; the producer opens a new one for its next request.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from talos.clock import Clock
from talos.errors import TalosError, TalosTimeout, Unavailable
from talos.proto import talos_pb2 as pb
from talos.proto import talos_pb2_grpc as pb_grpc
from talos.wire import from_grpc_error

log = logging.getLogger(__name__)

# What the answer callback receives: the broker's response, or why there is none.
Answer = Callable[[Any, "pb.ProduceResponse | TalosError"], None]

_END = None  # put on the outgoing queue: half-close the stream


class ProduceStream:
    def __init__(
        self,
        address: str,
        stub: pb_grpc.BrokerStub,
        on_answer: Answer,
        request_timeout: float,
        clock: Clock,
    ) -> None:
        self.address = address
        self.request_timeout = request_timeout
        self._clock = clock
        self._on_answer = on_answer
        self._ids = itertools.count(1)
        self._outgoing: queue.SimpleQueue[pb.ProduceRequest | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # request id -> (token, monotonic deadline); ids rise, so the first is the oldest
        self._waiting: dict[int, tuple[Any, float]] = {}
        self._broken: TalosError | None = None
        self._call: Any = stub.ProduceStream(self._requests())
        self._reader = threading.Thread(
            target=self._read, name=f"talos-produce-stream-{address}", daemon=True
        )
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self._broken is None

    def send(self, request: pb.ProduceRequest, token: Any) -> None:
        """Queue a request; ``on_answer(token, ...)`` is called exactly once for it."""
        with self._lock:
            broken = self._broken
            if broken is None:
                request.request_id = next(self._ids)
                deadline = self._clock.monotonic() + self.request_timeout
                self._waiting[request.request_id] = (token, deadline)
                self._outgoing.put(request)
        if broken is not None:
            self._on_answer(token, broken)

    def check_deadline(self) -> None:
        """Break the stream if its oldest request is past the request timeout."""
        with self._lock:
            oldest = next(iter(self._waiting.values()), None)
        if oldest is not None and self._clock.monotonic() > oldest[1]:
            self._break(
                TalosTimeout(
                    f"broker {self.address}: no produce answer within {self.request_timeout}s"
                )
            )

    def close(self) -> None:
        """Half-close (the broker answers what it has), then stop; waiting requests fail."""
        self._outgoing.put(_END)
        self._reader.join(timeout=1.0)
        self._break(Unavailable(f"broker {self.address}: produce stream closed"))
        self._reader.join(timeout=5.0)

    # ---- internals ----------------------------------------------------------

    def _requests(self) -> Iterator[pb.ProduceRequest]:
        """Consumed by a gRPC thread, which writes each request to the stream."""
        while (request := self._outgoing.get()) is not _END:
            yield request

    def _read(self) -> None:
        why: TalosError
        try:
            for response in self._call:
                with self._lock:
                    entry = self._waiting.pop(response.request_id, None)
                if entry is not None:
                    self._on_answer(entry[0], response)
            why = Unavailable(f"broker {self.address}: produce stream ended")
        except grpc.RpcError as exc:
            why = from_grpc_error(exc, self.address)
        except Exception as exc:  # the channel was closed under us
            why = Unavailable(f"broker {self.address}: produce stream failed: {exc!r}")
        self._break(why)

    def _break(self, why: TalosError) -> None:
        with self._lock:
            if self._broken is None:
                self._broken = why
            waiting, self._waiting = self._waiting, {}
        self._outgoing.put(_END)  # let the gRPC thread's iterator finish
        self._call.cancel()
        for token, _deadline in waiting.values():
            self._on_answer(token, why)
