"""Partition state transitions of the fencing protocol (DESIGN §4), without ZooKeeper."""

from __future__ import annotations

import dataclasses
import json

import pytest

from talos.coord.partition_state import PartitionState, SegmentInfo, plan_layout
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


# ---- layout over chunk znodes (issue 12 §3) ----------------------------------------------


def _rolled(count: int) -> PartitionState:
    """An owned partition with ``count`` sealed segments of 10 offsets and an open one."""
    state = PartitionState(incarnation="i1").with_owner("b1").with_new_segment(0, 1)
    for i in range(count):
        state = state.with_sealed(i * 10, i * 10 + 10, 100).with_new_segment(i * 10 + 10, 1)
    return state


def _laid(state: PartitionState, chunk_segments: int = 2) -> PartitionState:
    layout = plan_layout(
        state.chunks, state.segments, state.log_start, state.next_chunk, chunk_segments
    )
    return dataclasses.replace(
        state, chunks=layout.keep + layout.create, next_chunk=layout.next_chunk
    )


def test_old_sealed_segments_move_into_chunks_and_round_trip() -> None:
    state = _laid(_rolled(9))  # 9 sealed + open; chunks of 2 until fewer than 4 sealed remain
    assert [c.name for c in state.chunks] == ["c0000000000", "c0000000001", "c0000000002"]
    assert [len(c.segments) for c in state.chunks] == [2, 2, 2]
    assert len(state.head_segments) == 4  # 3 sealed + the open one
    back = PartitionState.from_json(state.to_json(), 3, state.chunks)
    assert back == dataclasses.replace(state, version=3)
    assert len(json.loads(state.to_json())["segments"]) == 4
    # the next roll keeps the chunks as they are
    rolled = state.with_sealed(90, 100, 100).with_new_segment(100, 1)
    layout = plan_layout(rolled.chunks, rolled.segments, 0, rolled.next_chunk, 2)
    assert (layout.keep, layout.drop) == (state.chunks, ())
    assert [c.name for c in layout.create] == ["c0000000003"]


def test_a_value_that_does_not_name_its_chunks_is_refused() -> None:
    state = _laid(_rolled(9))
    with pytest.raises(CoordinationError, match="chunks"):
        PartitionState.from_json(state.to_json(), 3, state.chunks[:1])


def test_log_start_past_whole_chunks_drops_them() -> None:
    state = _laid(_rolled(9))
    trimmed = dataclasses.replace(
        state, log_start=30, segments=tuple(s for s in state.segments if s.base_offset >= 30)
    )
    layout = plan_layout(trimmed.chunks, trimmed.segments, 30, trimmed.next_chunk, 2)
    assert layout.drop == ("c0000000000",)  # offsets 0..19
    assert [c.name for c in layout.keep] == ["c0000000001", "c0000000002"]  # 20..39 still live
    laid = _laid(trimmed)
    assert laid.segments == trimmed.segments
    back = PartitionState.from_json(laid.to_json(), 1, laid.chunks)
    assert back.segments[0] == SegmentInfo(30, 1, 40, 100)


def test_truncation_into_a_chunk_lays_the_rest_out_again() -> None:
    state = _laid(_rolled(9))
    sealed = state.with_sealed(90, 90, 0)  # every segment sealed (a failback took it over)
    cut = _laid(sealed.with_truncation(25, 50))  # inside the chunk holding 20..39
    assert [c.name for c in cut.chunks] == ["c0000000000"]
    assert cut.segments[-1] == SegmentInfo(20, 1, 25, 50)
    back = PartitionState.from_json(cut.to_json(), 1, cut.chunks)
    assert back.segments == cut.segments


def test_log_start_moves_by_whole_sealed_segments_only() -> None:
    state = _rolled(3)  # [0,10) [10,20) [20,30) open@30
    assert state.with_log_start(0) is state
    trimmed = state.with_log_start(20)
    assert trimmed.log_start == 20
    assert [s.base_offset for s in trimmed.segments] == [20, 30]
    assert trimmed.with_log_start(30).segments == (SegmentInfo(30, 1),)  # every sealed one
    for bad in (15, 40, -1):
        with pytest.raises(InvalidArgument, match="log_start"):
            trimmed.with_log_start(bad)
    with pytest.raises(InvalidArgument, match="log_start"):
        trimmed.with_log_start(10)  # never backwards


def test_a_mirror_skip_restarts_the_log_empty_at_the_new_start() -> None:
    """Issue 12 §2: the source deleted [100, 250) before the mirror copied it; the target
    restarts at 250 so its offsets stay equal, dropping every segment below."""
    state = owned().with_sealed(0, 60, 4096).with_new_segment(60, 1)
    with pytest.raises(InvalidArgument, match="still open"):
        state.with_start_skipped(250)
    sealed = state.with_sealed(60, 100, 2048)
    with pytest.raises(InvalidArgument, match="at or past the log end 100, got 99"):
        sealed.with_start_skipped(99)
    skipped = sealed.with_start_skipped(250).with_new_segment(250, 1)
    assert (skipped.log_start, skipped.sealed_end) == (250, 250)
    assert skipped.segments == (SegmentInfo(250, 1),)
    assert sealed.with_start_skipped(100).segments == ()  # nothing lost: just the start
    assert PartitionState().with_start_skipped(7).with_new_segment(7, 0).log_start == 7
