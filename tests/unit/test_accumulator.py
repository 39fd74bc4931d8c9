"""The producer's accumulator, driven by a manual clock with no server: its specification.

Reading order: batching and linger, the size cap, Nagle's hold, one batch in
flight per partition, requests per broker, producer ids and sequences,
retries (order kept, bytes kept), failures, delivery timeouts, closing.
"""

from __future__ import annotations

import pytest

from talos.client.accumulator import (
    IDLE_WAIT_S,
    Accumulator,
    Batch,
    TopicBatches,
    Verdict,
    needs_new_route,
    retry_delay,
)
from talos.clock import ManualClock
from talos.errors import InvalidArgument, NotOwner, TalosError, Throttled, Unavailable
from talos.record.batch import HEADER_SIZE, decode_records, parse_header, record_size

BROKER = "broker-a:1"
OTHER = "broker-b:1"
PID = 7


def owners(*by_partition: str) -> object:
    """owner_of over cached routes: partition p of any topic -> by_partition[p]."""
    return lambda _topic, partition: by_partition[partition]


def everyone_on(address: str) -> object:
    return lambda _topic, _partition: address


def make(
    clock: ManualClock,
    *,
    linger_s: float = 0.005,
    delivery_timeout_s: float = 120.0,
    max_in_flight: int = 5,
    idempotent: bool = True,
    pid: int | None = PID,
) -> Accumulator:
    acc = Accumulator(
        clock,
        linger_s=linger_s,
        delivery_timeout_s=delivery_timeout_s,
        max_in_flight=max_in_flight,
        idempotent=idempotent,
    )
    if pid is not None:
        acc.give_producer_id(pid)
    return acc


def add(acc: Accumulator, topic: TopicBatches, partition: int, value: bytes) -> Batch:
    return acc.append(topic, partition, value, None, 1000, (), record_size(value))


def values(batch: Batch) -> list[bytes | None]:
    assert batch.encoded is None or batch.encoded == batch.builder.build()
    return [r.value for r in decode_records(batch.builder.build())]


def acknowledge(acc: Accumulator, batch: Batch, address: str = BROKER) -> None:
    """The broker answers the request that carried ``batch``: success."""
    acc.answered(address)
    assert acc.completed(batch, None) is Verdict.DONE


def sent(drained: object, address: str = BROKER) -> list[list[bytes | None]]:
    return [values(b) for b in drained.requests.get(address, [])]  # type: ignore[attr-defined]


# ---- batching and linger -------------------------------------------------------------------


def test_records_of_a_partition_share_one_batch_until_its_linger_runs_out() -> None:
    clock = ManualClock()
    acc = make(clock, linger_s=0.005)
    topic = acc.topic("t", 1, cap=1 << 20)
    first = add(acc, topic, 0, b"a")
    assert add(acc, topic, 0, b"b") is first and first.count == 2

    clock.advance(0.004)
    early = acc.drain(everyone_on(BROKER))
    assert early.requests == {}
    assert early.wait == pytest.approx(0.001)  # the sender sleeps until the linger ends

    clock.advance(0.001)
    assert sent(acc.drain(everyone_on(BROKER))) == [[b"a", b"b"]]


def test_with_no_linger_a_batch_goes_at_the_next_drain() -> None:
    clock = ManualClock()
    acc = make(clock, linger_s=0.0)
    topic = acc.topic("t", 1, cap=1 << 20)
    add(acc, topic, 0, b"now")
    assert sent(acc.drain(everyone_on(BROKER))) == [[b"now"]]


def test_flush_sends_what_has_not_lingered_yet() -> None:
    clock = ManualClock()
    acc = make(clock, linger_s=60.0)
    topic = acc.topic("t", 1, cap=1 << 20)
    add(acc, topic, 0, b"waiting")
    assert acc.drain(everyone_on(BROKER)).requests == {}
    assert sent(acc.drain(everyone_on(BROKER), flush=True)) == [[b"waiting"]]


def test_nothing_to_do_sleeps_the_idle_wait() -> None:
    acc = make(ManualClock())
    assert acc.drain(everyone_on(BROKER)) == ({}, [], set(), 0, IDLE_WAIT_S)


# ---- the size cap --------------------------------------------------------------------------


def test_a_batch_that_reaches_the_cap_is_sealed_and_sent_without_lingering() -> None:
    clock = ManualClock()
    acc = make(clock, linger_s=60.0)
    value = b"x" * 100
    cap = HEADER_SIZE + 3 * record_size(value)
    topic = acc.topic("t", 1, cap=cap)
    batches = [add(acc, topic, 0, value) for _ in range(3)]
    assert batches[0] is batches[2] and batches[2].sealed
    assert acc.buffered == cap
    assert sent(acc.drain(everyone_on(BROKER))) == [[value] * 3]


