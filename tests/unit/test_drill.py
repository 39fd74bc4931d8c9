"""Drills: plan validation, and the runner against a real asyncssh server on loopback.

The server runs each command locally with asyncio.create_subprocess_shell, so a
step's effect is a file the test can look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pytest

from talos.cli import main
from topology import Topology, loads_topology
from topology.drill import (
    DrillError,
    DrillResult,
    format_timeline,
    outage_seconds,
    parse_plan,
    run_drill,
    write_timeline,
)

T = TypeVar("T")


def make_topology(tmp_path: Path, port: int) -> Topology:
    text = f"""
[dc.A]
zookeeper = "127.0.0.1:1"
store = "posix:{tmp_path}/a"
brokers = ["127.0.0.1:2"]
hosts = {{ a1 = "ssh://drill@127.0.0.1:{port}" }}

[dc.B]
zookeeper = "127.0.0.1:3"
store = "posix:{tmp_path}/b"
brokers = ["127.0.0.1:4"]
hosts = {{ b1 = "ssh://drill@127.0.0.1:{port}" }}

[[link]]
source = "A"
target = "B"
topics = ["orders"]
"""
    path = tmp_path / "topology.toml"
    path.write_text(text)
    return loads_topology(text, str(path))


class _Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True  # public key auth against authorized_client_keys


_HANDLERS: set[asyncio.Task[None]] = set()


@pytest.fixture(autouse=True)
def _collect_killed_subprocess_transports() -> Any:
    """Timed-out steps kill their local subprocess; asyncio may only notice its pipe
    transports in the garbage collector, after the loop closed. Collect them here, in
    this module, instead of letting the warning land on whatever test runs next."""
    yield
    import gc
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ResourceWarning)
        gc.collect()


async def _run_locally(process: asyncssh.SSHServerProcess[str]) -> None:
    """Run the command here; kill it if the client goes away (a step timed out)."""
    task = asyncio.current_task()
    if task is not None:
        _HANDLERS.add(task)
    proc = await asyncio.create_subprocess_shell(
        process.command or "true",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    communicate = asyncio.ensure_future(proc.communicate())
    closed = asyncio.ensure_future(process.channel.wait_closed())
    try:
        await asyncio.wait({communicate, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        closed.cancel()
        if not communicate.done():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.wait({communicate})
        if task is not None:
            _HANDLERS.discard(task)
    out, err = communicate.result()
    if not process.channel.is_closing():
        process.stdout.write(out.decode())
        process.stderr.write(err.decode())
        process.exit(proc.returncode or 0)


async def with_ssh_server(tmp_path: Path, body: Callable[[int, Path], Awaitable[T]]) -> T:
    """Start the loopback server with a fresh host key and client key; run ``body(port)``."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = tmp_path / "id_ed25519"
    client_key.write_private_key(str(key_path))
    server = await asyncssh.create_server(
        _Server,
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        authorized_client_keys=asyncssh.import_authorized_keys(
            client_key.export_public_key().decode()
        ),
        process_factory=_run_locally,
    )
    port = server.sockets[0].getsockname()[1]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}")
    try:
        return await body(port, tmp_path)
    finally:
        handlers = list(_HANDLERS)
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        server.close()
        await server.wait_closed()


def ssh_section(tmp_path: Path) -> str:
    return f"""
[ssh]
known_hosts = "{tmp_path / "known_hosts"}"
client_keys = ["{tmp_path / "id_ed25519"}"]
connect_timeout_s = 5
"""


# ---- validation (nothing runs) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ('[[step]]\naction = "reboot"\nhost = "a1"', r"step\[1\]\.action: unknown step 'reboot'"),
        ('[[step]]\naction = "exec"\nhost = "zz"\ncommand = "true"', r"unknown host 'zz'"),
        ('[[step]]\naction = "cut_link"', r"step\[1\]\.host: a cut_link step must name a host"),
        ('[[step]]\naction = "stop_broker"\nhost = "a1"', r"commands\.stop_broker: .*does not say"),
        (
            '[commands]\nstop_broker = "kill {pid}"\n[[step]]\naction = "stop_broker"\nhost = "a1"',
            r"step\[1\]\.pid: .*needs \{pid\}",
        ),
        ('[[step]]\naction = "wait"', r"step\[1\]\.seconds"),
        ('[[step]]\naction = "wait"\nseconds = 1\nhost = "a1"', r"runs on no host"),
        ('[[step]]\naction = "promote"\nlink = "A:C"', r"step\[1\]\.link: no link A:C"),
        ('[[step]]\naction = "failback"', r"step\[1\]\.link"),
        ('[drill]\nspeed = 3\n[[step]]\naction = "wait"\nseconds = 1', r"drill\.speed: unknown"),
        ("[drill]\nname = 'x'", r"at least one \[\[step\]\]"),
        ("[[step]\n", r"not valid TOML"),
        ('[commands]\nfly = "x"\n[[step]]\naction = "wait"\nseconds = 1', r"commands\.fly"),
        ('[[step]]\naction = "wait"\nseconds = 5\ntimeout_s = 1', r"longer than its timeout"),
    ],
)
def test_bad_plans_are_refused_naming_the_key(tmp_path: Path, plan: str, message: str) -> None:
    topology = make_topology(tmp_path, 2222)
    with pytest.raises(DrillError, match=message) as info:
        parse_plan(plan, topology, "plan.toml")
    assert str(info.value).startswith("plan.toml: ")


