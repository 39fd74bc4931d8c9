"""Which figure `make bench` calls a system's best, and which peer Talos is measured against."""

from __future__ import annotations

import math

from bench.best import best_of, best_peer, ratio, run_key, single

RESULTS = {
    run_key("produce 100B", "redis", 1): {"msgs_per_s": 90.0},
    run_key("produce 100B", "redis", 2): {"msgs_per_s": 140.0},
    run_key("produce 100B", "nats", 1): {"msgs_per_s": 40.0},
    run_key("produce 100B", "nats", 2): {"msgs_per_s": 30.0},
    run_key("produce 100B", "kafka", 1): {"msgs_per_s": None},
}


def test_a_systems_best_is_its_fastest_process_count() -> None:
    redis = best_of(RESULTS, "produce 100B", "redis", (1, 2))
    assert (redis.value, redis.processes) == (140.0, 2)
    nats = best_of(RESULTS, "produce 100B", "nats", (1, 2))
    assert (nats.value, nats.processes) == (40.0, 1)  # a second process made NATS slower


def test_a_count_that_did_not_run_or_has_no_figure_is_skipped() -> None:
    assert best_of(RESULTS, "produce 100B", "redis", (1,)).value == 90.0
    assert not best_of(RESULTS, "produce 100B", "kafka", (1, 2)).measured
    assert not best_of(RESULTS, "consume 100B", "redis", (1, 2)).measured


def test_talos_is_compared_with_the_best_measured_peer() -> None:
    peers = {
        name: best_of(RESULTS, "produce 100B", name, (1, 2)) for name in ("redis", "nats", "kafka")
    }
    name, best = best_peer(peers)
    assert (name, best.value, best.processes) == ("redis", 140.0, 2)
    assert best_peer({"kafka": peers["kafka"]})[0] == "-"


def test_a_ratio_against_nothing_is_not_a_number() -> None:
    assert ratio(280.0, 140.0) == 2.0
    assert math.isnan(ratio(1.0, math.nan)) and math.isnan(ratio(1.0, 0.0))


def test_for_latency_the_lowest_peer_is_best() -> None:
    results = {"lat nats": {"p99_ms": 0.4}, "lat redis": {"p99_ms": 0.3}, "lat x": {"p99_ms": None}}
    peers = {n: single(results, f"lat {n}", "p99_ms") for n in ("nats", "redis", "x")}
    assert best_peer(peers, lower_is_better=True)[0] == "redis"
    assert best_peer(peers)[0] == "nats"
