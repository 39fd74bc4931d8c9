"""`talos group ...` against a real cluster: list, describe with lag, reset-offsets, delete."""

from __future__ import annotations

import json
from typing import Any

import pytest

from talos.cli import main as talos_main
from talos.client import Admin, Consumer, Producer
from talos.errors import ErrorCode
from talos.proto import talos_pb2 as pb
from talos.testing.cluster import LocalCluster

pytestmark = pytest.mark.integration

TOPIC = "orders"
EARLY_MS, LATE_MS = 1_000, 5_000  # record timestamps; the reset time 3_000 lies between


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    """Run the CLI in-process; parse stdout as JSON when it is JSON."""
    code = talos_main(list(args))
    out, err = capsys.readouterr()
    try:
        return code, json.loads(out), err
    except json.JSONDecodeError:
        return code, out, err


def consume_all(bootstrap: str, group: str, expected: int) -> list[tuple[int, int]]:
    """Join ``group``, read ``expected`` messages, commit, leave."""
    seen: list[tuple[int, int]] = []
    with Consumer(bootstrap, group_id=group, auto_offset_reset="earliest") as consumer:
        consumer.subscribe([TOPIC])
        for _ in range(100):
            seen += [(m.partition, m.offset) for m in consumer.poll(timeout_s=0.5)]
            if len(seen) >= expected:
                break
        consumer.commit()
    return sorted(seen)


def committed(capsys: pytest.CaptureFixture[str], boot: list[str], group: str) -> dict[int, Any]:
    code, described, err = run(capsys, "group", "describe", group, "--json", *boot)
    assert code == 0, err
    return {p["partition"]: p["committed"] for p in described["partitions"]}


def test_group_tooling_end_to_end(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    bootstrap = cluster.bootstrap
    boot = ["--bootstrap", bootstrap]
    with Admin(bootstrap) as admin:
        admin.create_topic(TOPIC, 2)
        admin.wait_until_ready(TOPIC)
    with Producer(bootstrap) as producer:
        for partition, early, late in ((0, 6, 4), (1, 2, 1)):
            for i in range(early + late):
                ts = EARLY_MS if i < early else LATE_MS
                producer.send(TOPIC, b"m%d" % i, partition=partition, timestamp_ms=ts)
        producer.flush()

    # A live member: described with its assignment; resets and deletes are refused.
    consumer = Consumer(bootstrap, group_id="g1", auto_offset_reset="earliest")
    try:
        consumer.subscribe([TOPIC])
        got = 0
        for _ in range(100):
            got += len(consumer.poll(timeout_s=0.5))
            if got >= 13:
                break
        consumer.commit()

        code, groups, err = run(capsys, "group", "list", "--json", *boot)
        assert code == 0, err
        assert [(g["group"], g["state"], g["live_members"]) for g in groups] == [
            ("g1", "Stable", 1)
        ]

        code, described, err = run(capsys, "group", "describe", "g1", "--json", *boot)
        assert code == 0, err
        assert described["state"] == "Stable"
        (member,) = described["members"]
        assert member["assignment"] == [
            {"topic": TOPIC, "partition": 0},
            {"topic": TOPIC, "partition": 1},
        ]
        assert [
            (p["partition"], p["committed"], p["log_end"], p["lag"], p["member_id"])
            for p in described["partitions"]
        ] == [(0, 10, 10, 0, member["member_id"]), (1, 3, 3, 0, member["member_id"])]

        code, _, err = run(capsys, "group", "reset-offsets", "g1", "--topic", TOPIC,
                           "--to-earliest", *boot)  # fmt: skip
        assert code == 1
        assert "GroupNotEmpty" in err and "live member" in err
        code, _, err = run(capsys, "group", "delete", "g1", *boot)
        assert code == 1 and "GroupNotEmpty" in err
        # The broker itself refuses (atomically with the membership check), not just the CLI.
        with Admin(bootstrap) as admin:
            response = admin.connections.call_any(
                "AlterGroupOffsets",
                pb.AlterGroupOffsetsRequest(
                    group="g1", offsets=[pb.PartitionOffset(topic=TOPIC, partition=0, offset=0)]
                ),
            )
        assert response.error.code == ErrorCode.GROUP_NOT_EMPTY
        assert committed(capsys, boot, "g1") == {0: 10, 1: 3}  # nothing changed
    finally:
        consumer.close()

    def reset(*how: str) -> tuple[int, Any, str]:
        return run(capsys, "group", "reset-offsets", "g1", "--topic", TOPIC, *how, "--json", *boot)

    # Empty now: a dry run shows the plan and changes nothing.
    code, plan, err = reset("--to-earliest", "--dry-run")
    assert code == 0, err
    assert plan["dry_run"] is True
    assert [(r["partition"], r["current"], r["new"]) for r in plan["offsets"]] == [
        (0, 10, 0),
        (1, 3, 0),
    ]
    assert committed(capsys, boot, "g1") == {0: 10, 1: 3}

    code, plan, err = reset("--to-earliest")
    assert code == 0, err
    code, described, _ = run(capsys, "group", "describe", "g1", "--json", *boot)
    assert [(p["committed"], p["lag"]) for p in described["partitions"]] == [(0, 10), (0, 3)]
    assert described["state"] == "Empty"

    code, plan, err = reset("--to-offset", "100")
    assert code == 0, err
    assert [(r["new"], "past the log end" in r["note"]) for r in plan["offsets"]] == [
        (10, True),
        (3, True),
    ]
    assert committed(capsys, boot, "g1") == {0: 10, 1: 3}

    code, plan, err = reset("--to-datetime", "1970-01-01T00:00:03Z")
    assert code == 0, err
    assert committed(capsys, boot, "g1") == {0: 6, 1: 2}
    # A consumer of the group resumes exactly where the reset put it.
    assert consume_all(bootstrap, "g1", 5) == [(0, 6), (0, 7), (0, 8), (0, 9), (1, 2)]

    code, out, err = run(capsys, "group", "reset-offsets", "g1", "--topic", TOPIC,
                         "--to-datetime", "noon", *boot)  # fmt: skip
    assert code == 2 and "to-datetime" in err

    code, out, err = run(capsys, "group", "delete", "g1", "--json", *boot)
    assert code == 0, err
    assert out == {"group": "g1", "deleted": True}
    code, groups, _ = run(capsys, "group", "list", "--json", *boot)
    assert groups == []
    code, _, err = run(capsys, "group", "describe", "g1", *boot)
    assert code == 1 and "UnknownGroup" in err and "'g1' does not exist" in err
    code, _, err = run(capsys, "group", "delete", "g1", *boot)
    assert code == 1 and "UnknownGroup" in err
