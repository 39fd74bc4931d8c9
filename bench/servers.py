"""Start NATS JetStream and Redis 7 from their Debian packages, on loopback, and stop them.

Each server runs in its own process group with its own data directory on a
free port; :meth:`stop` ends the whole group, so nothing outlives the run.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from talos.testing.process import stop_process_group
from talos.testing.zookeeper import free_port


class ServerError(Exception):
    pass


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise ServerError(f"not listening on {port} after {timeout}s")


class Server:
    name = "server"
    binary = ""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "server.log"

    @classmethod
    def available(cls) -> bool:
        return shutil.which(cls.binary) is not None

    def args(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        path = shutil.which(self.binary)
        if path is None:
            raise ServerError(f"{self.binary} not found: run `make bench-deps`")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [path, *self.args()],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,  # its own process group, ended as a whole
            )
        _wait_port(self.port, self.proc, self.log)

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else -1

    def stop(self) -> None:
        stop_process_group(self.proc, timeout=10)


class NatsServer(Server):
    """nats-server with JetStream on file storage (writes reach the page cache; no fsync
    per message: its default sync interval is two minutes)."""

    name = "nats"
    binary = "nats-server"

    def args(self) -> list[str]:
        return ["-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.dir / "store")]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


class RedisServer(Server):
    """redis-server with the append-only file on and fsync once a second."""

    name = "redis"
    binary = "redis-server"

    def args(self) -> list[str]:
        return [
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--protected-mode",
            "no",
        ]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"
