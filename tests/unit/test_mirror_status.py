"""The mirror status table as a pure function of what was read (build_status)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from mirror.state import new_mirror, promote
from mirror.status import (
    Heartbeat,
    LinkStatus,
    OffsetSyncInfo,
    PartitionInput,
    Progress,
    StatusInputs,
    WorkerInfo,
    build_status,
    exit_code,
    link_copies,
    render_table,
    target_mirror_problem,
)
from talos.errors import CoordinationError, InvalidArgument
from topology import Link

NOW = 1_700_000_000_000
STALL = 15_000
LINK = Link("A", "B", ("*",))


def progress(**overrides: object) -> Progress:
    """A fresh, caught-up worker report at NOW; override what a case needs."""
    values: dict[str, object] = {
        "worker": "w1",
        "source_end": 100,
        "target_end": 100,
        "source_end_ms": NOW - 500,
        "last_progress_ms": NOW - 500,
        "lag_ms": 0,
        "bytes_per_s": 2000.0,
        "msgs_per_s": 20.0,
        "state": "ok",
        "error": "",
        "updated_ms": NOW - 500,
    }
    values.update(overrides)
    return Progress(**values)  # type: ignore[arg-type]


def part(**overrides: object) -> PartitionInput:
    values: dict[str, object] = {
        "target_topic": "orders",
        "partition": 0,
        "source_topic": "orders",
        "source_end": 100,
        "target_end": 100,
        "progress": progress(),
    }
    values.update(overrides)
    return PartitionInput(**values)  # type: ignore[arg-type]


def status(*parts: PartitionInput, **overrides: object) -> LinkStatus:
    values: dict[str, object] = {
        "link": "A:B",
        "source": "A",
        "target": "B",
        "partitions": parts,
        "heartbeat": Heartbeat("w1", NOW - 400),
        "workers": (WorkerInfo("w1", "host", 42, NOW - 3_600_000),),
    }
    values.update(overrides)
    return build_status(StatusInputs(**values), NOW, STALL)  # type: ignore[arg-type]


def only(link_status: LinkStatus) -> tuple[str, int | None, int | None, str]:
    (row,) = link_status.partitions
    return row.state, row.lag_messages, row.lag_ms, row.detail


# -- states ----------------------------------------------------------------------------------


def test_caught_up_partition_is_ok_with_zero_lag() -> None:
    result = status(part())
    assert only(result)[:3] == ("ok", 0, 0)
    assert result.healthy and exit_code([result]) == 0
    row = result.partitions[0]
    assert (row.msgs_per_s, row.bytes_per_s, row.progress_age_ms) == (20.0, 2000.0, 500)


def test_small_lag_with_a_fresh_report_is_ok_and_uses_the_workers_lag() -> None:
    fresh = progress(source_end=110, lag_ms=300, state="ok")
    state, lag, lag_ms, _ = only(status(part(source_end=110, progress=fresh)))
    assert (state, lag, lag_ms) == ("ok", 10, 300)


def test_lag_beyond_the_threshold_is_lagging_but_healthy() -> None:
    behind = progress(source_end=500, lag_ms=8_000, last_progress_ms=NOW - 200)
    result = status(part(source_end=500, progress=behind))
    assert only(result)[:3] == ("lagging", 400, 8_000)
    assert result.healthy and exit_code([result]) == 0


def test_dead_worker_while_source_grows_is_stalled() -> None:
    """The worker died 20 s ago (caught up); the source grew since. Nothing reports it."""
    dead = progress(
        updated_ms=NOW - 20_000, last_progress_ms=NOW - 20_000, source_end_ms=NOW - 20_000
    )
    result = status(part(source_end=180, progress=dead), heartbeat=Heartbeat("w1", NOW - 20_000))
    state, lag, _, detail = only(result)
    assert (state, lag) == ("stalled", 80)
    assert "no progress for 20s" in detail and "no live mirror worker" in detail
    assert not result.healthy and exit_code([result]) == 1
    row = result.partitions[0]
    assert (row.msgs_per_s, row.bytes_per_s) == (0.0, 0.0)  # a dead worker copies nothing


def test_stall_counts_from_when_the_unreplicated_data_appeared() -> None:
    """Idle an hour, then data 10 s ago and a dead worker: lagging now, stalled after 15 s."""
    idle = progress(
        updated_ms=NOW - 3_600_000, last_progress_ms=NOW - 3_600_000, source_end_ms=NOW - 3_600_000
    )
    waiting = part(source_end=105, progress=idle, oldest_unreplicated_ms=NOW - 10_000)
    result = status(waiting, heartbeat=None)
    state, lag, lag_ms, _ = only(result)
    assert (state, lag, lag_ms) == ("lagging", 5, 10_000)
    assert result.partitions[0].lag_estimated
    later = build_status(StatusInputs("A:B", "A", "B", (waiting,)), NOW + 6_000, STALL)
    assert later.partitions[0].state == "stalled"


def test_new_data_on_an_idle_partition_with_a_live_worker_is_not_a_stall() -> None:
    """The worker's last advance was long ago, but it read the source 0.3 s ago."""
    live = progress(last_progress_ms=NOW - 3_600_000, source_end_ms=NOW - 300, updated_ms=NOW - 300)
    state, lag, lag_ms, _ = only(status(part(source_end=101, progress=live)))
    # Without the source timestamp the lag in seconds is unknown: lagging, not stalled.
    assert (state, lag, lag_ms) == ("lagging", 1, None)
    timed = part(source_end=101, progress=live, oldest_unreplicated_ms=NOW - 200)
    assert only(status(timed))[:3] == ("ok", 1, 200)


