"""The target side's decisions: loop filter, origin stamping, chunking, reply handling."""

from __future__ import annotations

import pytest

from mirror.appender import (
    LoopSplit,
    ReplyDecision,
    chunk_ranges,
    continuity_problem,
    decide_reply,
    effective_origin,
    split_loop,
    stamp_origin,
)
from mirror.reader import ReadResult, valid_batches
from talos.errors import (
    CoordinationError,
    CorruptBatch,
    Fenced,
    Gap,
    InvalidArgument,
    MirrorDiverged,
    NotOwner,
    StorageError,
    TalosTimeout,
    Throttled,
    Unavailable,
    UnknownTopic,
)
from talos.record.batch import (
    HEADER_SIZE,
    Record,
    decode_records,
    encode_batch,
    parse_header,
    verify_single_batch,
    with_origin,
)
from talos.record.codec import Codec


def batch(offset: int, count: int = 2, origin: str = "", codec: Codec = Codec.NONE) -> bytes:
    records = [
        Record(value=f"v{offset + i}".encode(), key=b"k", headers=(("h", b"x"),), timestamp_ms=7)
        for i in range(count)
    ]
    return encode_batch(
        records,
        base_offset=offset,
        codec=codec,
        origin_cluster=origin,
        origin_offset=offset if origin else -1,
    )


# ---- loops --------------------------------------------------------------------------------


def test_effective_origin_is_the_source_for_local_batches() -> None:
    assert effective_origin(parse_header(batch(0)), "A") == "A"
    assert effective_origin(parse_header(batch(0, origin="C")), "A") == "C"


def test_split_loop_copies_up_to_the_first_batch_from_the_target() -> None:
    headers = [parse_header(b) for b in (batch(0), batch(2, origin="C"), batch(4, origin="B"))]
    assert split_loop(headers, "A", "B") == LoopSplit(copy=2, skip=0)
    assert split_loop(headers[2:], "A", "B") == LoopSplit(copy=0, skip=1)
    assert split_loop(headers, "A", "D") == LoopSplit(copy=3, skip=0)
    assert split_loop([], "A", "B") == LoopSplit(copy=0, skip=0)


def test_split_loop_skips_a_leading_run_from_the_target() -> None:
    headers = [
        parse_header(b) for b in (batch(0, origin="B"), batch(2, origin="B"), batch(4), batch(6))
    ]
    assert split_loop(headers, "A", "B") == LoopSplit(copy=0, skip=2)
    assert split_loop(headers[2:], "A", "B") == LoopSplit(copy=2, skip=0)
    # an unstamped batch counts as written in the link's source
    assert split_loop([parse_header(batch(0))], "B", "A") == LoopSplit(copy=1, skip=0)


# ---- stamping -----------------------------------------------------------------------------


@pytest.mark.parametrize("codec", list(Codec))
def test_stamping_keeps_the_records_byte_for_byte(codec: Codec) -> None:
    raw = batch(10, count=5, codec=codec)
    header = parse_header(raw)
    stamped = stamp_origin(raw, header, "A")
    out = verify_single_batch(stamped)  # a fresh, valid CRC
    assert (out.origin_cluster, out.origin_offset) == ("A", 10)
    assert stamped[HEADER_SIZE:] == raw[HEADER_SIZE:]
    assert out._replace(crc=0, origin_cluster="", origin_offset=0) == header._replace(
        crc=0, origin_cluster="", origin_offset=0
    )
    assert decode_records(stamped) == decode_records(raw)
    assert stamp_origin(raw, header, "A") == stamped  # deterministic: resends compare equal


def test_stamping_keeps_an_existing_origin() -> None:
    raw = batch(4, origin="C")
    assert stamp_origin(raw, parse_header(raw), "A") is raw  # already right: untouched
    moved = with_origin(batch(4), "C", 0)  # origin offset from another numbering
    out = parse_header(stamp_origin(moved, parse_header(moved), "A"))
    assert (out.origin_cluster, out.origin_offset) == ("C", 4)


def test_stamping_never_blesses_a_damaged_batch() -> None:
    raw = bytearray(batch(0))
    raw[-1] ^= 0xFF
    with pytest.raises(CorruptBatch):
        stamp_origin(bytes(raw), parse_header(raw), "A")


# ---- chunking -----------------------------------------------------------------------------


def test_chunks_hold_whole_batches_up_to_the_limit() -> None:
    assert chunk_ranges([40, 40, 40, 40], 100) == [range(0, 2), range(2, 4)]
    assert chunk_ranges([40, 200, 10], 100) == [range(0, 1), range(1, 2), range(2, 3)]
    assert chunk_ranges([], 100) == []
    assert chunk_ranges([100, 1], 100) == [range(0, 1), range(1, 2)]
    with pytest.raises(InvalidArgument, match="max_bytes"):
        chunk_ranges([1], 0)


