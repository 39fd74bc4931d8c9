"""The metrics module's collectors and its bad-input checks (no network)."""

from __future__ import annotations

import pytest

from talos import metrics
from talos.errors import InvalidArgument


def samples(collector: object) -> dict[tuple[str, tuple[str, ...]], float]:
    found = {}
    for family in collector.collect():  # type: ignore[attr-defined]
        for s in family.samples:
            found[(s.name, tuple(s.labels.values()))] = s.value
    return found


def test_mirror_collector_lag_and_progress_age() -> None:
    views = [
        metrics.MirrorView("t", 0, source_end=50, target_end=20, lag_ms=4_000,
                           last_progress_ms=9_000, bytes_total=700, messages_total=20),
        metrics.MirrorView("t", 1, source_end=-1, target_end=-1, lag_ms=0,
                           last_progress_ms=10_000, bytes_total=0, messages_total=0),
    ]  # fmt: skip
    collector = metrics.MirrorCollector(
        "A:B", lambda: views, lambda: {"source": "CONNECTED", "target": "SUSPENDED"}, lambda: 10_000
    )
    got = samples(collector)
    assert got[("talos_mirror_lag_messages", ("A:B", "t", "0"))] == 30
    assert got[("talos_mirror_lag_messages", ("A:B", "t", "1"))] == 0  # nothing known yet
    assert got[("talos_mirror_lag_seconds", ("A:B", "t", "0"))] == 4.0
    assert got[("talos_mirror_progress_age_seconds", ("A:B", "t", "0"))] == 1.0
    assert got[("talos_mirror_copied_bytes_total", ("A:B", "t", "0"))] == 700
    assert got[("talos_mirror_owned_partitions", ("A:B",))] == 2
    assert got[("talos_zookeeper_session_state", ("target", "SUSPENDED"))] == 1
    assert got[("talos_zookeeper_session_state", ("target", "CONNECTED"))] == 0


def test_broker_collector_reads_owned_partitions() -> None:
    views = [metrics.PartitionView("t", 3, log_start=5, log_end=9)]
    got = samples(metrics.BrokerCollector(lambda: views, lambda: "LOST"))
    assert got[("talos_owned_partitions", ())] == 1
    assert got[("talos_partition_log_start_offset", ("t", "3"))] == 5
    assert got[("talos_partition_log_end_offset", ("t", "3"))] == 9
    assert got[("talos_zookeeper_session_state", ("cluster", "LOST"))] == 1
    assert not any(name == "talos_partition_traffic_bytes_per_second" for name, _ in got)


def test_broker_collector_reads_the_last_traffic_report() -> None:
    got = samples(
        metrics.BrokerCollector(lambda: [], lambda: "CONNECTED", lambda: {("t", 1): (10.0, 2.5)})
    )
    assert got[("talos_partition_traffic_bytes_per_second", ("t", "1", "produce"))] == 10.0
    assert got[("talos_partition_traffic_bytes_per_second", ("t", "1", "fetch"))] == 2.5


@pytest.mark.parametrize("listen", ["9100", "host:", ":9100", "h:99999", "h:x"])
def test_metrics_listen_must_be_host_and_port(listen: str) -> None:
    with pytest.raises(InvalidArgument, match="metrics-listen: must be HOST:PORT"):
        metrics.parse_listen(listen)
