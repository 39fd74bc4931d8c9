"""Start a real HDFS (MiniDFSCluster: one NameNode, N DataNodes, one JVM) on free ports.

Used by the tests, ``talos dev up --store hdfs`` and the HDFS demo. The cluster runs
as a child JVM (our launcher ``io.talos.hadoop.MiniDfs``, compiled by
``make hadoop-jars``) with its own data directory; it stops when its stdin closes,
so it never outlives the process that started it. Through the same stdin it takes
commands (``stop_datanode``, ``restart_datanodes``, ``stop_namenode``,
``start_namenode``): the HDFS faults of the chaos harness.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence

from talos.errors import StorageError
from talos.storage.hdfs import MAKE_TARGET, classes_dir, hadoop_classpath, java_missing
from talos.testing.process import Server, stop_process_group

LAUNCHER = "io.talos.hadoop.MiniDfs"


def hdfs_available() -> str | None:
    """Why a MiniDFSCluster cannot run here, or None when it can."""
    reason = java_missing()
    if reason is not None:
        return reason
    try:
        hadoop_classpath(minicluster=True)
    except StorageError as exc:
        return exc.message
    if not (classes_dir() / ".stamp").exists():
        return f"the MiniDfs launcher is not compiled: run `{MAKE_TARGET}`"
    return None


class MiniDfsCluster(Server):
    """``with MiniDfsCluster() as dfs: dfs.uri`` (``hdfs://127.0.0.1:PORT``)."""

    def __init__(
        self,
        datanodes: int = 3,
        data_dir: str | None = None,
        log_path: str | None = None,
        quick_start: bool = True,
        bind_host: str = "127.0.0.1",
        exec_prefix: Sequence[str] = (),
    ) -> None:
        if isinstance(datanodes, bool) or not isinstance(datanodes, int) or datanodes < 1:
            raise ValueError(f"datanodes: must be a positive integer, got {datanodes!r}")
        self.datanodes = datanodes
        # Where the NameNode and DataNodes listen; exec_prefix runs the JVM elsewhere
        # (the chaos harness: `ip netns exec NS`, bind_host the namespace's address).
        self.bind_host = bind_host
        self.exec_prefix = list(exec_prefix)
        self._out = b""
        # C1 only: about 30% less CPU to start (measured 12.6 -> 8.9 s), slower at peak;
        # benchmarks turn it off.
        self.quick_start = quick_start
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="talos-hdfs-")
        self.log_path = log_path or os.path.join(self.data_dir, "minidfs.log")
        self.uri = ""
        self.http_address = ""
        self.process: subprocess.Popen[bytes] | None = None

    def _log4j(self) -> str:
        path = os.path.join(self.data_dir, "log4j.properties")
        with open(path, "w") as f:
            f.write(
                "log4j.rootLogger=INFO, FILE\n"
                "log4j.logger.org.apache.hadoop.hdfs.StateChange=WARN\n"
                "log4j.logger.BlockStateChange=WARN\n"
                "log4j.appender.FILE=org.apache.log4j.FileAppender\n"
                f"log4j.appender.FILE.File={self.log_path}\n"
                "log4j.appender.FILE.layout=org.apache.log4j.PatternLayout\n"
                "log4j.appender.FILE.layout.ConversionPattern=%d %p %c{1}: %m%n\n"
            )
        return path

    def start(self, timeout: float = 240.0) -> None:
        if self.process is not None:
            raise StorageError("MiniDfsCluster.start: already started")
        reason = hdfs_available()
        if reason is not None:
            raise StorageError(f"cannot start a MiniDFSCluster: {reason}")
        os.makedirs(self.data_dir, exist_ok=True)
        classpath = ":".join([str(classes_dir()), *hadoop_classpath(minicluster=True)])
        cmd = [
            *self.exec_prefix,
            "java",
            "-Xmx768m",
            "-XX:+UseSerialGC",
            *(["-XX:TieredStopAtLevel=1"] if self.quick_start else []),
            "-Djava.net.preferIPv4Stack=true",
            f"-Dlog4j.configuration=file:{self._log4j()}",
            "-cp",
            classpath,
            LAUNCHER,
            os.path.join(self.data_dir, "dfs"),
            str(self.datanodes),
            self.bind_host,
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        line = self._read_line(timeout)
        words = line.split()
        if len(words) != 3 or words[0] != "READY":
            code = self.process.poll()
            self.stop()
            raise StorageError(
                f"MiniDFSCluster did not start within {timeout}s (exit code {code}); "
                f"see {self.log_path}"
            )
        self.uri, self.http_address = words[1], words[2].replace("localhost", "127.0.0.1")

    def _read_line(self, timeout: float) -> str:
        """The launcher's next stdout line ("" if it exited or ``timeout`` passed)."""
        proc = self.process
        if proc is None or proc.stdout is None:
            return ""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._out and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                self._out += chunk
            elif proc.poll() is not None:
                break
        line, sep, rest = self._out.partition(b"\n")
        if not sep:
            return ""
        self._out = rest
        return line.decode(errors="replace").strip()

    def command(self, text: str, timeout: float = 120.0) -> str:
        """Send one control command to the launcher; its answer after ``OK``."""
        proc = self.process
        if proc is None or proc.stdin is None or proc.poll() is not None:
            raise StorageError(f"MiniDFSCluster {self.uri}: not running ({text})")
        try:
            proc.stdin.write(text.encode() + b"\n")
            proc.stdin.flush()
        except OSError as exc:
            raise StorageError(f"MiniDFSCluster {self.uri}: {text}: {exc}") from None
        reply = self._read_line(timeout)
        if not reply.startswith("OK"):
            raise StorageError(
                f"MiniDFSCluster {self.uri}: {text}: {reply or 'no answer'}; see {self.log_path}"
            )
        return reply[2:].strip()

    def stop_datanode(self, index: int) -> str:
        """Shut one DataNode down (index modulo the running ones); returns its address."""
        return self.command(f"stop-datanode {int(index)}").removeprefix("stopped ").strip()

    def restart_datanodes(self) -> None:
        """Every stopped DataNode back, on its old ports."""
        self.command("restart-datanodes")

    def stop_namenode(self) -> None:
        self.command("stop-namenode")

    def start_namenode(self) -> None:
        """The NameNode back on its old ports, out of safe mode, DataNodes registered."""
        self.command("start-namenode", timeout=180.0)

    def url(self, path: str) -> str:
        """An hdfs:// URL on this cluster: ``url("/talos")``."""
        return f"{self.uri}/{path.lstrip('/')}"

    def stop(self) -> None:
        proc = self.process
        self.process = None
        stop_process_group(proc, timeout=20, ask=_close_stdin)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _close_stdin(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()  # the launcher shuts the cluster down on EOF
