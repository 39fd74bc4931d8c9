"""`talos dev up` supervision: report processes that exit, keep the rest, restart on request.

The running ``dev up`` owns its child processes, so only it can start them
again. ``talos dev restart`` talks to it through files in the dev data dir:

    <data_dir>/control/supervisor.pid      the dev up process serving requests
    <data_dir>/control/<id>.request        {"kind": "broker", "name": "b1"} (written atomically)
    <data_dir>/control/<id>.reply          {"ok": true, "process": ..., "pid": ..., ...}

The supervisor polls the control directory in its loop (no threads touch
the child processes), handles each request and answers it; the CLI waits
for the answer. A file protocol needs no port and no credentials, and
works for one DC and for two alike.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, TextIO

from talos.clock import SYSTEM_CLOCK, Clock
from talos.errors import InvalidArgument, TalosError, TalosTimeout
from talos.testing.cluster import BrokerProcess

CONTROL_DIR = "control"
PID_FILE = "supervisor.pid"
KINDS = ("broker", "mirror")


class Supervised(Protocol):
    """What the supervisor needs of a child process (BrokerProcess, MirrorProcess)."""

    log_path: str
    metrics_address: str
    process: subprocess.Popen[bytes] | None

    @property
    def pid(self) -> int: ...

    def alive(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = ...) -> None: ...


@dataclass(frozen=True)
class RestartRequest:
    request_id: str
    kind: str
    name: str


@dataclass(frozen=True)
class RestartReply:
    ok: bool
    process: str = ""  # the resolved name, e.g. "broker A/b1"
    pid: int = 0
    was_running: bool = False
    address: str = ""  # brokers: where it serves
    error: str = ""
    bad_input: bool = False  # the error is about the request (exit 2), not the process

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @staticmethod
    def from_json(text: str) -> RestartReply:
        try:
            raw = json.loads(text)
            return RestartReply(**{k: raw[k] for k in RestartReply.__dataclass_fields__})
        except (ValueError, KeyError, TypeError) as exc:
            raise TalosError(f"dev restart: unreadable reply from dev up ({exc!r})") from None


def resolve_target(kind: str, name: str, processes: Iterable[str]) -> str:
    """The supervised process a restart request means, or an error listing the choices.

    Names are ``"<kind> <name>"``; with two DCs brokers are ``broker A/b1``, and
    a bare ``b1`` is accepted when exactly one DC has it.
    """
    if kind not in KINDS:
        raise InvalidArgument(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    same_kind = sorted(p for p in processes if p.startswith(kind + " "))
    wanted = f"{kind} {name}"
    if wanted in same_kind:
        return wanted
    matches = [p for p in same_kind if p.endswith("/" + name)]
    if len(matches) == 1:
        return matches[0]
    choices = ", ".join(p.split(" ", 1)[1] for p in same_kind) or "none"
    if matches:
        raise InvalidArgument(f"name: {name!r} is ambiguous; use one of {choices}")
    raise InvalidArgument(f"name: no {kind} {name!r} in this deployment; {kind}s: {choices}")


def describe_exit(code: int | None) -> str:
    """How a child ended, as Popen's returncode says it (negative: the signal that killed it)."""
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def member_id(process: str) -> str:
    """The id inside a process name: ``broker A/b1`` and ``broker b1`` are broker b1."""
    return process.split(" ", 1)[-1].rsplit("/", 1)[-1]