def test_worker_that_advanced_since_its_report_is_not_stalled() -> None:
    old = progress(
        source_end=300,
        target_end=100,
        updated_ms=NOW - 14_000,
        last_progress_ms=NOW - 30_000,
        lag_ms=40_000,
    )
    # the target moved past the reported 100: progress happened after updated_ms
    state = only(status(part(source_end=300, target_end=200, progress=old)))[0]
    assert state != "stalled"


def test_stuck_worker_with_fresh_heartbeats_is_stalled_too() -> None:
    stuck = progress(
        source_end=300,
        target_end=100,
        last_progress_ms=NOW - 40_000,
        source_end_ms=NOW - 200,
        updated_ms=NOW - 200,
        lag_ms=40_000,
        state="stalled",
    )
    state, lag, lag_ms, _ = only(status(part(source_end=300, target_end=100, progress=stuck)))
    assert (state, lag, lag_ms) == ("stalled", 200, 40_000)


def test_no_progress_znode_and_no_worker_is_stalled_but_a_new_worker_gets_time() -> None:
    bare = part(source_end=50, target_end=0, progress=None)
    assert only(status(bare, workers=(), heartbeat=None))[0] == "stalled"
    starting = (WorkerInfo("w2", started_ms=NOW - 2_000),)
    assert only(status(bare, workers=starting))[0] == "lagging"


def test_worker_reported_error_is_an_error_row() -> None:
    failed = progress(state="error", error="MIRROR_DIVERGED: overlap differs")
    result = status(part(progress=failed))
    state, _, _, detail = only(result)
    assert state == "error" and "MIRROR_DIVERGED" in detail
    assert exit_code([result]) == 1


def test_stale_error_report_does_not_stick() -> None:
    old_error = progress(state="error", error="boom", updated_ms=NOW - 60_000)
    assert only(status(part(progress=old_error)))[0] == "ok"


# -- unknown ends and missing topics -----------------------------------------------------------


def test_unreadable_source_end_is_an_error_unless_the_worker_just_reported_it() -> None:
    unreadable = part(source_end=None, error="source DC A: no broker answered")
    stale = replace(unreadable, progress=progress(updated_ms=NOW - 60_000))
    state, _, _, detail = only(status(stale))
    assert state == "error" and "no broker answered" in detail
    fresh = only(status(unreadable))
    assert fresh[0] == "ok" and "as last reported by the worker" in fresh[3]


def test_unreadable_target_end_is_an_error() -> None:
    row = part(target_end=None, progress=None, error="target DC B: no broker answered")
    state, lag, _, detail = only(status(row))
    assert (state, lag) == ("error", None) and "target DC B" in detail


def test_missing_target_partition_counts_from_zero() -> None:
    row = part(
        source_end=7,
        target_end=None,
        target_missing=True,
        progress=None,
        oldest_unreplicated_ms=NOW - 1_000,
    )
    state, lag, lag_ms, detail = only(status(row))
    assert (state, lag, lag_ms) == ("ok", 7, 1_000)
    assert "does not exist yet" in detail


def test_target_that_is_not_a_mirror_of_the_link_is_an_error() -> None:
    row = part(target_problem="target topic was promoted; this link no longer copies it")
    assert only(status(row))[0] == "error"


