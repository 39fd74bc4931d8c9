"""A local cluster of real processes: one ZooKeeper and N broker processes.

``talos dev up``, the demo and the integration tests all use it, so what
the tests exercise is what a person runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from talos.client.connection import Connections
from talos.errors import InvalidArgument, TalosError, TalosTimeout
from talos.proto import talos_pb2 as pb
from talos.security.dev import ADMIN_TENANT, ClusterSecurity, create_token
from talos.security.tls import ClientSecurity
from talos.testing.process import Server

from .zookeeper import ZooKeeperServer, free_port


@dataclass
class BrokerProcess:
    broker_id: str
    port: int
    log_path: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    metrics_address: str = ""  # where it serves Prometheus /metrics ("" if it does not)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        env = {**os.environ, **self.extra_env}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
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
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


class LocalCluster(Server):
    def __init__(
        self,
        brokers: int = 3,
        data_dir: str | None = None,
        cluster: str = "local",
        session_timeout: float = 4.0,
        reassign_delay_ms: int = 0,
        zookeeper: ZooKeeperServer | None = None,
        max_queued_bytes: int | None = None,
        advertised_host: str = "",
        clock_offset_file: str = "",
        store: str = "",
        metrics: bool = False,
        broker_args: Sequence[str] = (),
        security: ClusterSecurity | None = None,
    ) -> None:
        # TLS (and tokens, when security.auth) on every broker; an admin token is made
        # at start and ``admin_client`` reaches the brokers with it.
        self.security = security
        self.admin_token = ""
        self._own_dir = data_dir is None
        # hdfs://... puts the logs on HDFS; "" keeps them in <data_dir>/store (posix).
        self.store = store
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="talos-cluster-")
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        self.cluster = cluster
        self.session_timeout = session_timeout
        self.reassign_delay_ms = reassign_delay_ms
        self.max_queued_bytes = max_queued_bytes  # None: the broker's default
        # Brokers listen on 127.0.0.1 but may tell clients another address (a WAN proxy).
        self.advertised_host = advertised_host
        # Brokers add the integer (ms) in this file to their wall clock (an injected clock).
        self.clock_offset_file = clock_offset_file
        self.metrics = metrics  # brokers serve /metrics on a free port each
        self.broker_args = list(broker_args)  # more `talos broker` flags for every broker
        self._own_zk = zookeeper is None
        self.zookeeper = zookeeper or ZooKeeperServer(
            data_dir=os.path.join(self.data_dir, "zookeeper")
        )
        self.brokers: list[BrokerProcess] = []
        self._broker_count = brokers

    @property
    def store_dir(self) -> str:
        return os.path.join(self.data_dir, "store")

    @property
    def store_uri(self) -> str:
        """Where the brokers keep their logs, as a topology file names it."""
        return self.store or f"posix:{self.store_dir}"

    @property
    def bootstrap(self) -> str:
        return ",".join(b.address for b in self.brokers)

    def _broker_args(self, broker_id: str, port: int, metrics_address: str = "") -> list[str]:
        return [
            sys.executable,
            "-m",
            "talos",
            "broker",
            "--zookeeper",
            self.zookeeper.address,
            "--cluster",
            self.cluster,
            "--id",
            broker_id,
            "--listen",
            f"127.0.0.1:{port}",
            *(["--store", self.store] if self.store else ["--data-dir", self.store_dir]),
            "--session-timeout",
            str(self.session_timeout),
            "--reassign-delay-ms",
            str(self.reassign_delay_ms),
            *(["--advertised-host", self.advertised_host] if self.advertised_host else []),
            *(["--clock-offset-file", self.clock_offset_file] if self.clock_offset_file else []),
            *(["--metrics-listen", metrics_address] if metrics_address else []),
            *(
                ["--max-queued-bytes", str(self.max_queued_bytes)]
                if self.max_queued_bytes is not None
                else []
            ),
            *self.broker_args,
            *(self.security.broker_args() if self.security is not None else []),
        ]

    @property
    def admin_client(self) -> ClientSecurity | None:
        """How tools reach the brokers: None (the process default) without security."""
        if self.security is None:
            return None
        return self.security.client(self.admin_token)

    @property
    def admin_token_file(self) -> str:
        return os.path.join(self.data_dir, "admin.token")

    def start(self, timeout: float | None = None) -> None:
        if timeout is None:  # an hdfs broker starts a JVM and loads Hadoop's client first
            timeout = 180.0 if self.store.startswith("hdfs://") else 60.0
        if self.brokers:  # a second start would orphan the first ZooKeeper process
            raise InvalidArgument("LocalCluster.start: already started (a with-block starts it)")
        if self._own_zk:
            self.zookeeper.start()
        if self.security is not None and self.security.auth:
            self.admin_token = create_token(
                self.zookeeper.address,
                self.cluster,
                ADMIN_TENANT,
                superuser=True,
                description="the local cluster's admin",
                token_file=self.admin_token_file,
            )
        for _i in range(self._broker_count):
            self.add_broker(start=True)
        self.wait_for_brokers(self._broker_count, timeout)

    def add_broker(self, start: bool = True) -> BrokerProcess:
        broker_id = f"b{len(self.brokers) + 1}"
        port = free_port()
        metrics_address = f"127.0.0.1:{free_port()}" if self.metrics else ""
        broker = BrokerProcess(
            broker_id,
            port,
            os.path.join(self.data_dir, f"broker-{broker_id}.log"),
            self._broker_args(broker_id, port, metrics_address),
            metrics_address=metrics_address,
        )
        self.brokers.append(broker)
        if start:
            broker.start()
        return broker

    def restart(self, broker: BrokerProcess) -> None:
        broker.stop()
        broker.start()

    def live_brokers(self) -> dict[str, str]:
        connections = Connections(
            [b.address for b in self.brokers if b.alive()] or ["127.0.0.1:1"],
            security=self.admin_client,
        )
        try:
            response: pb.MetadataResponse = connections.call_any(
                "Metadata", pb.MetadataRequest(topics=[]), timeout=2.0
            )
            return {b.id: b.address for b in response.brokers}
        finally:
            connections.close()

    def wait_for_brokers(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for broker in self.brokers:
                if broker.process is not None and broker.process.poll() not in (None, 0):
                    raise TalosError(
                        f"broker {broker.broker_id} exited with {broker.process.returncode}; "
                        f"see {broker.log_path}:\n{_tail(broker.log_path)}"
                    )
            try:
                if len(self.live_brokers()) >= count:
                    return
            except TalosError:
                pass
            if time.monotonic() > deadline:
                raise TalosTimeout(f"{count} brokers did not register within {timeout}s")
            time.sleep(0.1)

    def stop(self) -> None:
        for broker in self.brokers:
            broker.stop()
        if self._own_zk:
            self.zookeeper.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _tail(path: str, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
