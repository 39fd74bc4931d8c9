"""The chaos checker against hand-made histories: each anomaly kind must be caught."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

from chaos.checker import ANOMALY_KINDS, check, kill_unavailability, percentile

DC, TOPIC = "dc1", "chaos"
_T = [0.0]


def ev(type_: str, **fields: Any) -> dict[str, Any]:
    _T[0] += 0.001
    base: dict[str, Any] = {"t": fields.pop("t", _T[0]), "type": type_, "dc": DC, "topic": TOPIC}
    base.setdefault("proc", "p1")
    base.update(fields)
    return base


def send(value: str, partition: int = 0) -> dict[str, Any]:
    return ev("send", value=value, partition=partition)


def ack(value: str, partition: int, offset: int, **kw: Any) -> dict[str, Any]:
    return ev("ack", value=value, partition=partition, offset=offset, **kw)


def read(value: str, partition: int, offset: int, proc: str = "c1", session: int = 1, **kw: Any):
    return ev(
        "read", value=value, partition=partition, offset=offset, proc=proc, session=session, **kw
    )


def assign(partition: int, offset: int = 0, proc: str = "c1", session: int = 1):
    return ev("assign", partition=partition, offset=offset, proc=proc, session=session)


def drain(values: list[str], partition: int = 0, **kw: Any) -> list[dict[str, Any]]:
    out = [
        ev("drain", value=v, partition=partition, offset=i, proc="drain", **kw)
        for i, v in enumerate(values)
    ]
    out.append(ev("drain-end", partition=partition, log_end=len(values), proc="drain", **kw))
    return out


def clean_history() -> list[dict[str, Any]]:
    """Three acked writes, one indefinite failure that landed, read live and drained."""
    return [
        send("a"),
        send("b"),
        send("c"),
        send("d"),
        ack("a", 0, 0),
        ack("b", 0, 1),
        ev("fail", value="d", definite=False, error="timeout"),
        ack("c", 0, 3),
        assign(0),
        read("a", 0, 0),
        read("b", 0, 1),
        read("d", 0, 2),
        read("c", 0, 3),
        *drain(["a", "b", "d", "c"]),
    ]


def kinds(events: list[dict[str, Any]]) -> dict[str, int]:
    return {k: v for k, v in check(events).counts.items() if v}


def test_clean_history_has_no_anomalies() -> None:
    result = check(clean_history())
    assert result.ok, result.summary()
    assert result.stats["acked"] == 3
    assert result.summary().startswith("OK")


def test_lost_write_acked_skipped_by_readers() -> None:
    events = [
        send("a"),
        send("b"),
        send("c"),
        ack("a", 0, 0),
        ack("b", 0, 1),
        ack("c", 0, 2),
        read("a", 0, 0, session=1),
        read("c", 0, 2, session=2),
    ]
    found = kinds(events)
    assert found == {"lost-write": 1}
    assert check(events).anomalies[0].value == "b"


def test_unseen_after_final_drain() -> None:
    events = [send("a"), send("b"), ack("a", 0, 0), ack("b", 0, 1), *drain(["a"])]
    found = kinds(events)
    assert found.get("unseen") == 1
    # nobody read past offset 1, so it is not a lost write
    assert "lost-write" not in found


def test_duplicate_value_at_two_offsets() -> None:
    events = [send("a"), ack("a", 0, 0), *drain(["a", "a"])]
    assert "duplicate" in kinds(events)


def test_inconsistent_offset() -> None:
    events = [send("a"), send("b"), read("a", 0, 0, proc="c1"), read("b", 0, 0, proc="c2")]
    assert kinds(events) == {"inconsistent-offset": 1}


def test_non_monotonic_poll() -> None:
    events = [send("a"), send("b"), assign(0), read("a", 0, 0), read("b", 0, 1), read("a", 0, 0)]
    found = kinds(events)
    assert found == {"non-monotonic": 1}


def test_poll_skip_inside_a_session_and_at_its_start() -> None:
    events = [
        send("a"),
        send("b"),
        send("c"),
        assign(0),
        read("a", 0, 0),
        read("c", 0, 2),
        assign(0, offset=0, session=2),
        read("b", 0, 1, session=2),
    ]
    assert kinds(events) == {"poll-skip": 2}


def test_aborted_read() -> None:
    events = [
        send("x"),
        ev("fail", value="x", definite=True, error="CORRUPT_BATCH"),
        read("x", 0, 0),
    ]
    assert kinds(events) == {"aborted-read": 1}


def test_indefinite_failure_may_be_read() -> None:
    events = [send("x"), ev("fail", value="x", definite=False, error="timeout"), read("x", 0, 0)]
    assert kinds(events) == {}


def test_phantom_value_never_sent() -> None:
    events = [send("a"), assign(0), read("a", 0, 0), read("a\x01garbage", 0, 1)]
    assert kinds(events) == {"phantom": 1}


def test_fenced_ack_two_values_at_one_offset() -> None:
    events = [send("a"), send("z"), ack("a", 0, 0), ack("z", 0, 0, proc="p2")]
    assert kinds(events) == {"fenced-ack": 1}


def test_fenced_ack_offset_not_in_final_log() -> None:
    # the zombie acknowledged "z" at 1; the final log holds "b" there
    events = [send("a"), send("b"), send("z"), ack("a", 0, 0), ack("z", 0, 1), ack("b", 0, 1)]
    events += drain(["a", "b"])
    found = kinds(events)
    assert found["fenced-ack"] >= 1
    # an acked offset past the end of the final log
    events = [send("a"), send("z"), ack("a", 0, 0), ack("z", 0, 5), read("z", 0, 5), *drain(["a"])]
    assert "fenced-ack" in kinds(events)


def test_fenced_ack_value_read_elsewhere() -> None:
    events = [send("a"), ack("a", 0, 3), read("a", 0, 0, session=9)]
    assert kinds(events) == {"fenced-ack": 1}


def mirror_history(target: list[str], source: list[str] | None = None) -> list[dict[str, Any]]:
    source = ["a", "b", "c"] if source is None else source
    events = [send(v) for v in ["a", "b", "c"]]
    events += [ack(v, 0, i) for i, v in enumerate(["a", "b", "c"])]
    events += drain(source)
    events.append(
        ev("mirror", source_dc="dc1", source_topic=TOPIC, target_dc="dc2", target_topic=TOPIC)
    )
    events += drain(target, dc="dc2")
    return events


def test_mirror_equal_to_source_is_clean() -> None:
    assert kinds(mirror_history(["a", "b", "c"])) == {}


def test_mirror_target_different_from_source() -> None:
    found = kinds(mirror_history(["a", "c", "b"]))
    assert found["mirror-mismatch"] == 2
    assert found["divergence"] == 1
    # the target ahead of its source: an offset the source never had
    assert "mirror-mismatch" in kinds(mirror_history(["a", "b", "c", "a"]))


def test_divergence_per_dc_when_the_copy_is_short() -> None:
    result = check(mirror_history(["a", "b"]))
    assert {k: v for k, v in result.counts.items() if v} == {"divergence": 1}
    anomaly = result.anomalies[0]
    assert (anomaly.dc, anomaly.partition, anomaly.offset) == ("dc2", 0, 2)


def test_phantom_in_a_mirror_copy_uses_the_source_sends() -> None:
    events = mirror_history(["a", "b", "c"])
    events.append(read("junk", 0, 1, dc="dc2"))
    found = kinds(events)
    assert found["phantom"] == 1
    assert found["mirror-mismatch"] == 1


def test_every_kind_is_covered_by_a_test_above() -> None:
    histories = [
        [send("a"), send("b"), ack("a", 0, 0), ack("b", 0, 1), read("b", 0, 1)],
        [send("a"), ack("a", 0, 0), *drain([])],
        [send("a"), ack("a", 0, 0), *drain(["a", "a"])],
        [send("a"), send("b"), read("a", 0, 0), read("b", 0, 0, proc="c2")],
        [send("a"), send("b"), assign(0), read("a", 0, 0), read("b", 0, 1), read("a", 0, 0)],
        [send("a"), send("c"), assign(0), read("a", 0, 0), read("c", 0, 2)],
        [send("x"), ev("fail", value="x", definite=True, error="e"), read("x", 0, 0)],
        [read("nobody-sent-this", 0, 0)],
        [send("a"), send("z"), ack("a", 0, 0), ack("z", 0, 0)],
        mirror_history(["a", "c", "b"]),
        [ev("read-error", partition=0, offset=3, error="CorruptBatch", expected=False)],
        recreated_history(final=["old", "new"]),
    ]
    caught: set[str] = set()
    for history in histories:
        caught |= set(kinds(history))
    assert caught == set(ANOMALY_KINDS)


def test_corrupt_read_unless_the_data_was_destroyed_on_purpose() -> None:
    def error(name: str, expected: bool) -> dict[str, Any]:
        return ev("read-error", partition=0, offset=3, error=name, expected=expected)

    assert kinds([error("CorruptBatch", False)]) == {"corrupt-read": 1}
    assert kinds([error("CorruptBatch", True)]) == {}
    assert kinds([error("Unavailable", False)]) == {}


def destroyed(values: list[str]) -> dict[str, Any]:
    return ev("nemesis", kind="corrupt-sealed", phase="start", destroyed=values)


def test_destroyed_values_may_be_missing_but_not_misplaced() -> None:
    base = [send("a"), send("b"), send("c"), ack("a", 0, 0), ack("b", 0, 1), ack("c", 0, 2)]
    # "b" was in the corrupted batch: missing from the drain is expected
    final = [
        ev("drain", value="a", partition=0, offset=0, proc="drain"),
        ev("drain", value="c", partition=0, offset=2, proc="drain"),
        ev("drain-end", partition=0, log_end=3, proc="drain"),
    ]
    assert kinds([*base, destroyed(["b"]), *final]) == {}
    # without the nemesis record the same history is a loss
    assert "unseen" in kinds([*base, *final])
    # delivered at another offset (a flipped, CRC-less base offset): still an anomaly
    found = kinds([*base, destroyed(["b"]), *final, read("b", 0, 7, proc="d2")])
    assert found == {"fenced-ack": 1}


def test_report_dict_and_summary_name_the_anomalies() -> None:
    result = check([send("a"), ack("a", 0, 0), *drain([])])
    data = result.to_dict()
    assert data["ok"] is False
    assert data["counts"]["unseen"] == 1
    assert "unseen" in result.summary()


def test_kill_unavailability_counts_only_sends_after_the_kill() -> None:
    events = [
        ev("send", value="old", partition=0, t=9.0),
        ev("nemesis", kind="kill", phase="start", partitions=[[DC, TOPIC, 0]], t=10.0),
        ev("ack", value="old", partition=0, offset=0, t=10.01),  # in flight at the kill
        ev("send", value="new", partition=0, t=10.5),
        ev("ack", value="new", partition=0, offset=1, t=14.0),
        ev("nemesis", kind="kill", phase="start", partitions=[[DC, TOPIC, 1]], t=20.0),
    ]
    values = kill_unavailability(events)
    assert values[0] == pytest.approx(4.0)
    assert math.isinf(values[1])


def test_kill_unavailability_leaves_out_samples_another_fault_cut_into() -> None:
    from chaos.checker import kill_unavailability_samples

    events = [
        ev("nemesis", kind="kill", phase="start", partitions=[[DC, TOPIC, 0]], t=10.0, node="b1"),
        ev("nemesis", kind="pause", phase="start", t=12.0, node="b2"),
        ev("send", value="new", partition=0, t=10.5),
        ev("ack", value="new", partition=0, offset=1, t=20.0),
    ]
    assert kill_unavailability(events) == []
    (sample,) = kill_unavailability_samples(events)
    assert sample.confounded and sample.seconds == pytest.approx(10.0)
    assert sample.node == "b1" and sample.partition == 0


def test_percentile_nearest_rank() -> None:
    assert percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.0
    assert percentile([3.0, 1.0, 2.0, 4.0], 0.99) == 4.0
    assert math.isnan(percentile([], 0.5))


# ---- the nemesis's pure parts: the schedule and the corruption it writes ----------------------


def test_schedule_is_a_function_of_the_seed_and_covers_every_kind() -> None:
    from chaos.nemesis import FAULT_KINDS, PAUSE_FACTORS, make_schedule

    first = make_schedule(7, 60.0, FAULT_KINDS, 4.0, 6)
    assert first == make_schedule(7, 60.0, FAULT_KINDS, 4.0, 6)
    assert first != make_schedule(8, 60.0, FAULT_KINDS, 4.0, 6)
    assert {f.kind for f in first} == set(FAULT_KINDS)
    factors = {f.params["factor"] for f in first if f.kind == "pause"}
    assert factors == set(PAUSE_FACTORS)
    # one at a time, in order, with a quiet gap after each
    for a, b in itertools.pairwise(first):
        assert b.at >= a.at + a.duration + 1.0
        if a.kind in ("kill", "corrupt-tail"):  # failover is measured undisturbed
            assert b.at >= a.at + 4.0 + 5.0


def test_schedule_rejects_unknown_kinds() -> None:
    from chaos.nemesis import make_schedule
    from talos.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="kinds"):
        make_schedule(1, 60.0, ["meteor"], 4.0, 6)


def test_torn_tail_is_never_a_valid_batch() -> None:
    import random

    from chaos.nemesis import torn_tail
    from talos.record.batch import iter_batches

    rng = random.Random(3)
    for variant in ("bitflip", "truncate"):
        for i in range(100):
            junk = torn_tail(variant, 1000 + i, f"t{i}", rng)
            assert list(iter_batches(junk)) == [], (variant, i)


def test_sealed_damage_is_caught_by_the_crc_or_cuts_the_segment() -> None:
    from chaos.nemesis import plan_sealed_damage
    from talos.errors import CorruptBatch
    from talos.record.batch import Record, decode_records, encode_batch, iter_batches

    segment = b"".join(
        encode_batch([Record(value=f"v{i}".encode(), timestamp_ms=1)], base_offset=i)
        for i in range(10)
    )
    for pick in range(40):
        damage = plan_sealed_damage(segment, "flip-records", pick)
        assert damage is not None and damage.flip_at is not None
        hit = bytearray(segment)
        hit[damage.flip_at] ^= damage.flip_mask
        with pytest.raises(CorruptBatch):
            decode_records(bytes(hit), damage.position)
        assert len(damage.destroyed) == 10  # the whole segment
    cut = plan_sealed_damage(segment, "truncate", 23)
    assert cut is not None and cut.truncate_to is not None
    kept = list(iter_batches(segment[: cut.truncate_to]))
    assert len(kept) == 23 % 10
    assert cut.destroyed == [f"v{i}" for i in range(10)]
    flip = plan_sealed_damage(segment, "flip-offset", 5)
    assert flip is not None and flip.flip_at is not None
    assert flip.position < flip.flip_at < flip.position + 9  # inside the base offset field


# ---- a topic deleted and recreated during the run ---------------------------------------------


def recreated_history(final: list[str], *, late_ack_at: int = 1) -> list[dict[str, Any]]:
    """ "old" acked by the first incarnation at 0; the topic deleted (t=10) and recreated
    (t=11); "retried" sent before, acked after at ``late_ack_at``; "new" sent after, at 0."""
    return [
        send("old"),
        ack("old", 0, 0),
        ev("send", value="retried", partition=0, t=9.5),
        ev("nemesis", kind="recreate", phase="start", t=10.0),
        ev("nemesis", kind="recreate", phase="recreated", incarnation="i2", t=11.0),
        {"t": 11.5, "type": "nemesis", "kind": "recreate", "phase": "end", "proc": "runner"},
        ev("send", value="new", partition=0, t=12.0),
        ev("ack", value="new", partition=0, offset=0, t=12.1),
        ev("ack", value="retried", partition=0, offset=late_ack_at, t=12.2),
        *drain(final, t=20.0),
    ]


def test_acks_of_a_deleted_incarnation_are_gone_and_must_not_be_served() -> None:
    from chaos.checker import incarnation_of

    recreates = [(10.0, 11.0)]
    assert incarnation_of(12.0, 12.1, recreates) == "current"
    assert incarnation_of(5.0, 9.0, recreates) == "gone"
    assert incarnation_of(9.5, 12.2, recreates) == "unknown"  # acked by either
    assert incarnation_of(11.5, 12.0, [(10.0, None)]) == "unknown"  # never recreated
    # "old" and the same offset 0 reused by "new": no fenced-ack, no unseen
    assert kinds(recreated_history(["new", "retried"])) == {}
    assert kinds(recreated_history(["new"])) == {}  # "retried" may have gone with the old one
    assert check(recreated_history(["new"])).stats["recreates"] == 1
    # the old incarnation's value served again; a current write missing; one misplaced
    found = kinds(recreated_history(["old", "new"]))  # "new" is at 1, not at its ack 0
    assert found == {"old-incarnation": 1, "fenced-ack": 2}
    assert kinds(recreated_history([])) == {"unseen": 1, "fenced-ack": 1}
    assert kinds(recreated_history(["new", "x", "retried"], late_ack_at=1)) == {
        "phantom": 1,
        "fenced-ack": 1,
    }


def test_a_recreate_schedule_pauses_less_than_a_session() -> None:
    from chaos.nemesis import RECREATE_PARTITIONS, make_schedule

    schedule = make_schedule(606, 60.0, ["recreate", "kill", "pause"], 4.0, 6)
    recreates = [f for f in schedule if f.kind == "recreate"]
    assert {f.params["variant"] for f in recreates[:2]} == {"plain", "paused-owner"}
    for fault in recreates:
        assert 0 <= fault.params["partition"] < RECREATE_PARTITIONS
        assert fault.duration < 4.0  # a paused owner keeps its session
