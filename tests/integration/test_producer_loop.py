"""The producer on one loop, against real brokers: where callbacks run, what they may not
do, the callback-only path, and a metadata refresh that holds up no other broker."""

from __future__ import annotations

import concurrent.futures
import signal
import threading
import time
from collections.abc import Callable

import pytest

from talos.client import Admin, Producer
from talos.client.producer import RecordMetadata
from talos.errors import InvalidArgument, TalosError
from talos.testing.cluster import LocalCluster

pytestmark = pytest.mark.integration

IO_THREAD = "talos-producer-io"


def make_topic(cluster: LocalCluster, name: str, partitions: int = 1) -> None:
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic(name, partitions)
        admin.wait_until_ready(name)


def test_every_callback_runs_on_the_io_thread_on_success_and_on_failure(
    cluster: LocalCluster,
) -> None:
    make_topic(cluster, "threads")
    seen: list[tuple[str, str]] = []

    def future_done(_future: object) -> None:
        seen.append(("future", threading.current_thread().name))

    def delivered(_error: TalosError | None, _meta: RecordMetadata | None) -> None:
        seen.append(("delivery", threading.current_thread().name))

    with Producer(cluster.bootstrap, linger_ms=0) as producer:
        producer.send("threads", b"a").add_done_callback(future_done)
        assert producer.send("threads", b"b", on_delivery=delivered) is None
        producer.flush(timeout=30)
    # failures: a closing producer fails what was never sent, on the same thread
    producer = Producer(cluster.bootstrap, linger_ms=60_000)
    failed = producer.send("threads", b"c")
    failed.add_done_callback(future_done)
    producer.send("threads", b"d", on_delivery=delivered)
    with pytest.raises(TalosError):
        producer.close(timeout=0)
    assert isinstance(failed.exception(), TalosError)
    assert sorted(seen) == [("delivery", IO_THREAD)] * 2 + [("future", IO_THREAD)] * 2


def test_on_delivery_returns_no_future_and_reports_offsets_in_order(cluster: LocalCluster) -> None:
    make_topic(cluster, "delivered")
    got: list[tuple[TalosError | None, RecordMetadata | None]] = []

    def delivered(error: TalosError | None, meta: RecordMetadata | None) -> None:
        got.append((error, meta))

    with Producer(cluster.bootstrap, linger_ms=2) as producer:
        for i in range(500):
            result = producer.send("delivered", b"%d" % i, on_delivery=delivered)
            assert result is None
        producer.flush(timeout=60)
    assert [e for e, _ in got] == [None] * 500
    assert [m.offset for _, m in got if m is not None] == list(range(500))


@pytest.mark.parametrize("path", ["future", "on_delivery"])
def test_waiting_on_the_producer_from_a_callback_is_refused_on_every_path(
    cluster: LocalCluster, path: str
) -> None:
    """Callbacks run on the thread that delivers acknowledgements: any wait there would hang."""
    make_topic(cluster, "refusals")
    outcomes: dict[str, str] = {}
    with (
        Producer(cluster.bootstrap, linger_ms=60_000) as producer,
        Producer(cluster.bootstrap) as other,
    ):

        def try_everything(*_args: object) -> None:
            # sent from the callback: it cannot go out before the callback returns
            pending = producer.send("refusals", b"pending")
            attempts: dict[str, Callable[[], object]] = {
                "flush": lambda: producer.flush(timeout=5),
                "close": lambda: producer.close(timeout=5),
                "result": lambda: pending.result(timeout=5),
                "exception": lambda: pending.exception(timeout=5),
                "wait": lambda: concurrent.futures.wait([pending], timeout=5),
                "another producer's flush": lambda: other.flush(timeout=5),
            }
            for name, attempt in attempts.items():
                try:
                    attempt()
                    outcomes[name] = "ran"
                except InvalidArgument as exc:
                    outcomes[name] = str(exc)

        if path == "future":
            producer.send("refusals", b"first").add_done_callback(try_everything)
        else:
            producer.send("refusals", b"first", on_delivery=try_everything)
        producer.flush(timeout=30)
        # the producer still works after the refusals, and the record sent there landed
        second = producer.send("refusals", b"second")
        producer.flush(timeout=30)
        assert second.result(timeout=1).offset == 2
    # A callback runs on its own producer's thread: waiting on another producer is fine.
    assert outcomes.pop("another producer's flush") == "ran"
    assert set(outcomes) == {"flush", "close", "result", "exception", "wait"}
    for name, outcome in outcomes.items():
        assert "cannot wait from a send callback" in outcome, (name, outcome)


def test_a_done_future_can_be_read_from_its_own_callback(cluster: LocalCluster) -> None:
    make_topic(cluster, "own")
    offsets: list[int] = []
    with Producer(cluster.bootstrap, linger_ms=0) as producer:
        future = producer.send("own", b"v")
        future.add_done_callback(lambda f: offsets.append(f.result().offset))
        producer.flush(timeout=30)
    assert offsets == [0]


def test_a_metadata_refresh_holds_up_no_other_broker(cluster: LocalCluster) -> None:
    """While the producer asks a frozen broker for metadata (until its request timeout),
    records for a partition of the other broker keep being acknowledged promptly. The
    old sender thread refreshed synchronously and stalled every broker meanwhile."""
    make_topic(cluster, "split", partitions=8)
    timeout = 4.0
    with Producer(cluster.bootstrap, linger_ms=0, request_timeout_s=timeout) as producer:
        route = producer.router.route("split")
        order = list(producer.router.brokers)  # the order a refresh asks brokers in
        frozen_id, live_id = order[0], order[1]
        frozen_part = route.owners.index(frozen_id)
        live_part = route.owners.index(live_id)
        for p in (frozen_part, live_part):  # streams open, producer id known
            producer.send("split", b"warm", partition=p).result(timeout=30)
        frozen = next(b for b in cluster.brokers if b.broker_id == frozen_id)
        frozen.signal(signal.SIGSTOP)
        try:
            stuck = producer.send("split", b"stuck", partition=frozen_part)
            slowest = 0.0
            end = time.monotonic() + 2.5 * timeout  # request timeout, then the refresh
            while time.monotonic() < end:
                started = time.monotonic()
                producer.send("split", b"live", partition=live_part).result(timeout=30)
                slowest = max(slowest, time.monotonic() - started)
                time.sleep(0.05)
            assert producer.metrics["retries"] >= 1, "the frozen broker's request never failed"
        finally:
            frozen.signal(signal.SIGCONT)
        assert slowest < timeout / 2, f"a send to the live broker waited {slowest:.1f}s"
        stuck.result(timeout=60)  # delivered once the partition's owner answers again
