"""`talos export parquet` against a real cluster, read back with pyarrow."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from talos.client import Admin, Consumer, Producer, TopicPartition
from talos.export.parquet import Row, export_parquet, table_rows
from talos.export.plan import Bound, temp_name
from talos.storage.posix import TMP_PREFIX
from talos.testing.cluster import LocalCluster

pytestmark = pytest.mark.integration

BASE_TS = 1_700_000_000_000


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "talos", *args], capture_output=True, text=True, timeout=120
    )


def produce(bootstrap: str, topic: str, partitions: int, per_partition: int, first: int) -> None:
    """Messages numbered from ``first`` with keys, empty and null values, headers, timestamps."""
    with Producer(bootstrap, linger_ms=5) as producer:
        futures = []
        for p in range(partitions):
            for i in range(first, first + per_partition):
                futures.append(
                    producer.send(
                        topic,
                        None if i % 7 == 0 else f"p{p}-m{i}".encode() * (i % 4),
                        key=None if i % 3 == 0 else f"k{i}".encode(),
                        partition=p,
                        headers=[("n", str(i).encode()), ("none", None)] if i % 2 else [],
                        timestamp_ms=BASE_TS + i * 1000,
                    )
                )
        producer.flush()
        for future in futures:
            future.result(timeout=30)


def topic_rows(bootstrap: str, topic: str, partitions: int) -> list[Row]:
    """Every message in the topic, as the consumer sees it, in offset order per partition."""
    out: list[Row] = []
    with Consumer(bootstrap, auto_offset_reset="earliest") as consumer:
        for p in range(partitions):
            tp = TopicPartition(topic, p)
            consumer.assign([tp])
            consumer.seek_to_end([tp])
            end = consumer.position(tp)
            consumer.seek(tp, 0)
            while consumer.position(tp) < end:
                out += [
                    (m.partition, m.offset, m.timestamp_ms, m.key, m.value, m.headers)
                    for m in consumer.poll(timeout_s=1.0)
                    if m.offset < end
                ]
    return out


def file_rows(path: Path) -> list[Row]:
    table = ds.dataset(str(path), format="parquet").to_table()
    return sorted(table_rows(table), key=lambda r: (r[0], r[1]))


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    with Admin(bootstrap) as admin:
        admin.create_topic(topic, partitions)
        admin.wait_until_ready(topic)


def test_export_reads_back_equal_and_a_rerun_adds_exactly_the_new_messages(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    bootstrap, out = cluster.bootstrap, tmp_path / "export"
    create_topic(bootstrap, "events", 3)
    produce(bootstrap, "events", 3, 40, first=0)

    first = run_cli("export", "parquet", "events", "--to", str(out), "--bootstrap", bootstrap)
    assert first.returncode == 0, first.stderr
    assert "100.0%" in first.stderr  # the progress bar reached the end
    assert sorted(p.name for p in out.iterdir()) == ["_talos_export.json", "part-00000.parquet"]
    before = topic_rows(bootstrap, "events", 3)
    assert len(before) == 120
    assert file_rows(out) == before
    # offset order per partition inside the file itself
    table = pq.read_table(out / "part-00000.parquet").to_pylist()
    for p in range(3):
        offsets = [r["offset"] for r in table if r["partition"] == p]
        assert offsets == list(range(40))

    produce(bootstrap, "events", 3, 15, first=40)
    second = run_cli(
        "export", "parquet", "events", "--to", str(out), "--bootstrap", bootstrap, "--json"
    )
    assert second.returncode == 0, second.stderr
    result = json.loads(second.stdout)
    assert result["rows"] == 45
    assert result["ranges"] == {str(p): [[40, 55]] for p in range(3)}
    after = topic_rows(bootstrap, "events", 3)
    added = file_rows(out / result["file"])
    assert added == [r for r in after if r[1] >= 40]
    assert file_rows(out) == after  # the whole directory: no duplicates, nothing missing

    third = run_cli("export", "parquet", "events", "--to", str(out), "--bootstrap", bootstrap)
    assert third.returncode == 0, third.stderr
    assert "nothing new" in third.stdout
    assert len(list(out.glob("part-*.parquet"))) == 2

    # a window by offsets and times, into a fresh directory, with small row groups
    window = tmp_path / "window"
    done = export_parquet(
        bootstrap,
        "events",
        str(window),
        partitions="1-2",
        start=Bound(time_ms=BASE_TS + 10_000),
        stop=Bound(offset=30),
        row_group_bytes=200,
    )
    assert done.ranges == {1: ((10, 30),), 2: ((10, 30),)}
    assert file_rows(window) == [r for r in after if r[0] in (1, 2) and 10 <= r[1] < 30]
    assert pq.ParquetFile(window / str(done.file)).metadata.num_row_groups > 1
    # everything else of those partitions: two ranges each, around the window
    rest = export_parquet(bootstrap, "events", str(window), partitions="1-2")
    assert rest.ranges == {p: ((0, 10), (30, 55)) for p in (1, 2)}
    assert file_rows(window) == [r for r in after if r[0] in (1, 2)]


def test_bad_input_gives_a_clear_error_and_leaves_no_file(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    bootstrap = cluster.bootstrap
    create_topic(bootstrap, "small", 1)
    produce(bootstrap, "small", 1, 5, first=0)
    base = ("export", "parquet", "--bootstrap", bootstrap, "--no-progress")

    out = tmp_path / "unknown"
    unknown = run_cli(*base, "no-such-topic", "--to", str(out))
    assert unknown.returncode == 1
    assert "no-such-topic" in unknown.stderr and "does not exist" in unknown.stderr
    assert not out.exists()

    out = tmp_path / "range"
    for flag, value in (("--from-offset", "6"), ("--to-offset", "9")):
        outside = run_cli(*base, "small", "--to", str(out), flag, value)
        assert outside.returncode == 2
        assert f"{flag}: {value} is outside the log" in outside.stderr
        assert "[0, 5)" in outside.stderr
        assert "Traceback" not in outside.stderr
    assert not out.exists()

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    unwritable = run_cli(*base, "small", "--to", str(blocker / "out"))
    assert unwritable.returncode == 1
    assert f"--to: cannot write to {blocker / 'out'}" in unwritable.stderr
    assert "Traceback" not in unwritable.stderr
    assert blocker.read_text() == "not a directory"

    bad_partition = run_cli(*base, "small", "--to", str(tmp_path / "p"), "--partitions", "1")
    assert bad_partition.returncode == 2
    assert "--partitions: '1' is out of range" in bad_partition.stderr

    other = tmp_path / "other"
    assert run_cli(*base, "small", "--to", str(other)).returncode == 0
    create_topic(bootstrap, "small2", 1)
    mixed = run_cli(*base, "small2", "--to", str(other))
    assert mixed.returncode == 2
    assert "holds an export of topic 'small'" in mixed.stderr


def test_export_to_hdfs_through_the_hdfs_store(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The same export with an hdfs:// destination (a real MiniDFSCluster), read back
    through the HDFS store; a rerun adds exactly the new messages there too."""
    try:
        dfs = request.getfixturevalue("hdfs_cluster")
    except pytest.FixtureLookupError:
        pytest.skip("needs the HDFS store and its hdfs_cluster fixture (issue 10, branch hdfs)")
    from talos.export.destination import open_destination

    cluster: LocalCluster = request.getfixturevalue("cluster")
    bootstrap, uri = cluster.bootstrap, dfs.url(f"exports/{uuid.uuid4().hex[:8]}")
    create_topic(bootstrap, "landed", 2)
    produce(bootstrap, "landed", 2, 30, first=0)
    assert export_parquet(bootstrap, "landed", uri).rows == 60
    produce(bootstrap, "landed", 2, 5, first=30)
    again = export_parquet(bootstrap, "landed", uri)
    assert again.rows == 10 and again.ranges == {0: ((30, 35),), 1: ((30, 35),)}

    copied = tmp_path / "copied"
    copied.mkdir()
    destination = open_destination(uri)
    try:
        names = destination.names()
        assert names == ["_talos_export.json", "part-00000.parquet", "part-00001.parquet"]
        for name in names[1:]:  # copy out through the store, read with pyarrow
            data = destination.store.read(name, 0, destination.store.visible_length(name))
            (copied / name).write_bytes(data)
    finally:
        destination.close()
    assert file_rows(copied) == topic_rows(bootstrap, "landed", 2)


