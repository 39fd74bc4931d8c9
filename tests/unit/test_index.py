from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from talos.errors import InvalidArgument
from talos.storage.index import (
    IndexEntry,
    SparseIndexBuilder,
    decode_offset_index,
    decode_time_index,
    encode_offset_index,
    encode_time_index,
    index_path,
    load_indexes,
    lookup_position,
    lookup_time,
    time_index_path,
    write_indexes,
)
from talos.storage.posix import PosixLogStore

SEGMENT = "c/t/0/00000000000000001000.3.log"
BASE = 1000

# Batches as (record_count, size_bytes, max_timestamp); timestamps may go backwards.
batch_lists = st.lists(
    st.tuples(
        st.integers(1, 50),
        st.integers(77, 3000),
        st.integers(-5, 10_000),
    ),
    min_size=0,
    max_size=60,
)


def _layout(batches: list[tuple[int, int, int]]) -> list[tuple[int, int, int, int]]:
    """(base_offset, position, size, max_timestamp) of each batch of a segment at BASE."""
    out = []
    offset, position = BASE, 0
    for count, size, ts in batches:
        out.append((offset, position, size, ts))
        offset += count
        position += size
    return out


def _build(layout: list[tuple[int, int, int, int]], interval: int) -> list[IndexEntry]:
    builder = SparseIndexBuilder(interval)
    for base, pos, size, ts in layout:
        builder.add(base, pos, size, ts)
    return builder.entries


def test_builder_indexes_the_first_batch_and_every_interval() -> None:
    layout = _layout([(10, 1000, 5)] * 10)
    entries = _build(layout, 2500)
    # bytes since the last entry reach 2500 after three 1000-byte batches
    assert [e.position for e in entries] == [0, 3000, 6000, 9000]
    assert [e.offset for e in entries] == [1000, 1030, 1060, 1090]


def test_builder_keeps_the_running_max_timestamp() -> None:
    entries = _build(_layout([(1, 100, 50), (1, 100, 10), (1, 100, 30), (1, 100, 70)]), 1)
    assert [e.max_timestamp for e in entries] == [50, 50, 50, 70]


def test_builder_rejects_a_bad_interval() -> None:
    with pytest.raises(InvalidArgument, match="interval_bytes"):
        SparseIndexBuilder(0)


@given(batch_lists, st.integers(1, 10_000))
def test_encode_decode_round_trip(batches: list[tuple[int, int, int]], interval: int) -> None:
    entries = _build(_layout(batches), interval)
    offsets = decode_offset_index(encode_offset_index(entries, BASE), BASE)
    times = decode_time_index(encode_time_index(entries, BASE), BASE)
    assert offsets == [(e.offset, e.position) for e in entries]
    assert times == [(e.max_timestamp, e.offset) for e in entries]


@given(batch_lists, st.integers(1, 10_000), st.integers(BASE - 5, BASE + 3000))
def test_lookup_position_matches_brute_force(
    batches: list[tuple[int, int, int]], interval: int, target: int
) -> None:
    entries = _build(_layout(batches), interval)
    at_or_before = [e for e in entries if e.offset <= target]
    expected = at_or_before[-1].position if at_or_before else 0
    assert lookup_position(entries, target) == expected


@given(batch_lists, st.integers(1, 10_000), st.integers(-10, 10_010))
def test_lookup_time_never_skips_the_first_match(
    batches: list[tuple[int, int, int]], interval: int, timestamp: int
) -> None:
    layout = _layout(batches)
    entries = _build(layout, interval)
    got = lookup_time(entries, timestamp)
    first_match = next((base for base, _, _, ts in layout if ts >= timestamp), None)
    if first_match is not None:
        assert got <= first_match
    # and it is as late as the index allows: the last entry with everything before it older
    later = [e.offset for e in entries if e.max_timestamp < timestamp]
    assert got == (later[-1] if later else 0)
    # the returned start is an indexed batch, so its position is known
    assert got == 0 or any(e.offset == got for e in entries)


def test_lookup_on_empty_entries() -> None:
    assert lookup_position([], 5) == 0
    assert lookup_time([], 5) == 0


def test_encode_rejects_entries_below_the_segment_base() -> None:
    with pytest.raises(InvalidArgument, match="entries"):
        encode_offset_index([IndexEntry(5, 0, 0)], segment_base=10)