# ---- replies ------------------------------------------------------------------------------


def test_ok_advances_to_the_target_end() -> None:
    assert decide_reply(10, 20, None, 20) == ReplyDecision("advance", 20)
    # the overlap was already there and more after it (another worker): skip ahead
    assert decide_reply(10, 20, None, 35) == ReplyDecision("advance", 35)
    # a reply without an end: trust what we sent
    assert decide_reply(10, 20, None, -1) == ReplyDecision("advance", 20)
    # an end below what we sent: re-read from the target's end
    assert decide_reply(10, 20, None, 15).action == "reset"


def test_gap_resets_to_the_end_in_the_reply() -> None:
    decision = decide_reply(50, 60, Gap("past the end", log_end=42), 42)
    assert (decision.action, decision.position) == ("reset", 42)
    assert decide_reply(50, 60, Gap("?", log_end=-1), -1).action == "retry"


@pytest.mark.parametrize(
    "error",
    [NotOwner("moved", owner_id="b2"), Unavailable("down"), TalosTimeout("slow")],
)
def test_routing_problems_refresh_and_retry(error: Exception) -> None:
    decision = decide_reply(0, 5, error, -1)  # type: ignore[arg-type]
    assert (decision.action, decision.refresh, decision.suspect) == ("retry", True, False)


@pytest.mark.parametrize("error", [Throttled("busy"), StorageError("eio"), CoordinationError("zk")])
def test_transient_broker_trouble_retries_in_place(error: Exception) -> None:
    decision = decide_reply(0, 5, error, 0)  # type: ignore[arg-type]
    assert (decision.action, decision.refresh) == ("retry", False)


@pytest.mark.parametrize("error", [UnknownTopic("new?"), InvalidArgument("partition: 7")])
def test_refusals_that_a_stale_broker_cache_explains_are_retried_but_suspect(
    error: Exception,
) -> None:
    decision = decide_reply(0, 5, error, -1)  # type: ignore[arg-type]
    assert (decision.action, decision.refresh, decision.suspect) == ("retry", True, True)


def test_divergence_and_fencing_stop_the_partition() -> None:
    diverged = decide_reply(0, 5, MirrorDiverged("batch 3 differs"), 9)
    assert diverged.action == "stop" and "MIRROR_DIVERGED" in diverged.message
    fenced = decide_reply(0, 5, Fenced("epoch 2"), 9)
    assert fenced.action == "stop" and "promoted" in fenced.message
    corrupt = decide_reply(0, 5, CorruptBatch("bad crc"), 9)
    assert corrupt.action == "stop" and "CorruptBatch" in corrupt.message


# ---- continuity: the source batch ending at the target's end is the target's last batch ---


def _read_of(data: bytes) -> ReadResult:
    headers, positions, _ = valid_batches(data, 0)
    return ReadResult(data, tuple(headers), tuple(positions), headers[-1].next_offset)


def test_the_target_continues_the_source_when_its_last_batch_is_the_stamped_source_batch() -> None:
    source = batch(4, 3)
    target_last = stamp_origin(source, parse_header(source), "A")
    assert continuity_problem(7, target_last, _read_of(source), "A", "B") == ""
    assert continuity_problem(0, None, ReadResult(), "A", "B") == ""  # nothing copied yet


def test_after_a_failback_the_target_holds_the_originals_of_the_sources_copies() -> None:
    original = batch(4, 3)  # written in A
    b_copy = stamp_origin(original, parse_header(original), "A")
    # the reverse link B:A reads B's copy; A (its target) holds the original
    assert continuity_problem(7, original, _read_of(b_copy), "B", "A") == ""
    assert "CRC" in continuity_problem(7, batch(4, 3, origin="C"), _read_of(b_copy), "B", "A")


def test_a_rewritten_or_cut_back_source_is_divergence() -> None:
    copied = stamp_origin(batch(4, 3), parse_header(batch(4, 3)), "A")
    rewritten = encode_batch([Record(value=b"new")] * 3, base_offset=4)
    assert "CRC" in continuity_problem(7, copied, _read_of(rewritten), "A", "B")
    regrouped = batch(4, 2) + batch(6, 1)
    assert "6..6" in continuity_problem(
        7, copied, _read_of(regrouped[len(batch(4, 2)) :]), "A", "B"
    )
    cut = ReadResult(source_end=3, caught_up=True)
    assert "ends at 3, below the target's end 7" in continuity_problem(7, copied, cut, "A", "B")
