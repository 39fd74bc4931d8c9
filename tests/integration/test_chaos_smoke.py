"""The chaos harness's network, cheaply: namespaces, a blackhole partition, heal, teardown.

The real smoke is `make chaos-smoke` (minutes); this only checks the pieces it
stands on, in about a second. Needs root; skips otherwise.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from chaos.netns import ROOT_IP, Network, why_unsupported

pytestmark = pytest.mark.integration

_CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
    print("connected")
except OSError as exc:
    print("failed", exc.errno)
"""

_SERVE = """
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"""


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_partition_heal_and_teardown() -> None:
    reason = why_unsupported()
    if reason is not None:
        pytest.skip(reason)
    network = Network()
    server = None
    try:
        network.setup()
        a = network.add_host("a", 1, 5)
        b = network.add_host("b", 1, 6)
        server = subprocess.Popen(
            [*b.exec_prefix(), sys.executable, "-c", _SERVE, b.ip, "7100"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"

        def connect(host_ip: str) -> str:
            done = subprocess.run(
                [*a.exec_prefix(), sys.executable, "-c", _CONNECT, host_ip, "7100"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            return done.stdout.strip()

        assert connect(b.ip) == "connected"
        network.blackhole(a, b.ip)
        assert connect(b.ip).startswith("failed")
        # the route to the proxies' address can be blackholed and restored too
        network.blackhole(a, ROOT_IP)
        network.heal()
        assert connect(b.ip) == "connected"
        routes = subprocess.run(
            [*a.exec_prefix(), "ip", "route"], capture_output=True, text=True
        ).stdout
        assert f"{ROOT_IP} dev eth0" in routes and "blackhole" not in routes
    finally:
        if server is not None:
            server.kill()
            server.wait()
            if server.stdout is not None:
                server.stdout.close()
        network.teardown()
    assert network.tag not in _namespaces()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert network.tag not in links


def test_link_joins_two_hosts_of_different_datacenters() -> None:
    """The mirror host of dc2 reaches dc1's HDFS host only over the routes link() adds."""
    reason = why_unsupported()
    if reason is not None:
        pytest.skip(reason)
    network = Network()
    server = None
    try:
        network.setup()
        dfs = network.add_host("dfs", 1, 3)
        mirror = network.add_host("mirror", 2, 50)
        server = subprocess.Popen(
            [*dfs.exec_prefix(), sys.executable, "-c", _SERVE, dfs.ip, "7101"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"

        def connect() -> str:
            done = subprocess.run(
                [*mirror.exec_prefix(), sys.executable, "-c", _CONNECT, dfs.ip, "7101"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            return done.stdout.strip()

        assert connect().startswith("failed")  # another datacenter: no route
        network.link(mirror, dfs)
        assert connect() == "connected"
    finally:
        if server is not None:
            server.kill()
            server.wait()
            if server.stdout is not None:
                server.stdout.close()
        network.teardown()
    assert network.tag not in _namespaces()