def test_an_export_killed_at_any_moment_leaves_only_complete_files_and_resumes(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """SIGKILL the exporter when its temporary file appears, when a row group is in it,
    and when its file is published; every published file is complete at every point,
    and after a last run with more messages each message is there exactly once."""
    bootstrap, out = cluster.bootstrap, tmp_path / "export"
    create_topic(bootstrap, "killed", 2)
    with Producer(bootstrap, linger_ms=5) as producer:
        for i in range(3000):
            producer.send("killed", bytes([i % 251]) * 1000, partition=i % 2)
        producer.flush()
    args = [sys.executable, "-m", "talos", "export", "parquet", "killed", "--to", str(out)]
    args += ["--bootstrap", bootstrap, "--no-progress", "--row-group-mb", "1"]
    temp = out / temp_name("part-00000.parquet")
    moments = {
        "temporary file created": temp.exists,
        "a row group written": lambda: temp.exists() and temp.stat().st_size > 0,
        "file published": (out / "part-00000.parquet").exists,
    }
    for what, reached in moments.items():
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while process.poll() is None and not reached() and time.monotonic() < deadline:
            time.sleep(0.005)
        if not reached():
            # The exporter ran past this moment between two looks (a loaded machine):
            # then it must have finished cleanly; its files are checked below all the same.
            assert process.poll() == 0, what
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        for published in out.glob("part-*.parquet"):
            assert pq.ParquetFile(published).metadata.num_rows > 0  # complete: it has a footer
    produce(bootstrap, "killed", 2, 10, first=0)
    final = run_cli(*args[3:])
    assert final.returncode == 0, final.stderr
    # no temporary data file left; a kill inside the store's own atomic write_file may
    # leave its .talos-tmp-* file, which readers skip like every dot-file
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert all(name.startswith(TMP_PREFIX) for name in leftovers), leftovers
    assert file_rows(out) == topic_rows(bootstrap, "killed", 2)
