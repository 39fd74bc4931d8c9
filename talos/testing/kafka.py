"""Start a real Kafka 4 (KRaft) and MirrorMaker 2 from the jars `make kafka-jars` fetched.

The peers of ``make bench`` and ``talos bench mirror --against mm2``. Like
:mod:`talos.testing.zookeeper`: one child process in its own process group, its
own config and data directory, free loopback ports, always stopped.

A :class:`KafkaServer` is one node that is both controller and broker (KRaft
combined mode): ``kafka.tools.StorageTool format`` writes the cluster id into
its log directory, then ``kafka.Kafka`` runs it. A :class:`MirrorMaker` is one
``connect-mirror-maker`` process (``org.apache.kafka.connect.mirror.MirrorMaker``)
running from a generated properties file.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from talos.errors import InvalidArgument, TalosError
from talos.testing.process import Server, kill_process_group, stop_process_group
from talos.testing.zookeeper import free_port

#: Where `make kafka-jars` puts the jars (TALOS_KAFKA_JARS overrides it).
DEFAULT_JARS = Path(__file__).resolve().parents[2] / "var" / "jars" / "kafka"
#: What the broker logs once it serves clients (kafka.server.KafkaBroker.STARTED_MESSAGE).
STARTED = "Kafka Server started"


def jars_dir() -> Path:
    return Path(os.environ.get("TALOS_KAFKA_JARS") or DEFAULT_JARS)


def kafka_available() -> str | None:
    """Why Kafka cannot run here, or None when it can."""
    if shutil.which("java") is None:
        return "java is not installed (make deps installs it from apt)"
    jars = jars_dir()
    if not any(jars.glob("kafka_2.13-*.jar")):
        return f"no Kafka jars in {jars} (run `make kafka-jars`)"
    return None


def mirror_maker_available() -> str | None:
    """Why MirrorMaker 2 cannot run here, or None when it can."""
    reason = kafka_available()
    if reason is None and not any(jars_dir().glob("connect-mirror-[0-9]*.jar")):
        return f"no connect-mirror jar in {jars_dir()} (run `make kafka-jars`)"
    return reason


def cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    Never one that starts with "-": kafka-storage's argument parser would read it
    as an option (about one id in 64). Kafka's own Uuid.randomUuid skips those too.
    """
    while True:
        text = base64.urlsafe_b64encode(random_bytes()).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def properties(values: Mapping[str, object]) -> str:
    """A Java properties file (keys in the order given)."""
    return "".join(f"{key}={value}\n" for key, value in values.items())


def broker_properties(
    host: str, port: int, controller_port: int, log_dir: str, partitions: int = 4
) -> dict[str, object]:
    """One node, controller and broker, replication factor 1 everywhere.

    Kafka's defaults are kept where they matter for a comparison: no
    ``log.flush.interval.*`` is set, so the broker leaves flushing to the page
    cache (its default), and producers choose ``acks``.
    """
    return {
        "process.roles": "broker,controller",
        "node.id": 1,
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": log_dir,
        "num.partitions": partitions,
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "group.initial.rebalance.delay.ms": 0,
        "auto.create.topics.enable": "true",
    }


def _log4j2(path: str, info_loggers: tuple[str, ...]) -> str:
    lines = [
        "status = warn",
        "appender.file.type = File",
        "appender.file.name = FILE",
        f"appender.file.fileName = {path}",
        "appender.file.layout.type = PatternLayout",
        "appender.file.layout.pattern = [%d] %p %m (%c)%n",
        "rootLogger.level = WARN",
        "rootLogger.appenderRef.file.ref = FILE",
    ]
    for i, name in enumerate(info_loggers):
        lines += [f"logger.l{i}.name = {name}", f"logger.l{i}.level = INFO"]
    return "\n".join(lines) + "\n"


