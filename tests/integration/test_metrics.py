"""/metrics of real brokers and a real mirror worker, and the Grafana dashboard against them."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from talos.client import Admin, Consumer, Producer, TopicPartition
from talos.testing.multidc import MultiDC, mirror_available
from talos.testing.zookeeper import zookeeper_available

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).parents[2] / "docker" / "grafana" / "talos.json"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(address: str) -> tuple[str, Samples]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as answer:
        text: str = answer.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples


def exported(text: str) -> set[str]:
    """Every metric name the exposition declares (histograms: with their series suffixes)."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names.add(name)
        if kind == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
    return names


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def dcs(tmp_path: Path) -> Iterator[MultiDC]:
    for reason in (zookeeper_available(), mirror_available()):
        if reason is not None:
            pytest.skip(reason)
    with MultiDC(str(tmp_path / "dcs"), brokers=1, metrics=True) as deployment:
        yield deployment


def test_brokers_and_mirror_workers_export_what_the_dashboard_shows(dcs: MultiDC) -> None:
    source = dcs.bootstrap("A")
    with Admin(source) as admin:
        admin.create_topic("metered", 2)
        admin.wait_until_ready("metered")
    with Producer(source) as producer:
        for i in range(30):
            producer.send("metered", b"x" * 100, partition=i % 2)
        producer.flush()
    with Consumer(source) as consumer:
        consumer.assign([TopicPartition("metered", 0), TopicPartition("metered", 1)])
        consumer.seek_to_beginning()
        got = 0
        for _ in range(50):
            got += len(consumer.poll(timeout_s=0.5))
            if got >= 30:
                break
    assert got == 30

    broker_a = dcs.dc("A").cluster.brokers[0]
    broker_b = dcs.dc("B").cluster.brokers[0]
    worker = dcs.mirrors[0]
    deadline = time.monotonic() + 60
    while True:  # until the mirror worker reports both partitions caught up
        try:
            mirror_text, mirror = scrape(worker.metrics_address)
        except OSError:  # the worker process is still starting
            mirror_text, mirror = "", {}
        lags = [v for (n, _), v in mirror.items() if n == "talos_mirror_lag_messages"]
        copied = sum(v for (n, _), v in mirror.items() if n == "talos_mirror_copied_messages_total")
        if len(lags) == 2 and not any(lags) and copied == 30:
            break
        assert time.monotonic() < deadline, f"mirror did not catch up: {lags}, {copied}"
        time.sleep(0.3)

    a_text, a = scrape(broker_a.metrics_address)
    assert value(a, "talos_produce_requests_total", topic="metered") >= 2
    assert value(a, "talos_produce_bytes_total", topic="metered") > 30 * 100
    assert value(a, "talos_fetch_bytes_total", topic="metered") > 30 * 100
    assert value(a, "talos_produce_latency_seconds_count") >= 1
    assert value(a, "talos_group_commit_batches_count") >= 2
    assert value(a, "talos_takeovers_total", outcome="ok") >= 2
    assert value(a, "talos_owned_partitions") == 2
    for p in ("0", "1"):
        assert value(a, "talos_partition_log_end_offset", topic="metered", partition=p) == 15
        assert value(a, "talos_partition_log_start_offset", topic="metered", partition=p) == 0
    assert value(a, "talos_zookeeper_session_state", session="cluster", state="CONNECTED") == 1
    assert value(a, "talos_zookeeper_session_state", session="cluster", state="LOST") == 0

    b_text, b = scrape(broker_b.metrics_address)
    assert value(b, "talos_partition_log_end_offset", topic="metered", partition="0") == 15

    link = {"link": "A:B", "topic": "metered", "partition": "1"}
    assert value(mirror, "talos_mirror_copied_messages_total", **link) == 15
    assert value(mirror, "talos_mirror_copied_bytes_total", **link) > 15 * 100
    assert value(mirror, "talos_mirror_lag_seconds", **link) == 0
    assert value(mirror, "talos_mirror_progress_age_seconds", **link) >= 0
    assert value(mirror, "talos_mirror_owned_partitions", link="A:B") == 2
    for session in ("source", "target"):
        assert value(mirror, "talos_zookeeper_session_state", session=session, state="CONNECTED")

    # Every metric a dashboard panel or variable uses is exported by a broker or a worker.
    everything = exported(a_text) | exported(b_text) | exported(mirror_text)
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    queries += [v["definition"] for v in dashboard["templating"]["list"]]
    used = {name for q in queries for name in re.findall(r"\btalos_[a-z0-9_]+", q)}
    assert len(used) >= 15
    assert sorted(used - everything) == []
