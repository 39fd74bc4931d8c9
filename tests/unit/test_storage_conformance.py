"""One conformance suite for every LogStore backend.

A backend joins by adding a param to the ``backend`` fixture: a factory that opens
a new store instance on one shared root (each instance plays another broker), and
one that opens a store on a root that cannot be written.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from talos.errors import InvalidArgument, StorageError
from talos.storage.posix import PosixLogStore
from talos.storage.store import Durability, LogStore


@dataclass
class Backend:
    name: str
    open: Callable[[], LogStore]
    open_unwritable: Callable[[], LogStore]


def _posix(tmp_path: Path) -> Backend:
    root = tmp_path / "store"

    def unwritable() -> LogStore:
        # A regular file where the root directory should be: mkdir fails even for root,
        # which chmod cannot restrict.
        blocker = tmp_path / "blocker"
        blocker.write_bytes(b"not a directory")
        return PosixLogStore(str(blocker))

    return Backend("posix", lambda: PosixLogStore(str(root)), unwritable)


def _hdfs(request: pytest.FixtureRequest) -> Backend:
    """A fresh root on the session's MiniDFSCluster; stores are closed after the test."""
    from talos.storage.hdfs import HdfsLogStore

    dfs = request.getfixturevalue("hdfs_cluster")
    root = dfs.url(f"conformance/{uuid.uuid4().hex[:12]}")
    opened: list[HdfsLogStore] = []

    def open_store(uri: str = root) -> LogStore:
        store = HdfsLogStore(uri)
        opened.append(store)
        return store

    def unwritable() -> LogStore:
        # A file where the root directory should be.
        blocker = open_store(dfs.url("/"))
        blocker.write_file(f"conformance/blocker-{uuid.uuid4().hex[:8]}", b"not a directory")
        name = [n for n in blocker.list_dir("conformance") if n.startswith("blocker-")][-1]
        return open_store(dfs.url(f"conformance/{name}"))

    def close_all() -> None:
        for store in opened:
            store.close()

    request.addfinalizer(close_all)
    return Backend("hdfs", open_store, unwritable)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Backend]] = {
    "posix": lambda request, tmp_path: _posix(tmp_path),
    "hdfs": lambda request, tmp_path: _hdfs(request),
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    factory = BACKENDS[request.param]
    return factory(request, tmp_path)


@pytest.fixture
def store(backend: Backend) -> LogStore:
    return backend.open()


@pytest.fixture
def other(backend: Backend) -> LogStore:
    """A second instance on the same root: another broker."""
    return backend.open()


def _read_all(store: LogStore, path: str) -> bytes:
    return store.read(path, 0, store.visible_length(path))


@pytest.mark.parametrize("durability", list(Durability))
def test_flushed_appends_are_visible_to_another_instance(
    store: LogStore, other: LogStore, durability: Durability
) -> None:
    stream = store.open_append("c/t/0/seg.log")
    assert stream.position == 0
    stream.append(b"hello ")
    stream.flush(durability)
    assert stream.position == 6
    assert other.visible_length("c/t/0/seg.log") == 6
    assert other.read("c/t/0/seg.log", 0, 100) == b"hello "

    stream.append(memoryview(b"world"))
    stream.flush(durability)
    assert stream.position == 11
    assert other.visible_length("c/t/0/seg.log") == 11
    assert other.read("c/t/0/seg.log", 6, 5) == b"world"
    stream.close()


def test_durability_levels_parse_from_config_strings() -> None:
    assert Durability("flush") is Durability.FLUSH
    assert Durability("sync") is Durability.SYNC


def test_reopen_appends_at_end(store: LogStore, other: LogStore) -> None:
    first = store.open_append("p/seg.log")
    first.append(b"abc")
    first.flush(Durability.SYNC)
    first.close()

    again = other.open_append("p/seg.log", create=False)
    assert again.position == 3
    again.append(b"def")
    again.flush(Durability.FLUSH)
    assert again.position == 6
    again.close()
    assert _read_all(store, "p/seg.log") == b"abcdef"


def test_open_append_create_refuses_an_existing_file(store: LogStore, other: LogStore) -> None:
    store.open_append("p/seg.log").close()
    with pytest.raises(StorageError, match=re.escape("p/seg.log")):
        other.open_append("p/seg.log", create=True)


def test_open_append_existing_refuses_a_missing_file(store: LogStore) -> None:
    with pytest.raises(StorageError, match=re.escape("p/missing.log")):
        store.open_append("p/missing.log", create=False)
    assert not store.exists("p/missing.log")


def test_closed_stream_refuses_appends(store: LogStore) -> None:
    stream = store.open_append("p/seg.log")
    stream.close()
    stream.close()  # idempotent
    with pytest.raises(StorageError):
        stream.append(b"x")
    with pytest.raises(StorageError):
        stream.flush(Durability.SYNC)


def test_create_exclusive_true_then_false(store: LogStore, other: LogStore) -> None:
    assert store.create_exclusive("p/seg.log.fenced") is True
    assert store.create_exclusive("p/seg.log.fenced") is False  # retry: already there
    assert other.create_exclusive("p/seg.log.fenced") is False  # another broker
    assert store.exists("p/seg.log.fenced")
    assert _read_all(other, "p/seg.log.fenced") == b""


def test_create_exclusive_keeps_the_first_content(store: LogStore, other: LogStore) -> None:
    assert store.create_exclusive("p/claim", b"broker-1") is True
    assert other.create_exclusive("p/claim", b"broker-2") is False
    assert _read_all(other, "p/claim") == b"broker-1"


def test_create_exclusive_race_has_one_winner(backend: Backend) -> None:
    stores = [backend.open() for _ in range(8)]
    results: dict[int, bool] = {}
    start = threading.Barrier(len(stores))

    def contend(i: int) -> None:
        start.wait()
        results[i] = stores[i].create_exclusive("race/marker", f"broker-{i}".encode())

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, won in results.items() if won]
    assert len(results) == len(stores)
    assert len(winners) == 1
    assert _read_all(stores[0], "race/marker") == f"broker-{winners[0]}".encode()
    assert stores[0].list_dir("race") == ["marker"]


