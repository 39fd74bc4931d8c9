"""Quotas against real brokers: a tenant over its produce quota is throttled to about the
quota and loses nothing (and a reader over its consume quota too); `talos quota` approves
at once within the headroom, else leaves the request pending for an operator; measured
traffic no quota covers shrinks the headroom; bad input changes nothing."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from talos.cli import main as talos_main
from talos.client import Admin, Consumer, Producer, TopicPartition
from talos.testing.cluster import LocalCluster

pytestmark = pytest.mark.integration

QUOTA_BYTES_S = 200 * 1024
MESSAGES = 1000
VALUE_BYTES = 1000
PARTITIONS = 2


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    code = talos_main(list(args))
    out, err = capsys.readouterr()
    try:
        return code, json.loads(out), err
    except json.JSONDecodeError:
        return code, out, err


def listed(capsys: pytest.CaptureFixture[str], boot: list[str]) -> dict[str, Any]:
    code, view, err = run(capsys, "quota", "list", "--json", *boot)
    assert code == 0, err
    assert isinstance(view, dict)
    return view


def test_a_tenant_over_its_produce_quota_is_throttled_and_loses_nothing(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    boot = ["--bootstrap", cluster.bootstrap]
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("flood", PARTITIONS)
        admin.wait_until_ready("flood")
    code, _, err = run(capsys, "quota", "capacity", "--produce-bytes-per-s", "10M", *boot)
    assert code == 0, err
    code, quota, err = run(
        capsys, "quota", "request", "noisy", "--topic", "flood",
        "--produce-bytes-per-s", str(QUOTA_BYTES_S), "--json", *boot,
    )  # fmt: skip
    assert code == 0, err
    assert quota["state"] == "approved", quota
    time.sleep(0.5)  # the brokers' watches fire

    padding = b"." * (VALUE_BYTES - 8)
    with Producer(cluster.bootstrap, tenant="noisy", linger_ms=5, batch_bytes=16 * 1024) as p:
        started = time.monotonic()
        futures = [
            p.send("flood", f"{i:08d}".encode() + padding, partition=i % PARTITIONS)
            for i in range(MESSAGES)
        ]
        p.flush(timeout=120)
        elapsed = time.monotonic() - started
        offsets = [f.result(timeout=1) for f in futures]
        metrics = dict(p.metrics)
    assert metrics["throttled"] > 0, metrics
    assert metrics["records_failed"] == 0, metrics

    # The rate: a one-second burst, then the quota. Throttling can only slow a client, so
    # the upper bound holds on any machine; the lower one says it is not starved.
    sent = MESSAGES * VALUE_BYTES
    steady = (sent - QUOTA_BYTES_S) / elapsed
    with capsys.disabled():
        print(f"\nquota {QUOTA_BYTES_S} B/s: {sent} B in {elapsed:.2f} s, steady {steady:.0f} B/s")
    assert steady <= QUOTA_BYTES_S * 1.15, (steady, elapsed)
    assert steady >= QUOTA_BYTES_S * 0.4, (steady, elapsed)

    # Nothing lost, nothing twice, in order; read by a tenant over its consume quota, which
    # the consumer waits out (the first fetch takes the burst, the rest waits for it).
    code, reader, err = run(
        capsys, "quota", "request", "reader", "--topic", "flood",
        "--consume-bytes-per-s", str(QUOTA_BYTES_S * 2), "--json", *boot,
    )  # fmt: skip
    assert code == 0 and reader["state"] == "pending", (err, reader)  # no consume capacity
    code, reader, err = run(capsys, "quota", "approve", reader["id"], "--json", *boot)
    assert code == 0 and reader["state"] == "approved", (err, reader)
    time.sleep(0.5)
    by_partition: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    with Consumer(
        cluster.bootstrap, auto_offset_reset="earliest", tenant="reader", fetch_max_bytes=64 * 1024
    ) as consumer:
        consumer.assign([TopicPartition("flood", p) for p in range(PARTITIONS)])
        received = 0
        started = time.monotonic()
        for _ in range(400):
            for message in consumer.poll(timeout_s=0.5):
                assert message.value is not None
                by_partition[message.partition].append(int(message.value[:8]))
                received += 1
            if received >= MESSAGES:
                break
        read_s = time.monotonic() - started
    # less the burst and the last fetch (64 KiB a partition), which nothing waits out
    assert (sent - 2 * QUOTA_BYTES_S - 128 * 1024) / read_s <= 2 * QUOTA_BYTES_S * 1.15, read_s
    for partition, indexes in by_partition.items():
        assert indexes == list(range(partition, MESSAGES, PARTITIONS)), partition
    for i, meta in enumerate(offsets):
        assert (meta.partition, meta.offset) == (i % PARTITIONS, i // PARTITIONS)

    # `quota list` shows the use the brokers measured (they report every few seconds).
    deadline = time.monotonic() + 15
    while True:
        [row] = [q for q in listed(capsys, boot)["quotas"] if q["id"] == quota["id"]]
        if row["use"]["produce_bytes_per_s"] > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert row["use"]["produce_bytes_per_s"] > 0, row
    assert row["use"]["produce_requests_per_s"] > 0, row


def test_quota_requests_are_approved_within_headroom_else_pending(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    boot = ["--bootstrap", cluster.bootstrap]

    def request(tenant: str, *options: str) -> dict[str, Any]:
        code, quota, err = run(capsys, "quota", "request", tenant, *options, "--json", *boot)
        assert code == 0, err
        assert isinstance(quota, dict)
        return quota

    # No capacity configured: nothing can be judged, an operator decides.
    first = request("alpha", "--produce-bytes-per-s", "1M")
    assert first["state"] == "pending"
    assert "no capacity configured" in first["reason"]

    # 2 live brokers x 1 MiB/s: 2 MiB/s of headroom.
    code, view, err = run(
        capsys, "quota", "capacity", "--produce-bytes-per-s", "1M", "--json", *boot
    )
    assert code == 0, err
    assert view["live_brokers"] == 2
    assert view["capacity_per_broker"]["produce_bytes_per_s"] == 1024**2

    granted = request("beta", "--produce-bytes-per-s", "1536K")
    assert granted["state"] == "approved", granted
    too_big = request("gamma", "--produce-bytes-per-s", "1M", "--topic", "logs")
    assert too_big["state"] == "pending"
    assert "produce-bytes-per-s: asks 1048576, headroom 524288" in too_big["reason"]
    raised = request("beta", "--produce-bytes-per-s", "2M")  # replaces beta's own quota
    assert raised["state"] == "approved", raised
    everyone = request("*", "--topic", "logs", "--produce-requests-per-s", "100")
    assert everyone["state"] == "pending", everyone  # no request capacity configured
    assert "produce-requests-per-s: no capacity configured" in everyone["reason"]

    code, out, err = run(capsys, "quota", "approve", too_big["id"], *boot)
    assert code == 0, err
    code, out, err = run(capsys, "quota", "reject", first["id"], *boot)
    assert code == 0, err

    states = {q["id"]: q["state"] for q in listed(capsys, boot)["quotas"]}
    assert states == {
        first["id"]: "rejected",
        granted["id"]: "superseded",
        too_big["id"]: "approved",
        raised["id"]: "approved",
        everyone["id"]: "pending",
    }

    # Bad input: refused with a clear error, exit 2, nothing stored changed.
    before = listed(capsys, boot)
    for args, message in [
        (("request", "delta", "--produce-bytes-per-s", "-5"), "--produce-bytes-per-s"),
        (("request", "delta", "--produce-bytes-per-s", "0"), "--produce-bytes-per-s"),
        (("request", "delta", "--consume-bytes-per-s", "lots"), "--consume-bytes-per-s"),
        (("request", "delta"), "give at least one"),
        (("request", "bad/tenant", "--produce-bytes-per-s", "1"), "tenant"),
        (("request", "*", "--produce-bytes-per-s", "1"), "'*' (every tenant) needs --topic"),
        (("request", "delta", "--produce-bytes-per-s", "1", "--topic", "a b"), "topic"),
        (("approve", "q-9999999999"), "no quota 'q-9999999999'"),
        (("reject", first["id"]), "is rejected; only a pending quota"),
        (("approve", raised["id"]), "is approved; only a pending quota"),
        (("capacity", "--produce-bytes-per-s", "1.5"), "--produce-bytes-per-s"),
    ]:
        code, out, err = run(capsys, "quota", *args, *boot)
        assert code == 2, (args, out, err)
        assert message in err, (args, err)
        assert not out, (args, out)
    assert listed(capsys, boot) == before


def test_measured_traffic_outside_any_quota_shrinks_the_headroom(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    boot = ["--bootstrap", cluster.bootstrap]
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("bulk", 1)
        admin.wait_until_ready("bulk")
    code, _, err = run(capsys, "quota", "capacity", "--produce-bytes-per-s", "1M", *boot)
    assert code == 0, err

    stop = threading.Event()

    def load() -> None:  # at most 500 KB/s, by a tenant with no quota, until told to stop
        with Producer(cluster.bootstrap, tenant="bulk") as producer:
            while not stop.is_set():
                for _ in range(100):
                    producer.send("bulk", b"x" * 1000)
                producer.flush(timeout=30)
                stop.wait(0.2)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        deadline = time.monotonic() + 30
        while listed(capsys, boot)["measured"]["produce_bytes_per_s"] == 0:
            assert time.monotonic() < deadline, "no broker reported the traffic"
            time.sleep(0.5)
        # The whole capacity (2 brokers x 1 MiB/s) no longer fits; a little still does.
        code, whole, err = run(
            capsys, "quota", "request", "new", "--produce-bytes-per-s", "2M", "--json", *boot
        )
        assert code == 0, err
        code, little, err = run(
            capsys, "quota", "request", "small", "--produce-bytes-per-s", "1K", "--json", *boot
        )
        assert code == 0, err
    finally:
        stop.set()
        loader.join(timeout=60)
    assert whole["state"] == "pending", whole
    unreserved = int(whole["reason"].rsplit("unreserved traffic ", 1)[1].rstrip(")"))
    assert 0 < unreserved <= 600_000, whole["reason"]
    assert little["state"] == "approved", little
