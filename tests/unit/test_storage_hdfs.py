"""HDFS-only behaviour of the hdfs LogStore, on the session's MiniDFSCluster: what
the conformance suite cannot ask of posix (visible length of an open file, lease
recovery against a killed or paused writer), and its errors."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from talos.errors import InvalidArgument, StorageError, StorageRefused
from talos.storage.hdfs import HdfsLogStore, hadoop_classpath, parse_hdfs_uri
from talos.storage.open import open_store
from talos.storage.posix import PosixLogStore
from talos.storage.store import Durability
from talos.testing.hdfs import MiniDfsCluster, hdfs_available
from talos.testing.zookeeper import free_port

WRITER = Path(__file__).with_name("hdfs_writer.py")


@pytest.fixture
def root(hdfs_cluster: MiniDfsCluster) -> str:
    return hdfs_cluster.url(f"hdfs-only/{uuid.uuid4().hex[:12]}")


@pytest.fixture
def store(root: str) -> Iterator[HdfsLogStore]:
    s = HdfsLogStore(root)
    yield s
    s.close()


@pytest.fixture
def other(root: str) -> Iterator[HdfsLogStore]:
    s = HdfsLogStore(root)
    yield s
    s.close()


class Writer:
    """hdfs_writer.py in a child process: a broker that can be killed or paused."""

    def __init__(self, root: str, path: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), root, path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def append(self, n: int) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"append {n}\n")
        self.proc.stdin.flush()
        return self._line()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def writers() -> Iterator[list[Writer]]:
    started: list[Writer] = []
    yield started
    for w in started:
        w.stop()


def test_visible_length_of_an_open_file_counts_what_was_hflushed(
    store: HdfsLogStore, other: HdfsLogStore
) -> None:
    stream = store.open_append("c/t/0/seg.log")
    stream.append(b"x" * 1000)
    stream.flush(Durability.FLUSH)
    assert not other.is_closed("c/t/0/seg.log")
    # The NameNode counts only completed blocks; the reader asks the DataNodes.
    assert other.visible_length("c/t/0/seg.log") == 1000
    assert other.read("c/t/0/seg.log", 990, 100) == b"x" * 10
    stream.append(b"y" * 10)  # buffered in the client, not yet sent
    assert other.visible_length("c/t/0/seg.log") == 1000
    stream.flush(Durability.SYNC)
    assert other.visible_length("c/t/0/seg.log") == 1010
    assert other.read("c/t/0/seg.log", 1000, 100) == b"y" * 10
    stream.close()
    assert other.is_closed("c/t/0/seg.log")


def test_large_appends_cross_the_staging_buffer(store: HdfsLogStore, other: HdfsLogStore) -> None:
    data = os.urandom((1 << 20) * 2 + 12345)
    stream = store.open_append("big.log")
    stream.append(memoryview(data))
    stream.flush(Durability.FLUSH)
    assert stream.position == len(data)
    assert other.read("big.log", 0, len(data)) == data
    stream.close()


def test_readers_racing_over_few_kept_streams_read_right(root: str, other: HdfsLogStore) -> None:
    """One kept stream for two growing files and three reading threads: streams are
    replaced and closed under readers all the time; every read still returns the right
    bytes (a read on a stream closed under it is retried on one of its own)."""
    store = HdfsLogStore(root, read_streams=1)
    paths = ["race/a.log", "race/b.log"]
    writers = [other.open_append(p) for p in paths]
    for n, out in enumerate(writers):
        out.append(bytes([65 + n]) * 4096)
        out.flush(Durability.FLUSH)
    errors: list[BaseException] = []

    def reader(seed: int) -> None:
        try:
            for i in range(60):
                n = (seed + i) % 2
                end = store.visible_length(paths[n])
                at = (i * 997) % (end - 100)
                assert store.read(paths[n], at, 100) == bytes([65 + n]) * 100
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for _ in range(20):  # the files grow meanwhile
        for n, out in enumerate(writers):
            out.append(bytes([65 + n]) * 512)
            out.flush(Durability.FLUSH)
    for thread in threads:
        thread.join()
    for out in writers:
        out.close()
    store.close()
    assert not errors, errors[0]


def test_read_streams_must_be_a_count(root: str) -> None:
    with pytest.raises(InvalidArgument, match="read_streams"):
        HdfsLogStore(root, read_streams=-1)


def test_exclusive_create_of_an_empty_marker_race(root: str) -> None:
    """Racers for an empty marker: the losers meet the winner's open file (its lease),
    not a closed one, and must still answer False."""
    racers = [HdfsLogStore(root) for _ in range(4)]
    results: list[bool] = []
    barrier = threading.Barrier(len(racers))

    def race(s: HdfsLogStore) -> None:
        barrier.wait()
        results.append(s.create_exclusive("p/seg.log.fenced"))

    threads = [threading.Thread(target=race, args=(s,)) for s in racers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    for s in racers:
        s.close()


def test_recover_lease_after_the_writer_was_killed(
    root: str, store: HdfsLogStore, writers: list[Writer]
) -> None:
    writer = Writer(root, "c/t/0/seg.log")
    writers.append(writer)
    assert writer.append(300) == "ok 300"
    assert writer.append(200) == "ok 500"
    writer.proc.kill()
    writer.proc.wait()
    assert not store.is_closed("c/t/0/seg.log")  # the dead writer still holds the lease

    store.recover_lease("c/t/0/seg.log", timeout_s=60)
    assert store.is_closed("c/t/0/seg.log")
    assert store.visible_length("c/t/0/seg.log") == 500
    assert store.read("c/t/0/seg.log", 0, 1000) == b"a" * 500
    store.recover_lease("c/t/0/seg.log", timeout_s=5)  # a closed file: at once


def test_a_paused_writer_cannot_hflush_after_its_lease_was_recovered(
    root: str, store: HdfsLogStore, writers: list[Writer]
) -> None:
    """The zombie of DESIGN §4: paused during a takeover, resumed after. Its pipeline
    was cut by the NameNode, so its next hflush fails without any marker check."""
    writer = Writer(root, "c/t/0/seg.log")
    writers.append(writer)
    assert writer.append(100) == "ok 100"
    writer.proc.send_signal(signal.SIGSTOP)
    try:
        store.recover_lease("c/t/0/seg.log", timeout_s=60)
    finally:
        writer.proc.send_signal(signal.SIGCONT)
    assert store.is_closed("c/t/0/seg.log")
    reply = writer.append(50)
    assert reply.startswith("failed "), reply
    assert store.visible_length("c/t/0/seg.log") == 100
    assert store.read("c/t/0/seg.log", 0, 1000) == b"a" * 100
    # The stream stays refused afterwards.
    assert writer.append(1).startswith("failed ")


def test_recover_lease_of_a_missing_file_is_a_no_op(store: HdfsLogStore) -> None:
    store.recover_lease("never/written.log", timeout_s=1)


def test_recover_lease_on_posix_is_a_no_op(tmp_path: Path) -> None:
    posix = PosixLogStore(str(tmp_path))
    stream = posix.open_append("a.log")
    posix.recover_lease("a.log", timeout_s=1)
    stream.append(b"still writable")  # posix fences with the marker only
    stream.close()


def test_recover_lease_validates_the_timeout(store: HdfsLogStore) -> None:
    with pytest.raises(InvalidArgument, match="timeout_s"):
        store.recover_lease("a.log", timeout_s=0)
    with pytest.raises(InvalidArgument, match="path"):
        store.recover_lease("../a.log", timeout_s=1)


def test_recover_lease_times_out_with_a_clear_error(
    root: str, hdfs_cluster: MiniDfsCluster
) -> None:
    """A clock that jumps past the deadline after the first attempt: the open file
    of a live writer (whose lease recovery has only begun) is reported, not waited on."""
    ticks = iter([0.0, 100.0, 200.0])
    writer_store = HdfsLogStore(root)
    stream = writer_store.open_append("open.log")
    stream.append(b"z" * 10)
    stream.flush(Durability.FLUSH)
    recovering = HdfsLogStore(root, clock=lambda: next(ticks), sleep=lambda s: None)
    try:
        with pytest.raises(StorageError, match=r"still open after 1\.0s") as info:
            recovering.recover_lease("open.log", timeout_s=1.0)
        assert info.value.retriable
        assert "open.log" in info.value.message
    finally:
        with contextlib.suppress(StorageError):  # its lease may be gone by now
            stream.close()
        recovering.close()
        writer_store.close()


def test_open_append_of_a_file_another_client_writes_is_refused(
    store: HdfsLogStore, other: HdfsLogStore
) -> None:
    stream = store.open_append("seg.log")
    stream.append(b"1")
    stream.flush(Durability.FLUSH)
    with pytest.raises(StorageError, match=r"seg\.log"):
        other.open_append("seg.log", create=False)
    stream.close()


def test_unreachable_namenode_names_the_address() -> None:
    if hdfs_available() is not None:
        pytest.skip(hdfs_available() or "")
    port = free_port()
    dead = HdfsLogStore(f"hdfs://127.0.0.1:{port}/talos")
    started = time.monotonic()
    with pytest.raises(StorageError, match=f"127.0.0.1:{port}") as info:
        dead.check_writable()
    assert "connection refused" in info.value.message
    assert info.value.retriable
    assert not isinstance(info.value, StorageRefused)
    assert time.monotonic() - started < 30
    dead.close()


def test_existing_marker_is_refused_not_retried(store: HdfsLogStore) -> None:
    store.write_file("a/x", b"1")
    with pytest.raises(StorageRefused, match="already exists"):
        store.open_append("a/x")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("hdfs://nn:8020/talos", ("hdfs://nn:8020", "/talos")),
        ("hdfs://nn:8020/talos/", ("hdfs://nn:8020", "/talos")),
        ("hdfs://nameservice1/a/b", ("hdfs://nameservice1", "/a/b")),
        ("hdfs://nn:8020", ("hdfs://nn:8020", "/")),
    ],
)
def test_parse_hdfs_uri(uri: str, expected: tuple[str, str]) -> None:
    assert parse_hdfs_uri(uri) == expected


@pytest.mark.parametrize(
    "bad",
    ["/data/talos", "s3://bucket/x", "hdfs:///talos", "hdfs://nn:port/x", "hdfs://nn/a/../b", 7],
)
def test_parse_hdfs_uri_refuses(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="store"):
        parse_hdfs_uri(bad)


def test_missing_jars_name_the_make_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALOS_HADOOP_JARS", str(tmp_path / "nothing"))
    with pytest.raises(StorageError, match="make hadoop-jars"):
        hadoop_classpath()
    assert "make hadoop-jars" in (hdfs_available() or "")


def test_namenode_in_safe_mode_refuses_writes_retriably(store: HdfsLogStore) -> None:
    store.write_file("before", b"kept")
    action = store.jpype.JClass("org.apache.hadoop.hdfs.protocol.HdfsConstants$SafeModeAction")
    dfs = store._fs
    dfs.setSafeMode(action.SAFEMODE_ENTER)
    try:
        with pytest.raises(StorageError, match="safe mode") as info:
            store.check_writable()
        assert info.value.retriable
        assert store.uri in info.value.message
        with pytest.raises(StorageError, match="safe mode"):
            store.write_file("during", b"x")
        assert store.read("before", 0, 10) == b"kept"  # reads still work
    finally:
        dfs.setSafeMode(action.SAFEMODE_LEAVE)
    assert not store.exists("during")


def test_open_store_picks_the_backend_from_the_uri(tmp_path: Path, root: str) -> None:
    assert isinstance(open_store(str(tmp_path)), PosixLogStore)
    posix = open_store(f"posix:{tmp_path}")
    assert isinstance(posix, PosixLogStore) and posix.root == str(tmp_path)
    hdfs = open_store(root)
    try:
        assert isinstance(hdfs, HdfsLogStore)
        hdfs.write_file("x", b"1")
        assert hdfs.read("x", 0, 1) == b"1"
    finally:
        hdfs.close()
    for bad in ["s3://bucket/x", "", None]:
        with pytest.raises(InvalidArgument, match="store"):
            open_store(bad)


def test_writes_go_on_through_a_stopped_datanode_and_a_restarted_namenode(
    hdfs_cluster: MiniDfsCluster, store: HdfsLogStore, other: HdfsLogStore
) -> None:
    """The chaos harness's HDFS faults, through the launcher's control channel: an open
    segment keeps taking hflushed appends while a DataNode is down and while the
    NameNode is down; readers see all of it once the NameNode is back."""
    out = store.open_append("faults/seg.log")
    out.append(b"a" * 1000)
    out.flush(Durability.FLUSH)
    stopped = hdfs_cluster.stop_datanode(1)
    assert stopped.rsplit(":", 1)[-1].isdigit()  # HOST:PORT of the one stopped
    try:
        out.append(b"b" * 1000)
        out.flush(Durability.FLUSH)  # the pipeline goes on with the other two
        assert other.read("faults/seg.log", 0, 5000) == b"a" * 1000 + b"b" * 1000
    finally:
        hdfs_cluster.restart_datanodes()
    hdfs_cluster.stop_namenode()
    try:
        out.append(b"c" * 1000)
        out.flush(Durability.FLUSH)  # hflush needs the DataNodes only
        with pytest.raises(StorageError, match=r"hdfs visible_length hdfs://"):
            other.visible_length("faults/seg.log")
    finally:
        hdfs_cluster.start_namenode()
    assert other.visible_length("faults/seg.log") == 3000
    other.write_file("faults/after", b"x")  # out of safe mode: creates work again
    out.close()
    assert other.read("faults/seg.log", 2000, 1000) == b"c" * 1000
    with pytest.raises(StorageError, match="unknown command"):
        hdfs_cluster.command("meteor")
