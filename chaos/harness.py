"""The hosts of a chaos run: per datacenter a ZooKeeper, three brokers and a log store,
each process in its own network namespace, plus the WAN proxies in the root namespace.

The log store is a directory per datacenter (posix), or with ``store="hdfs"`` a
MiniDFSCluster per datacenter (one NameNode, three DataNodes, one JVM) in a host
namespace of its own (10.77.<dc>.3), which the HDFS faults stop and restart.

Clients reach brokers through one TcpProxy per broker (brokers advertise the
proxy address), so WAN faults apply to client traffic; brokers reach their
ZooKeeper directly, so blackhole routes cut them off from it for real.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from talos.client.connection import Connections
from talos.errors import TalosError, TalosTimeout
from talos.proto import talos_pb2 as pb
from talos.testing.hdfs import MiniDfsCluster
from talos.testing.proxy import TcpProxy
from talos.testing.zookeeper import ZK_CONF_DIR, ZK_JARS, ZK_MAIN

from .netns import ROOT_IP, WAN_IP, Host, Network

log = logging.getLogger(__name__)

ZK_PORT = 2181
#: The log store's kinds: a directory per datacenter, or a MiniDFSCluster per datacenter.
STORES = ("posix", "hdfs")
#: The HDFS host of datacenter d is 10.77.d.<DFS_HOST_INDEX>; its root for Talos.
DFS_HOST_INDEX = 3
DFS_ROOT = "/talos"
REPO_ROOT = str(Path(__file__).resolve().parent.parent)


class HarnessError(TalosError):
    """A process of the run could not be started or did not come up."""


@dataclass
class Node:
    """One process in one host namespace."""

    name: str
    host: Host
    args: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False
    env: dict[str, str] = field(default_factory=dict)  # on top of the runner's

    def start(self) -> None:
        path = [REPO_ROOT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {
            **os.environ,
            **self.env,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(path),
        }
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [*self.host.exec_prefix(), *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.paused = False

    @property
    def pid(self) -> int:
        if self.process is None:
            raise HarnessError(f"{self.name}: not started")
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL, and wait for it to be gone."""
        if self.process is not None and self.alive():
            self.signal(signal.SIGKILL)
            self.process.wait()
        self.paused = False

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.paused = False

    def stop(self, timeout: float = 10.0) -> int | None:
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                proc.wait()
        return proc.returncode


@dataclass
class Broker:
    broker_id: str
    node: Node
    port: int
    proxy: TcpProxy
    clock_file: Path

    @property
    def address(self) -> str:
        """What clients use: the proxy in front of the broker."""
        return f"{ROOT_IP}:{self.port}"

    @property
    def direct(self) -> str:
        return f"{self.node.host.ip}:{self.port}"


@dataclass
class DataCenter:
    name: str  # "dc1"
    index: int
    root: Path
    zk: Node | None = None
    brokers: list[Broker] = field(default_factory=list)
    clients: dict[str, Host] = field(default_factory=dict)
    dfs: MiniDfsCluster | None = None  # the HDFS of this datacenter (store "hdfs")
    dfs_host: Host | None = None

    @property
    def hadoop_conf_dir(self) -> Path:
        """Client settings for this datacenter's HDFS (HADOOP_CONF_DIR of its processes)."""
        return self.root / "hadoop-conf"

    @property
    def env(self) -> dict[str, str]:
        """What a broker or the mirror of this datacenter needs in its environment."""
        return {"HADOOP_CONF_DIR": str(self.hadoop_conf_dir)} if self.dfs is not None else {}

    @property
    def store_uri(self) -> str:
        """What brokers and the mirror's store reader open."""
        if self.dfs is not None:
            return self.dfs.url(DFS_ROOT)
        return f"posix:{self.store_dir}"

    @property
    def zk_address(self) -> str:
        return f"10.77.{self.index}.2:{ZK_PORT}"

    @property
    def store_dir(self) -> Path:
        return self.root / "store"

    @property
    def bootstrap(self) -> str:
        return ",".join(b.address for b in self.brokers)

    def broker(self, broker_id: str) -> Broker:
        for broker in self.brokers:
            if broker.broker_id == broker_id:
                return broker
        raise HarnessError(f"{self.name}: no broker {broker_id!r}")


