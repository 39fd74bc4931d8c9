"""Two (or more) datacenters on this machine, a mirror link between them, and a topology file.

``talos dev up --dcs 2``, the demo and the mirror integration tests use it.
Each DC is a :class:`LocalCluster` with its own ZooKeeper, log store and
brokers; the mirror worker is a real ``talos mirror run`` process.

With ``wan_dcs`` the brokers of those DCs are reached only through a
:class:`TcpProxy` (WAN emulation): the brokers advertise a second loopback
address (127.0.0.2) where a proxy listens on the same port and forwards to
the broker. Everything that finds brokers through the topology or through
Metadata answers (the mirror worker, clients, ``mirror status``) then
crosses the proxy, so latency, bandwidth caps and cuts apply to it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from talos.errors import InvalidArgument, TalosError
from talos.testing.cluster import LocalCluster
from talos.testing.process import Server
from talos.testing.proxy import TcpProxy
from talos.testing.supervisor import supervise
from talos.testing.zookeeper import free_port
from topology import Datacenter, Link, StoreSpec, Topology, dump_topology, load_topology

TOPOLOGY_FILE = "topology.toml"
#: The same name `talos dev up` uses for its bootstrap file.
BOOTSTRAP_FILE = "bootstrap"
#: The loopback address proxied brokers advertise; the proxies listen there.
WAN_HOST = "127.0.0.2"
DEFAULT_DC_NAMES = ("A", "B")


def mirror_available() -> str | None:
    """Why ``talos mirror run`` cannot be started here, or None when it can."""
    try:
        if importlib.util.find_spec("mirror.cli") is None:
            return "mirror.cli is not importable (the mirror worker command is not built yet)"
    except ImportError as exc:
        return f"mirror.cli is not importable: {exc}"
    return None


@dataclass
class MirrorProcess:
    """One ``talos mirror run`` subprocess."""

    link: str
    worker_id: str
    args: list[str]
    log_path: str
    process: subprocess.Popen[bytes] | None = None
    metrics_address: str = ""  # where it serves Prometheus /metrics ("" if it does not)

    @property
    def pid(self) -> int:
        if self.process is None:
            raise InvalidArgument(f"mirror worker {self.worker_id}: not started")
        return self.process.pid

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL: the crash a mirror must survive without loss or duplicates."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


@dataclass
class DataCenter:
    name: str
    cluster: LocalCluster
    #: broker id -> the proxy in front of it (WAN DCs only).
    proxies: dict[str, TcpProxy] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        """What clients use: the proxies of a WAN DC, else the brokers."""
        if self.proxies:
            return ",".join(p.address for p in self.proxies.values())
        return self.cluster.bootstrap

    @property
    def zookeeper(self) -> str:
        return self.cluster.zookeeper.address


class MultiDC(Server):
    """Start with ``with MultiDC(data_dir) as dcs:``; ``dcs.topology_path`` is the file."""

    def __init__(
        self,
        data_dir: str | None = None,
        *,
        dc_names: Sequence[str] = DEFAULT_DC_NAMES,
        brokers: int = 1,
        links: Sequence[tuple[str, str]] = (("A", "B"),),
        topics: Sequence[str] = ("*",),
        naming: str = "identity",
        offset_sync_interval_s: float = 5.0,
        session_timeout: float = 4.0,
        wan_dcs: Sequence[str] = (),
        wan_latency_ms: float = 0.0,
        wan_bandwidth_bytes_s: int | None = None,
        start_mirror: bool = True,
        mirror_args: Sequence[str] = (),
        metrics: bool = False,
    ) -> None:
        if len(set(dc_names)) != len(dc_names) or len(dc_names) < 1:
            raise InvalidArgument(f"dc_names: must be distinct names, got {list(dc_names)}")
        for source, target in links:
            if source not in dc_names or target not in dc_names or source == target:
                raise InvalidArgument(
                    f"links: {source}:{target} must join two different DCs of {list(dc_names)}"
                )
        for name in wan_dcs:
            if name not in dc_names:
                raise InvalidArgument(f"wan_dcs: {name!r} is not one of {list(dc_names)}")
        if isinstance(brokers, bool) or not isinstance(brokers, int) or not 1 <= brokers <= 16:
            raise InvalidArgument(f"brokers: must be from 1 to 16 per DC, got {brokers!r}")
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="talos-multidc-"))
        self.dc_names = tuple(dc_names)
        self.brokers = brokers
        self.link_pairs = tuple(links)
        self.topics = tuple(topics)
        self.naming = naming
        self.offset_sync_interval_s = offset_sync_interval_s
        self.session_timeout = session_timeout
        self.wan_dcs = tuple(wan_dcs)
        self.wan_latency_ms = wan_latency_ms
        self.wan_bandwidth_bytes_s = wan_bandwidth_bytes_s
        self.start_mirror = start_mirror
        self.mirror_args = tuple(mirror_args)
        self.metrics = metrics  # brokers and mirror workers serve /metrics
        self.dcs: dict[str, DataCenter] = {}
        self.mirrors: list[MirrorProcess] = []
        self.topology_path = self.data_dir / TOPOLOGY_FILE
        self.topology: Topology | None = None
        #: Why no mirror worker was started (None when one was, or none was wanted).
        self.mirror_skipped: str | None = None

    # -- lifecycle --

    def start(self, timeout: float = 60.0) -> MultiDC:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for name in self.dc_names:
            directory = str(self.data_dir / name)
            wan = name in self.wan_dcs
            cluster = LocalCluster(
                brokers=self.brokers,
                data_dir=directory,
                cluster=name,
                session_timeout=self.session_timeout,
                advertised_host=WAN_HOST if wan else "",
                metrics=self.metrics,
            )
            dc = DataCenter(name, cluster)
            self.dcs[name] = dc
            cluster.zookeeper.start()
            for _ in range(self.brokers):
                broker = cluster.add_broker(start=True)
                if wan:
                    dc.proxies[broker.broker_id] = TcpProxy(
                        WAN_HOST,
                        broker.port,
                        "127.0.0.1",
                        broker.port,
                        latency_ms=self.wan_latency_ms,
                        bandwidth_bytes_s=self.wan_bandwidth_bytes_s,
                    ).start()
        for dc in self.dcs.values():
            dc.cluster.wait_for_brokers(self.brokers, timeout)
        self.topology = self.write_topology()
        if self.start_mirror:
            reason = mirror_available()
            if reason is None:
                for source, target in self.link_pairs:
                    self.start_worker(f"{source}:{target}")
            else:
                self.mirror_skipped = reason
        return self

    def stop(self) -> None:
        for mirror in self.mirrors:
            mirror.stop()
        for dc in self.dcs.values():
            for proxy in dc.proxies.values():
                proxy.stop()
            dc.cluster.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- the topology --

    def build_topology(self) -> Topology:
        datacenters = {
            name: Datacenter(
                name=name,
                zookeeper=dc.zookeeper,
                cluster=dc.cluster.cluster,
                store=StoreSpec.parse(f"posix:{os.path.abspath(dc.cluster.store_dir)}"),
                brokers=tuple(dc.bootstrap.split(",")),
            )
            for name, dc in self.dcs.items()
        }
        links = tuple(
            Link(
                source=source,
                target=target,
                topics=self.topics,
                naming=self.naming,  # type: ignore[arg-type]
                offset_sync_interval_s=self.offset_sync_interval_s,
            )
            for source, target in self.link_pairs
        )
        return Topology(path=str(self.topology_path), datacenters=datacenters, links=links)

    def write_topology(self) -> Topology:
        """Write ``data_dir/topology.toml`` (validated by loading it back) and return it."""
        text = dump_topology(self.build_topology())
        tmp = self.topology_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.topology_path)
        return load_topology(self.topology_path)

    # -- access --

    def dc(self, name: str) -> DataCenter:
        try:
            return self.dcs[name]
        except KeyError:
            raise InvalidArgument(f"dc: {name!r} is not one of {list(self.dcs)}") from None

    def bootstrap(self, name: str) -> str:
        return self.dc(name).bootstrap

    def proxies(self, name: str) -> list[TcpProxy]:
        return list(self.dc(name).proxies.values())

    # -- WAN faults (all proxies of the WAN DCs at once) --

    def _wan_proxies(self) -> list[TcpProxy]:
        proxies = [p for name in self.wan_dcs for p in self.dc(name).proxies.values()]
        if not proxies:
            raise InvalidArgument("wan_dcs: no DC is behind a WAN proxy")
        return proxies

    def cut_wan(self, mode: str = "refuse") -> None:
        for proxy in self._wan_proxies():
            proxy.cut(mode)  # type: ignore[arg-type]

    def heal_wan(self) -> None:
        for proxy in self._wan_proxies():
            proxy.heal()

    def set_wan_latency(self, latency_ms: float) -> None:
        for proxy in self._wan_proxies():
            proxy.set_latency(latency_ms)

    # -- mirror workers --

    def start_worker(
        self, link: str = "A:B", worker_id: str | None = None, extra_args: Sequence[str] = ()
    ) -> MirrorProcess:
        """Start a ``talos mirror run`` process for ``link``."""
        reason = mirror_available()
        if reason is not None:
            raise TalosError(f"cannot start a mirror worker: {reason}")
        worker_id = worker_id or f"w{len(self.mirrors) + 1}"
        metrics_address = f"127.0.0.1:{free_port()}" if self.metrics else ""
        args = [
            sys.executable,
            "-m",
            "talos",
            "mirror",
            "run",
            "--topology",
            str(self.topology_path),
            "--link",
            link,
            "--worker-id",
            worker_id,
            *self.mirror_args,
            *extra_args,
            *(["--metrics-listen", metrics_address] if metrics_address else []),
        ]
        log_path = str(self.data_dir / f"mirror-{link.replace(':', '-')}-{worker_id}.log")
        process = MirrorProcess(link, worker_id, args, log_path, metrics_address=metrics_address)
        process.start()
        self.mirrors.append(process)
        return process

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2
    ) -> None:
        """Poll ``predicate()`` until true; TalosError naming ``what`` on timeout.

        Fails early when a mirror worker crashed on its own (exit code > 0).
        """
        deadline = time.monotonic() + timeout
        while not predicate():
            for mirror in self.mirrors:
                code = mirror.process.poll() if mirror.process is not None else None
                if code is not None and code > 0:
                    raise TalosError(
                        f"mirror worker {mirror.worker_id} exited with "
                        f"{code}; see {mirror.log_path}"
                    )
            if time.monotonic() > deadline:
                raise TalosError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(interval)


# -- talos dev up --dcs 2 ------------------------------------------------------------------------


def run_dev_up(
    data_dir: str | os.PathLike[str],
    *,
    brokers: int,
    session_timeout: float,
    stop: threading.Event,
    dc_names: Sequence[str] = DEFAULT_DC_NAMES,
    out: TextIO | None = None,
) -> int:
    """Run two DCs with a mirror link A→B until ``stop`` is set (Ctrl-C, SIGTERM).

    Writes ``topology.toml`` and one ``bootstrap-<DC>`` file per DC in
    ``data_dir``; ``bootstrap`` holds the first DC's, so the single-cluster
    commands work against A without flags.
    """
    out = out or sys.stdout
    directory = Path(data_dir)
    names = tuple(dc_names)
    deployment = MultiDC(
        str(directory),
        dc_names=names,
        brokers=brokers,
        links=((names[0], names[1]),),
        session_timeout=session_timeout,
        metrics=True,
    )
    written: list[Path] = []

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    try:
        say(
            f"starting {len(names)} datacenters ({', '.join(names)}), each with its own "
            f"ZooKeeper and {brokers} broker(s), in {directory} ..."
        )
        deployment.start()
        for name, dc in deployment.dcs.items():
            path = directory / f"{BOOTSTRAP_FILE}-{name}"
            path.write_text(dc.bootstrap + "\n")
            written.append(path)
            say(f"DC {name}: ZooKeeper {dc.zookeeper}  bootstrap {dc.bootstrap}  ({path})")
        first = directory / BOOTSTRAP_FILE
        first.write_text(deployment.dc(names[0]).bootstrap + "\n")
        written.append(first)
        written.append(deployment.topology_path)
        say(f"topology:   {deployment.topology_path}")
        link = f"{names[0]}:{names[1]}"
        if deployment.mirrors:
            worker = deployment.mirrors[0]
            say(f"mirror:     link {link} (pid {worker.pid}, log {worker.log_path})")
        else:
            say(f"mirror:     NOT started: {deployment.mirror_skipped}")
        say(f"status:     talos mirror status --topology {deployment.topology_path}")
        say(f"(the default bootstrap file {first} points at {names[0]}; Ctrl-C stops everything)")
        supervise(
            directory,
            stop,
            brokers={
                f"{n}/{b.broker_id}": b
                for n, dc in deployment.dcs.items()
                for b in dc.cluster.brokers
            },
            mirrors={worker.link: worker for worker in deployment.mirrors},
            out=out,
        )
    finally:
        say("stopping ...")
        deployment.stop()
        for path in written:
            path.unlink(missing_ok=True)
    return 0
