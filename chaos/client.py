"""The client processes of a chaos run: producer, live reader and final drain.

Each runs in a network namespace of its own (``python -m chaos client ...``)
and records what it does in its own history file (see history.py). They use
the real Talos client, so what is checked is what users run.

Failures are *indefinite* unless the record can never have been stored:
``send()`` raised before queueing it, or it is a *poison* batch (a batch
whose CRC is deliberately wrong, sent raw). A batch that failed after being
sent may still be in the log (a fenced owner's write that the takeover scan
kept), so it is indefinite whatever the error.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import functools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import grpc

from talos.client import Consumer, Producer, RecordMetadata, TopicPartition
from talos.client.routing import Router
from talos.errors import CorruptBatch, TalosError, TalosTimeout
from talos.proto import talos_pb2 as pb
from talos.record.batch import Record, encode_batch
from talos.signals import stop_on_signals
from talos.wire import error_from_proto

from .history import HistoryWriter

#: Outstanding sends above which the producer waits (bounded memory while a partition is down).
MAX_OUTSTANDING = 4000


def _stop_event() -> threading.Event:
    """An event set by SIGTERM or SIGINT.

    SIGABRT prints every thread's stack to the log before the process dies: the
    runner sends it to a client that does not stop in time, to show where it hung.
    """
    faulthandler.enable()
    stop = threading.Event()
    stop_on_signals(stop)
    return stop


def _retry(what: Callable[[], Any], stop: threading.Event, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return what()
        except TalosError:
            if stop.is_set() or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _partitions(router: Router, topic: str) -> int:
    return router.route(topic).partitions


def poison_batch(value: bytes) -> tuple[bytes, bytes]:
    """A one-record batch whose first value byte is flipped after the CRC was computed.

    Returns (the batch, the value as stored in it). No broker may store it.
    """
    batch = bytearray(encode_batch([Record(value=value, timestamp_ms=int(time.time() * 1000))]))
    at = bytes(batch).rfind(value)
    batch[at] ^= 0x01
    return bytes(batch), bytes(batch[at : at + len(value)])


# ---- producer -----------------------------------------------------------------


def run_producer(args: argparse.Namespace) -> int:
    stop = _stop_event()
    writer = HistoryWriter(args.history, args.proc)
    dc, topic = args.dc, args.topic
    producer = Producer(
        args.bootstrap,
        linger_ms=args.linger_ms,
        delivery_timeout_s=args.delivery_timeout,
        request_timeout_s=args.request_timeout,
    )
    lock = threading.Lock()
    outstanding: dict[str, Future[RecordMetadata]] = {}

    def record(value: str, future: Future[RecordMetadata]) -> None:
        with lock:
            outstanding.pop(value, None)
        error = future.exception()
        if error is None:
            meta = future.result()
            writer.write(
                "ack", dc=dc, topic=topic, value=value, partition=meta.partition, offset=meta.offset
            )
        else:
            writer.write(
                "fail",
                dc=dc,
                topic=topic,
                value=value,
                definite=False,
                error=type(error).__name__,
                detail=str(error)[:200],
            )

    partitions = int(_retry(functools.partial(_partitions, producer.router, topic), stop))
    interval = 1.0 / args.rate
    next_at = time.monotonic()
    sequence = 0
    try:
        while not stop.is_set():
            sequence += 1
            if args.poison_every and sequence % args.poison_every == 0:
                _send_poison(producer, writer, args, sequence, sequence % partitions)
            else:
                value = f"{args.proc}-{sequence}"
                partition = sequence % partitions
                writer.write("send", dc=dc, topic=topic, value=value, partition=partition)
                try:
                    future = producer.send(topic, value.encode(), partition=partition)
                except TalosError as exc:  # never queued: it cannot be stored
                    writer.write(
                        "fail",
                        dc=dc,
                        topic=topic,
                        value=value,
                        definite=True,
                        error=type(exc).__name__,
                        detail=str(exc)[:200],
                    )
                else:
                    with lock:
                        outstanding[value] = future
                    future.add_done_callback(functools.partial(record, value))
            next_at += interval
            while len(outstanding) > MAX_OUTSTANDING and not stop.is_set():
                time.sleep(0.05)
                next_at = time.monotonic()
            delay = next_at - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            else:
                next_at = time.monotonic()
    finally:
        with contextlib.suppress(TalosError):
            producer.flush(timeout=args.flush_timeout)
        with lock:
            left = list(outstanding)
        for value in left:
            writer.write(
                "fail",
                dc=dc,
                topic=topic,
                value=value,
                definite=False,
                error="Unresolved",
                detail="no answer before the producer stopped",
            )
        with contextlib.suppress(TalosError, TalosTimeout):
            producer.close(timeout=1.0)
        writer.close()
    return 0


def _send_poison(
    producer: Producer, writer: HistoryWriter, args: argparse.Namespace, seq: int, partition: int
) -> None:
    """A raw Produce of a corrupt batch: the broker must refuse it (CORRUPT_BATCH)."""
    batch, stored = poison_batch(f"P:{args.proc}-{seq}".encode())
    value = stored.decode("ascii")
    dc, topic = args.dc, args.topic
    writer.write("send", dc=dc, topic=topic, value=value, partition=partition, poison=True)
    outcome = "no answer"
    try:
        address = producer.router.owner_address(topic, partition)
        request = pb.ProduceRequest(
            batches=[pb.ProduceBatch(topic=topic, partition=partition, records=batch)]
        )
        response = producer.connections.call(address, "Produce", request, timeout=5.0)
        result = response.results[0]
        error = error_from_proto(result.error)
        outcome = "acknowledged" if error is None else type(error).__name__
    except (TalosError, grpc.RpcError) as exc:
        outcome = type(exc).__name__
    # Definite by construction: a batch with a wrong CRC can never be stored legitimately.
    writer.write("fail", dc=dc, topic=topic, value=value, definite=True, error=outcome, poison=True)


# ---- live reader --------------------------------------------------------------


def run_reader(args: argparse.Namespace) -> int:
    stop = _stop_event()
    writer = HistoryWriter(args.history, args.proc)
    dc, topic = args.dc, args.topic
    positions: dict[int, int] = {}
    session = 0
    try:
        while not stop.is_set():
            session += 1
            consumer = Consumer(
                args.bootstrap,
                auto_offset_reset="earliest",
                request_timeout_s=args.request_timeout,
                fetch_max_wait_ms=200,
            )
            try:
                count = int(_retry(functools.partial(_partitions, consumer.router, topic), stop))
                tps = [TopicPartition(topic, p) for p in range(count)]
                consumer.assign(tps)
                for tp in tps:
                    positions.setdefault(tp.partition, 0)
                    consumer.seek(tp, positions[tp.partition])
                    writer.write(
                        "assign",
                        dc=dc,
                        topic=topic,
                        partition=tp.partition,
                        session=session,
                        offset=positions[tp.partition],
                    )
                while not stop.is_set():
                    for message in consumer.poll(timeout_s=0.5):
                        writer.write(
                            "read",
                            dc=dc,
                            topic=topic,
                            partition=message.partition,
                            offset=message.offset,
                            session=session,
                            value=(message.value or b"").decode("utf-8", "replace"),
                        )
                        positions[message.partition] = message.offset + 1
            except TalosError as exc:
                writer.write(
                    "read-error",
                    dc=dc,
                    topic=topic,
                    partition=None,
                    offset=None,
                    error=type(exc).__name__,
                    detail=str(exc)[:300],
                    expected=False,
                )
                stop.wait(1.0)
            finally:
                consumer.close()
    finally:
        writer.close()
    return 0


# ---- final drain --------------------------------------------------------------


def drain_partition(
    consumer: Consumer,
    writer: HistoryWriter,
    dc: str,
    topic: str,
    partition: int,
    expect_corrupt: bool,
    timeout: float,
) -> None:
    """Read [0, end) of one partition; on a corrupt batch record it and step past it."""
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    consumer.seek_to_end([tp])
    end = consumer.position(tp)
    consumer.seek(tp, 0)
    deadline = time.monotonic() + timeout
    position = 0
    while position < end and time.monotonic() < deadline:
        try:
            messages = consumer.poll(timeout_s=0.5)
        except CorruptBatch as exc:
            writer.write(
                "read-error",
                dc=dc,
                topic=topic,
                partition=partition,
                offset=position,
                error="CorruptBatch",
                detail=str(exc)[:300],
                expected=expect_corrupt,
            )
            position += 1
            consumer.seek(tp, position)
            continue
        for message in messages:
            writer.write(
                "drain",
                dc=dc,
                topic=topic,
                partition=partition,
                offset=message.offset,
                value=(message.value or b"").decode("utf-8", "replace"),
            )
            position = message.offset + 1
    writer.write("drain-end", dc=dc, topic=topic, partition=partition, log_end=end)


def run_drain(args: argparse.Namespace) -> int:
    stop = _stop_event()
    writer = HistoryWriter(args.history, args.proc)
    expect = set(args.expect_corrupt or [])
    try:
        for topic in args.topics:
            probe = Consumer(args.bootstrap, request_timeout_s=args.request_timeout)
            try:
                count = int(_retry(functools.partial(_partitions, probe.router, topic), stop))
            finally:
                probe.close()
            for partition in range(count):
                consumer = Consumer(
                    args.bootstrap,
                    auto_offset_reset="earliest",
                    request_timeout_s=args.request_timeout,
                    fetch_max_wait_ms=100,
                )
                try:
                    drain_partition(
                        consumer,
                        writer,
                        args.dc,
                        topic,
                        partition,
                        topic in expect,
                        args.timeout,
                    )
                finally:
                    consumer.close()
    finally:
        writer.close()
    return 0


# ---- command line ---------------------------------------------------------------


def add_parser(sub: Any) -> None:
    client = sub.add_parser("client", help="a client process of a chaos run (used by the runner)")
    roles = client.add_subparsers(dest="role", required=True)

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--bootstrap", required=True)
        p.add_argument("--dc", required=True)
        p.add_argument("--proc", required=True)
        p.add_argument("--history", required=True)
        p.add_argument("--request-timeout", type=float, default=5.0)
        return p

    produce = common(roles.add_parser("produce"))
    produce.add_argument("--topic", required=True)
    produce.add_argument("--rate", type=float, default=100.0, help="messages per second")
    produce.add_argument("--linger-ms", type=float, default=5.0)
    produce.add_argument("--delivery-timeout", type=float, default=40.0)
    produce.add_argument("--flush-timeout", type=float, default=40.0)
    produce.add_argument("--poison-every", type=int, default=0, help="every Nth send is poison")
    produce.set_defaults(func=run_producer)

    read = common(roles.add_parser("read"))
    read.add_argument("--topic", required=True)
    read.set_defaults(func=run_reader)

    drain = common(roles.add_parser("drain"))
    drain.add_argument("--topics", nargs="+", required=True)
    drain.add_argument("--expect-corrupt", nargs="*", default=[])
    drain.add_argument("--timeout", type=float, default=60.0)
    drain.set_defaults(func=run_drain)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result
