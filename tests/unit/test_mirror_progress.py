"""The worker's bookkeeping: partition states, progress znodes, chunks, options, paths."""

from __future__ import annotations

import json

import pytest

from mirror.paths import heartbeat_path, progress_path, worker_path
from mirror.reader import ReadResult, valid_batches
from mirror.worker import (
    Progress,
    WorkerOptions,
    build_chunks,
    partition_state,
)
from talos.clock import ManualClock
from talos.errors import InvalidArgument
from talos.record.batch import Record, encode_batch, parse_header

STATE = dict(
    error="",
    source_end=100,
    target_end=100,
    now_ms=100_000,
    last_progress_ms=100_000,
    lag_ms=0,
    stall_after_s=15.0,
    lagging_after_s=5.0,
)


def test_partition_states() -> None:
    assert partition_state(**STATE) == "ok"
    assert partition_state(**{**STATE, "error": "diverged"}) == "error"
    behind = {**STATE, "target_end": 90}
    assert partition_state(**{**behind, "lag_ms": 1000}) == "ok"  # a second behind is fine
    assert partition_state(**{**behind, "lag_ms": 6000}) == "lagging"
    stuck = {**behind, "last_progress_ms": 100_000 - 15_000}
    assert partition_state(**stuck) == "stalled"
    # no progress but nothing to copy: idle, not stalled
    assert partition_state(**{**STATE, "last_progress_ms": 0}) == "ok"


def test_progress_reports_lag_rates_and_writes_on_state_changes() -> None:
    clock = ManualClock(wall_ms=1_000_000)
    options = WorkerOptions(stall_after_s=15, lagging_after_s=5)
    progress = Progress("w1", clock, options)
    progress.set_target(0)
    progress.saw_source(50, oldest_ts=1_000_000 - 8000)
    assert progress.lag_ms(clock.wall_ms()) == 8000
    assert progress.due()  # never written
    first = progress.snapshot()
    assert (first["state"], first["source_end"], first["target_end"]) == ("lagging", 50, 0)
    assert set(first) == {
        "worker", "source_end", "target_end", "source_end_ms", "last_progress_ms", "lag_ms",
        "bytes_per_s", "msgs_per_s", "state", "error", "updated_ms", "gap_messages",
        "skipped_gaps",
    }  # fmt: skip
    assert not progress.due()  # same state, within the interval

    clock.advance(0.5)
    progress.appended(50, nbytes=5000, nmsgs=50)
    progress.saw_source(50, oldest_ts=None)
    assert progress.due()  # lagging -> ok is a state change: written at once
    second = progress.snapshot()
    assert second["state"] == "ok" and second["lag_ms"] == 0
    assert second["bytes_per_s"] == pytest.approx(10_000) and second["msgs_per_s"] == 100
    assert second["last_progress_ms"] == clock.wall_ms()

    clock.advance(1.0)
    assert progress.due()  # the heartbeat interval passed
    progress.snapshot()
    progress.error = "FENCED: promoted"
    assert progress.due() and progress.snapshot()["state"] == "error"


def test_a_partition_without_progress_while_the_source_grows_is_stalled() -> None:
    clock = ManualClock()
    progress = Progress("w1", clock, WorkerOptions(stall_after_s=15))
    progress.set_target(10)
    progress.saw_source(20, oldest_ts=clock.wall_ms())
    clock.advance(14)
    assert progress.state(clock.wall_ms()) == "lagging"
    clock.advance(1)
    assert progress.state(clock.wall_ms()) == "stalled"


def batches(offsets: list[tuple[int, int]], origin: str = "") -> bytes:
    return b"".join(
        encode_batch(
            [Record(value=b"x" * 100, timestamp_ms=1000 + base) for _ in range(count)],
            base_offset=base,
            origin_cluster=origin,
            origin_offset=base if origin else -1,
        )
        for base, count in offsets
    )


def result_of(data: bytes, offset: int) -> ReadResult:
    headers, positions, _ = valid_batches(data, offset)
    return ReadResult(data, tuple(headers), tuple(positions), headers[-1].next_offset, False)


