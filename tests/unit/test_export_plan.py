"""The export's decisions: which offsets a run reads, and how a stopped run is settled."""

from __future__ import annotations

import importlib.util

import pytest

from talos.errors import InvalidArgument, OffsetOutOfRange
from talos.export.cli import parse_time
from talos.export.destination import open_destination
from talos.export.plan import (
    Bound,
    FileState,
    Manifest,
    ManifestFile,
    PartitionLog,
    RangeCursor,
    check_bounds,
    decode_manifest,
    encode_manifest,
    merge,
    parse_partitions,
    plan_partition,
    settle,
    stale_temps,
    subtract,
    temp_name,
)

LOG = PartitionLog(partition=0, log_start=10, log_end=100)


def test_merge_joins_overlapping_and_touching_ranges() -> None:
    assert merge([(5, 7), (0, 3), (3, 4), (6, 9), (12, 12)]) == [(0, 4), (5, 9)]


def test_subtract_leaves_the_uncovered_parts_in_order() -> None:
    assert subtract((0, 100), []) == [(0, 100)]
    assert subtract((0, 100), [(0, 40)]) == [(40, 100)]
    assert subtract((0, 100), [(20, 30), (50, 200)]) == [(0, 20), (30, 50)]
    assert subtract((0, 100), [(0, 100)]) == []


def test_without_bounds_the_whole_log_as_it_stands() -> None:
    plan = plan_partition(LOG, Bound(), Bound(), [])
    assert plan.requested == (10, 100)
    assert plan.todo == ((10, 100),)
    assert plan.messages == 90


def test_a_rerun_reads_only_what_came_after_the_committed_files() -> None:
    plan = plan_partition(LOG, Bound(), Bound(), [(10, 60)])
    assert plan.todo == ((60, 100),)


def test_a_rerun_with_nothing_new_reads_nothing() -> None:
    assert plan_partition(LOG, Bound(), Bound(), [(10, 100)]).todo == ()


def test_offset_bounds_are_inclusive_start_and_exclusive_end() -> None:
    plan = plan_partition(LOG, Bound(offset=20), Bound(offset=30), [])
    assert plan.todo == ((20, 30),)
    assert plan_partition(LOG, Bound(offset=100), Bound(), []).todo == ()


@pytest.mark.parametrize(
    ("start", "stop", "param"),
    [
        (Bound(offset=9), Bound(), "--from-offset"),
        (Bound(offset=101), Bound(), "--from-offset"),
        (Bound(), Bound(offset=101), "--to-offset"),
        (Bound(), Bound(offset=5), "--to-offset"),
        (Bound(offset=50), Bound(offset=40), "--to-offset"),
    ],
)
def test_a_range_outside_the_log_names_the_bound_and_the_log(
    start: Bound, stop: Bound, param: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        plan_partition(LOG, start, stop, [])
    assert param in str(caught.value)
    assert "[10, 100)" in str(caught.value) or "below" in str(caught.value)


def test_time_bounds_use_the_offsets_the_owner_found() -> None:
    log = PartitionLog(0, 10, 100, from_time_offset=40, to_time_offset=70)
    plan = plan_partition(log, Bound(time_ms=1), Bound(time_ms=2), [])
    assert plan.todo == ((40, 70),)


def test_a_time_window_empty_in_one_partition_reads_nothing_there() -> None:
    log = PartitionLog(0, 10, 100, from_time_offset=80, to_time_offset=30)
    assert plan_partition(log, Bound(time_ms=5), Bound(time_ms=6), []).todo == ()


def test_an_export_past_the_log_end_means_the_topic_was_recreated() -> None:
    with pytest.raises(InvalidArgument, match="recreated"):
        plan_partition(LOG, Bound(), Bound(), [(10, 150)])


def test_contradicting_bounds_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="--from-offset and --from-time"):
        check_bounds(Bound(offset=1, time_ms=1), Bound())
    with pytest.raises(InvalidArgument, match="--to-time"):
        check_bounds(Bound(time_ms=10), Bound(time_ms=5))
    with pytest.raises(InvalidArgument, match="--from-offset: must be >= 0"):
        check_bounds(Bound(offset=-1), Bound())


def test_partitions_parse_lists_and_ranges_within_the_count() -> None:
    assert parse_partitions(None, 3) == [0, 1, 2]
    assert parse_partitions("0, 2,5-7", 8) == [0, 2, 5, 6, 7]
    for bad in ("8", "x", "3-1", "-1"):
        with pytest.raises(InvalidArgument, match="--partitions"):
            parse_partitions(bad, 8)