def test_a_record_that_would_overflow_the_cap_starts_the_next_batch() -> None:
    clock = ManualClock()
    acc = make(clock, linger_s=60.0)
    cap = HEADER_SIZE + record_size(b"x" * 100) + 10
    topic = acc.topic("t", 1, cap=cap)
    first = add(acc, topic, 0, b"x" * 100)
    assert acc.would_open(topic, 0, record_size(b"y" * 100))
    second = add(acc, topic, 0, b"y" * 100)
    assert second is not first and first.sealed and not second.sealed
    assert values(first) == [b"x" * 100] and values(second) == [b"y" * 100]


# ---- Nagle's hold --------------------------------------------------------------------------


def test_a_lingered_batch_waits_for_its_busy_broker_only_until_its_next_answer() -> None:
    clock = ManualClock()
    acc = make(clock, linger_s=0.001)
    topic = acc.topic("t", 2, cap=1 << 20)
    add(acc, topic, 0, b"p0")
    clock.advance(0.001)
    first = acc.drain(everyone_on(BROKER))
    assert sent(first) == [[b"p0"]]  # the broker now has a request of ours in flight

    add(acc, topic, 1, b"p1-a")
    clock.advance(0.001)
    assert acc.drain(everyone_on(BROKER)).requests == {}  # held: the broker is busy
    add(acc, topic, 1, b"p1-b")  # and it grows meanwhile

    acknowledge(acc, first.requests[BROKER][0])
    assert sent(acc.drain(everyone_on(BROKER))) == [[b"p1-a", b"p1-b"]]


# ---- order: one batch in flight per partition ----------------------------------------------


def test_a_partition_has_one_batch_in_flight_and_the_next_follows_its_answer() -> None:
    clock = ManualClock()
    acc = make(clock, linger_s=0.0)
    cap = HEADER_SIZE + record_size(b"1")
    topic = acc.topic("t", 1, cap=cap)
    for value in (b"1", b"2", b"3"):
        add(acc, topic, 0, value)  # each fills a batch
    first = acc.drain(everyone_on(BROKER))
    assert sent(first) == [[b"1"]]
    assert acc.drain(everyone_on(BROKER)).requests == {}  # "2" waits for "1"'s answer
    acknowledge(acc, first.requests[BROKER][0])
    assert sent(acc.drain(everyone_on(BROKER))) == [[b"2"]]


def test_partitions_of_one_broker_travel_in_one_request_and_brokers_get_their_own() -> None:
    clock = ManualClock()
    acc = make(clock, linger_s=0.0)
    topic = acc.topic("t", 3, cap=1 << 20)
    for p in range(3):
        add(acc, topic, p, f"p{p}".encode())
    drained = acc.drain(owners(BROKER, OTHER, BROKER))
    assert sent(drained, BROKER) == [[b"p0"], [b"p2"]]
    assert sent(drained, OTHER) == [[b"p1"]]


def test_a_broker_takes_at_most_max_in_flight_requests() -> None:
    clock = ManualClock()
    acc = make(clock, linger_s=0.0, max_in_flight=1)
    topic = acc.topic("t", 2, cap=1 << 20)
    add(acc, topic, 0, b"p0")
    first = acc.drain(everyone_on(BROKER))
    add(acc, topic, 1, b"p1")
    assert acc.drain(everyone_on(BROKER)).requests == {}  # its one slot is taken
    acknowledge(acc, first.requests[BROKER][0])
    assert sent(acc.drain(everyone_on(BROKER))) == [[b"p1"]]


def test_a_partition_with_no_known_owner_waits_and_names_its_topic() -> None:
    clock = ManualClock()
    acc = make(clock, linger_s=0.0)
    topic = acc.topic("t", 2, cap=1 << 20)
    add(acc, topic, 0, b"lost")
    add(acc, topic, 1, b"fine")
    drained = acc.drain(owners("", BROKER))
    assert drained.unrouted == {"t"}
    assert sent(drained) == [[b"fine"]]  # the other partition is not held up
    assert sent(acc.drain(owners(OTHER, BROKER)), OTHER) == [[b"lost"]]


# ---- producer ids and sequences ------------------------------------------------------------


