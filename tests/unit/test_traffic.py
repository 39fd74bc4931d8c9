"""Traffic measurement and the report format (issue 13 §3): rates over the last interval."""

from __future__ import annotations

import pytest

from talos.cluster_cli import load_view
from talos.coord.traffic import (
    BrokerTraffic,
    ByteCounter,
    PartitionRate,
    TrafficFigure,
    TrafficWindow,
    merge_traffic,
    unreported,
    validate_interval,
)
from talos.errors import CoordinationError, InvalidArgument


class Time:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rates_are_bytes_over_the_interval_since_the_previous_look() -> None:
    time = Time()
    counter = ByteCounter(time)
    window = TrafficWindow(time.now)
    time.now += 1.0
    window.advance({("t", 0): counter}, time.now)  # first look: idle so far, rate 0
    counter.produced(3_000)
    counter.fetched(1_000)
    time.now += 2.0
    measured, rates = window.advance({("t", 0): counter}, time.now)
    assert measured == 2.0
    assert rates == {("t", 0): PartitionRate(1_500.0, 500.0)}
    time.now += 1.0
    _measured, rates = window.advance({("t", 0): counter}, time.now)
    assert rates == {("t", 0): PartitionRate(0.0, 0.0)}  # nothing new


def test_a_partition_taken_over_is_measured_from_its_first_byte_once_long_enough() -> None:
    """The takeover and the clients' re-routing must not dilute the new owner's figure;
    a figure measured over a sliver of the interval is held back until the next look."""
    time = Time()
    window = TrafficWindow(time.now, min_measured_s=0.5)
    time.now += 0.7
    counter = ByteCounter(time)  # taken over 0.7 s into the interval
    time.now += 0.2
    counter.produced(100)  # first byte 0.9 s in
    time.now += 0.1
    _measured, rates = window.advance({("t", 0): counter}, time.now)
    assert rates == {}  # measured 0.1 s only: left out (the old owner's figure stands)
    counter.produced(900)
    time.now += 1.0
    _measured, rates = window.advance({("t", 0): counter}, time.now)
    assert rates[("t", 0)].produce == pytest.approx(1_000 / 1.1)  # from the first byte on
    time.now += 1.0
    counter.produced(500)
    _measured, rates = window.advance({("t", 0): counter}, time.now)
    assert rates[("t", 0)].produce == pytest.approx(500.0)


def test_an_idle_new_partition_reports_zero_once_old_enough_and_a_new_log_starts_over() -> None:
    time = Time()
    window = TrafficWindow(time.now, min_measured_s=0.5)
    old = ByteCounter(time)
    old.produced(10_000)
    time.now += 1.0
    window.advance({("t", 0): old}, time.now)
    fresh = ByteCounter(time)  # the partition moved away and back: a new log
    time.now += 1.0
    _measured, rates = window.advance({("t", 0): fresh}, time.now)
    assert rates == {("t", 0): PartitionRate(0.0, 0.0)}


