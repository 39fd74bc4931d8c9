"""Fixtures for the integration tests: a real cluster (ZooKeeper + broker processes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from talos.testing.cluster import LocalCluster
from talos.testing.zookeeper import ZooKeeperServer


@pytest.fixture
def cluster(
    tmp_path: Path, cluster_name: str, zk_server: ZooKeeperServer
) -> Iterator[LocalCluster]:
    """Two brokers in their own chroot of the session's ZooKeeper; stopped after the test.

    A short session timeout keeps failover tests fast.
    """
    local = LocalCluster(
        brokers=2,
        data_dir=str(tmp_path / "cluster"),
        cluster=cluster_name,
        session_timeout=3.0,
        zookeeper=zk_server,
    )
    try:
        local.start()
        yield local
    finally:
        local.stop()
