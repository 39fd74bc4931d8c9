"""Retention and mirrors (issue 12 §2) with real processes: two DCs, a real ``talos mirror
run`` worker, ``talos mirror status`` through the CLI.

- A source whose retention outran the link: the partition turns ``gap`` (messages
  lost named, exit 1) under ``on_gap = "stop"``; under ``"skip"`` it resumes at the
  source's log start, the target's offsets stay equal to the source's, and the
  skipped gap is in the progress znode and in status.
- A first copy of a source whose log starts above 0 starts the target there.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import pytest

from talos.client import Admin, Consumer, TopicPartition
from talos.config import UNLIMITED, TopicConfig
from talos.errors import TalosError
from talos.testing.multidc import MultiDC, mirror_available
from talos.testing.zookeeper import zookeeper_available
from topology.loader import dump_topology

from .test_mirror_ops import rows, status
from .test_retention import SMALL, _produce

pytestmark = pytest.mark.integration

TOPIC = "aging"


@pytest.fixture(autouse=True)
def _needs_zookeeper_and_worker() -> None:
    for reason in (zookeeper_available(), mirror_available()):
        if reason is not None:
            pytest.skip(reason)


def _partition(bootstrap: str) -> tuple[int, int]:
    """(log start, log end) of TOPIC/0 as its owner serves it."""
    with Admin(bootstrap, request_timeout_s=5) as admin:
        info = admin.describe_topic(TOPIC).partitions[0]
        return info.log_start, info.log_end


def _cut_source(dcs: MultiDC, above: int) -> int:
    """Let size retention delete the source's oldest segments, then stop it deleting more."""
    with Admin(dcs.bootstrap("A")) as admin:
        admin.alter_topic(TOPIC, retention_bytes=3 * 4096)
    dcs.wait_for(lambda: _partition(dcs.bootstrap("A"))[0] > above, 60, "source retention")
    with Admin(dcs.bootstrap("A")) as admin:
        admin.alter_topic(TOPIC, retention_bytes=UNLIMITED)
    time.sleep(1.5)  # a retention pass that started before the alter may still cut once
    return _partition(dcs.bootstrap("A"))[0]


def _messages(bootstrap: str, start: int, end: int) -> list[tuple[int, bytes | None]]:
    consumer = Consumer(bootstrap, auto_offset_reset="earliest")
    try:
        consumer.assign([TopicPartition(TOPIC, 0)])
        consumer.seek(TopicPartition(TOPIC, 0), start)
        got: list[tuple[int, bytes | None]] = []
        deadline = time.monotonic() + 30
        while len(got) < end - start and time.monotonic() < deadline:
            got.extend((m.offset, m.value) for m in consumer.poll(0.5))
        return got
    finally:
        consumer.close()


def _same_partition(dcs: MultiDC) -> bool:
    try:
        return _partition(dcs.bootstrap("A"))[1] == _partition(dcs.bootstrap("B"))[1]
    except TalosError:
        return False


def _use_gap_policy(dcs: MultiDC, on_gap: str) -> None:
    topology = dcs.build_topology()
    links = tuple(dataclasses.replace(link, on_gap=on_gap) for link in topology.links)
    dcs.topology_path.write_text(dump_topology(dataclasses.replace(topology, links=links)))


def _status_cli(dcs: MultiDC) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "talos", "mirror", "status", "--topology"]
    return subprocess.run(
        [*command, str(dcs.topology_path)], capture_output=True, text=True, timeout=60
    )


def test_a_source_retention_that_outran_the_link_stops_as_gap_then_skip_resumes(
    tmp_path: Path,
) -> None:
    with MultiDC(str(tmp_path / "dcs"), brokers=1, start_mirror=False) as dcs:
        with Admin(dcs.bootstrap("A")) as admin:
            admin.create_topic(TOPIC, 1, SMALL)
            admin.wait_until_ready(TOPIC)
        worker = dcs.start_worker()
        _produce(dcs.bootstrap("A"), TOPIC, 10)
        dcs.wait_for(lambda: _same_partition(dcs), 60, "the first 10 to be mirrored")
        worker.stop()
        _produce(dcs.bootstrap("A"), TOPIC, 40)  # while the link is down
        start = _cut_source(dcs, 10)
        assert start > 10

        dcs.start_worker()  # on_gap = "stop", the default
        deadline = time.monotonic() + 60
        while True:
            code, document = status(dcs.topology_path)
            row = rows(document)[0]
            if row["state"] == "gap":
                break
            assert time.monotonic() < deadline, f"no gap reported: {document}"
            time.sleep(0.5)
        assert code == 1
        assert row["gap_messages"] == start - 10, row
        assert f"the source deleted offsets 10..{start - 1}" in row["detail"], row
        done = _status_cli(dcs)
        assert done.returncode == 1 and "gap" in done.stdout, done
        assert _partition(dcs.bootstrap("B")) == (0, 10)  # nothing skipped silently
        dcs.mirrors[-1].stop()

        _use_gap_policy(dcs, "skip")
        dcs.start_worker()
        dcs.wait_for(lambda: _same_partition(dcs), 60, "the link to resume past the gap")
        source, target = _partition(dcs.bootstrap("A")), _partition(dcs.bootstrap("B"))
        assert target == (start, source[1]), (source, target)  # the same offsets
        assert _messages(dcs.bootstrap("B"), start, target[1]) == _messages(
            dcs.bootstrap("A"), start, source[1]
        )
        code, document = status(dcs.topology_path)
        row = rows(document)[0]
        assert (code, row["state"], row["skipped_messages"]) == (0, "ok", start - 10), row
        (gap,) = row["skipped_gaps"]
        assert (gap["from"], gap["to"], gap["messages"]) == (10, start, start - 10)
        assert abs(gap["ms"] - time.time() * 1000) < 120_000
        table = _status_cli(dcs)
        assert table.returncode == 0, table
        assert f"skipped 10..{start - 1} ({start - 10} messages)" in table.stdout

        # The record survives a worker restart (it lives in the progress znode).
        dcs.mirrors[-1].kill()
        dcs.start_worker()
        _produce(dcs.bootstrap("A"), TOPIC, 3)
        dcs.wait_for(lambda: _same_partition(dcs), 60, "the restarted worker to copy")
        code, document = status(dcs.topology_path)
        assert rows(document)[0]["skipped_gaps"] == [gap], document


def test_a_first_copy_of_a_source_starting_above_zero_keeps_its_offsets(tmp_path: Path) -> None:
    with MultiDC(str(tmp_path / "dcs"), brokers=1, start_mirror=False) as dcs:
        config = TopicConfig(**{**SMALL.to_dict(), "retention_bytes": UNLIMITED})
        with Admin(dcs.bootstrap("A")) as admin:
            admin.create_topic(TOPIC, 1, config)
            admin.wait_until_ready(TOPIC)
        _produce(dcs.bootstrap("A"), TOPIC, 40)
        start = _cut_source(dcs, 0)
        assert start > 0

        dcs.start_worker()  # on_gap = "stop": a first copy is no gap
        dcs.wait_for(lambda: _same_partition(dcs), 60, "the first copy")
        source, target = _partition(dcs.bootstrap("A")), _partition(dcs.bootstrap("B"))
        assert target == source == (start, 40)
        assert _messages(dcs.bootstrap("B"), start, 40) == _messages(dcs.bootstrap("A"), start, 40)
        code, document = status(dcs.topology_path)
        row = rows(document)[0]
        assert (code, row["state"], row["skipped_gaps"]) == (0, "ok", []), row
