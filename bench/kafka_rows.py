"""The Kafka rows of `make bench`: runs against a KRaft broker, and the table of ratios.

Kafka 4 is driven by two Python clients with the load shape of the other peers
(bench/kafka_load.py): confluent-kafka (librdkafka, C) and aiokafka (pure
Python). Talos is compared with ``flush`` durability, the same class as Kafka's
``acks=all`` on one broker with its default flush policy (the page cache; no
fsync before the acknowledgement). Ratios: Talos against the best peer of every
row (best against best), and Talos against aiokafka (pure Python against pure
Python).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from talos.bench.stats import format_table

from .kafka_load import (
    aiokafka_consume,
    aiokafka_produce,
    confluent_consume,
    confluent_produce,
    ensure_kafka_topic,
)

if TYPE_CHECKING:
    from talos.testing.kafka import KafkaServer

    from .compare import Bench

#: result-key suffix -> label, for the table and the chart.
CLIENTS = {"kafka-confluent": "Kafka (confluent-kafka)", "kafka-aiokafka": "Kafka (aiokafka)"}
#: every peer system of `make bench`, result-key suffix -> short label.
PEERS = {
    "nats": "NATS",
    "redis": "Redis",
    "kafka-confluent": "confluent",
    "kafka-aiokafka": "aiokafka",
}
_PRODUCE = {"kafka-confluent": confluent_produce, "kafka-aiokafka": aiokafka_produce}
_CONSUME = {"kafka-confluent": confluent_consume, "kafka-aiokafka": aiokafka_consume}


class KafkaRuns:
    """Each stage of `make bench` for both Kafka clients, on one broker."""

    def __init__(self, bench: Bench, server: KafkaServer, partitions: int) -> None:
        self.bench = bench
        self.server = server
        self.partitions = partitions

    def _topic(self, name: str) -> str:
        ensure_kafka_topic(self.server.bootstrap, name, self.partitions)
        return name

    def produce(self, size: int, tag: str, producers: int | None = None) -> None:
        suffix = "" if producers is None else f" {producers} producer"
        for client, fn in _PRODUCE.items():
            topic = self._topic(f"p{tag}-{client}{'-' + str(producers) if producers else ''}")
            self.bench.peer(
                f"produce {tag} {client}{suffix}",
                fn,
                self.bench.peer_produce_specs(
                    self.server.bootstrap, topic, size, producers=producers
                ),
                [self.server.pid],
            )

    def consume(self) -> None:
        """Both clients read back what the confluent-kafka 100 B run wrote."""
        for client, fn in _CONSUME.items():
            self.bench.peer(
                f"consume 100B {client}",
                fn,
                self.bench.peer_consume_specs(self.server.bootstrap, "p100B-kafka-confluent", 100),
                [self.server.pid],
            )

    def latency(self, rate: int) -> None:
        for client, fn in _PRODUCE.items():
            topic = self._topic(f"lat-{client}")
            self.bench.peer(
                f"latency {rate}/s {client}",
                fn,
                self.bench.peer_produce_specs(
                    self.server.bootstrap, topic, 100, rate=float(rate), producers=1
                ),
                [self.server.pid],
                cdf=True,
            )


def best_peer(values: dict[str, float], lower_is_better: bool) -> tuple[str, float]:
    """The best of the peers' figures that were measured: (its name, its value)."""
    measured = {k: v for k, v in values.items() if not math.isnan(v)}
    if not measured:
        return "-", math.nan
    pick = min if lower_is_better else max
    name = pick(measured, key=lambda k: measured[k])
    return name, measured[name]


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def _get(data: dict[str, Any], key: str, field: str = "msgs_per_s") -> float:
    entry = data["results"].get(key)
    if entry is None or entry.get(field) is None:
        return math.nan
    return float(entry[field])


def kafka_table(data: dict[str, Any]) -> str:
    """Talos flush beside both Kafka clients; x best peer and x aiokafka.

    For throughput rows a ratio above 1 means Talos is faster; for latency rows
    (ms) a ratio above 1 means Talos is slower.
    """
    rate = data["settings"]["latency_rate"]
    lines = [
        ("produce 100B msg/s", "produce 100B", "msgs_per_s", False),
        ("produce 100B msg/s, 1 proc", "produce 100B", "msgs_per_s", False),
        ("produce 1KB msg/s", "produce 1KB", "msgs_per_s", False),
        ("produce 1KB MB/s", "produce 1KB", "mb_per_s", False),
        (f"p99 ms @{rate}/s", f"latency {rate}/s", "p99_ms", True),
        (f"p50 ms @{rate}/s", f"latency {rate}/s", "p50_ms", True),
        ("consume 100B msg/s", "consume 100B", "msgs_per_s", False),
    ]
    rows: list[list[object]] = []
    for label, prefix, field, lower in lines:
        one = ", 1 proc" in label
        suffix = " 1 producer" if one else ""
        talos_key = (
            "consume 100B talos" if prefix.startswith("consume") else f"{prefix} talos-flush"
        )
        talos = _get(data, talos_key + suffix, field)
        peers = {name: _get(data, f"{prefix} {key}{suffix}", field) for key, name in PEERS.items()}
        best_name, best = best_peer(peers, lower)
        rows.append(
            [
                label,
                talos,
                peers["confluent"],
                peers["aiokafka"],
                best_name,
                ratio(talos, best),
                ratio(talos, peers["aiokafka"]),
            ]
        )
    headers = [
        "metric",
        "talos flush",
        "Kafka confluent",
        "Kafka aiokafka",
        "best peer",
        "x best peer",
        "x aiokafka",
    ]
    return format_table(headers, rows)