def test_exists(store: LogStore) -> None:
    assert not store.exists("a/b.log")
    store.write_file("a/b.log", b"x")
    assert store.exists("a/b.log")
    assert not store.exists("a/b.log/below")
    assert not store.exists("a/c.log")


def test_list_dir_is_sorted_and_empty_when_missing(store: LogStore) -> None:
    assert store.list_dir("c/t/0") == []
    for name in ["00000000000000000010.1.log", "00000000000000000000.0.log", "b", "a.index"]:
        store.write_file(f"c/t/0/{name}", b"")
    assert store.list_dir("c/t/0") == [
        "00000000000000000000.0.log",
        "00000000000000000010.1.log",
        "a.index",
        "b",
    ]
    assert store.list_dir("c/t") == ["0"]
    assert store.list_dir("") == ["c"]
    assert store.list_dir("c/t/0/b") == []  # a file, not a directory


def test_write_file_replaces_atomically(store: LogStore, other: LogStore) -> None:
    store.write_file("c/t/0/seg.index", b"old content")
    store.write_file("c/t/0/seg.index", b"new")
    assert _read_all(other, "c/t/0/seg.index") == b"new"
    assert other.list_dir("c/t/0") == ["seg.index"]  # no temporary left behind


def test_rename(store: LogStore, other: LogStore) -> None:
    store.write_file("a/one", b"1")
    store.rename("a/one", "b/c/two")
    assert not other.exists("a/one")
    assert _read_all(other, "b/c/two") == b"1"
    store.write_file("a/three", b"3")
    store.rename("a/three", "b/c/two")  # replaces
    assert _read_all(other, "b/c/two") == b"3"
    with pytest.raises(StorageError, match="missing"):
        store.rename("a/missing", "a/x")


def test_delete_and_missing_is_fine(store: LogStore) -> None:
    store.write_file("a/x", b"x")
    store.delete("a/x")
    assert not store.exists("a/x")
    store.delete("a/x")
    store.delete("never/was")


def test_delete_tree(store: LogStore) -> None:
    for path in ["c/t/0/a.log", "c/t/1/b.log", "c/u/0/c.log"]:
        store.write_file(path, b"data")
    store.delete_tree("c/t")
    assert store.list_dir("c") == ["u"]
    assert not store.exists("c/t/0/a.log")
    assert store.exists("c/u/0/c.log")
    store.delete_tree("c/t")  # missing is fine


def test_read_past_end_is_short(store: LogStore) -> None:
    store.write_file("a/x", b"0123456789")
    assert store.read("a/x", 0, 10) == b"0123456789"
    assert store.read("a/x", 4, 100) == b"456789"
    assert store.read("a/x", 10, 5) == b""
    assert store.read("a/x", 50, 5) == b""
    assert store.read("a/x", 3, 0) == b""


def test_missing_file_reads_fail(store: LogStore) -> None:
    with pytest.raises(StorageError, match="nothing"):
        store.read("a/nothing", 0, 1)
    with pytest.raises(StorageError, match="nothing"):
        store.visible_length("a/nothing")


BAD_PATHS = ["/etc/passwd", "../outside", "a/../../b", "a/./b", "a//b", "", "a/"]


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_path_validation(store: LogStore, bad: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.open_append(bad),
        lambda: store.visible_length(bad),
        lambda: store.read(bad, 0, 1),
        lambda: store.create_exclusive(bad),
        lambda: store.exists(bad),
        lambda: store.write_file(bad, b""),
        lambda: store.delete(bad),
        lambda: store.delete_tree(bad),
    ]
    if bad:  # the empty path names the root, which list_dir may list
        calls.append(lambda: store.list_dir(bad))
    for call in calls:
        with pytest.raises(InvalidArgument, match="path"):
            call()
    with pytest.raises(InvalidArgument, match="src"):
        store.rename(bad, "ok")
    with pytest.raises(InvalidArgument, match="dst"):
        store.rename("ok", bad)


