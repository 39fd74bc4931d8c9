"""A real `talos dev up`: a killed process is reported, the rest run on, restart brings it back."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from talos.client import Admin, Consumer, Producer
from talos.errors import TalosError
from talos.storage.hdfs import HdfsLogStore
from talos.testing.hdfs import MiniDfsCluster
from talos.testing.supervisor import PID_FILE, control_dir
from talos.testing.zookeeper import zookeeper_available

pytestmark = pytest.mark.integration


class DevUp:
    """`talos dev up` as a subprocess, its stdout read line by line."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "talos", "dev", "up", "--data-dir", str(data_dir), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_line(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError(
            f"no line matching {pattern!r}; output so far:\n" + "\n".join(self.seen)
        )

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self.reader.join(timeout=10)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return code


@pytest.fixture
def dev_dir(tmp_path: Path) -> Iterator[Path]:
    reason = zookeeper_available()
    if reason is not None:
        pytest.skip(f"needs ZooKeeper: {reason}")
    yield tmp_path / "dev"


def restart(data_dir: Path, *target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "talos", "dev", "restart", *target, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_a_killed_broker_is_reported_and_restarted(dev_dir: Path) -> None:
    dev = DevUp(dev_dir, "--brokers", "2", "--session-timeout", "3")
    try:
        first = dev.wait_line(r"^broker b1: (\S+) pid (\d+)  metrics http://127.0.0.1:\d+/metrics")
        dev.wait_line(r"^broker b2: \S+ pid \d+")
        address, old_pid = first.group(1), int(first.group(2))
        bootstrap = (dev_dir / "bootstrap").read_text().strip()

        os.kill(old_pid, signal.SIGKILL)
        dev.wait_line(r"broker b1 was killed by SIGKILL; the rest keep running")
        time.sleep(1.0)  # a supervisor that gave up would be exiting now
        assert dev.process.poll() is None

        done = restart(dev_dir, "broker", "b1")
        assert done.returncode == 0, done.stderr
        found = re.search(r"broker b1: was down; started, pid (\d+) on (\S+)", done.stdout)
        assert found, done.stdout
        new_pid = int(found.group(1))
        assert new_pid != old_pid and found.group(2) == address
        os.kill(new_pid, 0)  # alive
        dev.wait_line(rf"broker b1 restarted \(pid {new_pid}\)")

        with Admin(bootstrap) as admin:
            admin.create_topic("after-restart", 4)
            ready = admin.wait_until_ready("after-restart")
            assert {p.owner_id for p in ready.partitions} == {"b1", "b2"}
        with Producer(bootstrap) as producer:
            futures = [
                producer.send("after-restart", b"v%d" % i, partition=i % 4) for i in range(20)
            ]
            producer.flush()
            assert all(f.result(timeout=30).offset >= 0 for f in futures)

        wrong = restart(dev_dir, "broker", "b9")
        assert wrong.returncode == 2
        assert "no broker 'b9' in this deployment; brokers: b1, b2" in wrong.stderr
    finally:
        code = dev.stop()
    assert code == 0
    assert not (control_dir(dev_dir) / PID_FILE).exists()
    gone = restart(dev_dir, "broker", "b1")
    assert gone.returncode == 1 and "no `talos dev up` is running" in gone.stderr


def test_two_dcs_a_killed_mirror_worker_is_restarted_and_copies_again(dev_dir: Path) -> None:
    from talos.testing.multidc import mirror_available

    reason = mirror_available()
    if reason is not None:
        pytest.skip(f"needs the mirror worker: {reason}")
    dev = DevUp(dev_dir, "--dcs", "2", "--brokers", "1", "--session-timeout", "3")
    try:
        worker = dev.wait_line(r"^mirror A:B: pid (\d+)  metrics http://127.0.0.1:\d+/metrics")
        old_pid = int(worker.group(1))
        os.kill(old_pid, signal.SIGKILL)
        dev.wait_line(r"mirror A:B was killed by SIGKILL; the rest keep running")

        ambiguous = restart(dev_dir, "broker", "b1")  # both DCs have a b1
        assert ambiguous.returncode == 2 and "use one of A/b1, B/b1" in ambiguous.stderr
        done = restart(dev_dir, "mirror", "A:B")
        assert done.returncode == 0, done.stderr
        found = re.search(r"mirror A:B: was down; started, pid (\d+)$", done.stdout.strip())
        assert found and int(found.group(1)) != old_pid, done.stdout

        source = (dev_dir / "bootstrap-A").read_text().strip()
        target = (dev_dir / "bootstrap-B").read_text().strip()
        with Admin(source) as admin:
            admin.create_topic("copied", 1)
            admin.wait_until_ready("copied")
        with Producer(source) as producer:
            for i in range(5):
                producer.send("copied", b"v%d" % i)
            producer.flush()
        deadline = time.monotonic() + 60
        with Admin(target) as admin:
            while True:  # the restarted worker creates the mirror topic and copies
                try:
                    if admin.describe_topic("copied").partitions[0].log_end == 5:
                        break
                except TalosError:
                    pass
                assert time.monotonic() < deadline, "the restarted worker copied nothing"
                time.sleep(0.2)
    finally:
        assert dev.stop() == 0


def test_two_dcs_on_hdfs_copy_a_to_b_with_the_same_offsets_and_promote_reads_a(
    dev_dir: Path, hdfs_cluster: MiniDfsCluster
) -> None:
    """`dev up --dcs 2` with both DCs' logs on HDFS (under PATH/A and PATH/B of the
    session's MiniDFSCluster): the mirror's store reader tail-reads A's HDFS, and once
    A's broker is dead, promote measures the gap from A's segments on HDFS."""
    from mirror.failover import PromoteOptions, promote
    from talos.testing.multidc import mirror_available
    from topology import load_topology

    reason = mirror_available()
    if reason is not None:
        pytest.skip(f"needs the mirror worker: {reason}")
    root = hdfs_cluster.url(f"devup-{uuid.uuid4().hex[:8]}")
    dev = DevUp(dev_dir, "--dcs", "2", "--brokers", "1", "--session-timeout", "3", "--store", root)
    try:
        dev.wait_line(rf"^DC A: HDFS\s+{re.escape(root)}/A$", timeout=180)
        dev.wait_line(rf"^DC B: HDFS\s+{re.escape(root)}/B$")
        dev.wait_line(r"^mirror:\s+link A:B \(pid \d+")
        a_broker = int(dev.wait_line(r"^broker A/b1: \S+ pid (\d+)").group(1))
        worker = int(dev.wait_line(r"^mirror A:B: pid (\d+)").group(1))
        topology = (dev_dir / "topology.toml").read_text()
        assert f'store = "{root}/A"' in topology and f'store = "{root}/B"' in topology

        source = (dev_dir / "bootstrap-A").read_text().strip()
        target = (dev_dir / "bootstrap-B").read_text().strip()
        with Admin(source) as admin:
            admin.create_topic("on-hdfs", 2)
            admin.wait_until_ready("on-hdfs")
        acked = produce(source, "m", 40)
        copied: dict[tuple[int, int], bytes] = {}
        deadline = time.monotonic() + 120
        with Consumer(target, auto_offset_reset="earliest") as consumer:
            while len(copied) < len(acked):
                assert time.monotonic() < deadline, f"B has {len(copied)} of {len(acked)}"
                try:
                    if not consumer.assignment():
                        consumer.assign([("on-hdfs", 0), ("on-hdfs", 1)])
                    for m in consumer.poll(timeout_s=1.0):
                        copied[(m.partition, m.offset)] = m.value or b""
                except TalosError:  # the worker has not created the mirror topic yet
                    time.sleep(0.5)
        assert copied == acked

        store = HdfsLogStore(root)
        try:
            assert store.list_dir("A") and store.list_dir("B")  # each DC's segments
        finally:
            store.close()

        # The link is cut, A takes 6 more messages per partition, then A's broker dies
        # (its open segments stay open on HDFS): promote reads A from HDFS.
        os.kill(worker, signal.SIGKILL)
        dev.wait_line(r"mirror A:B was killed by SIGKILL")
        lost = produce(source, "lost", 12)
        os.kill(a_broker, signal.SIGKILL)
        dev.wait_line(r"broker A/b1 was killed by SIGKILL")
        report = promote(
            load_topology(dev_dir / "topology.toml"),
            "A:B",
            PromoteOptions(source_timeout_s=5.0),
        )
        ends = {p: 1 + max(o for q, o in acked if q == p) for p in (0, 1)}
        assert [p.target_end for p in report.partitions] == [ends[0], ends[1]]
        assert [p.gap_messages for p in report.partitions] == [6, 6]
        assert [p.source_end for p in report.partitions] == [
            1 + max(o for q, o in lost if q == p) for p in (0, 1)
        ]
        assert {p.basis for p in report.partitions} == {"source"}
    finally:
        assert dev.stop() == 0


def produce(bootstrap: str, tag: str, count: int) -> dict[tuple[int, int], bytes]:
    """``count`` messages over partitions 0 and 1: (partition, offset) -> value."""
    acked: dict[tuple[int, int], bytes] = {}
    with Producer(bootstrap) as producer:
        futures = {
            f"{tag}{i}".encode(): producer.send("on-hdfs", f"{tag}{i}".encode(), partition=i % 2)
            for i in range(count)
        }
        producer.flush()
        for value, future in futures.items():
            meta = future.result(timeout=60)
            acked[(meta.partition, meta.offset)] = value
    return acked
