"""The pure plans of failover: recovery point, divergence, truncation, refusals."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mirror.failover import (
    Divergence,
    PartitionRecovery,
    Progress,
    RecoveryReport,
    SourceView,
    StoredBatch,
    archive_topic_name,
    clamped_to,
    failback_refusal,
    failback_stamp,
    find_divergence,
    is_copy_of,
    plan_promotion,
    recovery_point,
    resync_cut,
    resync_refusal,
    source_demotion,
    truncated_state,
)
from mirror.state import MirrorState, Phase, begin_resync, fence
from mirror.state import promote as promote_state
from talos.coord.partition_state import PartitionState, SegmentInfo
from talos.errors import InvalidArgument
from talos.record.batch import Record, encode_batch, parse_header, with_origin
from topology import Link

# ---- hand-made logs ---------------------------------------------------------------------------


def local_log(start: int, sizes: list[int], tag: str, ts: int = 1000) -> list[StoredBatch]:
    """Batches as a cluster writes them locally (origin ""), with segment positions."""
    out = []
    offset, position = start, 0
    for i, size in enumerate(sizes):
        records = [
            Record(value=f"{tag}{offset + j}".encode(), key=b"k", timestamp_ms=ts + i)
            for j in range(size)
        ]
        data = encode_batch(records, base_offset=offset, producer_id=7, base_sequence=offset)
        out.append(StoredBatch(parse_header(data), data, position))
        offset += size
        position += len(data)
    return out


def mirrored(batches: list[StoredBatch], source: str = "A") -> list[StoredBatch]:
    """What the mirror writes into B: the same bytes, origin stamped, CRC recomputed."""
    out = []
    for batch in batches:
        origin = batch.header.origin_cluster or source
        data = with_origin(batch.data, origin, batch.header.base_offset)
        out.append(StoredBatch(parse_header(data), data))
    return out


def end_of(batches: list[StoredBatch], default: int = 0) -> int:
    return batches[-1].header.next_offset if batches else default


# ---- recovery point ---------------------------------------------------------------------------


def test_recovery_point_from_the_source_itself() -> None:
    point = recovery_point(
        "orders", "orders", 0, 100, 5_000, SourceView(130, 7_500, 5_100), progress=None
    )
    assert point == PartitionRecovery("orders", "orders", 0, 100, 130, 30, 2_500, "source")
    assert point.last_mirrored == 99


def test_recovery_point_caught_up_has_no_gap() -> None:
    point = recovery_point("t", "t", 1, 40, 9_000, SourceView(40, 9_000, None), None)
    assert (point.gap_messages, point.gap_ms) == (0, 0)


def test_recovery_point_with_an_empty_target_counts_from_the_first_missing_batch() -> None:
    point = recovery_point("t", "t", 0, 0, None, SourceView(12, 4_000, 1_500), None)
    assert (point.gap_messages, point.gap_ms) == (12, 2_500)


def test_recovery_point_falls_back_to_the_progress_heartbeat() -> None:
    progress = Progress(source_end=150, target_end=140, lag_ms=800, updated_ms=1)
    point = recovery_point("t", "t", 0, 140, 1, None, progress)
    assert (point.source_end, point.gap_messages, point.gap_ms, point.basis) == (
        None,
        10,
        800,
        "progress",
    )
    unknown = recovery_point("t", "t", 0, 140, 1, None, None)
    assert (unknown.gap_messages, unknown.gap_ms, unknown.basis) == (None, None, "unknown")


def test_recovery_point_without_timestamps_uses_the_heartbeat_lag() -> None:
    progress = Progress(150, 140, 650, 1)
    point = recovery_point("t", "t", 0, 140, None, SourceView(150, None, None), progress)
    assert (point.gap_messages, point.gap_ms) == (10, 650)


def test_report_totals_add_gaps_and_take_the_worst_rpo() -> None:
    parts = (
        recovery_point("t", "t", 0, 10, 100, SourceView(15, 400, 150), None),
        recovery_point("t", "t", 1, 10, 100, SourceView(11, 900, 150), None),
    )
    report = RecoveryReport("A:B", 1, False, parts)
    assert (report.gap_messages, report.rpo_ms) == (6, 800)
    unknown = RecoveryReport(
        "A:B", 1, False, (*parts, recovery_point("t", "t", 2, 0, None, None, None))
    )
    assert (unknown.gap_messages, unknown.rpo_ms) == (None, None)
    assert unknown.to_dict()["partitions"][0]["last_mirrored"] == 9


def test_recovery_point_rejects_a_negative_end() -> None:
    with pytest.raises(InvalidArgument, match="target_end"):
        recovery_point("t", "t", 0, -1, None, None, None)


# ---- mirror states (the transitions live in mirror.state; see test_mirror_state) ---------------


def test_the_dry_run_plans_the_promotion_the_real_run_makes() -> None:
    mirroring = MirrorState("A:B", "A", "t", 3)
    promoted = promote_state(MirrorState("A:B", "A", "u", 5), 7)
    plan = plan_promotion({"t": mirroring, "u": promoted})
    assert plan.epochs == {"t": (3, 4), "u": (6, 6)}
    assert plan.already_promoted == ("u",)
    assert plan.epochs["t"][1] == promote_state(fence(mirroring), 9).epoch


def test_the_old_primary_becomes_a_pending_reverse_mirror_unless_it_is_another_mirror() -> None:
    pending = source_demotion(None, "B:A", "B", "t")
    assert pending == MirrorState("B:A", "B", "t", 1, Phase.FAILBACK_PENDING)
    assert source_demotion(pending, "B:A", "B", "t") == pending
    someone_elses = MirrorState("C:A", "C", "t", 2)
    assert source_demotion(someone_elses, "B:A", "B", "t") is None
    after_cycle = source_demotion(
        promote_state(MirrorState("B:A", "B", "t", 5), 1), "B:A", "B", "t"
    )
    assert after_cycle is not None and after_cycle.epoch == 7


# ---- divergence -------------------------------------------------------------------------------


def test_a_mirror_copy_matches_its_original_and_nothing_else() -> None:
    a = local_log(0, [3], "v")
    b = mirrored(a)
    assert is_copy_of(a[0], b[0], "A")
    assert not is_copy_of(a[0], b[0], "C")  # B's copy names A, not C
    assert not is_copy_of(a[0], a[0], "A")  # a local batch in B is not a copy
    other = mirrored(local_log(0, [3], "w"))
    assert not is_copy_of(a[0], other[0], "A")
    # a batch A itself got from C keeps C as its origin in B
    from_c = with_origin(a[0].data, "C", 0)
    original = StoredBatch(parse_header(from_c), from_c)
    assert is_copy_of(original, mirrored([original])[0], "A")


def test_divergence_where_b_stopped_mirroring() -> None:
    a = local_log(0, [2, 3, 4, 1], "v")  # offsets 0..9
    b = mirrored(a[:2])  # B has 0..4
    found = find_divergence(a, b, source_cluster="A", start=0, a_end=10, b_end=5)
    assert (found.common, found.matched_batches, found.diverged_messages) == (5, 2, 5)
    assert found.position == a[2].position  # where A's segment gets cut
    assert found.certain


def test_divergence_when_both_wrote_after_the_promotion() -> None:
    a = local_log(0, [2, 3, 4], "v")  # A: 0..8, its last batch never mirrored
    b = [*mirrored(a[:2]), *local_log(5, [6], "b-local")]  # B: copies, then its own 5..10
    found = find_divergence(a, b, source_cluster="A", start=0, a_end=9, b_end=11)
    assert (found.common, found.diverged_messages, found.reverse_messages) == (5, 4, 6)


def test_no_divergence_when_a_stopped_where_b_did() -> None:
    a = local_log(0, [2, 3], "v")
    b = [*mirrored(a), *local_log(5, [4], "b")]
    found = find_divergence(a, b, source_cluster="A", start=0, a_end=5, b_end=9)
    assert (found.common, found.diverged_messages, found.position) == (5, 0, -1)


def test_divergence_reads_lazily_and_stops_at_the_first_difference() -> None:
    a = local_log(0, [2, 2], "v")

    def a_then_fail() -> Iterator[StoredBatch]:
        yield from a
        raise AssertionError("read past the divergence")

    b = [*mirrored(a[:1]), *local_log(2, [2], "x")]

    def b_then_fail() -> Iterator[StoredBatch]:
        yield from b
        raise AssertionError("read past the divergence")

    found = find_divergence(
        a_then_fail(), b_then_fail(), source_cluster="A", start=0, a_end=10_000, b_end=10_000
    )
    assert found.common == 2


def test_divergence_from_a_later_start_that_differs_at_once_is_uncertain() -> None:
    a = local_log(4, [2], "v")
    b = local_log(4, [2], "w")
    found = find_divergence(a, b, source_cluster="A", start=4, a_end=6, b_end=6)
    assert (found.common, found.certain) == (4, False)
    at_zero = find_divergence(
        local_log(0, [1], "v"),
        local_log(0, [1], "w"),
        source_cluster="A",
        start=0,
        a_end=1,
        b_end=1,
    )
    assert at_zero.certain


def test_divergence_refuses_logs_with_holes_or_bad_ends() -> None:
    a = local_log(0, [2, 2], "v")
    holed = [a[0], local_log(3, [1], "v")[0]]
    with pytest.raises(InvalidArgument, match="continue at 2"):
        find_divergence(holed, mirrored(holed), source_cluster="A", start=0, a_end=4, b_end=4)
    with pytest.raises(InvalidArgument, match="past the log ends"):
        find_divergence(a, mirrored(a), source_cluster="A", start=0, a_end=4, b_end=3)
    with pytest.raises(InvalidArgument, match="start"):
        find_divergence(a, a, source_cluster="A", start=9, a_end=4, b_end=4)


# ---- truncation -------------------------------------------------------------------------------


def sealed_log() -> PartitionState:
    """Epoch 4 (a failback took it over); segments 0..10 (1000 B) and 10..20 (900 B)."""
    return PartitionState(
        epoch=4,
        owner="failback",
        segments=(SegmentInfo(0, 1, 10, 1000), SegmentInfo(10, 3, 20, 900)),
        version=7,
    )


def test_truncation_inside_a_segment_keeps_its_prefix() -> None:
    cut = sealed_log().with_truncation(15, 400)
    assert cut.segments == (SegmentInfo(0, 1, 10, 1000), SegmentInfo(10, 3, 15, 400))
    assert cut.sealed_end == 15
    # the next owner takes over and opens a new segment at the cut, under a new epoch
    next_owner = cut.with_owner("b2").with_new_segment(15, 5)
    assert next_owner.open_segment == SegmentInfo(15, 5)


def test_truncation_at_a_segment_boundary_drops_whole_segments() -> None:
    assert sealed_log().with_truncation(10, 0).segments == (SegmentInfo(0, 1, 10, 1000),)
    assert sealed_log().with_truncation(0, 0).segments == ()
    assert sealed_log().with_truncation(0, 0).sealed_end == 0
    assert sealed_log().with_truncation(20, 0) == sealed_log()


def test_truncation_refuses_what_would_cut_a_writer_or_a_hole() -> None:
    state = sealed_log()
    with pytest.raises(InvalidArgument, match="still open"):
        state.with_owner("b9").with_new_segment(20, 5).with_truncation(15, 10)
    with pytest.raises(InvalidArgument, match="between the log start 0 and the log end 20"):
        state.with_truncation(21, 0)
    with pytest.raises(InvalidArgument, match="size_at"):
        state.with_truncation(15, 0)  # inside a segment, yet nothing kept
    with pytest.raises(InvalidArgument, match="size_at"):
        state.with_truncation(15, 900)  # keeps the whole segment: not a cut
    with pytest.raises(InvalidArgument, match="segment boundary"):
        state.with_truncation(10, 1000)
    with pytest.raises(InvalidArgument, match="log end"):
        state.with_truncation(20, 5)
    with pytest.raises(InvalidArgument, match="offset"):
        state.with_truncation(-1, 0)
    late = PartitionState(epoch=2, segments=(SegmentInfo(50, 1, 60, 100),), log_start=50)
    with pytest.raises(InvalidArgument, match="log start 50"):
        late.with_truncation(40, 0)


def test_truncated_state_uses_the_divergence_and_releases_the_partition() -> None:
    state = sealed_log()
    divergence = Divergence(start=8, common=15, a_end=20, b_end=30, matched_batches=2, position=400)
    cut = truncated_state(state, divergence)
    assert cut.owner == ""
    assert cut.epoch == 4  # the next owner bumps it
    assert cut.segments[-1] == SegmentInfo(10, 3, 15, 400)
    boundary = Divergence(8, 10, 20, 30, 1, position=0)
    assert truncated_state(state, boundary).segments == (SegmentInfo(0, 1, 10, 1000),)
    nothing = Divergence(8, 20, 20, 30, 3)
    assert truncated_state(state, nothing).segments == state.segments
    with pytest.raises(InvalidArgument, match="position"):
        truncated_state(state, Divergence(8, 15, 20, 30, 1))


def test_positions_from_a_hand_made_segment_cut_at_a_batch_boundary() -> None:
    a = local_log(0, [2, 3, 4], "v")
    size = a[-1].position + len(a[-1].data)
    state = PartitionState(epoch=2, owner="failback", segments=(SegmentInfo(0, 1, 9, size),))
    b = mirrored(a[:1])
    found = find_divergence(a, b, source_cluster="A", start=0, a_end=9, b_end=2)
    cut = truncated_state(state, found)
    assert cut.segments == (SegmentInfo(0, 1, 2, len(a[0].data)),)


# ---- names and refusals -----------------------------------------------------------------------


def test_archive_topic_names() -> None:
    stamp = failback_stamp(1_700_000_000_000)
    assert stamp == "20231114T221320Z"
    assert archive_topic_name("orders", stamp) == "orders.diverged.20231114T221320Z"
    with pytest.raises(InvalidArgument, match="too long"):
        archive_topic_name("x" * 240, stamp)


LINK = Link("A", "B", ("orders", "pay*"))
REVERSE = Link("B", "A", ("*",))


def test_failback_refusals() -> None:
    pairs = [("orders", "orders")]
    never = failback_refusal(link=LINK, promotion=None, reverse=REVERSE, pairs=pairs)
    assert never is not None and "never promoted" in never
    promotion = {"topics": {"orders": {}}}
    done = failback_refusal(
        link=LINK, promotion={**promotion, "failed_back_ms": 5}, reverse=REVERSE, pairs=pairs
    )
    assert done is not None and "already failed back" in done
    missing = failback_refusal(link=LINK, promotion=promotion, reverse=None, pairs=pairs)
    assert missing is not None and "reverse link B:A" in missing
    narrow = Link("B", "A", ("other",))
    unmapped = failback_refusal(link=LINK, promotion=promotion, reverse=narrow, pairs=pairs)
    assert unmapped is not None and "does not map" in unmapped
    assert failback_refusal(link=LINK, promotion=promotion, reverse=REVERSE, pairs=pairs) is None


# ---- resync -----------------------------------------------------------------------------------


def test_resync_refuses_what_the_link_does_not_copy() -> None:
    link = Link("A", "B", ("*",))
    mine = MirrorState("A:B", "A", "t", 2)
    assert resync_refusal(link, "t", mine) is None
    assert resync_refusal(link, "t", begin_resync(mine)) is None  # a rerun continues
    assert "not a mirror" in str(resync_refusal(link, "t", None))
    assert "'u'" in str(resync_refusal(link, "t", MirrorState("A:B", "A", "u", 2)))
    assert "promoted" in str(resync_refusal(link, "t", promote_state(mine, 1)))


def test_resync_empties_the_partition_at_the_sources_log_start() -> None:
    state = PartitionState(
        epoch=4,
        owner="failback",
        segments=(SegmentInfo(0, 1, 6, 300), SegmentInfo(6, 2, 10, 200)),
        version=9,
    )
    cut = resync_cut(state, 3)
    assert (cut.segments, cut.log_start, cut.sealed_end, cut.owner) == ((), 3, 3, "")
    assert resync_cut(state, 0).sealed_end == 0
    assert clamped_to({"g1": 7, "g2": 2, "g3": 3}, 3) == {"g1": 3}
