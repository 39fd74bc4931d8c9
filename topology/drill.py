"""Failover drills: a plan of steps run on the topology's hosts over SSH, with a timeline.

A plan (TOML) names steps: stop/start a broker or a mirror, cut/heal a link,
promote, failback, verify, wait, or run a command (exec). Each step runs on a
host of the topology (``host = "a1"``) through asyncssh; promote, failback,
verify and exec without a host run on the machine running the drill. Every step has a timeout. The
runner stops at the first failing step and reports what was done, what
failed and what was not run.

Observed figures per step: unavailability per partition (an in-process
probe asks every DC, every ``interval_s``, whether someone serves the
partition writable), the RPO and gap of a promote, the messages archived by
a failback (both read from the ``--json`` report of those commands).

How to stop a broker or cut a link depends on the deployment (systemd,
a proxy, iptables ...), so the plan says it in ``[commands]`` as templates
such as ``stop_broker = "systemctl stop talos-broker@{broker}"``; a plan
that uses such a step without its template is refused before anything runs.

Plan layout::

    [drill]
    name = "lose region A"
    step_timeout_s = 120          # default per step
    topology = "/etc/talos/topology.toml"   # the topology's path on the hosts
    talos = "talos"               # how hosts run talos

    [ssh]
    username = "talos"            # when the topology's host has no user
    known_hosts = "~/.ssh/known_hosts"      # or "none" to skip host checks
    client_keys = ["~/.ssh/id_ed25519"]

    [commands]
    stop_broker = "systemctl stop talos-broker@{broker}"

    [probe]
    topics = ["orders"]
    interval_s = 0.5

    [[step]]
    action = "stop_broker"
    host = "a1"
    broker = "b1"                 # extra keys fill the template
    timeout_s = 30
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import shlex
import string
import threading
import time
import tomllib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talos.errors import InvalidArgument, TalosError
from topology.model import Topology, TopologyError

#: Actions and what they need. ``needs_host``: True must name a host, None may.
ACTIONS: dict[str, dict[str, Any]] = {
    "stop_broker": {"needs_host": True},
    "start_broker": {"needs_host": True},
    "stop_mirror": {"needs_host": True},
    "start_mirror": {"needs_host": True},
    "cut_link": {"needs_host": True},
    "heal_link": {"needs_host": True},
    "exec": {"needs_host": None},
    "promote": {"needs_host": None, "link": True},
    "failback": {"needs_host": None, "link": True},
    "verify": {"needs_host": None},
    "wait": {"needs_host": False},
}
DEFAULT_COMMANDS = {
    "promote": "{talos} mirror promote --topology {topology} --link {link} --json",
    "failback": "{talos} mirror failback --topology {topology} --link {link} --json",
    "verify": "{talos} mirror status --topology {topology} --json",
}
_STEP_KEYS = {"action", "host", "timeout_s", "command", "seconds", "expect_exit", "name"}
_DRILL_KEYS = {"name", "step_timeout_s", "topology", "talos", "output"}
_SSH_KEYS = {"username", "known_hosts", "client_keys", "connect_timeout_s"}
_PROBE_KEYS = {"topics", "interval_s"}
MAX_TIMEOUT_S = 24 * 3600.0
OUTPUT_TAIL = 2000


class DrillError(InvalidArgument):
    """A plan that cannot run. Names the plan file and the key."""


@dataclass(frozen=True)
class Step:
    index: int  # from 1, as in the file
    action: str
    host: str | None
    timeout_s: float
    command: str  # the filled-in command ('' for wait)
    seconds: float = 0.0
    expect_exit: int = 0
    name: str = ""
    link: str = ""

    @property
    def label(self) -> str:
        where = f" on {self.host}" if self.host else (" locally" if self.command else "")
        what = self.name or (f"{self.action} {self.link}".strip())
        return f"step {self.index} {what}{where}"


@dataclass(frozen=True)
class SshOptions:
    username: str | None = None
    known_hosts: str | None = None  # None: asyncssh's default; "none": no check
    client_keys: tuple[str, ...] = ()
    connect_timeout_s: float = 10.0


@dataclass(frozen=True)
class DrillPlan:
    path: str
    name: str
    steps: tuple[Step, ...]
    ssh: SshOptions = SshOptions()
    probe_topics: tuple[str, ...] = ()
    probe_interval_s: float = 0.5
    output: str = ""


# ==== parsing and validation (pure) ============================================================


def _fail(path: str, key: str, problem: str) -> DrillError:
    return DrillError(f"{path}: {key}: {problem}")


def _number(path: str, key: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _fail(path, key, f"must be a number from {low} to {high}, got {value!r}")
    return float(value)


def _text(path: str, key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(path, key, f"must be a non-empty string, got {value!r}")
    return value


def _check_keys(path: str, where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise _fail(
            path, f"{where}.{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}"
        )


def _fields(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as exc:
        raise InvalidArgument(f"bad template {template!r}: {exc}") from None


def parse_plan(text: str, topology: Topology, path: str = "<plan>") -> DrillPlan:
    """Validate a plan against the topology; nothing runs before the whole plan is good."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DrillError(f"{path}: not valid TOML: {exc}") from None
    _check_keys(path, "plan", raw, {"drill", "ssh", "commands", "probe", "step"})
    drill = raw.get("drill", {})
    if not isinstance(drill, dict):
        raise _fail(path, "drill", "must be a table")
    _check_keys(path, "drill", drill, _DRILL_KEYS)
    default_timeout = _number(
        path, "drill.step_timeout_s", drill.get("step_timeout_s", 300), 0.01, MAX_TIMEOUT_S
    )
    remote_topology = str(drill.get("topology") or Path(topology.path).resolve())
    talos_cmd = str(drill.get("talos", "talos"))

    ssh_raw = raw.get("ssh", {})
    if not isinstance(ssh_raw, dict):
        raise _fail(path, "ssh", "must be a table")
    _check_keys(path, "ssh", ssh_raw, _SSH_KEYS)
    keys = ssh_raw.get("client_keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
        raise _fail(path, "ssh.client_keys", f"must be a list of key file paths, got {keys!r}")
    ssh = SshOptions(
        username=ssh_raw.get("username"),
        known_hosts=ssh_raw.get("known_hosts"),
        client_keys=tuple(os.path.expanduser(k) for k in keys),
        connect_timeout_s=_number(
            path, "ssh.connect_timeout_s", ssh_raw.get("connect_timeout_s", 10), 0.1, 600
        ),
    )

    commands = dict(DEFAULT_COMMANDS)
    given = raw.get("commands", {})
    if not isinstance(given, dict):
        raise _fail(path, "commands", "must be a table of command templates")
    for action, template in given.items():
        if action not in ACTIONS or action in ("wait", "exec"):
            allowed = ", ".join(a for a in ACTIONS if a not in ("wait", "exec"))
            raise _fail(path, f"commands.{action}", f"unknown action; allowed: {allowed}")
        commands[action] = _text(path, f"commands.{action}", template)

    probe = raw.get("probe", {})
    if not isinstance(probe, dict):
        raise _fail(path, "probe", "must be a table")
    _check_keys(path, "probe", probe, _PROBE_KEYS)
    probe_topics = probe.get("topics", [spec.name for spec in topology.topics])
    if not isinstance(probe_topics, list) or not all(isinstance(t, str) for t in probe_topics):
        raise _fail(path, "probe.topics", f"must be a list of topic names, got {probe_topics!r}")

    steps_raw = raw.get("step", [])
    if not isinstance(steps_raw, list) or not steps_raw:
        raise _fail(path, "step", "a plan needs at least one [[step]]")
    steps = []
    for i, item in enumerate(steps_raw, start=1):
        steps.append(
            _parse_step(
                path, i, item, topology, commands, default_timeout, remote_topology, talos_cmd
            )
        )
    return DrillPlan(
        path=path,
        name=str(drill.get("name") or Path(path).stem),
        steps=tuple(steps),
        ssh=ssh,
        probe_topics=tuple(probe_topics),
        probe_interval_s=_number(path, "probe.interval_s", probe.get("interval_s", 0.5), 0.05, 60),
        output=str(drill.get("output", "")),
    )


def _parse_step(
    path: str,
    index: int,
    item: object,
    topology: Topology,
    commands: Mapping[str, str],
    default_timeout: float,
    remote_topology: str,
    talos_cmd: str,
) -> Step:
    at = f"step[{index}]"
    if not isinstance(item, dict):
        raise _fail(path, at, "must be a table ([[step]])")
    action = item.get("action")
    if action not in ACTIONS:
        raise _fail(path, f"{at}.action", f"unknown step {action!r}; allowed: {', '.join(ACTIONS)}")
    spec = ACTIONS[action]
    host = item.get("host")
    dc_name = ""
    if host is not None:
        if spec["needs_host"] is False:
            raise _fail(path, f"{at}.host", f"a {action} step runs on no host")
        try:
            dc, host_spec = topology.host(_text(path, f"{at}.host", host))
        except TopologyError as exc:
            raise _fail(path, f"{at}.host", exc.problem + f" (topology {topology.path})") from None
        dc_name = dc.name
        address = host_spec.host
    elif spec["needs_host"]:
        raise _fail(path, f"{at}.host", f"a {action} step must name a host of the topology")
    else:
        address = ""
    timeout = _number(
        path, f"{at}.timeout_s", item.get("timeout_s", default_timeout), 0.01, MAX_TIMEOUT_S
    )
    link = ""
    if "link" in item or spec.get("link"):
        try:
            link = topology.link(_text(path, f"{at}.link", item.get("link"))).name
        except TopologyError as exc:
            raise _fail(path, f"{at}.link", exc.problem) from None
    if action == "wait":
        seconds = _number(path, f"{at}.seconds", item.get("seconds"), 0, MAX_TIMEOUT_S)
        if seconds > timeout:
            raise _fail(path, f"{at}.seconds", f"{seconds}s is longer than its timeout {timeout}s")
        return Step(
            index, action, None, timeout, "", seconds=seconds, name=str(item.get("name", ""))
        )
    if action == "exec":
        template = _text(path, f"{at}.command", item.get("command"))
    elif "command" in item:
        template = _text(path, f"{at}.command", item["command"])
    elif action in commands:
        template = commands[action]
        if action == "failback" and item.get("start_reverse"):
            template += " --start-reverse"
        if action == "verify" and link:
            template += " --link {link}"
    else:
        raise _fail(
            path,
            f"commands.{action}",
            f"{at} is a {action} step but the plan does not say how to {action.replace('_', ' ')} "
            f'on this deployment; set it under [commands], e.g. {action} = "systemctl ..."',
        )
    variables: dict[str, str] = {
        "host": str(host or ""),
        "address": address,
        "dc": dc_name,
        "topology": shlex.quote(remote_topology),
        "talos": talos_cmd,
        "link": link,
    }
    for key, value in item.items():
        if key in _STEP_KEYS or key in ("link", "start_reverse"):
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _fail(
                path, f"{at}.{key}", f"template values are strings or numbers, got {value!r}"
            )
        variables[key] = str(value)
    try:
        missing = [name for name in _fields(template) if name not in variables]
    except InvalidArgument as exc:
        raise _fail(path, f"{at}.command", exc.message) from None
    if missing:
        raise _fail(
            path,
            f"{at}.{missing[0]}",
            f"the {action} command {template!r} needs {{{missing[0]}}}; add {missing[0]} = ... "
            "to the step",
        )
    expect = item.get("expect_exit", 0)
    if isinstance(expect, bool) or not isinstance(expect, int):
        raise _fail(path, f"{at}.expect_exit", f"must be an integer, got {expect!r}")
    return Step(
        index,
        action,
        str(host) if host is not None else None,
        timeout,
        template.format(**variables),
        expect_exit=expect,
        name=str(item.get("name", "")),
        link=link,
    )


def load_plan(path: str | os.PathLike[str], topology: Topology) -> DrillPlan:
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DrillError(f"{name}: cannot read the drill plan: {exc}") from None
    return parse_plan(text, topology, name)


# ==== results ==================================================================================


@dataclass
class StepResult:
    index: int
    action: str
    label: str
    host: str | None
    command: str
    started_s: float  # since the drill started
    duration_s: float = 0.0
    ok: bool = False
    exit_status: int | None = None
    error: str = ""
    stdout: str = ""
    stderr: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "action": self.action,
            "label": self.label,
            "host": self.host,
            "command": self.command,
            "started_s": round(self.started_s, 3),
            "duration_s": round(self.duration_s, 3),
            "ok": self.ok,
            "exit_status": self.exit_status,
            "error": self.error,
            "stdout": self.stdout[-OUTPUT_TAIL:],
            "stderr": self.stderr[-OUTPUT_TAIL:],
            "figures": self.figures,
        }


