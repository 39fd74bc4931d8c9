"""`talos bench` works end to end (a smoke test: it checks figures exist, never speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from talos.bench.runner import BenchConfig, Target, run
from talos.testing.cluster import LocalCluster

pytestmark = pytest.mark.integration


def test_bench_cli_produce_on_its_own_cluster(tmp_path: Path) -> None:
    out = tmp_path / "produce.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "talos",
            "bench",
            "produce",
            "-n",
            "3000",
            "--producers",
            "2",
            "--partitions",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "msg/s" in done.stdout and "p99" in done.stdout
    assert "100.0%" in done.stderr  # the progress bar reached the end
    figures = json.loads(out.read_text())
    assert figures["messages"] == 3000 and figures["errors"] == 0
    assert figures["msgs_per_s"] > 0 and figures["p99_ms"] is not None
    assert figures["extra"]["broker_rss_mb_peak"] > 0


def test_bench_consume_and_e2e_against_a_running_cluster(cluster: LocalCluster) -> None:
    where = Target(cluster.bootstrap)
    consumed = run(
        BenchConfig(
            mode="consume",
            bootstrap=cluster.bootstrap,
            messages=2000,
            consumers=2,
            partitions=2,
            progress=False,
        ),
        where,
    )
    assert consumed.messages == 2000 + 1  # and the producer's warm-up message
    assert consumed.errors == 0
    e2e = run(
        BenchConfig(
            mode="e2e",
            bootstrap=cluster.bootstrap,
            messages=500,
            rate=2000.0,
            partitions=2,
            linger_ms=1.0,
            progress=False,
        ),
        where,
    )
    assert e2e.extra["sent"] == 500
    assert e2e.messages == 500 and e2e.samples == 500
    assert 0 < e2e.p50_ms < 10_000