def _write_zk_config(root: Path, ip: str) -> Path:
    conf = root / "zookeeper" / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "zoo.cfg").write_text(
        "\n".join(
            [
                "tickTime=500",
                f"dataDir={root / 'zookeeper' / 'data'}",
                f"clientPort={ZK_PORT}",
                f"clientPortAddress={ip}",
                "minSessionTimeout=1000",
                "maxSessionTimeout=60000",
                "maxClientCnxns=0",
                "admin.enableServer=false",
                "4lw.commands.whitelist=ruok,srvr,stat,mntr",
                "",
            ]
        )
    )
    (conf / "log4j.properties").write_text(
        "log4j.rootLogger=WARN, FILE\n"
        "log4j.appender.FILE=org.apache.log4j.FileAppender\n"
        f"log4j.appender.FILE.File={root / 'zookeeper.log'}\n"
        "log4j.appender.FILE.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.FILE.layout.ConversionPattern=%d %p %c{1}: %m%n\n"
    )
    return conf


def _topology_text(
    source: DataCenter, target: DataCenter, topics: list[str], source_zk: str
) -> str:
    """The topology file the mirror worker reads (see examples/topology.example.toml)."""

    def dc(d: DataCenter, zookeeper: str) -> list[str]:
        brokers = ", ".join(f'"{b.address}"' for b in d.brokers)
        return [
            f"[dc.{d.name}]",
            f'zookeeper = "{zookeeper}"',
            f'cluster = "{d.name}"',
            f'store = "{d.store_uri}"',
            f"brokers = [{brokers}]",
            "",
        ]

    selected = ", ".join(f'"{t}"' for t in topics)
    return "\n".join(
        [
            "# written by the chaos harness",
            *dc(source, source_zk),
            *dc(target, target.zk_address),
            "[[link]]",
            f'source = "{source.name}"',
            f'target = "{target.name}"',
            f"topics = [{selected}]",
            "",
        ]
    )


def _ruok(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=1.0) as sock:
            sock.sendall(b"ruok")
            return sock.recv(16) == b"imok"
    except OSError:
        return False