@dataclass
class DrillResult:
    plan: str
    name: str
    started_ms: int
    steps: list[StepResult] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)
    error: str = ""
    duration_s: float = 0.0
    #: partition -> seconds nobody served it writable, over the whole drill
    unavailable_s: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.error and all(step.ok for step in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "name": self.name,
            "started_ms": self.started_ms,
            "ok": self.ok,
            "error": self.error,
            "duration_s": round(self.duration_s, 3),
            "unavailable_s": self.unavailable_s,
            "steps": [step.to_dict() for step in self.steps],
            "not_run": self.not_run,
        }


def figures_from(action: str, stdout: str) -> dict[str, Any]:
    """The numbers a drill reports from a promote or failback ``--json`` report."""
    try:
        report = json.loads(stdout)
    except ValueError:
        return {}
    if not isinstance(report, dict):
        return {}
    if action == "promote":
        return {
            "rpo_ms": report.get("rpo_ms"),
            "gap_messages": report.get("gap_messages"),
            "gap_by_partition": {
                f"{p.get('topic')}/{p.get('partition')}": p.get("gap_messages")
                for p in report.get("partitions", [])
                if isinstance(p, dict)
            },
        }
    if action == "failback":
        return {
            "archived": report.get("archived"),
            "diverged": report.get("diverged"),
            "archive_topics": report.get("archive_topics", {}),
        }
    return {"report": report}


