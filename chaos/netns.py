"""Hosts as Linux network namespaces on one bridge, and blackhole-route partitions.

Addresses: the bridge lives in the root namespace as 10.77.0.1/16 and
10.77.0.2/16 (the runner observes from there and hosts the proxies: client
proxies on .1, proxies between datacenters on .2); datacenter ``d`` is
10.77.d.0/24. A host gets a /24 and routes to 10.77.0.1 and 10.77.0.2 only,
so hosts of two datacenters cannot reach each other except through the
proxies (the WAN). Only these addresses are used, and only on interfaces made here.

Every name carries ``tc<pid>`` of the process that made it, so ``cleanup_stale``
can remove what a killed runner left behind without touching anyone else's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field

from talos.errors import InvalidArgument, TalosError

log = logging.getLogger(__name__)

ROOT_IP = "10.77.0.1"
#: Where the proxies between datacenters listen (a second address of the bridge), so a
#: blackhole route to it cuts a host off from the other datacenter and nothing else.
WAN_IP = "10.77.0.2"
_NAME = re.compile(r"^tc(\d+)")


class NetnsError(TalosError):
    """An `ip` command failed while building or changing the test network."""


def why_unsupported() -> str | None:
    """None when namespaces can be made here; otherwise why not (the suite skips)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veths, bridges and routes)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    probe = f"tc{os.getpid()}-probe"
    try:
        _ip("netns", "add", probe)
    except NetnsError as exc:
        return f"cannot create a network namespace: {exc}"
    with contextlib.suppress(NetnsError):
        _ip("netns", "del", probe)
    return None


def _ip(*args: str) -> str:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"ip {' '.join(args)}: {exc}") from None
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale() -> list[str]:
    """Delete namespaces and links left by chaos runners that no longer run."""
    removed: list[str] = []
    try:
        namespaces = [line.split()[0] for line in _ip("netns", "list").splitlines() if line]
        links = [
            line.split(":")[1].strip().split("@")[0]
            for line in _ip("-o", "link", "show").splitlines()
            if ":" in line
        ]
    except NetnsError:
        return removed
    for name in links:
        m = _NAME.match(name)
        if m and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(NetnsError):
                _ip("link", "del", name)
                removed.append(name)
    for name in namespaces:
        m = _NAME.match(name)
        if m and not _pid_alive(int(m.group(1))):
            # processes a killed runner started (brokers, ZooKeeper, clients) keep the
            # namespace alive after `ip netns del`; end them first
            with contextlib.suppress(NetnsError):
                for pid in _ip("netns", "pids", name).split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(NetnsError):
                _ip("netns", "del", name)
                removed.append(name)
    return removed


@dataclass(frozen=True)
class Host:
    name: str  # e.g. "dc1-b2"
    namespace: str
    ip: str
    veth: str  # the root-side end, attached to the bridge

    def exec_prefix(self) -> list[str]:
        """Prepend to a command to run it inside this host (ip netns exec keeps the pid)."""
        return ["ip", "netns", "exec", self.namespace]


@dataclass
class Network:
    """The bridge, the hosts and the blackhole routes currently installed."""

    tag: str = field(default_factory=lambda: f"tc{os.getpid()}")
    hosts: dict[str, Host] = field(default_factory=dict)
    blackholes: set[tuple[str, str]] = field(default_factory=set)  # (namespace, dst ip)
    _bridge_up: bool = False

    @property
    def bridge(self) -> str:
        return f"{self.tag}br"

    def setup(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self._bridge_up = True
        _ip("addr", "add", f"{ROOT_IP}/16", "dev", self.bridge)
        _ip("addr", "add", f"{WAN_IP}/16", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add_host(self, name: str, dc: int, index: int) -> Host:
        """A namespace with one veth on the bridge, address 10.77.<dc>.<index>/24."""
        if not 1 <= dc <= 254 or not 2 <= index <= 254:
            raise InvalidArgument(f"dc/index: must be 1..254 and 2..254, got {dc}/{index}")
        if name in self.hosts:
            raise InvalidArgument(f"name: host {name!r} already exists")
        number = len(self.hosts)
        namespace = f"{self.tag}-{name}"
        veth, peer = f"{self.tag}v{number}", f"{self.tag}p{number}"
        ip = f"10.77.{dc}.{index}"
        host = Host(name, namespace, ip, veth)
        _ip("netns", "add", namespace)
        self.hosts[name] = host  # from here on teardown removes it
        _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", namespace)
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        inside = ["netns", "exec", namespace, "ip"]
        _ip(*inside, "link", "set", "lo", "up")
        _ip(*inside, "link", "set", peer, "name", "eth0")
        _ip(*inside, "addr", "add", f"{ip}/24", "dev", "eth0")
        _ip(*inside, "link", "set", "eth0", "up")
        _ip(*inside, "route", "add", f"{ROOT_IP}/32", "dev", "eth0")
        _ip(*inside, "route", "add", f"{WAN_IP}/32", "dev", "eth0")
        return host

    def link(self, a: Host, b: Host) -> None:
        """Routes between two hosts of different datacenters (the mirror host and the
        source's HDFS host), which otherwise reach only the root namespace."""
        _ip("netns", "exec", a.namespace, "ip", "route", "replace", f"{b.ip}/32", "dev", "eth0")
        _ip("netns", "exec", b.namespace, "ip", "route", "replace", f"{a.ip}/32", "dev", "eth0")

    # ---- partitions ---------------------------------------------------------

    def blackhole(self, host: Host, destination: str) -> None:
        """Drop everything ``host`` sends to ``destination`` (one direction)."""
        key = (host.namespace, destination)
        if key in self.blackholes:
            return
        # replace: the proxies' addresses already have an on-link /32 route
        _ip(
            "netns",
            "exec",
            host.namespace,
            "ip",
            "route",
            "replace",
            "blackhole",
            f"{destination}/32",
        )
        self.blackholes.add(key)

    def cut(self, a: Host, b_ip: str, b: Host | None = None) -> None:
        """Both directions between ``a`` and the address ``b_ip`` (owned by ``b`` if a host)."""
        self.blackhole(a, b_ip)
        if b is not None:
            self.blackhole(b, a.ip)

    def heal(self) -> None:
        """Remove every blackhole route installed."""
        for namespace, destination in sorted(self.blackholes):
            inside = ["netns", "exec", namespace, "ip", "route"]
            with contextlib.suppress(NetnsError):
                if destination in (ROOT_IP, WAN_IP):
                    _ip(*inside, "replace", f"{destination}/32", "dev", "eth0")
                else:
                    _ip(*inside, "del", "blackhole", f"{destination}/32")
        self.blackholes.clear()

    # ---- teardown -----------------------------------------------------------

    def teardown(self) -> None:
        """Delete every veth, namespace and the bridge; never raises."""
        self.blackholes.clear()
        for host in list(self.hosts.values()):
            with contextlib.suppress(NetnsError):
                _ip("link", "del", host.veth)
            try:
                _ip("netns", "del", host.namespace)
            except NetnsError as exc:
                log.warning("could not delete namespace %s: %s", host.namespace, exc)
        self.hosts.clear()
        if self._bridge_up:
            with contextlib.suppress(NetnsError):
                _ip("link", "del", self.bridge)
            self._bridge_up = False
