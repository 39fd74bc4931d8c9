"""Fixtures for the integration tests: a real cluster (ZooKeeper + broker processes)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from talos.testing.cluster import LocalCluster
from talos.testing.zookeeper import ZooKeeperServer


@pytest.fixture
def cluster_store(request: pytest.FixtureRequest) -> str:
    """Where a test cluster keeps its logs: "" (posix, in its data dir, the default) or a
    fresh root on the session's MiniDFSCluster. A test runs on both stores with
    ``@pytest.mark.parametrize("cluster_store", ["posix", "hdfs"], indirect=True)``."""
    kind = getattr(request, "param", "posix")
    if kind == "posix":
        return ""
    dfs = request.getfixturevalue("hdfs_cluster")
    url: str = dfs.url(f"talos/{uuid.uuid4().hex[:12]}")
    return url


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


@pytest.fixture
def make_cluster(
    tmp_path: Path, cluster_name: str, zk_server: ZooKeeperServer
) -> Iterator[Callable[..., LocalCluster]]:
    """``make_cluster(brokers=, session_timeout=)``: a started cluster like ``cluster``
    with other settings; stopped after the test."""
    made: list[LocalCluster] = []

    def make(
        brokers: int = 2, session_timeout: float = 3.0, clock_offset_file: str = ""
    ) -> LocalCluster:
        local = LocalCluster(
            brokers=brokers,
            data_dir=str(tmp_path / f"cluster-{len(made)}"),
            cluster=cluster_name if not made else f"{cluster_name}-{len(made)}",
            session_timeout=session_timeout,
            zookeeper=zk_server,
            clock_offset_file=clock_offset_file,
        )
        made.append(local)
        local.start()
        return local

    try:
        yield make
    finally:
        for local in made:
            local.stop()
