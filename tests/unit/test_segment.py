from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from talos.errors import CorruptBatch, InvalidArgument
from talos.record.batch import HEADER_SIZE, Record, encode_batch, iter_batches
from talos.storage.index import IndexEntry, SparseIndexBuilder
from talos.storage.posix import PosixLogStore
from talos.storage.segment import (
    ScanResult,
    fence_marker_path,
    find_position,
    find_time_position,
    parse_segment_name,
    partition_dir,
    read_batches,
    scan_segment,
    segment_name,
    segment_path,
    should_roll,
)
from talos.storage.store import Durability

BASE = 500
PATH = "c/t/i1/0/00000000000000000500.2.log"


@pytest.fixture
def store(tmp_path: Path) -> PosixLogStore:
    return PosixLogStore(str(tmp_path / "store"))


def make_batches(sizes: list[int], base: int = BASE, ts: int = 1_000) -> list[bytes]:
    """Consecutive batches; batch i holds sizes[i] records with growing timestamps."""
    out = []
    offset = base
    for i, count in enumerate(sizes):
        records = [
            Record(f"v{offset + j}".encode() * (1 + i % 3), timestamp_ms=ts + 10 * i + j)
            for j in range(count)
        ]
        out.append(encode_batch(records, base_offset=offset))
        offset += count
    return out


def write(store: PosixLogStore, data: bytes, path: str = PATH) -> None:
    stream = store.open_append(path)
    stream.append(data)
    stream.flush(Durability.FLUSH)
    stream.close()


def expected_scan(batches: list[bytes], base: int = BASE) -> ScanResult:
    """What a scan must find, computed from the batches as written."""
    builder = SparseIndexBuilder()
    data = b"".join(batches)
    headers = list(iter_batches(data))
    assert len(headers) == len(batches)
    for pos, h in headers:
        builder.add(h.base_offset, pos, h.total_size, h.max_timestamp)
    return ScanResult(
        valid_bytes=len(data),
        next_offset=headers[-1][1].next_offset if headers else base,
        batch_count=len(headers),
        max_timestamp=max((h.max_timestamp for _, h in headers), default=-1),
        entries=builder.entries,
    )


# --- names and paths ----------------------------------------------------------------------


def test_segment_name_layout() -> None:
    assert segment_name(500, 2) == "00000000000000000500.2.log"
    assert segment_path("c", "t", 0, 500, 2, incarnation="i1") == PATH
    assert partition_dir("dc1", "orders.v2", 17, incarnation="ab12") == "dc1/orders.v2/ab12/17"
    assert fence_marker_path(PATH) == PATH + ".fenced"


offsets = st.integers(0, 2**63 - 1)


@given(offsets, offsets, offsets)
def test_segment_names_round_trip_and_sort_by_offset(base: int, epoch: int, other: int) -> None:
    name = segment_name(base, epoch)
    assert parse_segment_name(name) == (base, epoch)
    assert (segment_name(base, 9) < segment_name(other, 0)) == (base < other)


@pytest.mark.parametrize(
    "name",
    [
        "00000000000000000500.2.log.fenced",
        "00000000000000000500.2.index",
        "00000000000000000500.2.timeindex",
        "500.2.log",
        "00000000000000000500.02.log",  # not canonical
        "00000000000000000500.log",
        "0000000000000000050a.2.log",
        "99999999999999999999.0.log",  # beyond the largest offset
        ".talos-tmp-abc",
        "",
    ],
)
def test_parse_segment_name_rejects_other_files(name: str) -> None:
    assert parse_segment_name(name) is None


def test_name_validation() -> None:
    with pytest.raises(InvalidArgument, match="base_offset"):
        segment_name(-1, 0)
    with pytest.raises(InvalidArgument, match="epoch"):
        segment_name(0, -1)
    with pytest.raises(InvalidArgument, match="partition"):
        partition_dir("c", "t", -1, incarnation="i1")
    with pytest.raises(InvalidArgument, match="topic"):
        partition_dir("c", "a/b", 0, incarnation="i1")
    with pytest.raises(InvalidArgument, match="cluster"):
        partition_dir("..", "t", 0, incarnation="i1")
    with pytest.raises(InvalidArgument, match="incarnation"):
        partition_dir("c", "t", 0, incarnation="../x")
    with pytest.raises(InvalidArgument, match="segment_path"):
        fence_marker_path("c/t/0/x.index")


# --- scan -----------------------------------------------------------------------------------


def test_scan_empty_file(store: PosixLogStore) -> None:
    write(store, b"")
    assert scan_segment(store, PATH, BASE) == ScanResult(0, BASE, 0, -1, [])


def test_scan_good_batches(store: PosixLogStore) -> None:
    batches = make_batches([1, 5, 3, 40, 2, 7] * 20)
    write(store, b"".join(batches))
    result = scan_segment(store, PATH, BASE)
    assert result == expected_scan(batches)
    assert result.next_offset == BASE + sum([1, 5, 3, 40, 2, 7] * 20)
    assert len(result.entries) > 1  # more than 4 KiB of log


