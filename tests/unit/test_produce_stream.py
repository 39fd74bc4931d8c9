"""The producer's pipelined stream against a scripted gRPC server (real gRPC, loopback).

The server here is a stand-in that answers in an order the test chooses; the
real broker's side of the stream is covered by the integration tests.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from talos.aio import IoLoop
from talos.client.produce_stream import ProduceStream
from talos.clock import ManualClock
from talos.errors import TalosError, TalosTimeout, Unavailable
from talos.proto import talos_pb2 as pb
from talos.proto import talos_pb2_grpc as pb_grpc


class ScriptedBroker(pb_grpc.BrokerServicer):  # type: ignore[misc]
    """Reads ``hold`` requests, then answers them in reverse order; or never; or aborts."""

    def __init__(self, mode: str, hold: int = 2) -> None:
        self.mode = mode
        self.hold = hold
        self.received: queue.SimpleQueue[int] = queue.SimpleQueue()

    def ProduceStream(
        self, requests: Iterator[pb.ProduceRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ProduceResponse]:
        held: list[pb.ProduceRequest] = []
        for request in requests:
            self.received.put(request.request_id)
            if self.mode == "abort":
                context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
            if self.mode == "silent":
                continue
            held.append(request)
            if len(held) == self.hold:
                for answered in reversed(held):
                    response = pb.ProduceResponse(request_id=answered.request_id)
                    response.results.add(topic="t", partition=0, base_offset=answered.request_id)
                    yield response
                held.clear()


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[grpc.Server] = []

    def start(servicer: ScriptedBroker) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_BrokerServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(grace=None)


@pytest.fixture
def io() -> Iterator[IoLoop]:
    loop = IoLoop("test-produce-io")
    yield loop
    loop.close()


class Answers:
    def __init__(self) -> None:
        self.got: dict[str, pb.ProduceResponse | TalosError] = {}
        self.cond = threading.Condition()

    def __call__(self, token: Any, outcome: pb.ProduceResponse | TalosError) -> None:
        with self.cond:
            assert token not in self.got, f"{token} answered twice"
            self.got[token] = outcome
            self.cond.notify_all()

    def wait_for(self, count: int) -> dict[str, pb.ProduceResponse | TalosError]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.got) >= count, timeout=10)
            return dict(self.got)


def request() -> pb.ProduceRequest:
    req = pb.ProduceRequest()
    req.batches.add(topic="t", partition=0, records=b"")
    return req


def test_answers_out_of_order_reach_their_own_requests(serve: Any, io: IoLoop) -> None:
    answers = Answers()
    stream = ProduceStream(serve(ScriptedBroker("reverse")), io, answers, 30.0, ManualClock())
    try:
        for token in ("first", "second", "third", "fourth"):
            stream.send(request(), token)
        got = answers.wait_for(4)
        offsets = {token: outcome.results[0].base_offset for token, outcome in got.items()}
        assert offsets == {"first": 1, "second": 2, "third": 3, "fourth": 4}
        assert stream.alive
    finally:
        stream.close()


def test_a_broken_stream_fails_every_waiting_request_once(serve: Any, io: IoLoop) -> None:
    answers = Answers()
    stream = ProduceStream(serve(ScriptedBroker("abort")), io, answers, 30.0, ManualClock())
    stream.send(request(), "a")
    got = answers.wait_for(1)
    assert isinstance(got["a"], Unavailable) and got["a"].retriable
    assert not stream.alive
    stream.send(request(), "b")  # on a dead stream: answered at once, not lost
    assert isinstance(answers.wait_for(2)["b"], Unavailable)
    stream.close()


def test_a_silent_broker_times_out_after_the_request_timeout(serve: Any, io: IoLoop) -> None:
    answers = Answers()
    clock = ManualClock()
    broker = ScriptedBroker("silent")
    stream = ProduceStream(serve(broker), io, answers, 5.0, clock)
    stream.send(request(), "a")
    assert broker.received.get(timeout=10) == 1
    clock.advance(4.9)
    stream.check_deadline()
    assert answers.got == {}
    clock.advance(0.2)
    stream.check_deadline()
    got = answers.wait_for(1)
    assert isinstance(got["a"], TalosTimeout) and got["a"].retriable
    assert not stream.alive
    stream.close()


def test_many_requests_sent_at_once_go_out_in_order(serve: Any, io: IoLoop) -> None:
    """Writes queue behind each other on the loop; none is lost or reordered."""
    answers = Answers()
    broker = ScriptedBroker("reverse")
    stream = ProduceStream(serve(broker), io, answers, 30.0, ManualClock())
    try:
        for token in range(200):
            stream.send(request(), token)
        got = answers.wait_for(200)
        assert {token: outcome.results[0].base_offset for token, outcome in got.items()} == {
            token: token + 1 for token in range(200)
        }
        assert [broker.received.get(timeout=1) for _ in range(200)] == list(range(1, 201))
    finally:
        stream.close()
