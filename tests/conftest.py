"""Shared fixtures: a real ZooKeeper per test session and a real sshd per module (Debian's)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from talos.testing.hdfs import MiniDfsCluster, hdfs_available
from talos.testing.sshd import SshServer, sshd_available
from talos.testing.zookeeper import ZooKeeperServer, zookeeper_available


@pytest.fixture(scope="session")
def zk_server() -> Iterator[ZooKeeperServer]:
    reason = zookeeper_available()
    if reason is not None:
        pytest.skip(f"needs ZooKeeper: {reason}")
    with ZooKeeperServer() as server:
        yield server


@pytest.fixture(scope="session")
def hdfs_cluster() -> Iterator[MiniDfsCluster]:
    """One MiniDFSCluster (1 NameNode, 3 DataNodes) for the whole session, started on
    first use; tests take their own root directory in it."""
    reason = hdfs_available()
    if reason is not None:
        pytest.skip(f"needs HDFS: {reason}")
    with MiniDfsCluster(datanodes=3) as cluster:
        yield cluster


@pytest.fixture
def cluster_name() -> str:
    """A fresh cluster name, so each test gets its own ZooKeeper chroot."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """OpenSSH's sshd on a loopback port, with its own config, keys and pid file."""
    reason = sshd_available()
    if reason is not None:
        pytest.skip(f"needs OpenSSH's sshd: {reason}")
    server = SshServer(tmp_path_factory.mktemp("sshd"))
    try:
        server.start()
    except RuntimeError as exc:
        pytest.skip(f"sshd cannot run here: {exc}")
    try:
        yield server
    finally:
        server.stop()
