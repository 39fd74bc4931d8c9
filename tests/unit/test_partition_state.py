"""Partition state transitions of the fencing protocol (DESIGN §4), without ZooKeeper."""

from __future__ import annotations

import json

import pytest

from talos.coord.partition_state import PartitionState, SegmentInfo
from talos.errors import CoordinationError, InvalidArgument


def owned(owner: str = "b1") -> PartitionState:
    return PartitionState().with_owner(owner).with_new_segment(0, 1)


def test_fresh_state() -> None:
    state = PartitionState()
    assert (state.epoch, state.owner, state.segments, state.version) == (0, "", (), -1)
    assert state.open_segment is None
    assert state.sealed_end == 0


def test_takeover_bumps_the_epoch_and_keeps_segments() -> None:
    state = owned("b1").with_owner("b2")
    assert state.epoch == 2
    assert state.owner == "b2"
    assert state.segments == (SegmentInfo(0, 1),)
    with pytest.raises(InvalidArgument, match="owner"):
        state.with_owner("")


def test_seal_then_roll() -> None:
    state = owned().with_sealed(0, end_offset=100, size=4096)
    assert state.open_segment is None
    assert state.sealed_end == 100
    state = state.with_new_segment(100, 1)
    assert state.open_segment == SegmentInfo(100, 1)
    assert state.sealed_end == 100
    assert state.segments[0] == SegmentInfo(0, 1, 100, 4096)


def test_first_sealed_end_wins() -> None:
    sealed = owned().with_sealed(0, end_offset=100, size=4096)
    again = sealed.with_sealed(0, end_offset=150, size=9999)
    assert again is sealed
    assert again.segments[0].end_offset == 100


def test_new_segment_only_after_seal_and_at_the_end() -> None:
    state = owned()
    with pytest.raises(InvalidArgument, match="still open"):
        state.with_new_segment(0, 1)
    sealed = state.with_sealed(0, 100, 10)
    with pytest.raises(InvalidArgument, match="end of the log 100"):
        sealed.with_new_segment(99, 1)
    with pytest.raises(InvalidArgument, match="end of the log 100"):
        sealed.with_new_segment(101, 1)


def test_new_segment_epoch_must_be_between_last_segment_and_partition_epoch() -> None:
    state = owned().with_sealed(0, 10, 1).with_owner("b2")  # epoch 2
    with pytest.raises(InvalidArgument, match="epoch"):
        state.with_new_segment(10, 3)
    with pytest.raises(InvalidArgument, match="epoch"):
        state.with_new_segment(10, 0)
    assert state.with_new_segment(10, 2).open_segment == SegmentInfo(10, 2)


def test_seal_unknown_segment_or_bad_end() -> None:
    with pytest.raises(InvalidArgument, match="no segment starts at 5"):
        owned().with_sealed(5, 10, 1)
    with pytest.raises(InvalidArgument, match="end_offset"):
        owned().with_sealed(0, -1, 0)
    sealed = owned().with_sealed(0, 50, 1).with_new_segment(50, 1)
    with pytest.raises(InvalidArgument, match="end_offset: must be >= base_offset 50"):
        sealed.with_sealed(50, 49, 0)


def test_empty_first_segment_starts_at_log_start() -> None:
    state = PartitionState(log_start=500).with_owner("b1")
    assert state.sealed_end == 500
    with pytest.raises(InvalidArgument):
        state.with_new_segment(0, 1)
    assert state.with_new_segment(500, 1).open_segment == SegmentInfo(500, 1)


def test_json_round_trip_keeps_everything_but_the_version() -> None:
    state = owned().with_sealed(0, 100, 4096).with_owner("b2").with_new_segment(100, 2)
    data = state.to_json()
    assert "version" not in json.loads(data)
    back = PartitionState.from_json(data, version=7)
    assert back.version == 7
    assert back == PartitionState(
        epoch=2,
        owner="b2",
        segments=(SegmentInfo(0, 1, 100, 4096), SegmentInfo(100, 2)),
        version=7,
    )
    assert back.open_segment == SegmentInfo(100, 2)


def test_from_json_rejects_garbage() -> None:
    with pytest.raises(CoordinationError, match="invalid JSON"):
        PartitionState.from_json(b"{nope", 0)
    with pytest.raises(CoordinationError, match="malformed"):
        PartitionState.from_json(b'{"epoch": 1}', 0)