class JavaProcess:
    """A JVM child in its own process group, with pause/resume/kill for fault tests."""

    def __init__(self, log_path: str) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else -1

    def _spawn(self, main: str, args: list[str], jvm: list[str]) -> None:
        cmd = [
            "java",
            *jvm,
            "-Djava.awt.headless=true",
            "-cp",
            f"{jars_dir()}/*",
            main,
            *args,
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pause(self) -> None:
        """SIGSTOP the whole process: it stays connected but does nothing."""
        if self.alive():
            os.killpg(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.alive():
            os.killpg(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, no clean-up: the crash a replicator has to survive."""
        if self.process is not None:
            kill_process_group(self.process)

    def stop(self, timeout: float = 20.0) -> None:
        stop_process_group(self.process, timeout)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class KafkaServer(JavaProcess, Server):
    """One KRaft node (controller + broker): ``with KafkaServer() as k: k.bootstrap``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        data_dir: str | None = None,
        partitions: int = 4,
        heap_mb: int = 512,
    ) -> None:
        if not 1 <= partitions <= 10_000:
            raise InvalidArgument(f"partitions: must be from 1 to 10000, got {partitions}")
        if not 128 <= heap_mb <= 65_536:
            raise InvalidArgument(f"heap_mb: must be from 128 to 65536, got {heap_mb}")
        self.host = host
        self.port = free_port(host)
        self.controller_port = free_port(host)
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="talos-kafka-"))
        self.partitions = partitions
        self.heap_mb = heap_mb
        self.cluster_id = cluster_id()
        super().__init__(str(self.data_dir / "kafka.log"))

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def _configure(self) -> tuple[Path, Path]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        props.write_text(
            properties(
                broker_properties(
                    self.host,
                    self.port,
                    self.controller_port,
                    str(self.data_dir / "logs"),
                    self.partitions,
                )
            )
        )
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(_log4j2(self.log_path, ("kafka.server.KafkaRaftServer",)))
        return props, log4j

    def _jvm(self, log4j: Path) -> list[str]:
        return [
            f"-Xmx{self.heap_mb}m",
            f"-Xms{min(self.heap_mb, 256)}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.data_dir}",
        ]

    def format(self, log4j: Path, props: Path, timeout: float = 120.0) -> None:
        """``kafka-storage.sh format``: write the cluster id and node id into the log dir."""
        cmd = [
            "java",
            *self._jvm(log4j),
            "-cp",
            f"{jars_dir()}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            self.cluster_id,
            "-c",
            str(props),
        ]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise TalosError(f"kafka storage format did not finish in {timeout} s") from exc
        if done.returncode != 0:
            raise TalosError(
                f"kafka storage format failed ({done.returncode}): "
                f"{(done.stderr or done.stdout)[-2000:]}"
            )

    def start(self, timeout: float = 120.0) -> None:
        reason = kafka_available()
        if reason is not None:
            raise TalosError(f"cannot start Kafka: {reason}")
        props, log4j = self._configure()
        self.format(log4j, props, timeout)
        self._spawn("kafka.Kafka", [str(props)], self._jvm(log4j))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise TalosError(f"Kafka exited: {self.log_tail()}")
            if STARTED in self.log_tail(200_000) and _listening(self.host, self.port):
                return
            time.sleep(0.2)
        self.stop()
        raise TalosError(f"Kafka did not start within {timeout} s; see {self.log_path}")

    def stop(self, timeout: float = 20.0) -> None:
        super().stop(timeout)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def mm2_properties(
    source: str,
    target: str,
    topics: str,
    *,
    tasks: int = 1,
    sync_interval_s: int = 1,
    rest_port: int | None = None,
) -> dict[str, object]:
    """MirrorMaker 2 copying ``topics`` (a regex) from cluster A to cluster B, one way.

    Replication factor 1 for its internal topics (one broker per cluster); group
    offsets are translated and written into B every ``sync_interval_s``, as an
    operator who plans consumer failover would set it. Everything else is MM2's
    default, including its replication policy (the copy of ``t`` in B is ``A.t``)
    and its at-least-once delivery (``exactly.once.support`` stays disabled).
    """
    values: dict[str, object] = {
        "clusters": "A, B",
        "A.bootstrap.servers": source,
        "B.bootstrap.servers": target,
        "A->B.enabled": "true",
        "A->B.topics": topics,
        "B->A.enabled": "false",
        "tasks.max": tasks,
        "replication.factor": 1,
        "checkpoints.topic.replication.factor": 1,
        "heartbeats.topic.replication.factor": 1,
        "offset-syncs.topic.replication.factor": 1,
        "offset.storage.replication.factor": 1,
        "status.storage.replication.factor": 1,
        "config.storage.replication.factor": 1,
        "refresh.topics.interval.seconds": 5,
        "refresh.groups.interval.seconds": 5,
        "emit.checkpoints.interval.seconds": sync_interval_s,
        "sync.group.offsets.enabled": "true",
        "sync.group.offsets.interval.seconds": sync_interval_s,
        "emit.heartbeats.interval.seconds": 1,
    }
    if rest_port is not None:
        values["dedicated.mode.enable.internal.rest"] = "true"
        values["listeners"] = f"http://127.0.0.1:{rest_port}"
    return values


class MirrorMaker(JavaProcess):
    """One ``connect-mirror-maker`` process (MM2 dedicated mode) with a generated config."""

    def __init__(
        self,
        source: str,
        target: str,
        topics: str,
        work_dir: str,
        *,
        tasks: int = 1,
        rest: bool = True,
        heap_mb: int = 512,
        name: str = "mm2",
    ) -> None:
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.rest_port = free_port() if rest else None
        self.props_path = self.work_dir / f"{name}.properties"
        self.props_path.write_text(
            properties(
                mm2_properties(source, target, topics, tasks=tasks, rest_port=self.rest_port)
            )
        )
        self.log4j_path = self.work_dir / f"{name}-log4j2.properties"
        super().__init__(str(self.work_dir / f"{name}.log"))
        self.log4j_path.write_text(_log4j2(self.log_path, ("org.apache.kafka.connect.mirror",)))
        self.heap_mb = heap_mb

    def start(self) -> None:
        reason = mirror_maker_available()
        if reason is not None:
            raise TalosError(f"cannot start MirrorMaker 2: {reason}")
        jvm = [
            f"-Xmx{self.heap_mb}m",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={self.log4j_path}",
        ]
        self._spawn(
            "org.apache.kafka.connect.mirror.MirrorMaker",
            [str(self.props_path), "--clusters", "B"],
            jvm,
        )
