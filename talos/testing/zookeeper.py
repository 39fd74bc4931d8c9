"""Start a real ZooKeeper 3.8 from the Debian package on a free port.

Used by the tests, ``talos dev up`` and the demo. The server runs as a child
process with its own config and data directory, and is always stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from talos.errors import CoordinationError
from talos.testing.process import Server, stop_process_group

ZK_JARS = ("/usr/share/java/zookeeper.jar", "/usr/share/java/zookeeper-jute.jar")
ZK_CONF_DIR = "/etc/zookeeper/conf"
ZK_MAIN = "org.apache.zookeeper.server.ZooKeeperServerMain"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def zookeeper_available() -> str | None:
    """Return why ZooKeeper cannot run here, or None when it can."""
    if shutil.which("java") is None:
        return "java is not installed (make deps installs it from apt)"
    if not os.path.exists(ZK_JARS[0]):
        return f"{ZK_JARS[0]} is missing (make deps installs the 'zookeeper' package)"
    return None


def _four_letter(host: str, port: int, word: bytes, timeout: float = 1.0) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(word)
        chunks = []
        while True:
            data = sock.recv(4096)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


class ZooKeeperServer(Server):
    """One standalone ZooKeeper; ``with ZooKeeperServer() as zk: zk.address``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        data_dir: str | None = None,
        tick_ms: int = 500,
        log_path: str | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="talos-zk-")
        self.tick_ms = tick_ms
        self.log_path = log_path or os.path.join(self.data_dir, "zookeeper.log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _write_config(self) -> Path:
        conf_dir = Path(self.data_dir) / "conf"
        conf_dir.mkdir(parents=True, exist_ok=True)
        (conf_dir / "zoo.cfg").write_text(
            "\n".join(
                [
                    f"tickTime={self.tick_ms}",
                    f"dataDir={self.data_dir}/data",
                    f"clientPort={self.port}",
                    f"clientPortAddress={self.host}",
                    "minSessionTimeout=1000",
                    "maxSessionTimeout=60000",
                    "maxClientCnxns=0",
                    "admin.enableServer=false",
                    "4lw.commands.whitelist=ruok,srvr,stat,mntr",
                    "",
                ]
            )
        )
        (conf_dir / "log4j.properties").write_text(
            "log4j.rootLogger=WARN, FILE\n"
            "log4j.appender.FILE=org.apache.log4j.FileAppender\n"
            f"log4j.appender.FILE.File={self.log_path}\n"
            "log4j.appender.FILE.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.FILE.layout.ConversionPattern=%d %p %c{1}: %m%n\n"
        )
        return conf_dir

    def start(self, timeout: float = 30.0) -> None:
        reason = zookeeper_available()
        if reason is not None:
            raise CoordinationError(f"cannot start ZooKeeper: {reason}")
        conf_dir = self._write_config()
        classpath = ":".join([str(conf_dir), *ZK_JARS, "/usr/share/java/*"])
        cmd = [
            "java",
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-Dzookeeper.admin.enableServer=false",
            f"-Dlog4j.configuration=file:{conf_dir}/log4j.properties",
            "-cp",
            classpath,
            ZK_MAIN,
            str(conf_dir / "zoo.cfg"),
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CoordinationError(
                    f"ZooKeeper exited with code {self.process.returncode}; see {self.log_path}"
                )
            try:
                if _four_letter(self.host, self.port, b"ruok") == b"imok" and b"Mode" in (
                    _four_letter(self.host, self.port, b"srvr")
                ):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise CoordinationError(f"ZooKeeper did not start within {timeout}s; see {self.log_path}")

    def pause(self) -> None:
        """Freeze the server (SIGSTOP); clients' sessions will time out."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        proc = self.process
        self.process = None
        stop_process_group(proc, timeout=10)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
