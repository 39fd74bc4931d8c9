"""`talos health` (the container healthcheck) against real broker processes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from talos.testing.cluster import LocalCluster
from talos.testing.zookeeper import free_port

pytestmark = pytest.mark.integration


def health(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "talos", "health", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_health_passes_for_a_serving_broker_and_fails_for_none(cluster: LocalCluster) -> None:
    broker = cluster.brokers[0]
    ok = health("--address", broker.address, "--broker-id", broker.broker_id, "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["healthy"] is True

    wrong_id = health("--address", broker.address, "--broker-id", "nobody")
    assert wrong_id.returncode == 1
    assert "'nobody' is not registered" in wrong_id.stderr

    nothing = health("--address", f"127.0.0.1:{free_port()}", "--timeout", "1")
    assert nothing.returncode == 1
    assert "unhealthy: no answer" in nothing.stderr