def test_a_good_plan_fills_in_the_templates(tmp_path: Path) -> None:
    topology = make_topology(tmp_path, 2222)
    plan = parse_plan(
        """
[drill]
name = "lose A"
talos = "/opt/talos/bin/talos"
topology = "/etc/talos/topo.toml"
[commands]
stop_broker = "systemctl stop talos-broker@{broker} # {dc} {address}"
[[step]]
action = "stop_broker"
host = "a1"
broker = "b1"
[[step]]
action = "promote"
link = "A:B"
timeout_s = 60
[[step]]
action = "failback"
link = "A:B"
host = "a1"
start_reverse = true
""",
        topology,
        "plan.toml",
    )
    assert plan.name == "lose A"
    stop, promote, failback = plan.steps
    assert stop.command == "systemctl stop talos-broker@b1 # A 127.0.0.1"
    assert (stop.host, stop.timeout_s) == ("a1", 300.0)
    assert promote.command == (
        "/opt/talos/bin/talos mirror promote --topology /etc/talos/topo.toml --link A:B --json"
    )
    assert (promote.host, promote.timeout_s) == (None, 60.0)
    assert failback.command.endswith("--link A:B --json --start-reverse")


def test_bad_plan_through_the_cli_exits_2_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topology = make_topology(tmp_path, 2222)
    marker = tmp_path / "ran"
    plan = tmp_path / "plan.toml"
    plan.write_text(
        f'[[step]]\naction = "exec"\nhost = "a1"\ncommand = "touch {marker}"\n'
        '[[step]]\naction = "explode"\n'
    )
    code = main(["drill", "run", str(plan), "--topology", topology.path])
    assert code == 2
    assert "step[2].action: unknown step 'explode'" in capsys.readouterr().err
    assert not marker.exists()


# ---- pure figures ---------------------------------------------------------------------


def test_outage_seconds_per_partition_and_window() -> None:
    samples = [
        (0.0, {"t/0": True, "t/1": True}),
        (1.0, {"t/0": False, "t/1": True}),
        (3.0, {"t/0": True, "t/1": False}),
        (4.0, {"t/0": True, "t/1": True}),
    ]
    assert outage_seconds(samples, 0.0, 5.0) == {"t/0": 2.0, "t/1": 1.0}
    assert outage_seconds(samples, 2.0, 3.5) == {"t/0": 1.0, "t/1": 0.5}
    assert outage_seconds([], 0.0, 5.0) == {}


# ---- running over SSH -----------------------------------------------------------------


def test_drill_runs_steps_over_ssh_and_writes_the_timeline(tmp_path: Path) -> None:
    promote_report = {
        "link": "A:B",
        "rpo_ms": 350,
        "gap_messages": 7,
        "partitions": [{"topic": "orders", "partition": 0, "gap_messages": 7}],
    }
    (tmp_path / "promote.json").write_text(json.dumps(promote_report))
    (tmp_path / "failback.json").write_text(
        json.dumps({"archived": 7, "diverged": 7, "archive_topics": {"orders": "orders.d"}})
    )

    async def body(port: int, root: Path) -> DrillResult:
        topology = make_topology(root, port)
        plan = parse_plan(
            ssh_section(root)
            + f"""
[commands]
stop_broker = "echo stop {{broker}} on {{host}} >> {root}/actions.log"
start_broker = "echo start {{broker}} on {{host}} >> {root}/actions.log"
promote = "cat {root}/promote.json"
failback = "cat {root}/failback.json"
[[step]]
action = "exec"
host = "a1"
command = "echo $((6 * 7)) > {root}/answer"
[[step]]
action = "stop_broker"
host = "a1"
broker = "b1"
[[step]]
action = "wait"
seconds = 0.1
[[step]]
action = "promote"
host = "b1"
link = "A:B"
[[step]]
action = "start_broker"
host = "a1"
broker = "b1"
[[step]]
action = "failback"
link = "A:B"
""",
            topology,
            str(root / "plan.toml"),
        )
        return await run_drill(plan, topology)

    result = asyncio.run(with_ssh_server(tmp_path, body))
    assert result.ok, result.error
    assert (tmp_path / "answer").read_text() == "42\n"
    assert (tmp_path / "actions.log").read_text() == "stop b1 on a1\nstart b1 on a1\n"
    actions = [s.action for s in result.steps]
    assert actions == ["exec", "stop_broker", "wait", "promote", "start_broker", "failback"]
    wait = result.steps[2]
    assert wait.duration_s >= 0.1
    starts = [s.started_s for s in result.steps]
    assert starts == sorted(starts)
    promote = result.steps[3]
    assert (promote.figures["rpo_ms"], promote.figures["gap_messages"]) == (350, 7)
    assert promote.figures["gap_by_partition"] == {"orders/0": 7}
    assert result.steps[5].figures["archived"] == 7 and result.steps[5].host is None

    out = tmp_path / "timeline.json"
    write_timeline(result, str(out))
    saved = json.loads(out.read_text())
    assert saved["ok"] is True
    assert [s["action"] for s in saved["steps"]] == actions
    text = format_timeline(result)
    assert "rpo_ms: 350" in text and "archived: 7" in text