def test_counters_from_many_threads_lose_nothing() -> None:
    import threading

    counter = ByteCounter(Time())

    def add() -> None:
        for _ in range(20_000):
            counter.fetched(3)

    threads = [threading.Thread(target=add) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.totals() == (0, 240_000)


def test_report_round_trips_through_its_znode_value() -> None:
    report = BrokerTraffic(
        "b1", 1_234, 10.0, {("orders", 0): PartitionRate(1.5, 2.0), ("a/b", 3): PartitionRate(0, 0)}
    )
    assert BrokerTraffic.decode("b1", report.encode()) == report
    assert report.produce_bytes_per_s == 1.5 and report.bytes_per_s == 3.5
    assert report.by_topic() == {"a/b": PartitionRate(0, 0), "orders": PartitionRate(1.5, 2.0)}


@pytest.mark.parametrize(
    "data",
    [b"", b"[]", b'{"at_ms": 1}', b'{"at_ms": 1, "interval_s": 1, "partitions": {"x": [1, 2]}}'],
)
def test_a_malformed_report_is_a_coordination_error(data: bytes) -> None:
    with pytest.raises(CoordinationError, match="traffic of broker b1"):
        BrokerTraffic.decode("b1", data)


def report(broker: str, at_ms: int, **rates: float) -> BrokerTraffic:
    return BrokerTraffic(
        broker, at_ms, 1.0, {(name, 0): PartitionRate(rate, 0.0) for name, rate in rates.items()}
    )


def test_merge_keeps_the_newest_figure_so_traffic_follows_a_moved_partition() -> None:
    known = merge_traffic({}, {"b1": report("b1", 1_000, hot=5_000.0, cold=10.0)}, 1_000, 3_000)
    assert known[("hot", 0)] == TrafficFigure(5_000.0, 1_000, "b1")
    # hot moved to b2; b1's next report lacks it and b2 has not reported it yet.
    reports = {"b1": report("b1", 2_000, cold=12.0), "b2": report("b2", 2_000)}
    known = merge_traffic(known, reports, 2_000, 3_000)
    assert known[("hot", 0)].bytes_per_s == 5_000.0 and known[("cold", 0)].bytes_per_s == 12.0
    known = merge_traffic(known, {"b2": report("b2", 3_000, hot=4_000.0)}, 3_000, 3_000)
    assert known[("hot", 0)] == TrafficFigure(4_000.0, 3_000, "b2")
    # Nobody reports cold any more (deleted): it ages out.
    known = merge_traffic(known, {}, 5_500, 3_000)
    assert ("cold", 0) not in known and ("hot", 0) in known


def test_merge_ignores_stale_reports() -> None:
    assert merge_traffic({}, {"b1": report("b1", 1_000, hot=1.0)}, 10_000, 3_000) == {}


def test_balancing_waits_for_live_brokers_that_have_not_reported_lately() -> None:
    reports = {"b1": report("b1", 9_000), "b2": report("b2", 5_000), "gone": report("gone", 9_000)}
    assert unreported(["b1", "b2", "b3"], reports, 10_000, 3_000) == ["b2", "b3"]
    assert unreported(["b1"], reports, 10_000, 3_000) == []


@pytest.mark.parametrize("value", [0, 0.01, -1, 3601, float("nan"), True, "1"])
def test_bad_interval_is_refused(value: object) -> None:
    with pytest.raises(InvalidArgument, match="traffic_interval_s: must be a number of seconds"):
        validate_interval(value)


def test_load_view_shows_each_broker_against_the_mean() -> None:
    owners = {("hot", 0): "b1", ("hot", 1): "b2", ("cold", 0): "b2", ("old", 0): "gone"}
    reports = {"b1": report("b1", 9_000, hot=3_000.0), "b2": report("b2", 8_000, hot=1_000.0)}
    rows = {r.broker: r for r in load_view(owners, reports, ["b1", "b2", "b3"], 10_000)}
    assert rows["b1"].vs_mean == pytest.approx(3_000 / (4_000 / 3), abs=1e-3)
    assert rows["b2"].partitions == 2 and rows["b2"].report_age_s == 2.0
    assert rows["b3"].report_age_s is None and rows["b3"].bytes_per_s == 0.0
    assert not rows["gone"].live and rows["gone"].partitions == 1


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--balance-epsilon", "0", "balance-epsilon: must be a number > 0 and <= 10.0, got 0.0"),
        ("--balance-epsilon", "nan", "balance-epsilon: must be a number > 0"),
        ("--traffic-interval-s", "0.01", "traffic-interval-s: must be a number of seconds"),
        ("--traffic-interval-s", "soon", "traffic-interval-s: must be a number, got 'soon'"),
        ("--max-moves-per-round", "-1", "max-moves-per-round: must be an integer between 0"),
        ("--max-moves-per-round", "2.5", "max-moves-per-round: must be an integer, got '2.5'"),
    ],
)
def test_broker_refuses_bad_placement_flags(
    flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from talos.cli import build_parser

    argv = ["broker", "--zookeeper", "zk:2181", "--id", "b1", "--data-dir", "d", flag, value]
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_broker_placement_flags_reach_the_config() -> None:
    from talos.cli import build_parser

    args = build_parser().parse_args(
        [
            "broker",
            "--zookeeper",
            "zk:2181",
            "--id",
            "b1",
            "--data-dir",
            "d",
            "--traffic-interval-s",
            "2.5",
            "--balance-epsilon",
            "0.3",
            "--max-moves-per-round",
            "0",
        ]
    )
    assert (args.traffic_interval_s, args.balance_epsilon, args.max_moves_per_round) == (
        2.5,
        0.3,
        0,
    )
