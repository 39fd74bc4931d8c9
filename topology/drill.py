"""Failover drills: a plan of steps run on the topology's hosts over SSH, with a timeline.

A plan (TOML) names steps: stop/start a broker or a mirror, cut/heal a link,
promote, failback, verify, wait, or run a command (exec). Each step runs on a
host of the topology (``host = "a1"``) through asyncssh; promote, failback,
verify and exec without a host run on the machine running the drill. Every
step has a timeout, and a step that runs out of it has its command stopped
(remote commands run in a process group of their own, killed through a second
SSH session: OpenSSH kills nothing when a channel closes). The runner stops at
the first failing step and reports what was done, what failed and what was
not run.

Observed figures per step: unavailability per partition (an in-process
probe asks every DC, every ``interval_s``, whether someone serves the
partition writable), the RPO and gap of a promote, the messages archived by
a failback and the host and PID of the reverse worker it started (read from
the ``--json`` report of those commands), the link states of a verify.

How to stop a broker or cut a link depends on the deployment (systemd,
a proxy, iptables ...), so the plan says it in ``[commands]`` as templates
such as ``stop_broker = "systemctl stop talos-broker@${broker}"``. Templates
use ``${name}`` (anything else, ``$HOME``, ``{}``, ``awk '{print 42}'``, is
left to the shell; ``$${`` writes a literal ``${``). Every value is quoted for
the shell. The variables are ``host``, ``address``, ``dc``, ``bootstrap``
(the brokers of the host's DC), ``topology``, ``talos``, ``link`` and those of
the step's ``[step.vars]`` table. A plan that uses such a step without its
template, a misspelt key, or a variable nobody supplies is refused before
anything runs, naming the file, line and key.

Plan layout::

    [drill]
    name = "lose region A"
    step_timeout_s = 120          # default per step
    topology = "/etc/talos/topology.toml"   # the topology's path on the hosts
    talos = "talos"               # how hosts run talos (a command line)

    [ssh]
    username = "talos"            # when the topology's host has no user
    known_hosts = "~/.ssh/known_hosts"      # or "none" to skip host checks
    client_keys = ["~/.ssh/id_ed25519"]

    [commands]
    stop_broker = "systemctl stop talos-broker@${broker}"

    [probe]
    topics = ["orders"]
    interval_s = 0.5

    [[step]]
    action = "stop_broker"
    host = "a1"
    timeout_s = 30
    [step.vars]
    broker = "b1"
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import re
import shlex
import socket
import string
import threading
import time
import tomllib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from talos.errors import InvalidArgument, TalosError
from topology.loader import _label, _LineIndex
from topology.model import Topology, TopologyError


@dataclass(frozen=True)
class ActionSpec:
    """What a step of one action may and must say."""

    #: True: must name a host; None: may (else runs locally); False: runs on no host.
    needs_host: bool | None
    #: "required", "optional" or "" (no link key).
    link: Literal["required", "optional", ""] = ""
    #: Keys this action accepts beyond the common ones.
    extra_keys: frozenset[str] = frozenset()


_COMMAND_KEYS = frozenset({"command", "vars", "expect_exit"})
ACTIONS: dict[str, ActionSpec] = {
    "stop_broker": ActionSpec(True, extra_keys=_COMMAND_KEYS),
    "start_broker": ActionSpec(True, extra_keys=_COMMAND_KEYS),
    "stop_mirror": ActionSpec(True, "optional", _COMMAND_KEYS),
    "start_mirror": ActionSpec(True, "optional", _COMMAND_KEYS),
    "cut_link": ActionSpec(True, "optional", _COMMAND_KEYS),
    "heal_link": ActionSpec(True, "optional", _COMMAND_KEYS),
    "exec": ActionSpec(None, "optional", _COMMAND_KEYS),
    "promote": ActionSpec(None, "required", _COMMAND_KEYS),
    "failback": ActionSpec(None, "required", _COMMAND_KEYS | {"start_reverse"}),
    "verify": ActionSpec(None, "optional", _COMMAND_KEYS),
    "wait": ActionSpec(False, extra_keys=frozenset({"seconds"})),
}
_COMMON_STEP_KEYS = frozenset({"action", "name", "host", "timeout_s", "link"})
DEFAULT_COMMANDS = {
    "promote": "${talos} mirror promote --topology ${topology} --link ${link} --json",
    "failback": "${talos} mirror failback --topology ${topology} --link ${link} --json",
    "verify": "${talos} mirror status --topology ${topology} --json",
}
#: Variables every step has; a [step.vars] table may not redefine them.
BUILTIN_VARS = ("host", "address", "dc", "bootstrap", "topology", "talos", "link")
_DRILL_KEYS = {"name", "step_timeout_s", "topology", "talos", "output"}
_SSH_KEYS = {"username", "known_hosts", "client_keys", "connect_timeout_s"}
_PROBE_KEYS = {"topics", "interval_s"}
MAX_TIMEOUT_S = 24 * 3600.0
OUTPUT_TAIL = 2000
#: How long stopping a timed-out command may take (the second session's kill).
STOP_TIMEOUT_S = 10.0
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


class DrillError(InvalidArgument):
    """A plan that cannot run. Names the plan file, line and key."""


class CommandTemplate(string.Template):
    """``${name}`` only: ``$name``, ``$(...)``, ``{}`` and ``{print 42}`` belong to the shell.

    ``$${`` is a literal ``${`` (a shell variable written in braces).
    """

    # a string that string.Template compiles into its regex when the class is built
    pattern = r"""
    \$(?:
      (?P<escaped>\$)(?=\{)                  |
      \{(?P<braced>[_a-zA-Z][_a-zA-Z0-9]*)\} |
      (?P<named>(?!))                        |
      (?P<invalid>(?!))
    )
    """  # type: ignore[assignment]


def template_names(template: str) -> list[str]:
    """The ``${name}`` variables a command template uses, in order, once each."""
    return list(dict.fromkeys(CommandTemplate(template).get_identifiers()))


def fill(template: str, variables: Mapping[str, str]) -> str:
    """The command with every ``${name}`` replaced by its (already quoted) value."""
    return CommandTemplate(template).substitute(variables)


def talos_words(talos: str) -> str:
    """The ``talos`` command line, each word quoted (it may be ``python3 -m talos``)."""
    return shlex.join(shlex.split(talos))


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
    template: str = ""
    #: which built-in values the command uses (the dry run checks them on the host)
    uses: frozenset[str] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "action": self.action,
            "name": self.name,
            "link": self.link,
            "label": self.label,
            "host": self.host,
            "timeout_s": self.timeout_s,
            "command": self.command,
        }

    @property
    def label(self) -> str:
        """``step 3 "cut the link" (cut_link A:B) on a1``: the name never hides the action."""
        where = f" on {self.host}" if self.host else (" locally" if self.command else "")
        what = f"{self.action} {self.link}".strip()
        if self.name:
            what = f"{json.dumps(self.name)} ({what})"
        return f"step {self.index} {what}{where}"


@dataclass(frozen=True)
class SshOptions:
    username: str | None = None
    known_hosts: str = DEFAULT_KNOWN_HOSTS  # "none": no host key check
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
    #: the topology path and talos command the hosts use (said by --dry-run)
    remote_topology: str = ""
    talos: str = "talos"
    topology_is_default: bool = False


# ==== parsing and validation (pure) ============================================================


class _Plan:
    """The plan's text, for errors that name ``FILE:LINE: KEY``."""

    def __init__(self, text: str, path: str) -> None:
        self.path = path
        self.index = _LineIndex(text)

    def fail(self, at: tuple[str | int, ...], problem: str) -> DrillError:
        line = self.index.line(at)
        where = f"{self.path}:{line}" if line is not None else self.path
        return DrillError(f"{where}: {_label(at)}: {problem}")

    def number(self, at: tuple[str | int, ...], value: object, low: float, high: float) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise self.fail(at, f"must be a number from {low} to {high}, got {value!r}")
        return float(value)

    def text(self, at: tuple[str | int, ...], value: object) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(at, f"must be a non-empty string, got {value!r}")
        return value

    def table(self, raw: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            raise self.fail((key,), "must be a table")
        return value

    def check_keys(
        self,
        at: tuple[str | int, ...],
        table: Mapping[str, Any],
        allowed: set[str] | frozenset[str],
        kind: str = "",
        hint: str = "",
    ) -> None:
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            shown = ", ".join(sorted(allowed))
            raise self.fail((*at, unknown[0]), f"unknown key{kind}; allowed: {shown}{hint}")


def parse_plan(text: str, topology: Topology, path: str = "<plan>") -> DrillPlan:
    """Validate a plan against the topology; nothing runs before the whole plan is good."""
    plan = _Plan(text, path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DrillError(f"{path}: not valid TOML: {exc}") from None
    plan.check_keys((), raw, {"drill", "ssh", "commands", "probe", "step"})
    drill = plan.table(raw, "drill")
    plan.check_keys(("drill",), drill, _DRILL_KEYS)
    default_timeout = plan.number(
        ("drill", "step_timeout_s"), drill.get("step_timeout_s", 300), 0.01, MAX_TIMEOUT_S
    )
    if "topology" in drill:
        remote_topology = plan.text(("drill", "topology"), drill["topology"])
    else:
        remote_topology = str(Path(topology.path).resolve())
    talos_cmd = plan.text(("drill", "talos"), drill.get("talos", "talos"))
    try:
        talos_quoted = talos_words(talos_cmd)
    except ValueError as exc:
        raise plan.fail(("drill", "talos"), f"not a command line: {exc}") from None
    if not talos_quoted:
        raise plan.fail(("drill", "talos"), "must name a command")

    ssh_raw = plan.table(raw, "ssh")
    plan.check_keys(("ssh",), ssh_raw, _SSH_KEYS)
    keys = ssh_raw.get("client_keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
        raise plan.fail(("ssh", "client_keys"), f"must be a list of key file paths, got {keys!r}")
    username = ssh_raw.get("username")
    if username is not None:
        username = plan.text(("ssh", "username"), username)
    ssh = SshOptions(
        username=username,
        known_hosts=plan.text(
            ("ssh", "known_hosts"), ssh_raw.get("known_hosts", DEFAULT_KNOWN_HOSTS)
        ),
        client_keys=tuple(os.path.expanduser(k) for k in keys),
        connect_timeout_s=plan.number(
            ("ssh", "connect_timeout_s"), ssh_raw.get("connect_timeout_s", 10), 0.1, 600
        ),
    )

    commands = dict(DEFAULT_COMMANDS)
    for action, template in plan.table(raw, "commands").items():
        if action not in ACTIONS or action in ("wait", "exec"):
            allowed = ", ".join(a for a in ACTIONS if a not in ("wait", "exec"))
            raise plan.fail(("commands", action), f"unknown action; allowed: {allowed}")
        commands[action] = plan.text(("commands", action), template)

    probe = plan.table(raw, "probe")
    plan.check_keys(("probe",), probe, _PROBE_KEYS)
    probe_topics = probe.get("topics", [spec.name for spec in topology.topics])
    if not isinstance(probe_topics, list) or not all(isinstance(t, str) for t in probe_topics):
        raise plan.fail(("probe", "topics"), f"must be a list of topic names, got {probe_topics!r}")

    steps_raw = raw.get("step", [])
    if not isinstance(steps_raw, list) or not steps_raw:
        raise plan.fail(("step",), "a plan needs at least one [[step]]")
    context = _StepContext(topology, commands, default_timeout, remote_topology, talos_quoted)
    steps = tuple(_parse_step(plan, i, item, context) for i, item in enumerate(steps_raw, 1))
    return DrillPlan(
        path=path,
        name=str(drill.get("name") or Path(path).stem),
        steps=steps,
        ssh=ssh,
        probe_topics=tuple(probe_topics),
        probe_interval_s=plan.number(
            ("probe", "interval_s"), probe.get("interval_s", 0.5), 0.05, 60
        ),
        output=str(drill.get("output", "")),
        remote_topology=remote_topology,
        talos=talos_cmd,
        topology_is_default="topology" not in drill,
    )


@dataclass(frozen=True)
class _StepContext:
    topology: Topology
    commands: Mapping[str, str]
    default_timeout: float
    remote_topology: str
    talos: str  # quoted words


def _parse_step(plan: _Plan, index: int, item: object, ctx: _StepContext) -> Step:
    at: tuple[str | int, ...] = ("step", index - 1)
    if not isinstance(item, dict):
        raise plan.fail(at, "must be a table ([[step]])")
    action = item.get("action")
    if action not in ACTIONS:
        raise plan.fail((*at, "action"), f"unknown step {action!r}; allowed: {', '.join(ACTIONS)}")
    spec = ACTIONS[action]
    allowed = set(_COMMON_STEP_KEYS | spec.extra_keys)
    if not spec.link:
        allowed.discard("link")
    if spec.needs_host is False:
        allowed.discard("host")
    hint = "; template variables go in [step.vars]" if "vars" in allowed else ""
    plan.check_keys(at, item, allowed, f" for action {action!r}", hint)
    name = item.get("name", "")
    if not isinstance(name, str):
        raise plan.fail((*at, "name"), f"must be a string, got {name!r}")
    timeout = plan.number(
        (*at, "timeout_s"), item.get("timeout_s", ctx.default_timeout), 0.01, MAX_TIMEOUT_S
    )
    if action == "wait":
        seconds = plan.number((*at, "seconds"), item.get("seconds"), 0, MAX_TIMEOUT_S)
        if seconds > timeout:
            raise plan.fail((*at, "seconds"), f"{seconds}s is longer than its timeout {timeout}s")
        return Step(index, action, None, timeout, "", seconds=seconds, name=name)

    topology = ctx.topology
    host = item.get("host")
    variables = {key: "" for key in BUILTIN_VARS}
    if host is not None:
        try:
            dc, host_spec = topology.host(plan.text((*at, "host"), host))
        except TopologyError as exc:
            raise plan.fail((*at, "host"), exc.problem + f" (topology {topology.path})") from None
        variables.update(
            host=host, address=host_spec.host, dc=dc.name, bootstrap=",".join(dc.brokers)
        )
    elif spec.needs_host:
        raise plan.fail((*at, "host"), f"a {action} step must name a host of the topology")
    link = ""
    if "link" in item or spec.link == "required":
        if "link" not in item:
            raise plan.fail((*at, "link"), f'a {action} step must name a link, e.g. link = "A:B"')
        try:
            link = topology.link(plan.text((*at, "link"), item["link"])).name
        except TopologyError as exc:
            raise plan.fail((*at, "link"), exc.problem) from None
    variables.update(topology=ctx.remote_topology, talos=ctx.talos, link=link)

    start_reverse = item.get("start_reverse", False)
    if not isinstance(start_reverse, bool):
        raise plan.fail((*at, "start_reverse"), f"must be true or false, got {start_reverse!r}")
    if action == "exec" or "command" in item:
        template = plan.text((*at, "command"), item.get("command"))
    elif action in ctx.commands:
        template = ctx.commands[action]
        if start_reverse:
            template += " --start-reverse"
        if action == "verify" and link:
            template += " --link ${link}"
    else:
        raise plan.fail(
            ("commands", action),
            f"step[{index}] is a {action} step but the plan does not say how to "
            f"{action.replace('_', ' ')} on this deployment; set it under [commands], "
            f'e.g. {action} = "systemctl ..."',
        )

    command, names = _command_of(plan, at, action, template, variables, item.get("vars", {}))
    expect = item.get("expect_exit", 0)
    if isinstance(expect, bool) or not isinstance(expect, int):
        raise plan.fail((*at, "expect_exit"), f"must be an integer, got {expect!r}")
    return Step(
        index,
        action,
        str(host) if host is not None else None,
        timeout,
        command,
        expect_exit=expect,
        name=name,
        link=link,
        template=template,
        uses=frozenset(k for k in names if k in BUILTIN_VARS),
    )


def _command_of(
    plan: _Plan,
    at: tuple[str | int, ...],
    action: str,
    template: str,
    variables: Mapping[str, str],
    given: object,
) -> tuple[str, list[str]]:
    """The step's command with every value quoted, and the variables its template uses.

    ``variables`` are the drill's own (empty: not available to this step);
    ``given`` is the step's ``[step.vars]`` table. A variable nobody supplies,
    one the template does not use, or one that shadows the drill's is an error.
    """
    index = int(at[1]) + 1
    if not isinstance(given, dict):
        raise plan.fail((*at, "vars"), "must be a table ([step.vars]) of template variables")
    quoted = {key: shlex.quote(value) for key, value in variables.items() if key != "talos"}
    quoted["talos"] = variables["talos"]
    for key, value in given.items():
        if key in BUILTIN_VARS:
            raise plan.fail(
                (*at, "vars", key), f"{key} is set by the drill itself; choose another name"
            )
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise plan.fail(
                (*at, "vars", key), f"template values are strings or numbers, got {value!r}"
            )
        quoted[key] = shlex.quote(str(value))
    names = template_names(template)
    for key in names:
        if key not in quoted:
            raise plan.fail(
                (*at, "vars", key),
                f"the {action} command {template!r} needs ${{{key}}}; add {key} = ... "
                f"under [step.vars] of step[{index}] (write $${{{key}}} if the shell "
                "should see the braces)",
            )
        if key in BUILTIN_VARS and not variables[key]:
            needs = "link" if key == "link" else "host"
            raise plan.fail(
                (*at, needs),
                f"the {action} command {template!r} uses ${{{key}}}, which needs a {needs} "
                "on the step",
            )
    unused = [key for key in given if key not in names]
    if unused:
        raise plan.fail(
            (*at, "vars", unused[0]),
            f"the {action} command {template!r} does not use ${{{unused[0]}}} (misspelt?)",
        )
    return fill(template, quoted), names


def load_plan(path: str | os.PathLike[str], topology: Topology) -> DrillPlan:
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DrillError(f"{name}: cannot read the drill plan: {exc}") from None
    return parse_plan(text, topology, name)


# ==== results ==================================================================================

StepStatus = Literal["ok", "failed", "timed_out", "not_run"]


@dataclass
class StepResult:
    """What became of one step that ran."""

    step: Step
    started_s: float  # since the drill started
    duration_s: float = 0.0
    status: StepStatus = "failed"
    exit_status: int | None = None
    error: str = ""
    stdout: str = ""
    stderr: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def index(self) -> int:
        return self.step.index

    @property
    def action(self) -> str:
        return self.step.action

    @property
    def label(self) -> str:
        return self.step.label

    @property
    def host(self) -> str | None:
        return self.step.host

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.step.to_dict(),
            "status": self.status,
            "ok": self.ok,
            "started_s": round(self.started_s, 3),
            "duration_s": round(self.duration_s, 3),
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
    not_run: list[Step] = field(default_factory=list)
    error: str = ""
    duration_s: float = 0.0
    #: partition -> seconds nobody served it writable, over the whole drill
    unavailable_s: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.error and all(step.ok for step in self.steps)

    def to_dict(self) -> dict[str, Any]:
        """The timeline a script checks: every step (run or not), its status, duration, figures."""
        skipped = [
            {
                **s.to_dict(),
                "status": "not_run",
                "ok": False,
                "started_s": None,
                "duration_s": None,
                "figures": {},
            }
            for s in self.not_run
        ]
        return {
            "plan": self.plan,
            "name": self.name,
            "started_ms": self.started_ms,
            "ok": self.ok,
            "status": "ok" if self.ok else "failed",
            "error": self.error,
            "duration_s": round(self.duration_s, 3),
            "unavailable_s": self.unavailable_s,
            "steps": [step.to_dict() for step in self.steps] + skipped,
            "not_run": [s.label for s in self.not_run],
        }


_REVERSE_STARTED = re.compile(r"started the reverse link (\S+) \(pid (\d+), log (.+)\)\s*$")
#: At most this many failing rows in a verify step's error.
SUMMARY_ROWS = 4


def figures_from(action: str, stdout: str, host: str | None = None) -> dict[str, Any]:
    """The numbers a drill reports from a promote, failback or verify ``--json`` report.

    ``host`` is where the step ran (None: here); a failback that started the
    reverse worker there reports its host and PID.
    """
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
        figures: dict[str, Any] = {
            "archived": report.get("archived"),
            "diverged": report.get("diverged"),
            "archive_topics": report.get("archive_topics", {}),
        }
        started = _REVERSE_STARTED.search(str(report.get("reverse") or ""))
        if started:
            figures["reverse_worker"] = {
                "link": started.group(1),
                "host": host or socket.gethostname(),
                "pid": int(started.group(2)),
                "log": started.group(3),
            }
        return figures
    if action == "verify" and isinstance(report.get("links"), list):
        links = [link for link in report["links"] if isinstance(link, dict)]
        return {
            "healthy": report.get("healthy"),
            "links": {str(link.get("link")): link.get("state") for link in links},
        }
    return {"report": report}


def verify_summary(stdout: str) -> str:
    """A short account of what a ``mirror status --json`` document found unhealthy."""
    try:
        report = json.loads(stdout)
    except ValueError:
        return ""
    if not isinstance(report, dict) or not isinstance(report.get("links"), list):
        return ""
    parts: list[str] = []
    for link in report["links"]:
        if not isinstance(link, dict) or link.get("healthy", True):
            continue
        problems = [str(e) for e in link.get("errors", [])]
        bad = [
            row
            for row in link.get("partitions", [])
            if isinstance(row, dict) and row.get("state") in ("stalled", "error")
        ]
        for row in bad[:SUMMARY_ROWS]:
            detail = f" ({row['detail']})" if row.get("detail") else ""
            problems.append(f"{row.get('topic')}/{row.get('partition')} {row.get('state')}{detail}")
        if len(bad) > SUMMARY_ROWS:
            problems.append(f"{len(bad) - SUMMARY_ROWS} more partition(s)")
        parts.append(f"link {link.get('link')} {link.get('state')}: " + "; ".join(problems))
    return " | ".join(parts)


def short_output(text: str, lines: int = 3, width: int = 300) -> str:
    """The last few lines of a command's output, each cut to ``width`` characters."""
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return " / ".join(line if len(line) <= width else line[: width - 3] + "..." for line in kept)


def step_error(step: Step, exit_status: int | None, stdout: str, stderr: str) -> str:
    """Why a finished step failed ("" if it did not): short, never a slice of a document."""
    if exit_status == step.expect_exit:
        return ""
    detail = verify_summary(stdout) if step.action == "verify" else ""
    detail = detail or short_output(stderr) or short_output(stdout)
    shown = "killed by a signal" if exit_status is None else f"exit status {exit_status}"
    return f"{shown}, expected {step.expect_exit}" + (f": {detail}" if detail else "")


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
    """The human timeline; each error appears once, under its step."""
    lines = [f"drill {result.name!r} ({result.plan}): {'OK' if result.ok else 'FAILED'}"]
    lines.append(f"{'at s':>8} {'took s':>8}  {'':<9} step")
    for step in result.steps:
        state = {"ok": "ok", "failed": "FAILED", "timed_out": "TIMED OUT"}.get(step.status, "")
        lines.append(f"{step.started_s:>8.2f} {step.duration_s:>8.2f}  {state:<9} {step.label}")
        for key in ("rpo_ms", "gap_messages", "archived", "diverged"):
            if step.figures.get(key) is not None:
                lines.append(f"{'':>29}{key}: {step.figures[key]}")
        worker = step.figures.get("reverse_worker")
        if worker:
            lines.append(
                f"{'':>29}reverse worker {worker['link']}: pid {worker['pid']} on "
                f"{worker['host']} (log {worker['log']})"
            )
        if step.figures.get("links"):
            shown = ", ".join(f"{k} {v}" for k, v in step.figures["links"].items())
            lines.append(f"{'':>29}links: {shown}")
        unavailable = {k: v for k, v in step.figures.get("unavailable_s", {}).items() if v}
        if unavailable:
            shown = ", ".join(f"{k} {v:.2f}s" for k, v in unavailable.items())
            lines.append(f"{'':>29}unavailable: {shown}")
        if not step.ok:
            lines.append(f"{'':>29}error: {step.error}")
    if result.unavailable_s:
        lines.append("unavailability over the drill (seconds nobody served it writable):")
        for key, seconds in result.unavailable_s.items():
            lines.append(f"  {key}: {seconds:.2f}")
    if result.not_run:
        lines.append(f"not run: {'; '.join(s.label for s in result.not_run)}")
    if result.error and not any(not s.ok for s in result.steps):
        lines.append(f"error: {result.error}")
    return "\n".join(lines)


# ==== running ==================================================================================


@dataclass(frozen=True)
class Completed:
    """How a step's command ended. ``timed_out``: it was stopped; ``note`` says how."""

    exit_status: int | None
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    note: str = ""


Runner = Callable[[Step], Awaitable[Completed]]

#: The first line a remote step writes to stderr: its process group, for stopping it.
PGID_MARK = "talos-drill-pgid "
_REMOTE_WRAPPER = f'echo "{PGID_MARK}$$" >&2; exec sh -c "$1"'


def remote_command(command: str) -> str:
    """The step's command in a session and process group of its own, which it reports first.

    sshd keeps a command running after its channel closes, so a timed-out
    step is stopped by killing that group through a second session.
    """
    return f"exec setsid -w sh -c {shlex.quote(_REMOTE_WRAPPER)} talos-drill {shlex.quote(command)}"


def host_key_problem(known_hosts: str | None, path: str, host: str, port: int) -> str:
    """Why a host key was not accepted, from the known_hosts file's text (None: no file)."""
    import asyncssh

    entry = host if port == 22 else f"[{host}]:{port}"
    if known_hosts is None:
        return f"known_hosts file {path} does not exist; create it with the host's key"
    try:
        trusted = asyncssh.match_known_hosts(known_hosts.encode(), host, host, port)[0]
    except (ValueError, asyncssh.Error) as exc:
        return f"known_hosts file {path} cannot be read: {exc}"
    if not trusted:
        return (
            f"known_hosts file {path} has no entry for {entry}; after checking its "
            f"fingerprint, add it: ssh-keyscan -p {port} {host} >> {path}"
        )
    return (
        f"the host key of {entry} does not match its entry in known_hosts file {path}: "
        "the host was reinstalled or this is not the host you meant; check, then replace the entry"
    )


class SshRunner:
    """One asyncssh connection per host, opened on first use."""

    def __init__(self, topology: Topology, options: SshOptions) -> None:
        self.topology = topology
        self.options = options
        self._connections: dict[str, Any] = {}

    def user(self, host_name: str) -> str:
        _, host = self.topology.host(host_name)
        return host.user or self.options.username or getpass.getuser()

    def _known_hosts_path(self) -> str | None:
        known = self.options.known_hosts
        return None if known == "none" else os.path.expanduser(known)

    async def _connection(self, host_name: str) -> Any:
        import asyncssh

        conn = self._connections.get(host_name)
        if conn is not None:
            return conn
        _, host = self.topology.host(host_name)
        address = host.host.strip("[]")
        where = f"ssh to {host_name} ({host.uri})"
        known_path = self._known_hosts_path()
        if known_path is not None and not os.path.isfile(known_path):
            raise TalosError(f"{where}: {host_key_problem(None, known_path, address, host.port)}")
        kwargs: dict[str, Any] = {
            "port": host.port,
            "username": self.user(host_name),
            "known_hosts": known_path,
        }
        if self.options.client_keys:
            kwargs["client_keys"] = list(self.options.client_keys)
        try:
            conn = await asyncio.wait_for(
                asyncssh.connect(address, **kwargs), self.options.connect_timeout_s
            )
        except asyncssh.HostKeyNotVerifiable:
            assert known_path is not None  # no check, no complaint
            text = Path(known_path).read_text(errors="replace")
            raise TalosError(
                f"{where}: {host_key_problem(text, known_path, address, host.port)}"
            ) from None
        except asyncssh.PermissionDenied:
            keys = ", ".join(self.options.client_keys) or "the default keys of ~/.ssh"
            raise TalosError(
                f"{where}: permission denied for user {kwargs['username']!r} (client keys: {keys})"
            ) from None
        except (OSError, asyncssh.Error) as exc:
            raise TalosError(f"{where} failed: {exc}") from None
        except TimeoutError:
            raise TalosError(f"{where} timed out after {self.options.connect_timeout_s}s") from None
        self._connections[host_name] = conn
        return conn

    async def run(self, step: Step) -> Completed:
        if step.host is None:
            return await run_local(step)
        return await self.run_on(step.host, step.command, step.timeout_s)

    async def run_on(self, host: str, command: str, timeout_s: float) -> Completed:
        """Run ``command`` on ``host``; past ``timeout_s`` (or on Ctrl-C) kill its group there."""
        import asyncssh

        conn = await self._connection(host)
        try:
            process = await conn.create_process(remote_command(command))
            mark = asyncio.ensure_future(_read_mark(process.stderr))
            try:
                async with asyncio.timeout(timeout_s):
                    _, before = await asyncio.shield(mark)
                    out, err = await process.communicate()
            except TimeoutError:
                note = await self._stop(conn, mark, host)
                process.close()
                return Completed(None, timed_out=True, note=note)
            except asyncio.CancelledError:
                await self._stop(conn, mark, host)
                process.close()
                raise
        except (OSError, asyncssh.Error) as exc:
            self._connections.pop(host, None)
            raise TalosError(f"ssh to {host}: {exc}") from None
        return Completed(process.exit_status, _text_of(out), before + _text_of(err))

    async def _stop(
        self, conn: Any, mark: asyncio.Future[tuple[int | None, str]], host: str
    ) -> str:
        """Kill the command's process group through a second session on the same connection."""
        import asyncssh

        pgid: int | None = None
        with contextlib.suppress(TimeoutError, OSError, asyncssh.Error):
            # a command that has not reported its group yet may still start: wait for it
            pgid, _ = await asyncio.wait_for(mark, STOP_TIMEOUT_S)
        if pgid is None:
            mark.cancel()
            return f"its process group on {host} never became known; closed its channel only"
        try:
            done = await asyncio.wait_for(
                conn.run(f"kill -KILL -- -{pgid}", check=False), STOP_TIMEOUT_S
            )
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            return f"could not stop process group {pgid} on {host}: {exc or 'timed out'}"
        if done.exit_status != 0:
            return f"process group {pgid} on {host} had already ended"
        return f"killed its process group {pgid} on {host} through a second session"

    async def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
            with contextlib.suppress(Exception):
                await conn.wait_closed()
        self._connections.clear()


async def _read_mark(stderr: Any) -> tuple[int | None, str]:
    """The process group a remote step reports first, and any stderr a login script wrote
    before it (None: the command ended without reporting one, e.g. no setsid there)."""
    before: list[str] = []
    while True:
        line = _text_of(await stderr.readline())
        if not line:
            return None, "".join(before)
        if line.startswith(PGID_MARK):
            return int(line[len(PGID_MARK) :]), "".join(before)
        before.append(line)


def _text_of(data: object) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return str(data)


async def run_local(step: Step) -> Completed:
    """Steps without a host run here, as a child in a process group of its own."""
    return await run_here(step.command, step.timeout_s)


async def run_here(command: str, timeout_s: float) -> Completed:
    process = await asyncio.create_subprocess_shell(
        command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await process.communicate()
    except (TimeoutError, asyncio.CancelledError) as exc:  # end the command and its children
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(process.communicate(), 5.0)
        if isinstance(exc, asyncio.CancelledError):
            raise
        return Completed(None, timed_out=True, note=f"killed its process group {process.pid}")
    status = process.returncode if process.returncode is not None else -1
    return Completed(status, out.decode(errors="replace"), err.decode(errors="replace"))


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
            outcome = StepResult(step, time.monotonic() - t0)
            try:
                if step.action == "wait":
                    await asyncio.sleep(step.seconds)
                    outcome.status = "ok"
                else:
                    done = await run(step)
                    outcome.exit_status, outcome.stdout, outcome.stderr = (
                        done.exit_status,
                        done.stdout,
                        done.stderr,
                    )
                    outcome.figures.update(figures_from(step.action, done.stdout, step.host))
                    if done.timed_out:
                        outcome.status = "timed_out"
                        outcome.error = f"timed out after {step.timeout_s:g}s; {done.note}"
                    else:
                        outcome.error = step_error(step, done.exit_status, done.stdout, done.stderr)
                        outcome.status = "failed" if outcome.error else "ok"
            except TalosError as exc:
                outcome.error = exc.message
            outcome.duration_s = time.monotonic() - t0 - outcome.started_s
            result.steps.append(outcome)
            if on_step is not None:
                on_step(outcome)
            if not outcome.ok:
                result.error = f"{step.label} failed: {outcome.error}"
                result.not_run = list(plan.steps[position + 1 :])
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


# ==== dry run ==================================================================================

LOCAL = "(local)"
DRY_RUN_TIMEOUT_S = 30.0


@dataclass
class HostCheck:
    """What ``--dry-run`` found on one host (``LOCAL``: the machine running the drill)."""

    host: str
    uri: str
    talos: str
    topology: str
    uses_topology: bool
    version: str = ""
    topology_readable: bool | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "uri": self.uri,
            "talos": self.talos,
            "topology": self.topology,
            "uses_topology": self.uses_topology,
            "version": self.version,
            "topology_readable": self.topology_readable,
            "ok": self.ok,
            "error": self.error,
        }


@dataclass
class DryRun:
    plan: DrillPlan
    hosts: list[HostCheck]

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hosts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.path,
            "name": self.plan.name,
            "dry_run": True,
            "ok": self.ok,
            "hosts": [h.to_dict() for h in self.hosts],
            "steps": [s.to_dict() for s in self.plan.steps],
        }


def host_check_command(plan: DrillPlan) -> str:
    """Prints talos's version, then whether the topology file is readable; changes nothing."""
    topology = shlex.quote(plan.remote_topology)
    return (
        f"{talos_words(plan.talos)} --version && "
        f"if test -r {topology}; then echo topology-readable; else echo topology-missing; fi"
    )


def judge_host(check: HostCheck, done: Completed, default_topology: bool) -> None:
    """Fill in what the host's answer to :func:`host_check_command` says."""
    lines = done.stdout.strip().splitlines()
    if done.timed_out or done.exit_status != 0:
        why = "timed out" if done.timed_out else short_output(done.stderr) or "no output"
        check.error = f"`{check.talos} --version` failed on {check.host}: {why}"
        return
    check.version = lines[0] if lines else ""
    check.topology_readable = bool(lines) and lines[-1] == "topology-readable"
    if check.uses_topology and not check.topology_readable:
        hint = (
            " ([drill] topology is not set, so the hosts use this machine's path)"
            if default_topology
            else ""
        )
        check.error = f"topology file {check.topology} is not readable on {check.host}{hint}"


async def dry_run(
    plan: DrillPlan,
    topology: Topology,
    *,
    on_host: Callable[[HostCheck], None] | None = None,
) -> DryRun:
    """Connect to every host of the plan and check that talos runs there; run no step."""
    ssh = SshRunner(topology, plan.ssh)
    checks: list[HostCheck] = []
    hosts: dict[str | None, list[Step]] = {}
    for step in plan.steps:
        if step.action != "wait":
            hosts.setdefault(step.host, []).append(step)
    command = host_check_command(plan)
    try:
        for host, steps in hosts.items():
            uses = any("topology" in s.uses for s in steps)
            if host is None:
                check = HostCheck(LOCAL, "", plan.talos, plan.remote_topology, uses)
            else:
                _, spec = topology.host(host)
                uri = f"ssh://{ssh.user(host)}@{spec.host}:{spec.port}"
                check = HostCheck(host, uri, plan.talos, plan.remote_topology, uses)
            try:
                if host is None:
                    done = await run_here(command, DRY_RUN_TIMEOUT_S)
                else:
                    done = await ssh.run_on(host, command, DRY_RUN_TIMEOUT_S)
                judge_host(check, done, plan.topology_is_default)
            except TalosError as exc:
                check.error = exc.message
            checks.append(check)
            if on_host is not None:
                on_host(check)
    finally:
        await ssh.close()
    return DryRun(plan, checks)


def format_dry_run(report: DryRun) -> str:
    plan = report.plan
    lines = [f"DRY RUN of drill {plan.name!r} ({plan.path}): no step was run, nothing changed"]
    lines.append("hosts (where talos runs, and the topology file it reads):")
    for h in report.hosts:
        where = f" {h.uri}" if h.uri else ""
        readable = {True: "readable", False: "NOT readable", None: "not checked"}
        lines.append(
            f"  {h.host}{where}: talos = {h.talos!r} ({h.version or 'no version'}), "
            f"topology = {h.topology} ({readable[h.topology_readable]}"
            f"{'' if h.uses_topology else ', no step here uses it'}): "
            + ("OK" if h.ok else f"FAILED: {h.error}")
        )
    lines.append("steps:")
    for step in plan.steps:
        lines.append(f"  {step.label} (timeout {step.timeout_s:g}s)")
        lines.append(f"      {step.command}" if step.command else f"      sleep {step.seconds:g}s")
    return "\n".join(lines)
