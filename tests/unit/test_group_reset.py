"""Which offset `talos group reset-offsets` moves each partition to, and how lag is shown."""

from __future__ import annotations

import argparse

import pytest

from talos.client.group_admin import group_lag
from talos.coord.groups import (
    MemberLease,
    OffsetReset,
    PartitionBounds,
    ResetKind,
    ResetSpec,
    plan_offset_reset,
)
from talos.errors import InvalidArgument
from talos.group_cli import parse_datetime, reset_spec

BOUNDS = {
    ("t", 0): PartitionBounds(log_start=10, log_end=50, time_offset=20),
    ("t", 1): PartitionBounds(log_start=0, log_end=5, time_offset=5),
}
CURRENT = {("t", 0): 40}


def test_earliest_is_each_log_start_and_shows_the_current_offset() -> None:
    assert plan_offset_reset(ResetSpec(ResetKind.EARLIEST), CURRENT, BOUNDS) == [
        OffsetReset("t", 0, 40, 10),
        OffsetReset("t", 1, -1, 0),
    ]


def test_latest_is_each_log_end() -> None:
    plan = plan_offset_reset(ResetSpec(ResetKind.LATEST), CURRENT, BOUNDS)
    assert [(r.partition, r.new) for r in plan] == [(0, 50), (1, 5)]


def test_an_explicit_offset_is_kept_inside_the_log_with_a_note() -> None:
    plan = plan_offset_reset(ResetSpec(ResetKind.OFFSET, 7), CURRENT, BOUNDS)
    assert [(r.partition, r.new) for r in plan] == [(0, 10), (1, 5)]
    assert "below the log start" in plan[0].note
    assert "past the log end" in plan[1].note
    inside = plan_offset_reset(ResetSpec(ResetKind.OFFSET, 30), {}, {("t", 0): BOUNDS[("t", 0)]})
    assert inside == [OffsetReset("t", 0, -1, 30)]


def test_a_datetime_uses_the_owner_s_first_offset_at_that_time() -> None:
    plan = plan_offset_reset(ResetSpec(ResetKind.DATETIME, 1_000), CURRENT, BOUNDS)
    assert [(r.partition, r.new, r.note) for r in plan] == [(0, 20, ""), (1, 5, "")]


def test_a_datetime_without_the_owner_s_answer_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="to-datetime"):
        plan_offset_reset(
            ResetSpec(ResetKind.DATETIME, 1), {}, {("t", 0): PartitionBounds(0, 3, None)}
        )


def test_lag_per_partition_with_the_consumers_assignment() -> None:
    members = [MemberLease("a", ("t",), 99), MemberLease("b", ("t",), 99)]
    statuses, rows = group_lag(
        members,
        {"t": 3},
        committed={("t", 0): 4, ("t", 2): 9, ("gone", 0): 1},
        log_ends={("t", 0): 10, ("t", 1): 7, ("t", 2): -1},
    )
    assert [s.assignment for s in statuses] == [(("t", 0), ("t", 2)), (("t", 1),)]
    assert [(r.topic, r.partition, r.member_id, r.committed, r.log_end, r.lag) for r in rows] == [
        ("gone", 0, "", 1, -1, None),  # a deleted topic's offsets are still shown
        ("t", 0, "a", 4, 10, 6),
        ("t", 1, "b", -1, 7, None),  # nothing committed: lag unknown
        ("t", 2, "a", 9, -1, None),  # owner did not answer
    ]


def _args(**given: object) -> argparse.Namespace:
    base: dict[str, object] = {
        "to_earliest": False,
        "to_latest": False,
        "to_offset": None,
        "to_datetime": None,
    }
    return argparse.Namespace(**{**base, **given})


def test_cli_spec_parsing() -> None:
    assert reset_spec(_args(to_earliest=True)) == ResetSpec(ResetKind.EARLIEST)
    assert reset_spec(_args(to_offset=5)) == ResetSpec(ResetKind.OFFSET, 5)
    assert reset_spec(_args(to_datetime="1970-01-01T00:00:01Z")) == ResetSpec(
        ResetKind.DATETIME, 1000
    )
    assert parse_datetime("1970-01-01T01:00:00+01:00") == 0
    assert parse_datetime("1970-01-01T00:00:02") == 2000  # no zone: UTC
    with pytest.raises(InvalidArgument, match="to-offset"):
        reset_spec(_args(to_offset=-1))
    with pytest.raises(InvalidArgument, match="to-datetime: 'yesterday'"):
        parse_datetime("yesterday")
