"""The sealed-index cache is an LRU bounded in bytes (issue 12 §4)."""

from __future__ import annotations

import pytest

from talos.errors import InvalidArgument
from talos.storage.index import ENTRY_COST_BYTES, IndexCache, IndexEntry, SparseIndexBuilder


def entries(n: int) -> list[IndexEntry]:
    return [IndexEntry(i, i * 100, i) for i in range(n)]


def test_least_recently_used_goes_first_and_the_bound_holds() -> None:
    cache = IndexCache(max_bytes=30 * ENTRY_COST_BYTES)
    loads: list[str] = []

    def loader(name: str, n: int):  # type: ignore[no-untyped-def]
        def load() -> list[IndexEntry]:
            loads.append(name)
            return entries(n)

        return load

    cache.get(("a", 9, 9), loader("a", 9))
    cache.get(("b", 9, 9), loader("b", 9))
    cache.get(("a", 9, 9), loader("a", 9))  # a hit: "a" is now the most recently used
    cache.get(("c", 9, 9), loader("c", 9))  # 3 x 10 entries' cost: still fits
    cache.get(("d", 9, 9), loader("d", 9))  # over the bound: "b" (least recently used) goes
    assert loads == ["a", "b", "c", "d"]
    assert cache.size_bytes <= cache.max_bytes
    cache.get(("a", 9, 9), loader("a", 9))
    cache.get(("b", 9, 9), loader("b", 9))
    assert loads == ["a", "b", "c", "d", "b"]
    # an index larger than the whole cache is served but not kept
    assert len(cache.get(("huge", 9, 9), loader("huge", 100))) == 100
    assert "huge" in loads and cache.size_bytes <= cache.max_bytes
    cache.drop(("a", 9, 9))
    assert cache.size_bytes == (len(cache)) * 10 * ENTRY_COST_BYTES
    with pytest.raises(InvalidArgument, match="max_bytes"):
        IndexCache(-1)


def test_the_open_segment_index_is_sparse() -> None:
    """One entry per interval of log, however many batches: 10,000 batches of 100 bytes
    in a 4 KiB-interval index make about 250 entries, not 10,000."""
    builder = SparseIndexBuilder()
    for i in range(10_000):
        builder.add(i, i * 100, 100, i)
    assert 240 <= len(builder) <= 260
    assert builder.live_entries[0] == IndexEntry(0, 0, 0)


def test_a_file_of_the_same_name_sealed_at_another_end_is_another_entry() -> None:
    """A topic deleted and created again may reuse a segment's name: its index is not
    the old one's."""
    cache = IndexCache()
    cache.put(("c/t/0/00000000000000000000.1.log", 10, 500), entries(3))
    fresh = cache.get(("c/t/0/00000000000000000000.1.log", 4, 200), lambda: entries(1))
    assert len(fresh) == 1