def test_build_chunks_stamps_and_splits_whole_batches() -> None:
    data = batches([(0, 3), (3, 3), (6, 3), (9, 3)])
    result = result_of(data, 0)
    size = len(result.batch(0))
    chunks = build_chunks(result, 3, "A", max_bytes=2 * size)
    assert [(c.start, c.end, c.messages) for c in chunks] == [(0, 6, 6), (6, 9, 3)]
    assert chunks[0].first_timestamp == 1000 and chunks[1].first_timestamp == 1006
    for chunk in chunks:
        headers, _, used = valid_batches(chunk.data, chunk.start)
        assert used == len(chunk.data)
        assert {h.origin_cluster for h in headers} == {"A"}
        assert [h.origin_offset for h in headers] == [h.base_offset for h in headers]


def test_options_are_checked() -> None:
    assert WorkerOptions().validated().read_bytes == 4 * 1024 * 1024
    with pytest.raises(InvalidArgument, match="append_bytes"):
        WorkerOptions(append_bytes=10).validated()
    with pytest.raises(InvalidArgument, match="stall_after_s"):
        WorkerOptions(stall_after_s=0).validated()
    with pytest.raises(InvalidArgument, match="idle_poll_s"):
        WorkerOptions(idle_poll_s=float("nan")).validated()


def test_znode_layout_keeps_the_link_name_verbatim() -> None:
    assert worker_path("A:B", "w1") == "/mirror/A:B/workers/w1"
    assert progress_path("A:B", "A.orders", 3) == "/mirror/A:B/progress/A.orders/3"
    assert heartbeat_path("A:B") == "/mirror/A:B/heartbeat"


def test_parse_header_of_a_stamped_chunk() -> None:
    assert parse_header(batches([(5, 1)], origin="C")).origin_cluster == "C"


def test_catching_up_after_a_reported_lag_is_written_at_once() -> None:
    clock = ManualClock()
    progress = Progress("w1", clock, WorkerOptions(lagging_after_s=5))
    progress.set_target(0)
    progress.saw_source(10, oldest_ts=clock.wall_ms() - 3000)
    assert progress.snapshot()["lag_ms"] == 3000  # behind, but not "lagging" yet: state ok
    clock.advance(0.1)
    assert not progress.due()
    progress.appended(10, 100, 10)  # caught up: a status tool must not keep seeing 3 s
    assert progress.due()
    assert progress.snapshot()["lag_ms"] == 0
    clock.advance(0.1)
    assert not progress.due()


def test_a_source_gap_is_its_own_final_state() -> None:
    from mirror.worker import source_gap

    assert source_gap(40, 100) and not source_gap(40, 40) and not source_gap(40, 0)
    common = dict(source_end=100, target_end=40, now_ms=0, last_progress_ms=0, lag_ms=0)
    thresholds = dict(stall_after_s=15.0, lagging_after_s=5.0)
    assert partition_state(error="x", gap=True, **common, **thresholds) == "gap"
    assert partition_state(error="x", diverged=True, **common, **thresholds) == "diverged"


def test_a_gap_stops_unless_the_link_skips_and_a_first_copy_just_starts_there() -> None:
    from mirror.worker import gap_action

    assert gap_action(0, "stop") == gap_action(0, "skip") == "start"  # nothing copied yet
    assert gap_action(40, "stop") == "stop"
    assert gap_action(40, "skip") == "skip"


def test_skipped_gaps_are_in_the_progress_znode_newest_kept() -> None:
    from mirror.status import MAX_SKIPPED_GAPS
    from mirror.status import Progress as Report

    clock = ManualClock(wall_ms=1_000)
    progress = Progress("w1", clock, WorkerOptions())
    gap = progress.skipped_gap(40, 100)
    assert (gap.start, gap.end, gap.messages, gap.at_ms) == (40, 100, 60, 1_000)
    snapshot = progress.snapshot()
    assert snapshot["state"] == "ok"  # skipped: the partition goes on
    assert snapshot["skipped_gaps"] == [{"from": 40, "to": 100, "messages": 60, "ms": 1_000}]
    assert Report.from_json(json.dumps(snapshot).encode()).skipped_gaps == (gap,)
    for i in range(MAX_SKIPPED_GAPS + 5):
        progress.skipped_gap(200 + 10 * i, 205 + 10 * i)
    assert len(progress.skipped) == MAX_SKIPPED_GAPS
    assert progress.skipped[-1].end == 205 + 10 * (MAX_SKIPPED_GAPS + 4)