def _file(
    name: str, state: FileState, ranges: dict[int, tuple[tuple[int, int], ...]]
) -> ManifestFile:
    return ManifestFile(name, state, sum(e - s for rs in ranges.values() for s, e in rs), ranges)


def test_settle_commits_a_renamed_pending_file_and_forgets_an_unrenamed_one() -> None:
    manifest = Manifest(
        "t",
        (
            _file("part-00000.parquet", FileState.COMMITTED, {0: ((0, 10),)}),
            _file("part-00001.parquet", FileState.PENDING, {0: ((10, 20),)}),
        ),
    )
    renamed = settle(manifest, ["part-00000.parquet", "part-00001.parquet"])
    assert [f.state for f in renamed.files] == [FileState.COMMITTED, FileState.COMMITTED]
    assert renamed.committed_ranges() == {0: [(0, 20)]}
    not_renamed = settle(manifest, ["part-00000.parquet", temp_name("part-00001.parquet")])
    assert [f.name for f in not_renamed.files] == ["part-00000.parquet"]
    assert not_renamed.committed_ranges() == {0: [(0, 10)]}
    assert not_renamed.next_file_name() == "part-00001.parquet"


def test_pending_files_never_count_as_exported() -> None:
    manifest = Manifest("t", (_file("part-00000.parquet", FileState.PENDING, {0: ((0, 10),)}),))
    assert manifest.committed_ranges() == {}


def test_stale_temps_are_only_the_temporary_names() -> None:
    names = ["_talos_export.json", "part-00000.parquet", temp_name("part-00001.parquet")]
    assert stale_temps(names) == [temp_name("part-00001.parquet")]


def test_manifest_round_trips_and_a_damaged_one_is_an_error() -> None:
    manifest = Manifest(
        "t", (_file("part-00000.parquet", FileState.COMMITTED, {0: ((0, 10),), 3: ((5, 9),)}),)
    )
    assert decode_manifest(encode_manifest(manifest), "x") == manifest
    for raw in (b"{", b'{"format": 99}', b'{"format": 1, "topic": "t"}'):
        with pytest.raises(InvalidArgument, match="manifest x is damaged"):
            decode_manifest(raw, "x")


def test_times_are_milliseconds_or_iso_8601_in_utc() -> None:
    assert parse_time("1700000000000", "--from-time") == 1_700_000_000_000
    assert parse_time("2023-11-14T22:13:20Z", "--from-time") == 1_700_000_000_000
    assert parse_time("2023-11-14T22:13:20", "--from-time") == 1_700_000_000_000
    with pytest.raises(InvalidArgument, match="--to-time"):
        parse_time("yesterday", "--to-time")


def test_a_destination_is_a_directory_or_an_hdfs_uri() -> None:
    with pytest.raises(InvalidArgument, match="--to: scheme s3:// is not supported"):
        open_destination("s3://bucket/x")
    with pytest.raises(InvalidArgument, match="--to: must be a directory"):
        open_destination("")


def test_without_the_hdfs_store_an_hdfs_destination_says_what_is_missing() -> None:
    if importlib.util.find_spec("talos.storage.hdfs") is not None:
        pytest.skip("this build has the HDFS store: tests/integration/test_export_parquet.py")
    with pytest.raises(InvalidArgument, match=r"needs the HDFS log store \(talos.storage.hdfs"):
        open_destination("hdfs://namenode:8020/exports")


def test_a_cursor_takes_each_offset_of_its_ranges_once_in_order() -> None:
    cursor = RangeCursor(0, [(20, 23), (2, 4)])
    arrivals = [2, 3, 4, 5, 2, 3, 20, 21, 20, 21, 22, 23]  # refetched and past-the-end ones
    taken = [offset for offset in arrivals if cursor.take(offset)]
    assert taken == [2, 3, 20, 21, 22]
    assert cursor.done


def test_a_cursor_moves_to_the_next_range_when_one_ends() -> None:
    cursor = RangeCursor(0, [(0, 2), (5, 6)])
    assert cursor.take(0) and cursor.take(1)
    assert cursor.next == 5 and not cursor.done


def test_a_hole_in_the_offsets_is_an_error_not_a_silent_gap() -> None:
    cursor = RangeCursor(3, [(0, 10)])
    assert cursor.take(0)
    with pytest.raises(OffsetOutOfRange, match="partition 3: offset 2 arrived while 1"):
        cursor.take(2)