def outage_seconds(
    samples: Sequence[tuple[float, Mapping[str, bool]]], start: float, end: float
) -> dict[str, float]:
    """Per partition, how long it was unavailable within ``[start, end]``.

    A sample holds from its time until the next sample's.
    """
    totals: dict[str, float] = {}
    for i, (at, states) in enumerate(samples):
        until = samples[i + 1][0] if i + 1 < len(samples) else end
        lo, hi = max(at, start), min(until, end)
        for key, available in states.items():
            totals.setdefault(key, 0.0)
            if not available and hi > lo:
                totals[key] += hi - lo
    return {k: round(v, 3) for k, v in sorted(totals.items())}


def format_timeline(result: DrillResult) -> str:
    lines = [f"drill {result.name!r} ({result.plan}): {'OK' if result.ok else 'FAILED'}"]
    lines.append(f"{'at s':>8} {'took s':>8}  {'':<4} step")
    for step in result.steps:
        lines.append(
            f"{step.started_s:>8.2f} {step.duration_s:>8.2f}  {'ok' if step.ok else 'FAIL':<4} "
            f"{step.label}"
        )
        for key in ("rpo_ms", "gap_messages", "archived", "diverged"):
            if step.figures.get(key) is not None:
                lines.append(f"{'':>23}{key}: {step.figures[key]}")
        unavailable = {k: v for k, v in step.figures.get("unavailable_s", {}).items() if v}
        if unavailable:
            shown = ", ".join(f"{k} {v:.2f}s" for k, v in unavailable.items())
            lines.append(f"{'':>23}unavailable: {shown}")
        if not step.ok:
            lines.append(f"{'':>23}error: {step.error}")
    if result.unavailable_s:
        lines.append("unavailability over the drill (seconds nobody served it writable):")
        for key, seconds in result.unavailable_s.items():
            lines.append(f"  {key}: {seconds:.2f}")
    if result.not_run:
        lines.append(f"not run: {'; '.join(result.not_run)}")
    if result.error:
        lines.append(f"error: {result.error}")
    return "\n".join(lines)