def test_a_failing_step_stops_the_drill_and_reports_what_was_done(tmp_path: Path) -> None:
    async def body(port: int, root: Path) -> DrillResult:
        topology = make_topology(root, port)
        plan = parse_plan(
            ssh_section(root)
            + f"""
[[step]]
action = "exec"
host = "a1"
command = "touch {root}/first"
[[step]]
action = "exec"
host = "b1"
command = "echo disk full >&2; exit 3"
[[step]]
action = "exec"
host = "a1"
command = "touch {root}/third"
""",
            topology,
            "plan.toml",
        )
        return await run_drill(plan, topology)

    result = asyncio.run(with_ssh_server(tmp_path, body))
    assert not result.ok
    assert [s.ok for s in result.steps] == [True, False]
    assert result.steps[1].exit_status == 3
    assert "exit status 3, expected 0: disk full" in result.error
    assert result.error.startswith("step 2 exec on b1 failed")
    assert result.not_run == ["step 3 exec on a1"]
    assert (tmp_path / "first").exists() and not (tmp_path / "third").exists()
    assert "not run: step 3 exec on a1" in format_timeline(result)


def test_every_step_has_a_timeout(tmp_path: Path) -> None:
    async def body(port: int, root: Path) -> tuple[DrillResult, float]:
        topology = make_topology(root, port)
        plan = parse_plan(
            ssh_section(root)
            + f"""
[[step]]
action = "exec"
host = "a1"
command = "sleep 20; touch {root}/late"
timeout_s = 0.5
[[step]]
action = "wait"
seconds = 0.1
""",
            topology,
            "plan.toml",
        )
        started = time.monotonic()
        result = await run_drill(plan, topology)
        return result, time.monotonic() - started

    result, took = asyncio.run(with_ssh_server(tmp_path, body))
    assert took < 10
    assert "timed out after 0.5s" in result.error
    assert result.not_run == ["step 2 wait"]
    assert not (tmp_path / "late").exists()


def test_an_unreachable_host_fails_its_step_clearly(tmp_path: Path) -> None:
    async def body(port: int, root: Path) -> DrillResult:
        from talos.testing.zookeeper import free_port

        topology = make_topology(root, free_port())  # nothing listens there
        plan = parse_plan(
            ssh_section(root) + '[[step]]\naction = "exec"\nhost = "a1"\ncommand = "true"\n',
            topology,
            "plan.toml",
        )
        return await run_drill(plan, topology)

    result = asyncio.run(with_ssh_server(tmp_path, body))
    assert not result.ok
    assert "ssh to a1 (ssh://drill@127.0.0.1:" in result.error


def test_drill_cli_runs_a_plan_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI end to end, with a local-only plan (promote/verify steps without a host)."""
    topology = make_topology(tmp_path, 2222)
    plan = tmp_path / "plan.toml"
    plan.write_text(
        """
[commands]
verify = "echo '{{\\"ok\\": true}}'"
[[step]]
action = "verify"
[[step]]
action = "wait"
seconds = 0.05
"""
    )
    out = tmp_path / "out.json"
    code = main(["drill", "run", str(plan), "--topology", topology.path, "--output", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    saved: dict[str, Any] = json.loads(out.read_text())
    assert saved["ok"] and saved["steps"][0]["figures"] == {"report": {"ok": True}}
    assert "step 1 verify locally" in printed