@dataclass
class Harness:
    """Builds and tears down the datacenters of one run."""

    run_dir: Path
    datacenters: int = 1
    brokers_per_dc: int = 3
    session_timeout: float = 4.0
    store: str = "posix"
    network: Network = field(default_factory=Network)
    dcs: list[DataCenter] = field(default_factory=list)
    extra_nodes: list[Node] = field(default_factory=list)
    wan_proxies: dict[str, TcpProxy] = field(default_factory=dict)
    impaired: set[str] = field(default_factory=set)  # "<dc>/<broker id>" under a fault
    mirror: Node | None = None

    # ---- building --------------------------------------------------------------------

    def start(self) -> None:
        if self.store not in STORES:
            raise HarnessError(f"store: must be one of {STORES}, got {self.store!r}")
        self.network.setup()
        for index in range(1, self.datacenters + 1):
            self.dcs.append(self._start_dc(index))
        for dc in self.dcs:
            self.wait_for_brokers(dc, len(dc.brokers))

    def _start_dc(self, index: int) -> DataCenter:
        name = f"dc{index}"
        root = self.run_dir / name
        dc = DataCenter(name, index, root)
        dc.store_dir.mkdir(parents=True, exist_ok=True)
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        zk_host = self.network.add_host(f"{name}-zk", index, 2)
        conf = _write_zk_config(root, zk_host.ip)
        classpath = ":".join([str(conf), *ZK_JARS, "/usr/share/java/*", ZK_CONF_DIR])
        dc.zk = Node(
            f"{name}-zk",
            zk_host,
            [
                "java",
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-Dzookeeper.admin.enableServer=false",
                f"-Dlog4j.configuration=file:{conf}/log4j.properties",
                "-cp",
                classpath,
                ZK_MAIN,
                str(conf / "zoo.cfg"),
            ],
            logs / f"{name}-zk.log",
        )
        dc.zk.start()
        deadline = time.monotonic() + 60
        while not _ruok(zk_host.ip, ZK_PORT):
            if not dc.zk.alive():
                raise HarnessError(f"{name}: ZooKeeper exited; see {dc.zk.log_path}")
            if time.monotonic() > deadline:
                raise HarnessError(f"{name}: ZooKeeper did not answer within 60 s")
            time.sleep(0.2)
        if self.store == "hdfs":
            self._start_dfs(dc)
        for b in range(1, self.brokers_per_dc + 1):
            dc.brokers.append(self._start_broker(dc, b))
        return dc

    def _start_dfs(self, dc: DataCenter) -> None:
        """A MiniDFSCluster in a namespace of its own, reached by the brokers directly."""
        host = self.network.add_host(f"{dc.name}-dfs", dc.index, DFS_HOST_INDEX)
        dc.dfs_host = host
        dc.dfs = MiniDfsCluster(
            datanodes=3,
            data_dir=str(dc.root / "hdfs"),
            log_path=str(self.run_dir / "logs" / f"{dc.name}-hdfs.log"),
            bind_host=host.ip,
            exec_prefix=host.exec_prefix(),
        )
        try:
            dc.dfs.start()
        except TalosError as exc:
            raise HarnessError(f"{dc.name}: {exc}") from None
        # The DataNodes register under 127.0.0.1 (MiniDFSCluster) with the namespace's
        # address as hostname: clients in other namespaces must dial the hostname.
        dc.hadoop_conf_dir.mkdir(parents=True, exist_ok=True)
        (dc.hadoop_conf_dir / "hdfs-site.xml").write_text(
            "<?xml version='1.0'?>\n<configuration>\n"
            "  <property><name>dfs.client.use.datanode.hostname</name>"
            "<value>true</value></property>\n"
            "</configuration>\n"
        )

    def _start_broker(self, dc: DataCenter, number: int) -> Broker:
        broker_id = f"b{number}"
        host = self.network.add_host(f"{dc.name}-{broker_id}", dc.index, 10 + number)
        port = 9000 + 100 * dc.index + number
        clock_file = dc.root / f"clock-{broker_id}"
        clock_file.write_text("0\n")
        proxy = TcpProxy(ROOT_IP, port, host.ip, port).start()
        args = [
            sys.executable,
            "-m",
            "talos",
            "broker",
            "--zookeeper",
            dc.zk_address,
            "--cluster",
            dc.name,
            "--id",
            broker_id,
            "--listen",
            f"{host.ip}:{port}",
            "--advertised-host",
            ROOT_IP,
            *(
                ["--store", dc.store_uri]
                if dc.dfs is not None
                else ["--data-dir", str(dc.store_dir)]
            ),
            "--session-timeout",
            str(self.session_timeout),
            "--connect-timeout",
            "30",
            "--reassign-delay-ms",
            "0",
            "--clock-offset-file",
            str(clock_file),
        ]
        node = Node(
            f"{dc.name}-{broker_id}",
            host,
            args,
            self.run_dir / "logs" / f"{dc.name}-{broker_id}.log",
            env=dc.env,
        )
        node.start()
        return Broker(broker_id, node, port, proxy, clock_file)

    def client_host(self, dc: DataCenter, name: str) -> Host:
        """A namespace of its own for one client process."""
        if name not in dc.clients:
            dc.clients[name] = self.network.add_host(
                f"{dc.name}-{name}", dc.index, 50 + len(dc.clients)
            )
        return dc.clients[name]

    def start_client(self, dc: DataCenter, name: str, args: list[str]) -> Node:
        node = Node(
            f"{dc.name}-{name}",
            self.client_host(dc, name),
            [sys.executable, "-m", "chaos", "client", *args],
            self.run_dir / "logs" / f"{dc.name}-{name}.log",
        )
        node.start()
        self.extra_nodes.append(node)
        return node

    # ---- the mirror between datacenters ---------------------------------------------------

    def start_mirror(self, source: DataCenter, target: DataCenter, topics: list[str]) -> Node:
        """A worker of the link source->target in a namespace of the target datacenter.

        Its connection to the source's ZooKeeper goes through a WAN proxy on
        10.77.0.2; it reads the source's store directly: the posix directory (shared
        filesystem), or the source's HDFS over a route of its own to that host.
        """
        port = 2100 + source.index
        name = f"{source.name}-zk"
        if name not in self.wan_proxies:
            zk_ip = f"10.77.{source.index}.2"
            self.wan_proxies[name] = TcpProxy(WAN_IP, port, zk_ip, ZK_PORT).start()
        mirror_host = self.client_host(target, "mirror")
        if source.dfs_host is not None:
            self.network.link(mirror_host, source.dfs_host)
        topology = self.run_dir / "topology.toml"
        topology.write_text(
            _topology_text(source, target, topics, f"{WAN_IP}:{port}"), encoding="utf-8"
        )
        node = Node(
            f"{target.name}-mirror",
            mirror_host,
            [
                sys.executable,
                "-m",
                "talos",
                "mirror",
                "run",
                "--topology",
                str(topology),
                "--link",
                f"{source.name}:{target.name}",
                "--worker-id",
                "m1",
                "--session-timeout",
                str(self.session_timeout),
            ],
            self.run_dir / "logs" / f"{target.name}-mirror.log",
            env=source.env,
        )
        node.start()
        self.extra_nodes.append(node)
        self.mirror = node
        return node

    # ---- observing (from the root namespace) --------------------------------------------

    def metadata(self, dc: DataCenter, topics: list[str]) -> pb.MetadataResponse:
        """The first answering broker's view, asked directly (not through the proxies);
        brokers under a fault are asked last."""
        candidates = sorted(
            (b for b in dc.brokers if b.node.alive() and not b.node.paused),
            key=lambda b: f"{dc.name}/{b.broker_id}" in self.impaired,
        )
        last: TalosError = HarnessError(f"{dc.name}: no broker is running")
        for broker in candidates:
            connections = Connections([broker.direct], request_timeout=1.5)
            try:
                response: pb.MetadataResponse = connections.call(
                    broker.direct, "Metadata", pb.MetadataRequest(topics=topics), timeout=1.5
                )
                return response
            except TalosError as exc:
                last = exc
            finally:
                connections.close()
        raise last

    def metadata_from(self, broker: Broker, topics: list[str]) -> pb.MetadataResponse:
        """One broker's own view (its log ends are known only for what it serves)."""
        connections = Connections([broker.direct], request_timeout=2.0)
        try:
            response: pb.MetadataResponse = connections.call(
                broker.direct, "Metadata", pb.MetadataRequest(topics=topics), timeout=2.0
            )
            return response
        finally:
            connections.close()

    def wait_for_brokers(self, dc: DataCenter, count: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for broker in dc.brokers:
                proc = broker.node.process
                if proc is not None and proc.poll() is not None:
                    raise HarnessError(
                        f"{broker.node.name} exited with {proc.returncode}; "
                        f"see {broker.node.log_path}"
                    )
            with contextlib.suppress(TalosError):
                if len(self.metadata(dc, []).brokers) >= count:
                    return
            if time.monotonic() > deadline:
                raise TalosTimeout(f"{dc.name}: {count} brokers did not register in {timeout}s")
            time.sleep(0.2)

    def owners(self, dc: DataCenter, topic: str) -> dict[int, str]:
        """partition -> owner broker id, as the assignment says."""
        response = self.metadata(dc, [topic])
        return {p.partition: p.owner_id for t in response.topics for p in t.partitions}

    def wait_until_served(self, dc: DataCenter, topics: list[str], timeout: float = 90.0) -> None:
        """Until every partition has an owner that serves it (log end known)."""
        deadline = time.monotonic() + timeout
        missing: list[str] = ["(no answer)"]
        while True:
            with contextlib.suppress(TalosError):
                response = self.metadata(dc, topics)
                if all(not t.HasField("error") or not t.error.code for t in response.topics):
                    missing = self._unserved(dc, response)
                    if not missing:
                        return
            if time.monotonic() > deadline:
                raise TalosTimeout(f"{dc.name}: not served within {timeout}s: {', '.join(missing)}")
            time.sleep(0.3)

    def _unserved(self, dc: DataCenter, response: pb.MetadataResponse) -> list[str]:
        """Partitions whose owner does not serve them; each owner is asked itself (its
        own metadata shows a log end only while it serves)."""
        missing = [
            f"{t.name}/{p.partition} (no owner)"
            for t in response.topics
            for p in t.partitions
            if not p.owner_id
        ]
        owners = {p.owner_id for t in response.topics for p in t.partitions if p.owner_id}
        names = [t.name for t in response.topics]
        for owner in sorted(owners):
            broker = dc.broker(owner)
            connections = Connections([broker.direct], request_timeout=2.0)
            try:
                mine: pb.MetadataResponse = connections.call(
                    broker.direct, "Metadata", pb.MetadataRequest(topics=names), timeout=2.0
                )
            except TalosError:
                missing.append(f"broker {owner} does not answer")
                continue
            finally:
                connections.close()
            missing += [
                f"{topic.name}/{p.partition} (owner {owner} not serving)"
                for topic in mine.topics
                for p in topic.partitions
                if p.owner_id == owner and p.log_end < 0
            ]
        return missing

    # ---- teardown ---------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every process and proxy and delete the network; never raises."""
        for node in self.extra_nodes:
            with contextlib.suppress(Exception):
                node.stop(timeout=5)
        for dc in self.dcs:
            for broker in dc.brokers:
                with contextlib.suppress(Exception):
                    broker.node.stop(timeout=5)
            if dc.zk is not None:
                with contextlib.suppress(Exception):
                    dc.zk.stop(timeout=5)
            if dc.dfs is not None:
                with contextlib.suppress(Exception):
                    dc.dfs.stop()
        for dc in self.dcs:
            for broker in dc.brokers:
                with contextlib.suppress(Exception):
                    broker.proxy.stop()
        for proxy in self.wan_proxies.values():
            with contextlib.suppress(Exception):
                proxy.stop()
        self.network.teardown()