# ==== running ==================================================================================

Runner = Callable[[Step], Awaitable[tuple[int, str, str]]]


class SshRunner:
    """One asyncssh connection per host, opened on first use."""

    def __init__(self, topology: Topology, options: SshOptions) -> None:
        self.topology = topology
        self.options = options
        self._connections: dict[str, Any] = {}

    async def _connection(self, host_name: str) -> Any:
        import asyncssh

        conn = self._connections.get(host_name)
        if conn is not None:
            return conn
        _, host = self.topology.host(host_name)
        kwargs: dict[str, Any] = {
            "port": host.port,
            "username": host.user or self.options.username or getpass.getuser(),
        }
        if self.options.known_hosts is not None:
            known = self.options.known_hosts
            kwargs["known_hosts"] = None if known == "none" else os.path.expanduser(known)
        if self.options.client_keys:
            kwargs["client_keys"] = list(self.options.client_keys)
        try:
            conn = await asyncio.wait_for(
                asyncssh.connect(host.host.strip("[]"), **kwargs),
                self.options.connect_timeout_s,
            )
        except (OSError, asyncssh.Error) as exc:
            raise TalosError(f"ssh to {host_name} ({host.uri}) failed: {exc}") from None
        except TimeoutError:
            raise TalosError(
                f"ssh to {host_name} ({host.uri}) timed out after {self.options.connect_timeout_s}s"
            ) from None
        self._connections[host_name] = conn
        return conn

    async def run(self, step: Step) -> tuple[int, str, str]:
        import asyncssh

        if step.host is None:
            return await run_local(step)
        conn = await self._connection(step.host)
        try:
            done = await conn.run(step.command, check=False)
        except (OSError, asyncssh.Error) as exc:
            self._connections.pop(step.host, None)
            raise TalosError(f"ssh to {step.host}: {exc}") from None
        status = done.exit_status if done.exit_status is not None else -1
        return status, _text_of(done.stdout), _text_of(done.stderr)

    async def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
            with contextlib.suppress(Exception):
                await conn.wait_closed()
        self._connections.clear()