def control_dir(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / CONTROL_DIR


class Supervisor:
    """Watches dev up's processes; call :meth:`poll` from the dev up loop."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        processes: Mapping[str, Supervised],
        addresses: Mapping[str, str] | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.control = control_dir(data_dir)
        self.processes = dict(processes)
        self.addresses = dict(addresses or {})
        self.out = out
        self._reported: set[str] = set()

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def __enter__(self) -> Supervisor:
        self.control.mkdir(parents=True, exist_ok=True)
        for stale in self.control.glob("*.re*"):  # left by an earlier run
            stale.unlink(missing_ok=True)
        (self.control / PID_FILE).write_text(f"{os.getpid()}\n")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        (self.control / PID_FILE).unlink(missing_ok=True)

    def announce(self) -> None:
        for name, process in sorted(self.processes.items()):
            where = f" {self.addresses[name]}" if name in self.addresses else ""
            scrape = (
                f"  metrics http://{process.metrics_address}/metrics"
                if process.metrics_address
                else ""
            )
            self._say(f"{name}:{where} pid {process.pid}{scrape}  log {process.log_path}")

    def poll(self) -> None:
        """Report each process that exited (once), then serve pending restart requests."""
        for name, process in sorted(self.processes.items()):
            if process.alive() or name in self._reported:
                continue
            self._reported.add(name)
            code = process.process.returncode if process.process is not None else None
            self._say(
                f"{name} {describe_exit(code)}; the rest keep running. See {process.log_path}; "
                f"bring it back with: talos dev restart {name}"
            )
        for path in sorted(self.control.glob("*.request")):
            reply = self._serve(path)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(reply.to_json())
            tmp.replace(path.with_suffix(".reply"))
            path.unlink(missing_ok=True)

    def _serve(self, path: Path) -> RestartReply:
        try:
            raw = json.loads(path.read_text())
            name = resolve_target(str(raw["kind"]), str(raw["name"]), self.processes)
        except (ValueError, KeyError, TypeError) as exc:
            return RestartReply(ok=False, error=f"malformed request {path.name}: {exc!r}")
        except InvalidArgument as exc:
            return RestartReply(ok=False, error=str(exc), bad_input=True)
        return self.restart(name)

    def restart(self, name: str) -> RestartReply:
        process = self.processes[name]
        was_running = process.alive()
        try:
            process.stop()
            process.start()
        except OSError as exc:
            return RestartReply(ok=False, process=name, error=f"starting {name}: {exc}")
        self._reported.discard(name)
        self._say(f"{name} restarted (pid {process.pid})")
        return RestartReply(
            ok=True,
            process=name,
            pid=process.pid,
            was_running=was_running,
            address=self.addresses.get(name, ""),
        )


def supervise(
    data_dir: str | os.PathLike[str],
    stop: threading.Event,
    brokers: Mapping[str, BrokerProcess],
    mirrors: Mapping[str, Supervised] | None = None,
    out: TextIO | None = None,
    interval_s: float = 0.5,
) -> None:
    """The dev up loop: list the processes, then watch them and serve restarts until ``stop``.

    ``brokers`` by id (``b1``, or ``A/b1`` with several DCs), ``mirrors`` by link (``A:B``).
    """
    processes: dict[str, Supervised] = {f"broker {key}": b for key, b in brokers.items()}
    processes.update({f"mirror {link}": m for link, m in (mirrors or {}).items()})
    addresses = {f"broker {key}": b.address for key, b in brokers.items()}
    with Supervisor(data_dir, processes, addresses, out) as supervisor:
        supervisor.announce()
        while not stop.wait(interval_s):
            supervisor.poll()


def request_restart(
    data_dir: str | os.PathLike[str],
    kind: str,
    name: str,
    timeout_s: float = 30.0,
    clock: Clock = SYSTEM_CLOCK,
) -> RestartReply:
    """Ask the running ``talos dev up`` in ``data_dir`` to restart a process; wait for it."""
    if kind not in KINDS:
        raise InvalidArgument(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    control = control_dir(data_dir)
    if not _supervisor_running(control / PID_FILE):
        raise TalosError(
            f"dev restart: no `talos dev up` is running with data dir {data_dir} "
            f"({control / PID_FILE} is missing or names a dead process)"
        )
    request_id = uuid.uuid4().hex
    tmp = control / f"{request_id}.tmp"
    tmp.write_text(json.dumps({"kind": kind, "name": name}))
    tmp.replace(control / f"{request_id}.request")
    reply_path = control / f"{request_id}.reply"
    deadline = clock.monotonic() + timeout_s
    while not reply_path.exists():
        if clock.monotonic() > deadline:
            (control / f"{request_id}.request").unlink(missing_ok=True)
            raise TalosTimeout(f"dev restart: dev up did not answer within {timeout_s}s")
        clock.sleep(0.1)
    reply = RestartReply.from_json(reply_path.read_text())
    reply_path.unlink(missing_ok=True)
    if not reply.ok:
        raise InvalidArgument(reply.error) if reply.bad_input else TalosError(reply.error)
    return reply


def wait_serving(address: str, broker_id: str, timeout_s: float = 30.0) -> None:
    """Until the broker at ``address`` answers Metadata and lists itself (it registered)."""
    from talos.client.connection import Connections
    from talos.proto import talos_pb2 as pb

    connections = Connections([address])
    deadline = SYSTEM_CLOCK.monotonic() + timeout_s
    try:
        while True:
            try:
                response: pb.MetadataResponse = connections.call(
                    address, "Metadata", pb.MetadataRequest(topics=[]), timeout=2.0
                )
                if any(b.id == broker_id for b in response.brokers):
                    return
            except TalosError:
                pass
            if SYSTEM_CLOCK.monotonic() > deadline:
                raise TalosTimeout(
                    f"broker {broker_id} at {address}: not serving after {timeout_s}s"
                )
            SYSTEM_CLOCK.sleep(0.1)
    finally:
        connections.close()


def run_dev_restart(
    data_dir: str | os.PathLike[str], kind: str, name: str, out: TextIO | None = None
) -> RestartReply:
    """`talos dev restart`: ask, wait for the new process, say its pid."""
    reply = request_restart(data_dir, kind, name)
    if reply.address:
        wait_serving(reply.address, member_id(reply.process))
    state = "was running; restarted" if reply.was_running else "was down; started"
    where = f" on {reply.address}" if reply.address else ""
    print(f"{reply.process}: {state}, pid {reply.pid}{where}", file=out, flush=True)
    return reply


def _supervisor_running(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True
