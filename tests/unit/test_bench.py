"""talos bench's plain parts: statistics, pacing, payloads, progress text, configuration."""

from __future__ import annotations

import io
import json
import math

import pytest

from talos.bench.pacing import STAMP_BYTES, Pacer, payload, stamp_of, stamped
from talos.bench.pool import WorkResult, combine
from talos.bench.progress import Progress, render
from talos.bench.runner import BenchConfig, _split
from talos.bench.stats import (
    cdf_points,
    format_summary,
    format_table,
    percentile,
    summarize,
)
from talos.errors import InvalidArgument


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 99.9) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(InvalidArgument, match="q: must be between 0 and 100"):
        percentile(values, 101)


def test_summarize_rates_and_latencies() -> None:
    summary = summarize("x", 1000, 100_000, 2.0, [3.0, 1.0, 2.0], errors=1, cdf=True)
    assert summary.msgs_per_s == 500.0
    assert summary.mb_per_s == 0.05
    assert (summary.p50_ms, summary.p99_ms, summary.max_ms) == (2.0, 3.0, 3.0)
    assert summary.samples == 3
    assert summary.extra["cdf"][-1] == [3.0, 1.0]
    line = format_summary(summary)
    assert "500 msg/s" in line and "1 errors" in line
    empty = summarize("y", 10, 10, 1.0)
    assert json.loads(json.dumps(empty.to_dict()))["p99_ms"] is None  # NaN becomes null
    with pytest.raises(InvalidArgument, match="seconds"):
        summarize("z", 1, 1, 0.0)


def test_cdf_points_end_at_the_maximum() -> None:
    ordered = [float(v) for v in range(1000)]
    points = cdf_points(ordered, points=10)
    assert points[0] == (99.0, 0.1)
    assert points[-1] == (999.0, 1.0)
    assert [f for _, f in points] == sorted(f for _, f in points)
    assert cdf_points([], 10) == []


def test_format_table_aligns_numbers_right() -> None:
    text = format_table(["name", "rate"], [["a", 1234.0], ["bb", 5.5], ["c", None]])
    lines = text.splitlines()
    assert lines[0].split() == ["name", "rate"]
    assert lines[2].endswith("1,234")
    assert lines[3].endswith("5.50")
    assert lines[4].endswith("-")


def test_payload_is_deterministic_text_and_stamps_round_trip() -> None:
    body = payload(100, seed=3)
    assert len(body) == 100 and body == payload(100, seed=3) and body != payload(100, seed=4)
    assert body.isalnum()
    value = stamped(body, 1_700_000_000_123_456_789)
    assert len(value) == 100 and value[STAMP_BYTES:] == body[STAMP_BYTES:]
    assert stamp_of(value) == 1_700_000_000_123_456_789
    assert stamp_of(b"short") == -1
    with pytest.raises(InvalidArgument, match="size"):
        stamped(b"1234", 1)


def test_pacer_schedule_does_not_drift() -> None:
    pacer = Pacer(5000.0, start=10.0)
    assert pacer.due(0) == 10.0
    assert pacer.due(5000) == pytest.approx(11.0)
    with pytest.raises(InvalidArgument, match="rate"):
        Pacer(0.0, 0.0)


def test_progress_line_and_bar() -> None:
    line = render("produce", 500, 1000, 2.0)
    assert "50.0%" in line and "250 msg/s" in line and "[###############" in line
    stream = io.StringIO()  # not a terminal: whole lines
    progress = Progress("consume", total=10, stream=stream)
    progress.close(10)
    assert "100.0%" in stream.getvalue() and stream.getvalue().endswith("\n")
    quiet = io.StringIO()
    Progress("x", stream=quiet, enabled=False).close(5)
    assert quiet.getvalue() == ""


def test_config_validation_names_the_parameter() -> None:
    assert BenchConfig(messages=10).validated().mode == "produce"
    cases = [
        (BenchConfig(mode="nope", messages=1), "mode"),
        (BenchConfig(), "messages/duration"),
        (BenchConfig(messages=1, producers=0), "producers"),
        (BenchConfig(messages=1, durability="none"), "durability"),
        (BenchConfig(messages=1, compression="gzip9"), "compression"),
        (BenchConfig(mode="e2e", messages=1, size=4), "size"),
        (BenchConfig(mode="consume", duration=1.0), "messages"),
        (BenchConfig(mode="consume", preload=False), "topic"),
        (BenchConfig(messages=1, rate=-1), "rate"),
    ]
    for config, param in cases:
        with pytest.raises(InvalidArgument, match=param):
            config.validated()


def test_split_and_combine() -> None:
    assert _split(10, 3) == [4, 3, 3]
    assert sum(_split(7, 7)) == 7
    results = [
        WorkResult(messages=10, bytes=100, started=1.0, finished=3.0, latencies_ms=[1.0]),
        WorkResult(messages=5, bytes=50, started=2.0, finished=5.0, latencies_ms=[2.0], errors=1),
    ]
    assert combine(results) == (15, 150, 4.0, [1.0, 2.0], 1)