def test_nothing_is_numbered_before_the_first_producer_id_and_one_id_serves_all() -> None:
    clock = ManualClock()
    acc = make(clock, linger_s=0.0, pid=None)
    topic = acc.topic("t", 3, cap=1 << 20)
    for p in range(3):
        add(acc, topic, p, b"v")
    waiting = acc.drain(everyone_on(BROKER))
    assert waiting.requests == {} and waiting.ids_wanted == 1
    acc.give_producer_id(PID)
    batches = acc.drain(everyone_on(BROKER)).requests[BROKER]
    headers = [parse_header(b.builder.build()) for b in batches]
    assert [(h.producer_id, h.base_sequence) for h in headers] == [(PID, 0)] * 3


def test_a_partition_sequence_counts_records_across_batches() -> None:
    clock = ManualClock()
    acc = make(clock, linger_s=0.0)
    topic = acc.topic("t", 1, cap=1 << 20)
    for value in (b"a", b"b", b"c"):
        add(acc, topic, 0, value)
    first = acc.drain(everyone_on(BROKER)).requests[BROKER][0]
    acknowledge(acc, first)
    add(acc, topic, 0, b"d")
    second = acc.drain(everyone_on(BROKER)).requests[BROKER][0]
    assert parse_header(second.builder.build()).base_sequence == 3


def test_non_idempotent_batches_carry_no_producer_id() -> None:
    clock = ManualClock()
    acc = make(clock, linger_s=0.0, idempotent=False, pid=None)
    topic = acc.topic("t", 1, cap=1 << 20)
    add(acc, topic, 0, b"v")
    batch = acc.drain(everyone_on(BROKER)).requests[BROKER][0]
    assert parse_header(batch.builder.build()).producer_id == -1


# ---- retries: order and bytes kept ---------------------------------------------------------


def test_a_retried_batch_stays_first_and_goes_again_byte_for_byte_after_its_backoff() -> None:
    clock = ManualClock()
    acc = make(clock, linger_s=0.0)
    topic = acc.topic("t", 1, cap=HEADER_SIZE + record_size(b"1"))
    add(acc, topic, 0, b"1")
    add(acc, topic, 0, b"2")
    first = acc.drain(everyone_on(BROKER)).requests[BROKER][0]
    first.encoded = first.builder.build()  # what the sender put on the wire
    acc.answered(BROKER)
    assert acc.completed(first, NotOwner("moved")) is Verdict.RETRY
    assert first.attempts == 1

    backing_off = acc.drain(everyone_on(OTHER))
    assert backing_off.requests == {}  # "2" does not overtake "1"
    assert backing_off.wait == pytest.approx(retry_delay(NotOwner("x"), 1))

    clock.advance(retry_delay(NotOwner("x"), 1))
    again = acc.drain(everyone_on(OTHER)).requests[OTHER]
    assert again == [first]  # the same batch, its bytes (and sequence) unchanged
    assert parse_header(first.encoded).base_sequence == 0
    acknowledge(acc, first, OTHER)
    second = acc.drain(everyone_on(OTHER)).requests[OTHER][0]
    assert values(second) == [b"2"] and parse_header(second.builder.build()).base_sequence == 1


def test_retry_delays_grow_and_are_capped_at_one_second() -> None:
    delays = [retry_delay(Throttled("busy"), attempt) for attempt in range(1, 12)]
    assert delays[0] == pytest.approx(0.04)
    assert delays == sorted(delays) and delays[-1] == 1.0


def test_a_quota_retry_after_is_waited_exactly_whatever_the_attempt() -> None:
    # Backoff on top of the hint would leave the tenant under its own quota.
    assert retry_delay(Throttled("quota", retry_after_ms=250), 1) == pytest.approx(0.25)
    assert retry_delay(Throttled("quota", retry_after_ms=30), 9) == pytest.approx(0.03)
    assert retry_delay(Throttled("queue full", retry_after_ms=0), 1) == pytest.approx(0.04)


def test_only_routing_failures_call_for_fresh_metadata() -> None:
    assert needs_new_route(NotOwner("moved")) and needs_new_route(Unavailable("gone"))
    assert not needs_new_route(Throttled("busy"))


# ---- failures and the sequence they break ----------------------------------------------------