def _store(tmp_path: Path) -> PosixLogStore:
    return PosixLogStore(str(tmp_path / "store"))


def _entries() -> list[IndexEntry]:
    return _build(_layout([(3, 900, t) for t in range(40)]), 4096)


def test_write_and_load(tmp_path: Path) -> None:
    store = _store(tmp_path)
    entries = _entries()
    assert len(entries) > 3
    write_indexes(store, SEGMENT, entries, BASE)
    assert store.exists("c/t/0/00000000000000001000.3.index")
    assert store.exists("c/t/0/00000000000000001000.3.timeindex")
    assert load_indexes(store, SEGMENT, BASE) == entries


def test_empty_index_round_trips(tmp_path: Path) -> None:
    store = _store(tmp_path)
    write_indexes(store, SEGMENT, [], BASE)
    assert load_indexes(store, SEGMENT, BASE) == []


def test_missing_index_loads_as_none(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert load_indexes(store, SEGMENT, BASE) is None
    write_indexes(store, SEGMENT, _entries(), BASE)
    store.delete(time_index_path(SEGMENT))
    assert load_indexes(store, SEGMENT, BASE) is None


def test_index_of_another_base_loads_as_none(tmp_path: Path) -> None:
    store = _store(tmp_path)
    write_indexes(store, SEGMENT, _entries(), BASE)
    assert load_indexes(store, SEGMENT, BASE + 1) is None


@pytest.mark.parametrize("which", ["offset", "time"])
def test_every_bit_flip_and_truncation_is_refused(which: str) -> None:
    entries = _entries()[:4]
    encode, decode = (
        (encode_offset_index, decode_offset_index)
        if which == "offset"
        else (encode_time_index, decode_time_index)
    )
    good = encode(entries, BASE)
    assert decode(good, BASE) is not None
    for i in range(len(good) * 8):
        damaged = bytearray(good)
        damaged[i // 8] ^= 1 << (i % 8)
        assert decode(bytes(damaged), BASE) is None, f"bit {i}"
    for cut in range(len(good)):
        assert decode(good[:cut], BASE) is None, f"cut at {cut}"
    assert decode(good + b"\x00", BASE) is None


@pytest.mark.parametrize("which", ["offset", "time"])
def test_damaged_index_file_loads_as_none(tmp_path: Path, which: str) -> None:
    store = _store(tmp_path)
    entries = _entries()
    write_indexes(store, SEGMENT, entries, BASE)
    path = index_path(SEGMENT) if which == "offset" else time_index_path(SEGMENT)
    good = store.read(path, 0, store.visible_length(path))
    for damaged in (good[:-1], good[: len(good) // 2], b"", bytes([good[0] ^ 1]) + good[1:]):
        store.write_file(path, damaged)
        assert load_indexes(store, SEGMENT, BASE) is None
    store.write_file(path, good)
    assert load_indexes(store, SEGMENT, BASE) == entries


def test_indexes_that_disagree_load_as_none(tmp_path: Path) -> None:
    store = _store(tmp_path)
    entries = _entries()
    write_indexes(store, SEGMENT, entries, BASE)
    shifted = [IndexEntry(e.offset + 1, e.position, e.max_timestamp) for e in entries]
    store.write_file(time_index_path(SEGMENT), encode_time_index(shifted, BASE))
    assert load_indexes(store, SEGMENT, BASE) is None


def test_well_formed_but_unordered_index_is_refused() -> None:
    swapped = encode_offset_index([IndexEntry(BASE + 5, 500, 0), IndexEntry(BASE, 0, 0)], BASE)
    assert decode_offset_index(swapped, BASE) is None
    backwards = encode_time_index([IndexEntry(BASE, 0, 9), IndexEntry(BASE + 5, 500, 3)], BASE)
    assert decode_time_index(backwards, BASE) is None


def test_index_paths() -> None:
    assert index_path(SEGMENT) == "c/t/0/00000000000000001000.3.index"
    assert time_index_path(SEGMENT) == "c/t/0/00000000000000001000.3.timeindex"
    with pytest.raises(InvalidArgument, match="segment_path"):
        index_path("c/t/0/x.index")