def test_read_range_validation(store: LogStore) -> None:
    store.write_file("a/x", b"abc")
    with pytest.raises(InvalidArgument, match="position"):
        store.read("a/x", -1, 1)
    with pytest.raises(InvalidArgument, match="length"):
        store.read("a/x", 0, -1)


def test_check_writable_on_a_fresh_root(store: LogStore) -> None:
    store.check_writable()
    assert store.list_dir("") == []  # the probe leaves nothing behind


def test_unwritable_root(backend: Backend) -> None:
    bad = backend.open_unwritable()
    with pytest.raises(StorageError) as info:
        bad.check_writable()
    assert "root" in info.value.message
    with pytest.raises(StorageError):
        bad.open_append("c/t/0/seg.log")
    with pytest.raises(StorageError):
        bad.create_exclusive("c/t/0/seg.log.fenced")


# Posix-only behaviour below: what the other backends cannot be made to do from a test.


def test_posix_read_only_directory(tmp_path: Path) -> None:
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o500)
    try:
        probe_ok = os.access(root, os.W_OK)
        if probe_ok:
            pytest.skip("running as root: chmod 0o500 does not restrict writes")
        store = PosixLogStore(str(root))
        with pytest.raises(StorageError, match=re.escape(str(root))):
            store.check_writable()
        with pytest.raises(StorageError, match="Permission denied"):
            store.open_append("c/t/0/seg.log")
    finally:
        root.chmod(0o700)


def test_posix_failed_write_poisons_the_stream(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / "full.log").symlink_to("/dev/full")  # every write fails with ENOSPC
    store = PosixLogStore(str(root))
    stream = store.open_append("full.log", create=False)
    with pytest.raises(StorageError, match="No space left"):
        stream.append(b"batch")
    assert stream.position == 0
    with pytest.raises(StorageError, match="unusable"):
        stream.append(b"next")
    with pytest.raises(StorageError, match="unusable"):
        stream.flush(Durability.FLUSH)
    stream.close()


def test_posix_root_names_in_errors(tmp_path: Path) -> None:
    store = PosixLogStore(str(tmp_path / "store"))
    with pytest.raises(StorageError, match=re.escape(str(tmp_path / "store" / "a" / "x"))):
        store.read("a/x", 0, 1)


def test_a_reader_sees_a_growing_file_grow(store: LogStore, other: LogStore) -> None:
    """Reads below a length seen before and reads past it (a reader may keep streams)."""
    stream = other.open_append("c/t/0/grow.log")
    stream.append(b"a" * 100)
    stream.flush(Durability.FLUSH)
    assert store.visible_length("c/t/0/grow.log") == 100
    assert store.read("c/t/0/grow.log", 0, 100) == b"a" * 100
    stream.append(b"b" * 50)
    stream.flush(Durability.FLUSH)
    assert store.read("c/t/0/grow.log", 90, 20) == b"a" * 10 + b"b" * 10  # past 100
    assert store.read("c/t/0/grow.log", 0, 1000) == b"a" * 100 + b"b" * 50
    stream.append(b"c" * 10)
    stream.flush(Durability.FLUSH)
    assert store.visible_length("c/t/0/grow.log") == 160
    assert store.read("c/t/0/grow.log", 150, 10) == b"c" * 10
    stream.close()


def test_reads_follow_this_stores_rewrites_and_deletes(store: LogStore) -> None:
    store.write_file("a/x", b"first content")
    assert store.read("a/x", 0, 5) == b"first"
    store.write_file("a/x", b"other content")
    assert store.read("a/x", 0, 5) == b"other"
    store.rename("a/x", "a/y")
    store.write_file("a/x", b"third")
    assert store.read("a/x", 0, 5) == b"third"
    assert store.read("a/y", 0, 5) == b"other"
    store.delete("a/x")
    with pytest.raises(StorageError):
        store.read("a/x", 0, 5)
    store.delete_tree("a")
    with pytest.raises(StorageError):
        store.read("a/y", 0, 5)


def test_a_rewrite_by_another_instance_is_seen_after_its_length(
    store: LogStore, other: LogStore
) -> None:
    """Whole-file rewrites (indexes, snapshots) are read after visible_length, which
    always asks the store anew."""
    store.write_file("a/idx", b"old-old-old")
    assert _read_all(store, "a/idx") == b"old-old-old"
    other.write_file("a/idx", b"new-new-new-new")
    assert _read_all(store, "a/idx") == b"new-new-new-new"
    other.write_file("a/idx", b"short")
    assert _read_all(store, "a/idx") == b"short"