def _text_of(data: object) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return str(data)


async def run_local(step: Step) -> tuple[int, str, str]:
    """Promote, failback and verify without a host run here, as a child process."""
    process = await asyncio.create_subprocess_shell(
        step.command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await process.communicate()
    except asyncio.CancelledError:  # the step timed out: end the command and its children
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(process.communicate(), 5.0)
        raise
    return process.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


class AvailabilityProbe:
    """Samples, every ``interval_s``, which partitions someone serves writable.

    A partition is available when at least one DC has the topic writable (not
    a read-only mirror) and a live owner serving the partition. Runs in a
    thread: ZooKeeper and gRPC calls block.
    """

    def __init__(
        self, topology: Topology, topics: Sequence[str], interval_s: float, t0: float
    ) -> None:
        self.topology = topology
        self.topics = list(topics)
        self.interval_s = interval_s
        self.t0 = t0
        self.samples: list[tuple[float, dict[str, bool]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="talos-drill-probe", daemon=True)
        self._zks: dict[str, Any] = {}

    def start(self) -> None:
        if self.topics:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        from mirror.failover import close_zk

        for zk in self._zks.values():
            close_zk(zk)

    def _zk(self, dc: str) -> Any:
        from mirror.failover import open_zk

        zk = self._zks.get(dc)
        if zk is None:
            zk = self._zks[dc] = open_zk(self.topology.dc(dc), 2.0)
        return zk

    def _writable(self, dc: str, topic: str) -> bool:
        from talos.coord.topics import TopicStore

        try:
            mirror = TopicStore(self._zk(dc)).get(topic).mirror
        except TalosError:
            return False
        return mirror is None or mirror.writable

    def sample(self) -> dict[str, bool]:
        from mirror.failover import BrokerReader

        states: dict[str, bool] = {}
        for topic in self.topics:
            dcs = list(self.topology.datacenters)
            partitions = 0
            served: set[int] = set()
            for dc in dcs:
                reader = BrokerReader(self.topology.dc(dc).bootstrap, timeout=1.0)
                try:
                    count = _partition_count(reader, topic)
                    partitions = max(partitions, count)
                    if count and self._writable(dc, topic):
                        for p in range(count):
                            with contextlib.suppress(TalosError):
                                if reader.owner(topic, p)[3] >= 0:
                                    served.add(p)
                except TalosError:
                    pass
                finally:
                    reader.close()
            for p in range(partitions):
                states[f"{topic}/{p}"] = p in served
        return states

    def _run(self) -> None:
        while not self._stop.is_set():
            at = time.monotonic() - self.t0
            try:
                states = self.sample()
            except Exception:  # the probe must never end the drill
                states = {}
            if states:
                self.samples.append((at, states))
            self._stop.wait(self.interval_s)


def _partition_count(reader: Any, topic: str) -> int:
    from talos.proto import talos_pb2 as pb

    meta = reader.connections.call_any("Metadata", pb.MetadataRequest(topics=[topic]), timeout=1.0)
    for info in meta.topics:
        if info.name == topic and not info.error.code:
            return len(info.partitions)
    return 0


async def run_drill(
    plan: DrillPlan,
    topology: Topology,
    *,
    runner: Runner | None = None,
    on_step: Callable[[StepResult], None] | None = None,
    probe: bool = True,
) -> DrillResult:
    """Run the plan's steps in order; stop at the first failure and say what was left."""
    t0 = time.monotonic()
    result = DrillResult(plan.path, plan.name, int(time.time() * 1000))
    ssh = SshRunner(topology, plan.ssh) if runner is None else None
    run = runner or (ssh.run if ssh is not None else run_local)
    prober = AvailabilityProbe(
        topology, plan.probe_topics if probe else (), plan.probe_interval_s, t0
    )
    await asyncio.to_thread(prober.start)
    try:
        for position, step in enumerate(plan.steps):
            outcome = StepResult(
                step.index, step.action, step.label, step.host, step.command, time.monotonic() - t0
            )
            try:
                if step.action == "wait":
                    await asyncio.wait_for(asyncio.sleep(step.seconds), step.timeout_s)
                    outcome.ok = True
                else:
                    status, out, err = await asyncio.wait_for(run(step), step.timeout_s)
                    outcome.exit_status, outcome.stdout, outcome.stderr = status, out, err
                    outcome.figures.update(figures_from(step.action, out))
                    outcome.ok = status == step.expect_exit
                    if not outcome.ok:
                        detail = (err.strip() or out.strip())[-500:]
                        outcome.error = f"exit status {status}, expected {step.expect_exit}" + (
                            f": {detail}" if detail else ""
                        )
            except TimeoutError:
                outcome.error = f"timed out after {step.timeout_s}s (command: {step.command})"
            except TalosError as exc:
                outcome.error = exc.message
            outcome.duration_s = time.monotonic() - t0 - outcome.started_s
            result.steps.append(outcome)
            if on_step is not None:
                on_step(outcome)
            if not outcome.ok:
                result.error = f"{step.label} failed: {outcome.error}"
                result.not_run = [s.label for s in plan.steps[position + 1 :]]
                break
    finally:
        await asyncio.to_thread(prober.stop)
        if ssh is not None:
            await ssh.close()
        result.duration_s = time.monotonic() - t0
    samples = prober.samples
    for step_result in result.steps:
        end = step_result.started_s + step_result.duration_s
        if samples:
            step_result.figures["unavailable_s"] = outage_seconds(
                samples, step_result.started_s, end
            )
    if samples:
        result.unavailable_s = outage_seconds(samples, 0.0, result.duration_s)
    return result


def write_timeline(result: DrillResult, path: str) -> None:
    Path(path).write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
