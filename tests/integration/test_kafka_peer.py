"""The Kafka peer of the benchmarks starts for real: KRaft format, one node, produce, consume.

Needs the jars of `make kafka-jars` and the `bench` extra (confluent-kafka,
aiokafka); `make bench-deps` installs both. Skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from talos.testing.kafka import KafkaServer, kafka_available

pytestmark = pytest.mark.integration

_missing = [m for m in ("confluent_kafka", "aiokafka") if importlib.util.find_spec(m) is None]
if kafka_available() is not None:
    pytest.skip(f"{kafka_available()}; `make bench-deps` fetches them", allow_module_level=True)
if _missing:
    pytest.skip(
        f"{', '.join(_missing)} not installed (the `bench` extra: `make bench-deps`)",
        allow_module_level=True,
    )

N = 400
PARTITIONS = 2


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaServer]:
    server = KafkaServer(data_dir=str(tmp_path_factory.mktemp("kafka")), partitions=PARTITIONS)
    try:
        server.start()
        yield server
    finally:
        server.stop()
    assert not server.alive()


def _create(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)


def test_confluent_produce_then_aiokafka_reads_every_offset(kafka: KafkaServer) -> None:
    from confluent_kafka import Producer

    _create(kafka.bootstrap, "t1")
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all"})
    acked: list[tuple[int, int]] = []

    def delivered(err: object, msg: object) -> None:
        assert err is None, err
        acked.append((msg.partition(), msg.offset()))  # type: ignore[attr-defined]

    for i in range(N):
        producer.produce(
            "t1", value=f"v{i}".encode(), partition=i % PARTITIONS, on_delivery=delivered
        )
    assert producer.flush(30) == 0
    assert len(acked) == N
    # Offsets are dense per partition, from 0.
    for p in range(PARTITIONS):
        assert sorted(o for q, o in acked if q == p) == list(range(N // PARTITIONS))

    got = asyncio.run(_read_all(kafka.bootstrap, "t1", N))
    assert sorted(got) == sorted(f"v{i}" for i in range(N))


async def _read_all(bootstrap: str, topic: str, expected: int) -> list[str]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    values: list[str] = []
    try:
        async with asyncio.timeout(60):
            while len(values) < expected:
                batches = await consumer.getmany(timeout_ms=1000)
                values.extend(m.value.decode() for msgs in batches.values() for m in msgs)
    finally:
        await consumer.stop()
    return values


def test_the_data_directory_holds_the_formatted_kraft_log(kafka: KafkaServer) -> None:
    meta = Path(kafka.data_dir, "logs", "meta.properties").read_text()
    assert f"cluster.id={kafka.cluster_id}" in meta
    assert "node.id=1" in meta
