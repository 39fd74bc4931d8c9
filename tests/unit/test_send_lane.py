"""The C send lane (talos/client/_send_lane.c) against send()'s Python path.

The lane takes send()'s most common case: a keyless, headerless bytes value
into the sticky partition's open batch that has room. It must append exactly
what the Python path appends, count it the same way, hold the producer's lock,
and decline (None, nothing changed) whenever the case does not apply. The
producers here never reach a broker: their router is given the route by hand
and batches linger for a minute, so every record stays in its open batch.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest

from talos.client import producer as producer_module
from talos.client.accumulator import Batch
from talos.client.producer import Producer
from talos.errors import TalosTimeout
from talos.proto import talos_pb2 as pb
from talos.record.batch import decode_records

pytestmark = pytest.mark.skipif(
    producer_module._send_lane is None,
    reason="the send lane is not built (make venv builds it; TALOS_PURE=1 hides it)",
)

TOPIC = "t"
PARTITIONS = 4
BATCH_BYTES = 64 * 1024


def make_producer() -> Producer:
    made = Producer("127.0.0.1:1", linger_ms=60_000, batch_bytes=BATCH_BYTES)
    made.router.apply(
        pb.MetadataResponse(
            topics=[
                pb.TopicInfo(
                    name=TOPIC,
                    partitions=[pb.PartitionInfo(partition=p) for p in range(PARTITIONS)],
                    config=pb.TopicConfig(max_message_bytes=1024 * 1024),
                )
            ]
        )
    )
    return made


def close(producer: Producer) -> None:
    """Nothing was acknowledged (no broker): closing fails what is buffered, and says so."""
    with contextlib.suppress(TalosTimeout):
        producer.close(timeout=0)


@pytest.fixture
def producer() -> Iterator[Producer]:
    made = make_producer()
    try:
        yield made
    finally:
        close(made)


def open_batch(producer: Producer) -> Batch:
    """Open the sticky partition's batch through the Python path (the lane never opens one)."""
    producer.send(TOPIC, b"first")
    batches = producer._topics[TOPIC].batches
    batch = batches.open[batches.sticky]
    assert batch is not None
    return batch


def lane_of(producer: Producer) -> object:
    lane = producer._topics[TOPIC].lane
    assert lane is not None, "a producer on the system clock gets a lane per topic"
    return lane


def values_in(batch: Batch) -> list[bytes | None]:
    return [record.value for record in decode_records(batch.builder.build())]


def test_the_lane_appends_what_the_python_path_appends(producer: Producer) -> None:
    values = [bytes([65 + i % 26]) * (i * 37 % 300) for i in range(200)]
    python = make_producer()
    try:
        fast_batch, slow_batch = open_batch(producer), open_batch(python)
        python._topics[TOPIC].lane = None  # send() on its Python path only
        before = time.time_ns() // 1_000_000
        fast = [producer.send(TOPIC, value) for value in values]
        slow = [python.send(TOPIC, value) for value in values]
        after = time.time_ns() // 1_000_000
        assert all(batch.count == 1 + len(values) for batch in (fast_batch, slow_batch))
        assert values_in(fast_batch) == values_in(slow_batch) == [b"first", *values]
        for batch in (fast_batch, slow_batch):  # the size counted is the size encoded
            assert batch.size == batch.builder.size_in_bytes
        assert [f._index for f in fast] == [f._index for f in slow] == list(range(1, 201))
        assert all(f._outcome is fast_batch.outcome for f in fast)
        assert producer._outstanding == python._outstanding == 1 + len(values)
        stamps = [r.timestamp_ms for r in decode_records(fast_batch.builder.build())[1:]]
        assert all(before <= stamp <= after for stamp in stamps)
    finally:
        close(python)


def test_the_lane_takes_the_common_case_itself(producer: Producer) -> None:
    batch = open_batch(producer)
    future = lane_of(producer).send(b"v")  # type: ignore[attr-defined]
    assert future is not None and future._index == 1 and batch.count == 2


def state(producer: Producer) -> tuple[object, ...]:
    batches = producer._topics[TOPIC].batches
    return (
        batches.sticky,
        [(b.count, b.size) if b is not None else None for b in batches.open],
        producer._outstanding,
    )


@pytest.mark.parametrize(
    "case",
    [
        "closed",
        "no sticky partition",
        "no open batch",
        "no future made for the batch yet",
        "would fill the batch",
        "not bytes",
        "too large for the fast size check",
    ],
)
def test_the_lane_declines_and_changes_nothing(producer: Producer, case: str) -> None:
    batch = open_batch(producer)
    batches = producer._topics[TOPIC].batches
    value: object = b"v"
    if case == "closed":
        producer._closed = True
    elif case == "no sticky partition":
        batches.sticky = -1
    elif case == "no open batch":
        batches.open[batches.sticky] = None
    elif case == "no future made for the batch yet":
        batch.outcome = None
    elif case == "would fill the batch":
        value = b"x" * (BATCH_BYTES - batch.size)
    elif case == "not bytes":
        value = bytearray(b"v")
    else:
        value = b"x" * (producer._topics[TOPIC].fast_value_max + 1)
    before = state(producer)
    assert lane_of(producer).send(value) is None  # type: ignore[attr-defined]
    assert state(producer) == before
    producer._closed = False


def test_the_lane_holds_the_producers_lock(producer: Producer) -> None:
    open_batch(producer)
    lane = lane_of(producer)
    done = threading.Event()

    def send() -> None:
        lane.send(b"v")  # type: ignore[attr-defined]
        done.set()

    with producer._mutex:
        sender = threading.Thread(target=send)
        sender.start()
        assert not done.wait(0.2), "the lane appended while the producer's lock was held"
    assert done.wait(5.0)
    sender.join()
    assert producer._outstanding == 2


def test_a_pure_producer_has_no_lane(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producer_module, "_send_lane", None)
    made = make_producer()
    try:
        made.send(TOPIC, b"v")
        assert made._topics[TOPIC].lane is None
    finally:
        close(made)
