"""The pure helpers of ``talos bench mirror``."""

from __future__ import annotations

import math

import pytest

from talos.bench.mirror import PARTS, MirrorBenchConfig, copy_rate, lag_figures, parse_only
from talos.errors import InvalidArgument


def test_parse_only_keeps_canonical_order_and_defaults_to_all() -> None:
    assert parse_only(None) == PARTS
    assert parse_only("") == PARTS
    assert parse_only("lag, throughput") == ("throughput", "lag")
    assert parse_only("rtt") == ("rtt",)


@pytest.mark.parametrize("text", ["nope", "lag,bogus", ",,"])
def test_parse_only_rejects_unknown_parts(text: str) -> None:
    with pytest.raises(InvalidArgument, match="only"):
        parse_only(text)


def test_copy_rate_counts_only_what_was_copied_after_first_progress() -> None:
    figures = copy_rate(total_messages=1000, size=100, seen_messages=200, seconds=2.0)
    assert figures == {"msgs_per_s": 400.0, "mb_per_s": 0.04}
    assert math.isnan(copy_rate(1000, 100, 1000, 1.0)["msgs_per_s"])
    assert math.isnan(copy_rate(1000, 100, 0, 0.0)["mb_per_s"])


def test_lag_figures_percentiles_and_empty() -> None:
    figures = lag_figures([float(x) for x in range(1, 101)], [5, 1, 3])
    assert figures["lag_ms_p50"] == 50.0 and figures["lag_ms_p99"] == 99.0
    assert figures["lag_ms_max"] == 100.0 and figures["lag_ms_samples"] == 100
    assert figures["lag_msgs_p50"] == 3.0 and figures["lag_msgs_max"] == 5
    empty = lag_figures([], [])
    assert empty["lag_ms_p50"] is None and empty["lag_msgs_max"] is None


def test_config_validation_names_the_parameter() -> None:
    with pytest.raises(InvalidArgument, match="size"):
        MirrorBenchConfig(size=1).validated()
    with pytest.raises(InvalidArgument, match="rate"):
        MirrorBenchConfig(rate=0).validated()
    assert MirrorBenchConfig().validated().messages == 500_000