def test_scan_every_truncation_of_the_last_batch(store: PosixLogStore) -> None:
    batches = make_batches([3, 4, 5])
    good = b"".join(batches[:-1])
    want = expected_scan(batches[:-1])
    for cut in range(len(batches[-1])):
        path = f"c/t/0/{segment_name(BASE, cut)}"
        write(store, good + batches[-1][:cut], path)
        assert scan_segment(store, path, BASE, chunk_bytes=64) == want, f"cut at {cut}"


@pytest.mark.parametrize("where", ["header", "crc", "records", "last byte"])
def test_scan_stops_at_a_bit_flip(store: PosixLogStore, where: str) -> None:
    batches = make_batches([2] * 10)
    data = bytearray(b"".join(batches))
    start = sum(len(b) for b in batches[:4])  # damage batch 4 of 10
    index = {
        "header": start + 25,  # inside first_timestamp
        "crc": start + 14,
        "records": start + HEADER_SIZE + 3,
        "last byte": start + len(batches[4]) - 1,
    }[where]
    data[index] ^= 0x10
    write(store, bytes(data))
    assert scan_segment(store, PATH, BASE) == expected_scan(batches[:4])


def test_scan_stops_at_a_damaged_length_field(store: PosixLogStore) -> None:
    batches = make_batches([2] * 6)
    data = bytearray(b"".join(batches))
    start = sum(len(b) for b in batches[:3])
    data[start + 12] ^= 0x40  # batch_length now points far past the end of the file
    write(store, bytes(data))
    assert scan_segment(store, PATH, BASE, chunk_bytes=100) == expected_scan(batches[:3])


@pytest.mark.parametrize("chunk", [1, 7, HEADER_SIZE - 1, HEADER_SIZE, 100, 333, 4096])
def test_scan_with_batches_spanning_chunks(store: PosixLogStore, chunk: int) -> None:
    batches = make_batches([1, 30, 2, 60, 1, 5])  # some batches far larger than the chunk
    tail = make_batches([3], base=BASE + 99)[0][:-5]  # and a torn tail
    write(store, b"".join(batches) + tail)
    assert scan_segment(store, PATH, BASE, chunk_bytes=chunk) == expected_scan(batches)


def test_scan_stops_at_an_offset_gap(store: PosixLogStore) -> None:
    batches = make_batches([2, 3])
    after_gap = make_batches([4], base=BASE + 5 + 1)  # skips offset 505
    write(store, b"".join(batches + after_gap))
    assert scan_segment(store, PATH, BASE) == expected_scan(batches)


def test_scan_stops_at_an_offset_going_back(store: PosixLogStore) -> None:
    batches = make_batches([2, 3])
    write(store, b"".join([*batches, *make_batches([1], base=BASE + 4)]))
    assert scan_segment(store, PATH, BASE) == expected_scan(batches)


def test_scan_first_batch_must_start_at_the_segment_base(store: PosixLogStore) -> None:
    write(store, b"".join(make_batches([2, 3], base=BASE + 1)))
    assert scan_segment(store, PATH, BASE) == ScanResult(0, BASE, 0, -1, [])


def test_scan_keeps_negative_timestamps(store: PosixLogStore) -> None:
    batches = make_batches([2, 3], ts=-500)
    write(store, b"".join(batches))
    result = scan_segment(store, PATH, BASE)
    assert result.max_timestamp == -500 + 10 + 2
    assert result == expected_scan(batches)


def test_scan_garbage(store: PosixLogStore) -> None:
    write(store, bytes(range(256)) * 10)
    assert scan_segment(store, PATH, BASE, chunk_bytes=50) == ScanResult(0, BASE, 0, -1, [])


def test_scan_argument_checks(store: PosixLogStore) -> None:
    write(store, b"")
    with pytest.raises(InvalidArgument, match="chunk_bytes"):
        scan_segment(store, PATH, BASE, chunk_bytes=0)
    with pytest.raises(InvalidArgument, match="base_offset"):
        scan_segment(store, PATH, -1)


# --- roll -----------------------------------------------------------------------------------


def test_should_roll() -> None:
    assert not should_roll(0, 0, 1000, 60_000)
    assert not should_roll(999, 59_999, 1000, 60_000)
    assert should_roll(1000, 0, 1000, 60_000)
    assert should_roll(1, 60_000, 1000, 60_000)
    assert not should_roll(0, 10**9, 1000, 60_000)  # never roll an empty segment by age
    with pytest.raises(InvalidArgument, match="segment_bytes"):
        should_roll(0, 0, 0, 1)
    with pytest.raises(InvalidArgument, match="segment_ms"):
        should_roll(0, 0, 1, 0)
    with pytest.raises(InvalidArgument, match="size_bytes"):
        should_roll(-1, 0, 1, 1)


# --- reads ----------------------------------------------------------------------------------


@pytest.fixture
def laid_out(store: PosixLogStore) -> tuple[list[bytes], list[int]]:
    """Batches written to PATH and the byte position where each starts (plus the end)."""
    batches = make_batches([1, 3, 20, 2, 2, 50, 1, 4])
    write(store, b"".join(batches))
    bounds = [0]
    for b in batches:
        bounds.append(bounds[-1] + len(b))
    return batches, bounds