def test_a_final_failure_breaks_the_sequence_and_the_next_batch_waits_for_a_fresh_id() -> None:
    clock = ManualClock()
    acc = make(clock, linger_s=0.0)
    topic = acc.topic("t", 1, cap=HEADER_SIZE + record_size(b"1"))
    add(acc, topic, 0, b"1")
    add(acc, topic, 0, b"2")
    first = acc.drain(everyone_on(BROKER)).requests[BROKER][0]
    acc.answered(BROKER)
    assert acc.completed(first, InvalidArgument("refused")) is Verdict.FAILED
    assert acc.buffered == HEADER_SIZE + record_size(b"2")

    waiting = acc.drain(everyone_on(BROKER))  # sequence 1 would follow a gap
    assert waiting.requests == {} and waiting.ids_wanted == 1
    acc.give_producer_id(PID + 1)
    second = acc.drain(everyone_on(BROKER)).requests[BROKER][0]
    header = parse_header(second.builder.build())
    assert (header.producer_id, header.base_sequence) == (PID + 1, 0)


def test_a_retriable_error_past_the_delivery_deadline_is_final() -> None:
    clock = ManualClock()
    acc = make(clock, linger_s=0.0, delivery_timeout_s=1.0)
    topic = acc.topic("t", 1, cap=1 << 20)
    add(acc, topic, 0, b"late")
    batch = acc.drain(everyone_on(BROKER)).requests[BROKER][0]
    clock.advance(1.0)
    acc.answered(BROKER)
    assert acc.completed(batch, Unavailable("still down")) is Verdict.FAILED


# ---- delivery timeout ----------------------------------------------------------------------


def test_a_batch_that_cannot_be_sent_expires_at_its_delivery_deadline() -> None:
    clock = ManualClock()
    acc = make(clock, linger_s=0.0, delivery_timeout_s=2.0)
    topic = acc.topic("t", 1, cap=1 << 20)
    batch = add(acc, topic, 0, b"stuck")
    clock.advance(1.9)
    assert acc.drain(owners("")).expired == []
    clock.advance(0.1)
    drained = acc.drain(owners(""))
    assert drained.expired == [batch] and drained.requests == {}
    assert acc.buffered == 0


def test_the_delivery_deadline_counts_from_the_batch_creation_not_from_its_seal() -> None:
    clock = ManualClock()
    acc = make(clock, linger_s=5.0, delivery_timeout_s=2.0)
    topic = acc.topic("t", 1, cap=1 << 20)
    batch = add(acc, topic, 0, b"slow")
    clock.advance(5.0)
    assert acc.drain(owners("")).expired == [batch]


# ---- closing -------------------------------------------------------------------------------


def test_closing_takes_out_everything_not_on_the_wire_and_retries_no_more() -> None:
    clock = ManualClock()
    acc = make(clock, linger_s=60.0)
    topic = acc.topic("t", 2, cap=HEADER_SIZE + record_size(b"1"))
    add(acc, topic, 0, b"1")  # sealed (full) and sent below
    add(acc, topic, 0, b"2")  # sealed, queued behind it
    in_flight = acc.drain(everyone_on(BROKER)).requests[BROKER][0]
    add(acc, topic, 1, b"3")  # still open
    unsent = acc.unsent()
    assert sorted(v for b in unsent for v in values(b)) == [b"2", b"3"]
    acc.answered(BROKER)
    assert acc.completed(in_flight, Unavailable("stream closed")) is Verdict.FAILED
    assert acc.buffered == 0


def test_a_topic_that_is_gone_fails_its_queued_batches_but_not_the_one_in_flight() -> None:
    clock = ManualClock()
    acc = make(clock, linger_s=0.0)
    topic = acc.topic("t", 1, cap=HEADER_SIZE + record_size(b"1"))
    add(acc, topic, 0, b"1")
    add(acc, topic, 0, b"2")
    in_flight = acc.drain(everyone_on(BROKER)).requests[BROKER][0]
    dropped = acc.drop_topic("t")
    assert [values(b) for b in dropped] == [[b"2"]]
    acknowledge(acc, in_flight)


def test_error_classes_are_retriable_as_the_accumulator_assumes() -> None:
    assert all(
        isinstance(e, TalosError) and e.retriable
        for e in (NotOwner("x"), Unavailable("x"), Throttled("x"))
    )
    assert not InvalidArgument("x").retriable


def test_only_a_batch_first_in_its_partition_line_is_worth_waking_the_sender_for() -> None:
    clock = ManualClock()
    acc = make(clock, linger_s=0.0)
    topic = acc.topic("t", 1, cap=HEADER_SIZE + record_size(b"1"))
    first = add(acc, topic, 0, b"1")
    assert acc.first_in_line(first)
    acc.drain(everyone_on(BROKER))  # in flight
    second = add(acc, topic, 0, b"2")
    assert not acc.first_in_line(second)  # it goes after the first one's answer
