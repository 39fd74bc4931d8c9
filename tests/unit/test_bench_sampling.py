"""The bench's latency sampling costs the same share of sends whatever the run length.

A timing callback costs about as much as a send, so a bench that timed every send of
a short run and one in twenty of a long one reported a third of the real rate for
short runs. These tests pin the rule; they assert no speed.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any

import pytest

from talos.bench.runner import (
    FLAT_OUT_SAMPLE_EVERY,
    BenchConfig,
    latency_sample_every,
    produce_specs,
)
from talos.bench.talos_load import _flat_out


class CountingProducer:
    """Stands in for the client: counts sends and the ones a timer was attached to."""

    def __init__(self) -> None:
        self.sent = 0
        self.timed = 0

    def send(self, topic: str, value: bytes) -> Any:
        self.sent += 1
        return self

    def add_done_callback(self, fn: Any) -> None:
        self.timed += 1


class NullTally:
    def add(self, n: int) -> None:
        pass


def _timed_share(messages: int) -> float:
    config = BenchConfig(messages=messages)
    (spec,) = produce_specs(config, "127.0.0.1:1", "t", stamp=False)
    producer = CountingProducer()
    sent = _flat_out(producer, spec, b"x", [], NullTally(), time.perf_counter())  # type: ignore[arg-type]
    assert sent == producer.sent == messages
    return producer.timed / producer.sent


@pytest.mark.parametrize("messages", [100_000, 200_000, 4_000_000])
def test_flat_out_times_the_same_small_share_at_every_run_length(messages: int) -> None:
    share = _timed_share(messages)
    assert share == pytest.approx(1 / FLAT_OUT_SAMPLE_EVERY, rel=0.01)
    assert share <= 0.005


def test_short_and_long_runs_sample_alike() -> None:
    assert _timed_share(200_000) == pytest.approx(_timed_share(4_000_000), rel=0.01)


def test_paced_runs_time_every_send_up_to_a_bounded_rate() -> None:
    assert latency_sample_every(5_000, stamp=False) == 1
    assert latency_sample_every(20_000, stamp=False) == 1
    # Above the bound the timed sends per second stay near the bound.
    for rate in (50_000, 100_000, 1_000_000):
        every = latency_sample_every(rate, stamp=False)
        assert 10_000 <= rate / every <= 20_000


def test_end_to_end_stamps_every_message() -> None:
    assert latency_sample_every(0, stamp=True) == 1
    assert latency_sample_every(5_000, stamp=True) == 1


def test_the_timer_records_only_successful_sends() -> None:
    from talos.bench.talos_load import _timer

    latencies: list[float] = []
    ok: Future[int] = Future()
    failed: Future[int] = Future()
    ok.add_done_callback(_timer(latencies, time.perf_counter()))
    failed.add_done_callback(_timer(latencies, time.perf_counter()))
    ok.set_result(1)
    failed.set_exception(RuntimeError("x"))
    assert len(latencies) == 1