def test_unreachable_link_without_rows_gets_one_error_row() -> None:
    result = status(errors=("target DC B: ZooKeeper 127.0.0.1:1: unreachable",), heartbeat=None)
    (row,) = result.partitions
    assert (row.topic, row.partition, row.state) == ("*", -1, "error")
    assert "link errors" in row.detail and result.totals.partitions == 0
    assert "unreachable" in render_table(result).splitlines()[1]
    assert exit_code([result]) == 1


def test_link_error_with_rows_still_fails_the_check() -> None:
    result = status(part(), errors=("malformed progress znode",))
    assert result.partitions[0].state == "ok"
    assert result.state == "error" and exit_code([result]) == 1


# -- totals, JSON, rendering -------------------------------------------------------------------


def test_totals_add_up_the_rows() -> None:
    rows = [
        part(
            partition=0,
            source_end=110,
            progress=progress(source_end=110, lag_ms=6_000, msgs_per_s=10.0, bytes_per_s=1e3),
        ),
        part(
            partition=1,
            source_end=120,
            target_end=100,
            progress=progress(source_end=120, lag_ms=9_000, msgs_per_s=5.0, bytes_per_s=5e2),
        ),
        part(partition=2),
    ]
    result = status(*rows)
    totals = result.totals
    assert (totals.partitions, totals.lag_messages, totals.max_lag_ms) == (3, 30, 9_000)
    assert (totals.msgs_per_s, totals.bytes_per_s) == (15.0 + 20.0, 1500.0 + 2000.0)
    assert totals.states == {
        "ok": 1,
        "promoted": 0,
        "failback_pending": 0,
        "lagging": 2,
        "stalled": 0,
        "error": 0,
        "diverged": 0,
        "gap": 0,
    }
    assert [r.partition for r in result.partitions] == [0, 1, 2]


def test_json_has_the_same_data_as_the_table() -> None:
    result = status(
        part(source_end=130, progress=progress(source_end=130, lag_ms=7_000)),
        offset_sync=OffsetSyncInfo(NOW - 2_000, 3),
    )
    document = json.loads(json.dumps(result.to_dict()))
    row = document["partitions"][0]
    assert (row["source_end"], row["target_end"], row["lag_messages"]) == (130, 100, 30)
    assert (row["lag_ms"], row["state"]) == (7_000, "lagging")
    assert document["totals"]["lag_messages"] == 30
    assert document["healthy"] is True and document["offset_sync"]["groups"] == 3
    table = render_table(result)
    lines = table.splitlines()
    assert lines[0].startswith("link A:B (A -> B): LAGGING")
    assert "offset sync: 3 group(s), 2.0s ago" in lines[0]
    assert lines[1].split()[:4] == ["TOPIC", "PART", "SOURCE", "END"]
    assert lines[2].split()[:6] == ["orders", "0", "130", "100", "30", "7.0s"]
    assert lines[-1].startswith("TOTAL")


def test_time_inputs_are_validated() -> None:
    with pytest.raises(InvalidArgument, match="stall_after_ms"):
        build_status(StatusInputs("A:B", "A", "B"), NOW, 0)
    with pytest.raises(InvalidArgument, match="now_ms"):
        build_status(StatusInputs("A:B", "A", "B"), -1, STALL)


def test_progress_znode_parsing() -> None:
    parsed = Progress.from_json(
        b'{"worker":"w1","source_end":5,"target_end":4,"source_end_ms":1,"last_progress_ms":2,'
        b'"lag_ms":3,"bytes_per_s":10,"msgs_per_s":1.5,"state":"lagging","error":"",'
        b'"updated_ms":9}'
    )
    assert (parsed.source_end, parsed.bytes_per_s, parsed.state) == (5, 10.0, "lagging")
    with pytest.raises(CoordinationError, match="source_end"):
        Progress.from_json(b'{"source_end": "five"}')
    with pytest.raises(CoordinationError):
        Progress.from_json(b"not json")


# -- which topics a link mirrors -------------------------------------------------------------


def test_loop_rule_skips_unpromoted_mirrors_of_the_target() -> None:
    back = Link("B", "A", ("*",))
    from_a = new_mirror("A:B", "A", "orders")
    assert link_copies(LINK, "orders", None)
    assert not link_copies(back, "orders", from_a)  # B's copy of A's orders never goes home
    assert link_copies(back, "orders", promote(from_a, 1))
    assert not link_copies(Link("A", "B", ("pay*",)), "orders", None)


