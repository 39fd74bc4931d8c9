"""Producer dedup state: its decisions, expiry, snapshots and the rebuild a new owner does
(issue 11 §5: snapshots at each roll; issue 12 §4: entries expire after an idle time)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from talos.broker.producer_state import (
    DEFAULT_EXPIRE_MS,
    EXPIRE_SCAN_INTERVAL_MS,
    REMEMBERED_BATCHES,
    BatchIdentity,
    Duplicate,
    ProducerStates,
    read_snapshot,
    rebuild,
    snapshot_path,
    write_snapshot,
)
from talos.errors import InvalidArgument, OutOfOrderSequence, ProducerFenced
from talos.record import Record, encode_batch, with_base_offset
from talos.storage.posix import PosixLogStore

T0 = 1_700_000_000_000
DAY = 24 * 3600 * 1000


def batch(pid: int, seq: int, count: int = 1, epoch: int = 0) -> BatchIdentity:
    return BatchIdentity(pid, epoch, seq, count)


def test_a_retry_of_a_recent_batch_is_a_duplicate_and_a_gap_is_refused() -> None:
    states = ProducerStates()
    for seq in range(0, 20, 2):
        assert states.check(batch(7, seq, 2)) is None
        states.record(batch(7, seq, 2), 100 + seq, T0)
    assert states.check(batch(7, 18, 2)) == Duplicate(118)
    assert states.check(batch(7, 20 - 2 * REMEMBERED_BATCHES, 2)) == Duplicate(
        100 + 20 - 2 * REMEMBERED_BATCHES
    )
    with pytest.raises(OutOfOrderSequence):
        states.check(batch(7, 22))
    with pytest.raises(ProducerFenced):
        states.check(batch(7, 20, epoch=-1))
    assert states.check(batch(7, 20)) is None


def test_entries_expire_after_the_idle_time_and_not_before() -> None:
    states = ProducerStates(expire_ms=DAY)
    states.record(batch(1, 0), 0, T0)
    states.record(batch(2, 0), 1, T0 + DAY // 2)
    assert states.expire(T0 + DAY - 1) == 0
    assert states.expire(T0 + DAY) == 1  # producer 1 idle a whole day
    assert len(states) == 1
    assert states.check(batch(1, 5)) is None  # forgotten: taken as a new producer
    assert states.check(batch(2, 0)) == Duplicate(1)


def test_the_default_idle_time_is_seven_days() -> None:
    assert DEFAULT_EXPIRE_MS == 7 * DAY
    with pytest.raises(InvalidArgument, match="producer_expire_ms"):
        ProducerStates(expire_ms=0)


def test_expire_due_scans_once_per_interval_and_after_a_clock_jump() -> None:
    states = ProducerStates(expire_ms=DAY)
    states.record(batch(1, 0), 0, T0)
    assert states.expire_due(T0) == 0
    states.record(batch(2, 0), 1, T0 - 2 * DAY)  # an entry already due
    assert states.expire_due(T0 + 1) == 0  # not scanned again within the interval
    assert states.expire_due(T0 + EXPIRE_SCAN_INTERVAL_MS) == 1
    states.expire_due(T0 + 7 * DAY)  # a week of idle: everything goes
    assert len(states) == 0


def test_snapshot_round_trip_and_damage() -> None:
    states = ProducerStates()
    for pid in (1, 2**40, 2**63 - 1):
        for seq in range(8):
            states.record(batch(pid, seq), pid % 1000 + seq, T0 + seq)
    data = states.encode(end_offset=500)
    loaded = ProducerStates.decode(data, 500)
    assert loaded is not None and loaded.encode(500) == data
    assert loaded.check(batch(2**40, 7)) == Duplicate(2**40 % 1000 + 7)
    assert ProducerStates.decode(data, 501) is None  # taken at another offset
    for at in (0, 10, len(data) // 2, len(data) - 1):
        damaged = bytearray(data)
        damaged[at] ^= 1
        assert ProducerStates.decode(bytes(damaged), 500) is None
    assert ProducerStates.decode(data[:-5], 500) is None


@dataclass(frozen=True)
class Sealed:
    path: str
    end_offset: int
    size: int


def write_segment(store: PosixLogStore, name: str, base: int, pids: list[int]) -> Sealed:
    """A sealed segment with one single-record batch per producer id (sequence = offset)."""
    data = b"".join(
        with_base_offset(
            encode_batch([Record(b"v")], producer_id=pid, producer_epoch=0, base_sequence=i),
            base + i,
        )
        for i, pid in enumerate(pids)
    )
    path = f"c/t/0/{name}.log"
    store.write_file(path, data)
    return Sealed(path, base + len(pids), len(data))


def test_rebuild_uses_the_newest_snapshot_and_replays_only_what_follows(tmp_path: Path) -> None:
    store = PosixLogStore(str(tmp_path))
    first = write_segment(store, "a", 0, [1, 1, 1])
    second = write_segment(store, "b", 3, [2, 2])
    # a snapshot at the end of the first segment that knows producer 9 (whose batches
    # are no longer in any segment the replay reads)
    known = ProducerStates()
    known.record(batch(9, 0), 42, T0)
    write_snapshot(store, first.path, known, first.end_offset)

    states = rebuild(store, [first, second], now_ms=T0 + 1, tail_bytes=1)
    assert states.check(batch(9, 0)) == Duplicate(42)  # from the snapshot
    assert states.check(batch(2, 1)) == Duplicate(4)  # replayed after it
    assert states.check(batch(1, 0)) is None  # before the snapshot: not replayed
    # the newest segment got its own snapshot, so the next owner replays nothing
    again = read_snapshot(store, second)
    assert again is not None and again.check(batch(9, 0)) == Duplicate(42)
    assert snapshot_path(second.path).endswith("b.producers")


def test_rebuild_without_snapshots_replays_the_tail(tmp_path: Path) -> None:
    store = PosixLogStore(str(tmp_path))
    first = write_segment(store, "a", 0, [1])
    second = write_segment(store, "b", 1, [2])
    states = rebuild(store, [first, second], now_ms=T0, tail_bytes=1)
    assert states.check(batch(2, 0)) == Duplicate(1)
    assert states.check(batch(1, 0)) is None  # beyond the tail budget
    store.delete(snapshot_path(second.path))  # the one the first rebuild wrote
    states = rebuild(store, [first, second], now_ms=T0, tail_bytes=10**6)
    assert states.check(batch(1, 0)) == Duplicate(0)


def test_rebuild_drops_entries_of_a_snapshot_that_expired_meanwhile(tmp_path: Path) -> None:
    store = PosixLogStore(str(tmp_path))
    only = write_segment(store, "a", 0, [3])
    old = ProducerStates()
    old.record(batch(8, 0), 0, T0)
    write_snapshot(store, only.path, old, only.end_offset)
    states = rebuild(store, [only], now_ms=T0 + 7 * DAY)
    assert len(states) == 0
