"""Retention decisions (issue 12 §1): which sealed segments go, and which settings are allowed."""

from __future__ import annotations

import pytest

from talos.broker.partition import SealedSegment, retention_cut
from talos.config import ARCHIVE_RETENTION_MS, DAY_MS, UNLIMITED, TopicConfig
from talos.errors import InvalidArgument

NOW = 100 * DAY_MS


def seg(base: int, end: int, size: int, newest: int) -> SealedSegment:
    return SealedSegment(base, end, size, f"s{base}", max_timestamp=newest)


def cut(segments: list[SealedSegment], open_size: int = 0, ms: int = DAY_MS, size: int = -1):
    return retention_cut(segments, open_size, NOW, ms, size, lambda s: s.max_timestamp)


def test_time_retention_deletes_the_expired_prefix_only() -> None:
    old, new = NOW - 2 * DAY_MS, NOW - 1000
    assert cut([seg(0, 10, 100, old), seg(10, 20, 100, old), seg(20, 30, 100, new)]) == 20
    # a young segment stops the walk even if an older-stamped one follows it (no holes)
    assert cut([seg(0, 10, 100, new), seg(10, 20, 100, old)]) is None
    assert cut([seg(0, 10, 100, NOW - DAY_MS)]) is None  # exactly at the limit: kept
    assert cut([]) is None


def test_unknown_timestamps_are_kept_and_empty_segments_go_with_the_next() -> None:
    old = NOW - 2 * DAY_MS
    assert cut([seg(0, 10, 100, -1), seg(10, 20, 100, old)]) is None
    assert cut([seg(0, 0, 0, -1), seg(0, 10, 100, old)]) == 10


def test_size_retention_deletes_oldest_first_counting_the_open_segment() -> None:
    young = NOW - 1000
    segments = [seg(i * 10, i * 10 + 10, 100, young) for i in range(5)]
    assert cut(segments, open_size=50, size=UNLIMITED) is None
    assert cut(segments, open_size=50, size=550) is None
    assert cut(segments, open_size=50, size=549) == 10
    assert cut(segments, open_size=50, size=250) == 30  # 550 -> 250: three go
    assert cut(segments, open_size=50, size=1) == 50  # never the open segment


def test_retention_settings() -> None:
    assert TopicConfig().retention_ms == 7 * DAY_MS
    assert TopicConfig().retention_bytes == UNLIMITED
    config = TopicConfig(segment_ms=60_000)
    assert config.with_retention(60_000, 4096).retention_bytes == 4096
    with pytest.raises(InvalidArgument, match=r"^retention_ms: .*segment_ms \(60000\)"):
        config.with_retention(retention_ms=59_999)
    for bad_ms in (0, -5, "7d", True):
        with pytest.raises(InvalidArgument, match=r"^retention_ms: must be a positive integer"):
            config.with_retention(retention_ms=bad_ms)  # type: ignore[arg-type]
    for bad_bytes in (0, -5, -2, "1G"):
        with pytest.raises(InvalidArgument, match=r"^retention_bytes: must be a positive"):
            config.with_retention(retention_bytes=bad_bytes)  # type: ignore[arg-type]


def test_diverged_archives_keep_thirty_days_by_default() -> None:
    assert TopicConfig().for_topic("orders.diverged.20261202").retention_ms == ARCHIVE_RETENTION_MS
    assert TopicConfig().for_topic("orders").retention_ms == 7 * DAY_MS
    chosen = TopicConfig(retention_ms=DAY_MS)
    assert chosen.for_topic("orders.diverged.1") == chosen  # an explicit choice stays


def test_time_counts_from_the_sealing_when_records_are_stamped_long_ago() -> None:
    """A producer's 1970 timestamps do not get fresh data deleted the moment it lands."""
    ancient = SealedSegment(0, 10, 100, "s0", max_timestamp=3_000, sealed_ms=NOW - 1000)
    assert ancient.newest_timestamp(store=None) == NOW - 1000  # type: ignore[arg-type]
    assert retention_cut([ancient], 0, NOW, DAY_MS, -1, lambda s: s.newest_timestamp(None)) is None
    ancient.sealed_ms = NOW - 2 * DAY_MS
    assert retention_cut([ancient], 0, NOW, DAY_MS, -1, lambda s: s.newest_timestamp(None)) == 10


def test_a_mirror_skip_moves_only_a_log_that_still_ends_where_the_mirror_saw_it() -> None:
    from talos.broker.partition import decide_skip
    from talos.errors import Gap

    assert decide_skip(40, 40, 100) == "skip"
    assert decide_skip(100, 40, 100) == "done"  # a retry of a skip that landed
    assert decide_skip(0, 0, 0) == "done"  # nothing to skip
    stale = decide_skip(55, 40, 100)  # the end moved since the mirror looked
    assert isinstance(stale, Gap) and stale.log_end == 55
    backwards = decide_skip(40, 100, 40)
    assert isinstance(backwards, InvalidArgument) and "skip_from 100" in str(backwards)