def test_read_batches_returns_whole_batches_within_max_bytes(
    store: PosixLogStore, laid_out: tuple[list[bytes], list[int]]
) -> None:
    batches, bounds = laid_out
    end = bounds[-1]
    for i, start in enumerate(bounds[:-1]):
        for max_bytes in range(1, end - start + 20, 13):
            got = read_batches(store, PATH, start, max_bytes, end)
            fitting = [j for j in range(i, len(batches)) if bounds[j + 1] - start <= max_bytes]
            last = fitting[-1] if fitting else i  # at least one batch, even if too large
            assert got == b"".join(batches[i : last + 1]), (start, max_bytes)


def test_read_batches_never_passes_the_limit(
    store: PosixLogStore, laid_out: tuple[list[bytes], list[int]]
) -> None:
    batches, bounds = laid_out
    assert read_batches(store, PATH, 0, 1 << 20, bounds[3]) == b"".join(batches[:3])
    assert read_batches(store, PATH, bounds[3], 1 << 20, bounds[3]) == b""
    assert read_batches(store, PATH, bounds[5], 1 << 20, bounds[6]) == batches[5]


def test_read_batches_limit_inside_a_batch_is_corruption(
    store: PosixLogStore, laid_out: tuple[list[bytes], list[int]]
) -> None:
    _, bounds = laid_out
    with pytest.raises(CorruptBatch, match="limit"):
        read_batches(store, PATH, bounds[2], 1 << 20, bounds[3] - 1)
    with pytest.raises(CorruptBatch):
        read_batches(store, PATH, bounds[2], 1, bounds[2] + 10)


def test_read_batches_beyond_the_file_is_corruption(
    store: PosixLogStore, laid_out: tuple[list[bytes], list[int]]
) -> None:
    _, bounds = laid_out
    with pytest.raises(CorruptBatch):
        read_batches(store, PATH, bounds[-1], 1 << 20, bounds[-1] + 500)


def test_read_batches_from_a_non_boundary_is_corruption(
    store: PosixLogStore, laid_out: tuple[list[bytes], list[int]]
) -> None:
    _, bounds = laid_out
    with pytest.raises(CorruptBatch):
        read_batches(store, PATH, bounds[1] + 3, 1 << 20, bounds[-1])


def test_paging_through_read_batches_returns_the_log(
    store: PosixLogStore, laid_out: tuple[list[bytes], list[int]]
) -> None:
    batches, bounds = laid_out
    out = b""
    pos = 0
    while pos < bounds[-1]:
        chunk = read_batches(store, PATH, pos, 300, bounds[-1])
        assert chunk
        out += chunk
        pos += len(chunk)
    assert out == b"".join(batches)


def test_read_batches_argument_checks(store: PosixLogStore) -> None:
    write(store, b"")
    with pytest.raises(InvalidArgument, match="max_bytes"):
        read_batches(store, PATH, 0, 0, 10)
    with pytest.raises(InvalidArgument, match="position"):
        read_batches(store, PATH, -1, 10, 10)


# --- seeks ----------------------------------------------------------------------------------


def test_find_position_against_every_offset(store: PosixLogStore) -> None:
    sizes = [1, 3, 20, 2, 2, 50, 1, 4] * 30
    batches = make_batches(sizes)
    write(store, b"".join(batches))
    result = scan_segment(store, PATH, BASE)
    assert len(result.entries) > 3
    starts, pos, offset = [], 0, BASE
    for count, batch in zip(sizes, batches, strict=True):
        starts.append((offset, offset + count, pos))
        offset += count
        pos += len(batch)
    end = result.valid_bytes
    index_choices: list[list[IndexEntry]] = [result.entries, [], result.entries[:1]]
    for entries in index_choices:
        for first, after, position in starts[::7]:
            for target in (first, after - 1):
                assert find_position(store, PATH, entries, target, end) == position
        assert find_position(store, PATH, entries, BASE - 3, end) == 0
        assert find_position(store, PATH, entries, result.next_offset, end) == end


def test_find_time_position_against_brute_force(store: PosixLogStore) -> None:
    # Timestamps that go back and forth between batches, as clocks of producers do.
    stamps = [50, 20, 90, 90, 10, 300, 120, 310, 5, 400] * 20
    batches = [
        encode_batch([Record(b"x" * 200, timestamp_ms=ts)] * 3, base_offset=BASE + 3 * i)
        for i, ts in enumerate(stamps)
    ]
    write(store, b"".join(batches))
    result = scan_segment(store, PATH, BASE)
    assert len(result.entries) > 3
    positions = [sum(len(b) for b in batches[:i]) for i in range(len(batches))]
    for target in [0, 5, 6, 20, 21, 90, 91, 300, 310, 311, 400, 401]:
        hit = next((i for i, ts in enumerate(stamps) if ts >= target), None)
        want = None if hit is None else (positions[hit], BASE + 3 * hit)
        for entries in (result.entries, []):
            got = find_time_position(store, PATH, entries, target, result.valid_bytes)
            assert got == want, target