def test_after_a_promote_both_directions_are_named_healthy_states() -> None:
    """Issue 15: status right after a promote is not an error (a drill's verify passes)."""
    from mirror.state import pending_reverse
    from mirror.status import failover_state, waits_for_failback

    mine = new_mirror(LINK.name, "A", "t")
    assert failover_state(LINK, mine) is None
    assert failover_state(LINK, None) is None
    promoted = promote(mine, 1_000)
    assert failover_state(LINK, promoted) == "promoted"
    reverse = Link("B", "A", ("*",))
    pending = pending_reverse(None, reverse.name, "B", "t")
    assert failover_state(reverse, pending) == "failback_pending"
    assert failover_state(LINK, pending) is None  # another link's pending topic stays an error
    # A's topic, awaiting failback, is still listed by the status of the promoted link A:B
    assert waits_for_failback(LINK, pending) and not waits_for_failback(reverse, pending)
    assert not waits_for_failback(LINK, mine)
    for state in ("promoted", "failback_pending"):
        result = status(part(target_problem="after a failover", failover=state))
        row = result.partitions[0]
        assert (row.state, row.lag_messages, row.detail) == (state, None, "after a failover")
        assert result.state == state and result.healthy and exit_code([result]) == 0


def test_target_mirror_problem() -> None:
    mine = new_mirror("A:B", "A", "orders")
    assert target_mirror_problem(LINK, "orders", mine) == ""
    assert "not a mirror" in target_mirror_problem(LINK, "orders", None)
    assert "C:B" in target_mirror_problem(LINK, "orders", replace(mine, link="C:B"))
    assert "promoted" in target_mirror_problem(LINK, "orders", promote(mine, 1))


def test_a_diverged_partition_fails_the_check_and_names_topic_partition_and_offset() -> None:
    # The source was recreated: its end (3) is below the target's (100), which status
    # reports as the source end the worker actually read; the worker stopped appending.
    message = "diverged at offset 100: the source ends at 3, below the target's end 100"
    report = progress(source_end=3, state="diverged", error=message, updated_ms=NOW - 600_000)
    result = status(part(source_end=3, progress=report))
    row = result.partitions[0]
    assert (row.topic, row.partition, row.state) == ("orders", 0, "diverged")
    assert "offset 100" in row.detail
    assert result.state == "diverged" and exit_code([result]) == 1


def test_a_gap_left_by_source_retention_fails_the_check_with_the_messages_lost() -> None:
    message = "gap at offset 40: the source deleted offsets 40..99 (60 messages) before ..."
    report = progress(target_end=40, state="gap", error=message, gap_messages=60)
    result = status(part(target_end=40, progress=report))
    row = result.partitions[0]
    assert (row.state, row.gap_messages) == ("gap", 60)
    assert "60 messages" in row.detail and row.to_dict()["gap_messages"] == 60
    assert exit_code([result]) == 1


def test_a_skipped_gap_is_shown_with_its_range_and_time_and_the_check_passes() -> None:
    from mirror.status import SkippedGap

    gaps = (SkippedGap(10, 20, 10, NOW - 120_000), SkippedGap(40, 100, 60, NOW - 60_000))
    result = status(part(progress=progress(skipped_gaps=gaps)))
    row = result.partitions[0]
    assert (row.state, row.skipped_messages, exit_code([result])) == ("ok", 70, 0)
    assert "on_gap = skip: 70 messages lost to source retention" in row.detail
    assert "skipped 40..99 (60 messages) at 2023-11-14 22:12:20 UTC, 1 earlier" in row.detail
    assert "skipped 40..99" in render_table(result)
    document = json.loads(json.dumps(result.to_dict()))["partitions"][0]
    assert document["skipped_gaps"][1] == {
        "from": 40,
        "to": 100,
        "messages": 60,
        "ms": NOW - 60_000,
    }
    assert document["skipped_messages"] == 70
    raw = json.dumps({"worker": "w1", "skipped_gaps": [{"from": 1, "to": 2}]}).encode()
    assert Progress.from_json(raw).skipped_gaps == (SkippedGap(1, 2, 0, 0),)
    with pytest.raises(CoordinationError, match="skipped_gaps"):
        Progress.from_json(json.dumps({"skipped_gaps": [7]}).encode())
