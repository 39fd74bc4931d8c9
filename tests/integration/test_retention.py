"""Retention per topic (issue 12 §1), on real brokers, ZooKeeper and a real directory."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from talos.broker.partition import CRASH_AT_ENV
from talos.client import Admin, Consumer, Producer, TopicPartition
from talos.config import DAY_MS, UNLIMITED, TopicConfig
from talos.coord.groups import GroupStore
from talos.coord.partition_state import PartitionStateStore
from talos.coord.zk import connect
from talos.errors import ErrorCode, TalosError
from talos.storage.segment import segment_of_file
from talos.testing.cluster import LocalCluster

from .test_bad_input import raw_fetch

pytestmark = pytest.mark.integration

VALUE = b"r" * 1000  # about five messages a 4096-byte segment
SMALL = TopicConfig(segment_bytes=4096, segment_ms=1000, durability="flush")


def _produce(bootstrap: str, topic: str, count: int) -> None:
    with Producer(bootstrap, linger_ms=0) as producer:
        for i in range(count):  # one at a time: one batch per group commit
            producer.send(topic, VALUE, key=str(i).encode(), partition=0).result(60)


def _partition_dir(cluster: LocalCluster, topic: str) -> Path:
    (directory,) = (Path(cluster.store_dir) / cluster.cluster / topic).glob("*/0")
    return directory


def _bases_on_disk(cluster: LocalCluster, topic: str) -> set[int]:
    found = (segment_of_file(p.name) for p in _partition_dir(cluster, topic).iterdir())
    return {f[0] for f in found if f is not None}


def _wait_log_start(bootstrap: str, topic: str, above: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    with Admin(bootstrap) as admin:
        while True:
            partition = admin.describe_topic(topic).partitions[0]
            if partition.log_end >= 0 and partition.log_start > above:
                return partition.log_start
            assert time.monotonic() < deadline, f"log start of {topic} stayed at {above}"
            time.sleep(0.2)


def _answers(cluster: LocalCluster, broker_id: str) -> bool:
    try:
        return broker_id in cluster.live_brokers()
    except TalosError:
        return False


def _first_offset(consumer: Consumer, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages = consumer.poll(timeout_s=1.0)
        if messages:
            return int(messages[0].offset)
    raise AssertionError("no message read")


def _commit(cluster: LocalCluster, group: str, topic: str, offset: int) -> None:
    zk = connect(cluster.zookeeper.address, cluster.cluster)
    try:
        GroupStore(zk).commit(group, "", -1, {(topic, 0): offset})
    finally:
        zk.stop()
        zk.close()


def test_time_retention_with_the_injected_clock(
    make_cluster: Callable[..., LocalCluster], tmp_path: Path
) -> None:
    clock = tmp_path / "clock-offset-ms"
    clock.write_text("0")
    cluster = make_cluster(brokers=1, clock_offset_file=str(clock))
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("aging", 1, TopicConfig(**{**SMALL.to_dict(), "retention_ms": DAY_MS}))
        admin.wait_until_ready("aging")
    _produce(cluster.bootstrap, "aging", 40)
    _commit(cluster, "behind", "aging", 3)
    _commit(cluster, "cli-group", "aging", 2)
    time.sleep(2.5)  # a few retention checks: nothing is a day old yet
    with Admin(cluster.bootstrap) as admin:
        assert admin.describe_topic("aging").partitions[0].log_start == 0
    assert 0 in _bases_on_disk(cluster, "aging")

    clock.write_text(str(2 * DAY_MS))  # the broker's wall clock jumps two days ahead
    start = _wait_log_start(cluster.bootstrap, "aging", 0)
    assert 20 <= start <= 40  # every sealed segment went; the open one stays
    deadline = time.monotonic() + 10  # the deletes follow the log start's CAS
    while min(_bases_on_disk(cluster, "aging")) < start and time.monotonic() < deadline:
        time.sleep(0.1)
    assert min(_bases_on_disk(cluster, "aging")) == start, "files below the log start remain"

    stale = raw_fetch(cluster.brokers[0].address, "aging", 0, 0)
    assert stale.error.code == ErrorCode.OFFSET_OUT_OF_RANGE
    assert stale.error.log_start == start and f"log start {start}" in stale.error.message

    reader = Consumer(cluster.bootstrap, auto_offset_reset="earliest")
    try:
        reader.assign([TopicPartition("aging", 0)])
        reader.seek(TopicPartition("aging", 0), 1)
        assert _first_offset(reader) == start  # reset per auto_offset_reset
    finally:
        reader.close()
    group = Consumer(cluster.bootstrap, group_id="behind", auto_offset_reset="earliest")
    try:
        group.subscribe(["aging"])
        assert _first_offset(group) == start  # committed 3 was below the start
    finally:
        group.close()

    done = subprocess.run(
        [
            *(sys.executable, "-m", "talos", "consume", "aging", "--group", "cli-group"),
            *("--from-beginning", "--max-messages", "1", "--timeout", "30"),
            *("--bootstrap", cluster.bootstrap),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert f"below the log start {start}" in done.stderr and "resetting" in done.stderr


def test_size_retention_deletes_the_oldest_segments(cluster: LocalCluster) -> None:
    config = TopicConfig(**{**SMALL.to_dict(), "retention_bytes": 3 * 4096})
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("sized", 1, config)
        assert admin.describe_topic("sized").config.retention_bytes == 3 * 4096
        admin.wait_until_ready("sized")
    _produce(cluster.bootstrap, "sized", 60)
    start = _wait_log_start(cluster.bootstrap, "sized", 0)
    deadline = time.monotonic() + 30
    while True:  # retention runs every second: wait for it to settle
        sizes = [p.stat().st_size for p in _partition_dir(cluster, "sized").glob("*.log")]
        if sum(sizes) <= 3 * 4096 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sum(sizes) <= 3 * 4096, sizes
    start = _wait_log_start(cluster.bootstrap, "sized", start - 1)
    assert min(_bases_on_disk(cluster, "sized")) == start
    with Admin(cluster.bootstrap) as admin:  # and back to unlimited: nothing more goes
        admin.alter_topic("sized", retention_bytes=UNLIMITED)
        assert admin.describe_topic("sized").config.retention_bytes == UNLIMITED
    reader = Consumer(cluster.bootstrap, auto_offset_reset="earliest")
    try:
        reader.assign([TopicPartition("sized", 0)])
        assert _first_offset(reader) == start
    finally:
        reader.close()


def test_crash_between_the_log_start_cas_and_the_deletes(cluster: LocalCluster) -> None:
    """What kill -9 of the owner right after its CAS leaves: ZooKeeper says the log
    starts at S, the files below S are still there. The next owner removes them and
    serves nothing below S."""
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("crashy", 1, SMALL)
        owner_id = admin.wait_until_ready("crashy").partitions[0].owner_id
    _produce(cluster.bootstrap, "crashy", 30)
    owner = next(b for b in cluster.brokers if b.broker_id == owner_id)
    owner.kill()  # kill -9
    before = _bases_on_disk(cluster, "crashy")

    zk = connect(cluster.zookeeper.address, cluster.cluster)
    try:  # the dead owner's retention CAS, exactly as it writes it
        states = PartitionStateStore(zk)
        state = states.get("crashy", 0)
        start = [s.end_offset for s in state.segments if s.end_offset is not None][2]
        states.compare_and_set("crashy", 0, state.with_log_start(start), state.version)
    finally:
        zk.stop()
        zk.close()
    assert min(before) < start  # the orphans

    other = next(b for b in cluster.brokers if b is not owner)
    assert _wait_log_start(other.address, "crashy", start - 1, timeout=60) == start
    assert min(_bases_on_disk(cluster, "crashy")) == start, "orphans below the start remain"
    stale = raw_fetch(other.address, "crashy", 0, start - 1)
    assert stale.error.code == ErrorCode.OFFSET_OUT_OF_RANGE
    assert stale.error.log_start == start
    at_start = raw_fetch(other.address, "crashy", 0, start)
    assert not at_start.error.code and at_start.records


def test_kill_9_of_a_real_owner_between_the_log_start_cas_and_the_deletes(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    """The owner process itself dies by SIGKILL right after its retention CAS (the
    broker's TALOS_CRASH_AT hook), before it deleted a file. The next owner removes
    the orphans and serves nothing below the new start."""
    cluster = make_cluster(brokers=1)
    owner = cluster.brokers[0]
    owner.stop()
    owner.extra_env[CRASH_AT_ENV] = "retention-after-cas"
    owner.start()
    cluster.wait_for_brokers(1)
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("crashy", 1, SMALL)
        admin.wait_until_ready("crashy")
    _produce(cluster.bootstrap, "crashy", 30)
    before = _bases_on_disk(cluster, "crashy")
    with Admin(cluster.bootstrap) as admin:
        admin.alter_topic("crashy", retention_bytes=3 * 4096)
    assert owner.process is not None
    assert owner.process.wait(timeout=60) == -signal.SIGKILL
    assert "TALOS_CRASH_AT=retention-after-cas: SIGKILL now" in Path(owner.log_path).read_text()

    zk = connect(cluster.zookeeper.address, cluster.cluster)
    try:
        start = PartitionStateStore(zk).get("crashy", 0).log_start
    finally:
        zk.stop()
        zk.close()
    assert start > 0, "the CAS did not land before the kill"
    orphans = {base for base in _bases_on_disk(cluster, "crashy") if base < start}
    assert orphans and orphans <= before, "the kill did not come before the deletes"

    successor = cluster.add_broker()  # without the hook
    deadline = time.monotonic() + 60
    while not _answers(cluster, successor.broker_id):
        assert time.monotonic() < deadline, "the successor did not start"
        time.sleep(0.2)
    now = _wait_log_start(successor.address, "crashy", start - 1, timeout=90)
    assert now >= start  # (its own retention may cut further)
    assert min(_bases_on_disk(cluster, "crashy")) == now, "orphans below the start remain"
    for offset in (0, start - 1, now - 1):
        stale = raw_fetch(successor.address, "crashy", 0, offset)
        assert stale.error.code == ErrorCode.OFFSET_OUT_OF_RANGE, offset
        assert stale.error.log_start == now
    at_start = raw_fetch(successor.address, "crashy", 0, now)
    assert not at_start.error.code and at_start.records


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--retention-ms", "-5", "retention_ms: must be a positive integer"),
        ("--retention-ms", "0", "retention_ms: must be a positive integer"),
        ("--retention-ms", "500", "retention_ms: must be at least segment_ms (1000)"),
        ("--retention-ms", "7d", "--retention-ms: must be a whole number of milliseconds"),
        ("--retention-bytes", "0", "retention_bytes: must be a positive integer"),
        ("--retention-bytes", "-5", "retention_bytes: must be a positive integer"),
        ("--retention-bytes", "lots", "--retention-bytes: must be a positive number of bytes"),
    ],
)
def test_bad_retention_is_refused_and_changes_nothing(
    cluster: LocalCluster, flag: str, value: str, expected: str
) -> None:
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("strict", 1, SMALL)
        before = admin.describe_topic("strict").config
    for command in (["alter", "strict"], ["create", "other"]):
        done = subprocess.run(
            [sys.executable, "-m", "talos", "topic", *command, f"{flag}={value}"]
            + ["--segment-ms", "1000"] * (command[0] == "create")
            + ["--bootstrap", cluster.bootstrap],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0, done
        assert expected in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    with Admin(cluster.bootstrap) as admin:
        assert admin.describe_topic("strict").config == before
        assert admin.list_topics() == ["strict"]
