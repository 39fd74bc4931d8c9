"""Drills: plan validation, and the runner against a real OpenSSH server on loopback.

The server is Debian's sshd (``make system-deps`` installs it) with a config,
host key, authorized key and pid file of this module's own; it logs in as the
current user, so a step's effect is a file the test can look at.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from talos.cli import main
from talos.testing.sshd import SshServer
from topology import Topology, loads_topology
from topology.drill import (
    DrillError,
    DrillResult,
    figures_from,
    fill,
    format_timeline,
    host_key_problem,
    outage_seconds,
    parse_plan,
    run_drill,
    template_names,
    verify_summary,
    write_timeline,
)

REPO = Path(__file__).resolve().parents[2]
#: How the hosts (this machine, reached over sshd's clean environment) run this checkout's talos.
TALOS = f"env PYTHONPATH={REPO} {sys.executable} -m talos"


def make_topology(tmp_path: Path, port: int, user: str = "drill") -> Topology:
    text = f"""
[dc.A]
zookeeper = "127.0.0.1:1"
store = "posix:{tmp_path}/a"
brokers = ["127.0.0.1:2"]
hosts = {{ a1 = "ssh://{user}@127.0.0.1:{port}" }}

[dc.B]
zookeeper = "127.0.0.1:3"
store = "posix:{tmp_path}/b"
brokers = ["127.0.0.1:4"]
hosts = {{ b1 = "ssh://{user}@127.0.0.1:{port}" }}

[[link]]
source = "A"
target = "B"
topics = ["orders"]

[[link]]
source = "B"
target = "A"
topics = ["orders"]
"""
    path = tmp_path / "topology.toml"
    path.write_text(text)
    return loads_topology(text, str(path))


def ssh_topology(tmp_path: Path, sshd: SshServer) -> Topology:
    return make_topology(tmp_path, sshd.port, sshd.user)


def ssh_section(sshd: SshServer, known_hosts: Path | None = None) -> str:
    return f"""
[ssh]
known_hosts = "{known_hosts or sshd.known_hosts}"
client_keys = ["{sshd.client_key}"]
connect_timeout_s = 5
"""


def run(plan_text: str, topology: Topology, path: str = "plan.toml") -> DrillResult:
    plan = parse_plan(plan_text, topology, path)
    return asyncio.run(run_drill(plan, topology, probe=False))


# ---- validation (nothing runs) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ('[[step]]\naction = "reboot"\nhost = "a1"', r"step\[1\]\.action: unknown step 'reboot'"),
        ('[[step]]\naction = "exec"\nhost = "zz"\ncommand = "true"', r"unknown host 'zz'"),
        ('[[step]]\naction = "cut_link"', r"step\[1\]\.host: a cut_link step must name a host"),
        ('[[step]]\naction = "stop_broker"\nhost = "a1"', r"commands\.stop_broker: .*does not say"),
        (
            '[commands]\nstop_broker = "kill ${pid}"\n'
            '[[step]]\naction = "stop_broker"\nhost = "a1"',
            r"step\[1\]\.vars\.pid: .*needs \$\{pid\}; add pid = \.\.\. under \[step\.vars\]",
        ),
        ('[[step]]\naction = "wait"', r"step\[1\]\.seconds"),
        ('[[step]]\naction = "wait"\nseconds = 1\nhost = "a1"', r"step\[1\]\.host: unknown key"),
        ('[[step]]\naction = "promote"\nlink = "A:C"', r"step\[1\]\.link: no link A:C"),
        ('[[step]]\naction = "failback"', r"step\[1\]\.link: a failback step must name a link"),
        ('[drill]\nspeed = 3\n[[step]]\naction = "wait"\nseconds = 1', r"drill\.speed: unknown"),
        ("[drill]\nname = 'x'", r"at least one \[\[step\]\]"),
        ("[[step]\n", r"not valid TOML"),
        ('[commands]\nfly = "x"\n[[step]]\naction = "wait"\nseconds = 1', r"commands\.fly"),
        ('[[step]]\naction = "wait"\nseconds = 5\ntimeout_s = 1', r"longer than its timeout"),
        # issue 15, point 4: misspelt or misplaced keys are errors, not template variables
        (
            '[[step]]\naction = "exec"\nhost = "a1"\ncommand = "true"\ntimout_s = 5',
            r"^plan\.toml:5: step\[1\]\.timout_s: unknown key for action 'exec'; "
            r"allowed: .*timeout_s.*"
            r"template variables go in \[step\.vars\]",
        ),
        (
            '[[step]]\naction = "promote"\nlink = "A:B"\nstart_reverse = true',
            r"^plan\.toml:4: step\[1\]\.start_reverse: unknown key for action 'promote'; allowed: ",
        ),
        (
            '[[step]]\naction = "exec"\ncommand = "true"\nseconds = 3',
            r"^plan\.toml:4: step\[1\]\.seconds: unknown key",
        ),
        (
            '[[step]]\naction = "exec"\ncommand = "true"\n[step.vars]\nbroker = "b1"',
            r"^plan\.toml:5: step\[1\]\.vars\.broker: .*does not use \$\{broker\} \(misspelt\?\)",
        ),
        (
            '[[step]]\naction = "exec"\ncommand = "echo ${host}"\n[step.vars]\nhost = "x"',
            r"step\[1\]\.vars\.host: host is set by the drill itself",
        ),
        (
            '[[step]]\naction = "exec"\ncommand = "ping ${address}"',
            r"step\[1\]\.host: .*uses \$\{address\}, which needs a host",
        ),
        (
            '[[step]]\naction = "exec"\ncommand = "true"\nvars = 3',
            r"step\[1\]\.vars: must be a table",
        ),
    ],
)
def test_bad_plans_are_refused_naming_the_key(tmp_path: Path, plan: str, message: str) -> None:
    topology = make_topology(tmp_path, 2222)
    with pytest.raises(DrillError, match=message) as info:
        parse_plan(plan, topology, "plan.toml")
    assert str(info.value).startswith("plan.toml")


def test_a_good_plan_fills_in_the_templates_quoted(tmp_path: Path) -> None:
    topology = make_topology(tmp_path, 2222)
    plan = parse_plan(
        """
[drill]
name = "lose A"
talos = "/opt/talos/bin/talos"
topology = "/etc/talos/my topo.toml"
[commands]
stop_broker = "systemctl stop talos-broker@${broker} # ${dc} ${address} ${bootstrap}"
[[step]]
action = "stop_broker"
host = "a1"
[step.vars]
broker = "b1; rm -rf /"
[[step]]
action = "promote"
link = "A:B"
timeout_s = 60
[[step]]
action = "failback"
link = "A:B"
host = "a1"
start_reverse = true
name = "bring A back"
""",
        topology,
        "plan.toml",
    )
    assert plan.name == "lose A"
    stop, promote, failback = plan.steps
    assert stop.command == ("systemctl stop talos-broker@'b1; rm -rf /' # A 127.0.0.1 127.0.0.1:2")
    assert (stop.host, stop.timeout_s) == ("a1", 300.0)
    assert promote.command == (
        "/opt/talos/bin/talos mirror promote --topology '/etc/talos/my topo.toml' --link A:B --json"
    )
    assert (promote.host, promote.timeout_s) == (None, 60.0)
    assert failback.command.endswith("--link A:B --json --start-reverse")
    # issue 15, point 5: a named step keeps its action and link in the label
    assert failback.label == 'step 3 "bring A back" (failback A:B) on a1'
    assert promote.label == "step 2 promote A:B locally"


def test_templates_leave_shell_braces_and_dollars_alone(tmp_path: Path) -> None:
    """Issue 15, point 2: ``{}`` and ``awk '{print 42}'`` are the shell's, never a traceback."""
    topology = make_topology(tmp_path, 2222)
    commands = [
        "find /tmp -maxdepth 0 -exec echo {} +",
        "awk 'BEGIN {print 42}'",
        "echo $HOME $((6 * 7)) $1 ${1} {0} {name}",
    ]
    text = "".join(f'[[step]]\naction = "exec"\ncommand = """{c}"""\n' for c in commands)
    plan = parse_plan(text, topology, "plan.toml")
    assert [s.command for s in plan.steps] == commands
    assert template_names("a ${x} $${y} ${x} $z {w}") == ["x"]
    assert fill("echo $${HOME} ${v}", {"v": "'a b'"}) == "echo ${HOME} 'a b'"
    assert fill("printf '%s' {} $$", {}) == "printf '%s' {} $$"
    with pytest.raises(DrillError, match=r"step\[1\]\.vars\.HOME: .*write \$\$\{HOME\}"):
        parse_plan('[[step]]\naction = "exec"\ncommand = "echo ${HOME}"', topology, "p.toml")


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
    err = capsys.readouterr().err
    assert f"{plan}:6: step[2].action: unknown step 'explode'" in err
    assert "Traceback" not in err
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


def test_failback_figures_name_the_reverse_worker_host_and_pid() -> None:
    report = {
        "archived": 137,
        "diverged": 137,
        "archive_topics": {"orders": "orders.diverged.1"},
        "reverse": "started the reverse link B:A (pid 4242, log /var/lib/talos/mirror-B-A.log)",
    }
    figures = figures_from("failback", json.dumps(report), "a1")
    assert figures["reverse_worker"] == {
        "link": "B:A",
        "host": "a1",
        "pid": 4242,
        "log": "/var/lib/talos/mirror-B-A.log",
    }
    assert figures["archived"] == 137
    printed = {**report, "reverse": "start the reverse link with: talos mirror run ..."}
    assert "reverse_worker" not in figures_from("failback", json.dumps(printed), "a1")


def _status_doc(rows: int) -> dict[str, Any]:
    bad = [
        {"topic": "orders", "partition": p, "state": "error", "detail": "target end unknown"}
        for p in range(rows)
    ]
    return {
        "healthy": False,
        "links": [
            {"link": "A:B", "state": "promoted", "healthy": True, "errors": [], "partitions": []},
            {
                "link": "B:A",
                "state": "error",
                "healthy": False,
                "errors": ["target DC A: ZooKeeper 127.0.0.1:1: unreachable"],
                "partitions": [{"topic": "orders", "partition": 9, "state": "ok"}, *bad],
            },
        ],
    }


def test_a_failed_verify_is_a_short_summary_of_the_failing_rows() -> None:
    """Issue 15, point 3: not the last 500 characters of a JSON document."""
    summary = verify_summary(json.dumps(_status_doc(6), indent=2))
    assert summary == (
        "link B:A error: target DC A: ZooKeeper 127.0.0.1:1: unreachable; "
        "orders/0 error (target end unknown); orders/1 error (target end unknown); "
        "orders/2 error (target end unknown); orders/3 error (target end unknown); "
        "2 more partition(s)"
    )
    assert verify_summary("not json") == ""
    figures = figures_from("verify", json.dumps(_status_doc(1)))
    assert figures == {"healthy": False, "links": {"A:B": "promoted", "B:A": "error"}}


def test_host_key_problems_are_told_apart() -> None:
    """Issue 15, point 5: no file, no entry, and a wrong key are three different messages."""
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    path = "/home/op/.ssh/known_hosts"
    missing = host_key_problem(None, path, "10.0.0.5", 22)
    assert missing.startswith(f"known_hosts file {path} does not exist")
    absent = host_key_problem(f"10.0.0.9 {key}\n", path, "10.0.0.5", 22)
    assert f"known_hosts file {path} has no entry for 10.0.0.5" in absent
    assert f"ssh-keyscan -p 22 10.0.0.5 >> {path}" in absent
    wrong = host_key_problem(f"[10.0.0.5]:2222 {key}\n", path, "10.0.0.5", 2222)
    assert wrong.startswith(
        f"the host key of [10.0.0.5]:2222 does not match its entry in known_hosts file {path}"
    )


# ---- running over SSH (a real OpenSSH server) ------------------------------------------


def test_drill_runs_steps_over_ssh_and_writes_the_timeline(tmp_path: Path, sshd: SshServer) -> None:
    promote_report = {
        "link": "A:B",
        "rpo_ms": 350,
        "gap_messages": 7,
        "partitions": [{"topic": "orders", "partition": 0, "gap_messages": 7}],
    }
    (tmp_path / "promote.json").write_text(json.dumps(promote_report))
    reverse = f"started the reverse link B:A (pid 4321, log {tmp_path}/mirror-B-A.log)"
    (tmp_path / "failback.json").write_text(
        json.dumps({"archived": 7, "diverged": 7, "archive_topics": {}, "reverse": reverse})
    )
    topology = ssh_topology(tmp_path, sshd)
    root = tmp_path
    result = run(
        ssh_section(sshd)
        + f"""
[commands]
stop_broker = "echo stop ${{broker}} on ${{host}} >> {root}/actions.log"
start_broker = "echo start ${{broker}} on ${{host}} >> {root}/actions.log"
promote = "cat {root}/promote.json"
failback = "cat {root}/failback.json"
[[step]]
action = "exec"
host = "a1"
command = "echo $((6 * 7)) $(awk 'BEGIN {{print 42}}') > {root}/answer; echo $$ > {root}/pid"
[[step]]
action = "stop_broker"
host = "a1"
[step.vars]
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
vars = {{ broker = "b1" }}
[[step]]
action = "failback"
link = "A:B"
host = "a1"
name = "bring A back"
""",
        topology,
        str(root / "plan.toml"),
    )
    assert result.ok, result.error
    assert (tmp_path / "answer").read_text() == "42 42\n"
    assert int((tmp_path / "pid").read_text()) != os.getpid()  # ran in sshd's session
    assert (tmp_path / "actions.log").read_text() == "stop b1 on a1\nstart b1 on a1\n"
    actions = [s.action for s in result.steps]
    assert actions == ["exec", "stop_broker", "wait", "promote", "start_broker", "failback"]
    assert result.steps[2].duration_s >= 0.1
    starts = [s.started_s for s in result.steps]
    assert starts == sorted(starts)
    promote = result.steps[3]
    assert (promote.figures["rpo_ms"], promote.figures["gap_messages"]) == (350, 7)
    assert promote.figures["gap_by_partition"] == {"orders/0": 7}
    back = result.steps[5]
    assert back.figures["archived"] == 7 and back.host == "a1"
    assert back.figures["reverse_worker"]["host"] == "a1"
    assert back.figures["reverse_worker"]["pid"] == 4321
    assert back.label == 'step 6 "bring A back" (failback A:B) on a1'

    out = tmp_path / "timeline.json"
    write_timeline(result, str(out))
    saved = json.loads(out.read_text())
    assert saved["ok"] is True and saved["status"] == "ok"
    assert [s["action"] for s in saved["steps"]] == actions
    assert {s["status"] for s in saved["steps"]} == {"ok"}
    text = format_timeline(result)
    assert "rpo_ms: 350" in text and "archived: 7" in text
    assert "reverse worker B:A: pid 4321 on a1" in text


def test_shell_braces_and_quoted_values_reach_the_host_intact(
    tmp_path: Path, sshd: SshServer
) -> None:
    """Issue 15, points 2 and 5: ``{}`` and awk braces run as written; values stay one word."""
    topology = ssh_topology(tmp_path, sshd)
    hostile = f"it's; touch {tmp_path}/injected $(touch {tmp_path}/injected2) ${{HOME}}"
    result = run(
        ssh_section(sshd)
        + f"""
[[step]]
action = "exec"
host = "a1"
command = "find {tmp_path} -maxdepth 0 -exec echo {{}} + > {tmp_path}/found"
[[step]]
action = "exec"
host = "b1"
command = "awk 'BEGIN {{print 42}}' > {tmp_path}/awk; printf '%s' ${{value}} > {tmp_path}/value"
[step.vars]
value = {json.dumps(hostile)}
""",
        topology,
    )
    assert result.ok, result.error
    assert (tmp_path / "found").read_text() == f"{tmp_path}\n"
    assert (tmp_path / "awk").read_text() == "42\n"
    assert (tmp_path / "value").read_text() == hostile
    assert not (tmp_path / "injected").exists() and not (tmp_path / "injected2").exists()


def test_a_failing_step_stops_the_drill_and_reports_what_was_done(
    tmp_path: Path, sshd: SshServer
) -> None:
    topology = ssh_topology(tmp_path, sshd)
    result = run(
        ssh_section(sshd)
        + f"""
[[step]]
action = "exec"
host = "a1"
command = "touch {tmp_path}/first"
[[step]]
action = "exec"
host = "b1"
command = "echo disk full >&2; exit 3"
[[step]]
action = "exec"
host = "a1"
command = "touch {tmp_path}/third"
""",
        topology,
    )
    assert not result.ok
    assert [s.status for s in result.steps] == ["ok", "failed"]
    assert result.steps[1].exit_status == 3
    assert result.steps[1].error == "exit status 3, expected 0: disk full"
    assert result.error.startswith("step 2 exec on b1 failed")
    assert [s.label for s in result.not_run] == ["step 3 exec on a1"]
    assert (tmp_path / "first").exists() and not (tmp_path / "third").exists()
    assert "not run: step 3 exec on a1" in format_timeline(result)
    saved = result.to_dict()
    assert [s["status"] for s in saved["steps"]] == ["ok", "failed", "not_run"]


def test_a_timed_out_step_stops_its_remote_command(tmp_path: Path, sshd: SshServer) -> None:
    """Issue 15, point 1: OpenSSH keeps a command running when its channel closes; the
    drill kills the command's process group through a second session, so ``late`` never
    appears."""
    topology = ssh_topology(tmp_path, sshd)
    late = f"(sleep 3; touch {tmp_path}/late-child) & sleep 3; touch {tmp_path}/late"
    result = run(
        ssh_section(sshd)
        + f"""
[[step]]
action = "exec"
host = "a1"
command = "touch {tmp_path}/began; {late}"
timeout_s = 1
[[step]]
action = "wait"
seconds = 0.1
""",
        topology,
    )
    assert (tmp_path / "began").exists()  # it did run
    # had it been left running, both files would exist 3 s after it began
    time.sleep(max(0.0, (tmp_path / "began").stat().st_mtime + 3.8 - time.time()))
    assert not (tmp_path / "late").exists()
    assert not (tmp_path / "late-child").exists()
    step = result.steps[0]
    assert step.status == "timed_out"
    assert step.error.startswith("timed out after 1s; killed its process group ")
    assert step.error.endswith(" on a1 through a second session")
    assert [s.label for s in result.not_run] == ["step 2 wait"]


def test_an_unreachable_host_fails_its_step_clearly(tmp_path: Path, sshd: SshServer) -> None:
    from talos.testing.zookeeper import free_port

    topology = make_topology(tmp_path, free_port(), sshd.user)  # nothing listens there
    result = run(
        ssh_section(sshd) + '[[step]]\naction = "exec"\nhost = "a1"\ncommand = "true"\n', topology
    )
    assert not result.ok
    assert "ssh to a1 (ssh://" in result.error and "127.0.0.1:" in result.error


def test_known_hosts_messages_name_the_file_and_the_cause(tmp_path: Path, sshd: SshServer) -> None:
    """Issue 15, point 5, against the real server: no entry, a wrong key, no file."""
    topology = ssh_topology(tmp_path, sshd)
    plan = '[[step]]\naction = "exec"\nhost = "a1"\ncommand = "true"\n'
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    entry = f"[127.0.0.1]:{sshd.port}"

    no_entry = tmp_path / "known_hosts_other_host"
    no_entry.write_text(f"[127.0.0.1]:1 {other}\n")
    result = run(ssh_section(sshd, no_entry) + plan, topology)
    assert f"known_hosts file {no_entry} has no entry for {entry}" in result.error

    wrong = tmp_path / "known_hosts_wrong_key"
    wrong.write_text(f"{entry} {other}\n")
    result = run(ssh_section(sshd, wrong) + plan, topology)
    assert f"the host key of {entry} does not match its entry in known_hosts file {wrong}" in (
        result.error
    )

    missing = tmp_path / "no_such_known_hosts"
    result = run(ssh_section(sshd, missing) + plan, topology)
    assert f"known_hosts file {missing} does not exist" in result.error


def _write_plan(tmp_path: Path, sshd: SshServer, body: str, drill: str = "") -> Path:
    plan = tmp_path / "plan.toml"
    plan.write_text(f'[drill]\ntalos = "{TALOS}"\n{drill}' + ssh_section(sshd) + body)
    return plan


def test_dry_run_checks_every_host_and_changes_nothing(
    tmp_path: Path, sshd: SshServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 15, point 5: connects, runs ``talos --version`` on each host, prints the
    filled-in commands and per-host paths, runs no step."""
    topology = ssh_topology(tmp_path, sshd)
    plan = _write_plan(
        tmp_path,
        sshd,
        f"""
[commands]
cut_link = "touch {tmp_path}/cut-${{link}}"
[[step]]
action = "cut_link"
host = "a1"
link = "A:B"
[[step]]
action = "promote"
host = "b1"
link = "A:B"
[[step]]
action = "verify"
""",
    )
    code = main(["drill", "run", str(plan), "--topology", topology.path, "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert not (tmp_path / "cut-A:B").exists()
    assert f"touch {tmp_path}/cut-A:B" in out
    assert f"mirror promote --topology {Path(topology.path).resolve()} --link A:B --json" in out
    for host in ("a1", "b1", "(local)"):
        assert f"  {host}" in out
    assert out.count("(talos 0.1.0)") == 3, out
    assert f"topology = {Path(topology.path).resolve()} (readable" in out
    assert f"a1 ssh://{sshd.user}@127.0.0.1:{sshd.port}" in out

    code = main(["drill", "run", str(plan), "--topology", topology.path, "--dry-run", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"] and report["dry_run"]
    assert [h["host"] for h in report["hosts"]] == ["a1", "b1", "(local)"]
    assert all(h["version"] == "talos 0.1.0" for h in report["hosts"])


def test_dry_run_says_when_the_topology_is_not_on_the_host(
    tmp_path: Path, sshd: SshServer, capsys: pytest.CaptureFixture[str]
) -> None:
    topology = ssh_topology(tmp_path, sshd)
    plan = _write_plan(
        tmp_path,
        sshd,
        '[[step]]\naction = "promote"\nhost = "b1"\nlink = "A:B"\n',
        drill=f'topology = "{tmp_path}/elsewhere.toml"\n',
    )
    code = main(["drill", "run", str(plan), "--topology", topology.path, "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"topology file {tmp_path}/elsewhere.toml is not readable on b1" in out
    assert "dry run found problems on: b1" in err

    bad_talos = tmp_path / "plan2.toml"
    bad_talos.write_text(
        '[drill]\ntalos = "/nonexistent/talos"\n'
        + ssh_section(sshd)
        + '[[step]]\naction = "promote"\nhost = "a1"\nlink = "A:B"\n'
    )
    code = main(["drill", "run", str(bad_talos), "--topology", topology.path, "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "`/nonexistent/talos --version` failed on a1" in out


def test_drill_cli_json_timeline_and_an_error_printed_once(
    tmp_path: Path, sshd: SshServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--json`` is a timeline a script checks; a failed verify's summary appears once."""
    (tmp_path / "status.json").write_text(json.dumps(_status_doc(1), indent=2))
    topology = ssh_topology(tmp_path, sshd)
    plan = _write_plan(
        tmp_path,
        sshd,
        f"""
[commands]
verify = "cat {tmp_path}/status.json; exit 1"
[[step]]
action = "exec"
host = "a1"
name = "warm up"
command = "echo hello"
[[step]]
action = "wait"
seconds = 0.05
[[step]]
action = "verify"
host = "b1"
[[step]]
action = "exec"
command = "touch {tmp_path}/never"
""",
    )
    out_file = tmp_path / "out.json"
    code = main(
        [
            "drill",
            "run",
            str(plan),
            "--topology",
            topology.path,
            "--json",
            "--no-probe",
            "--output",
            str(out_file),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 1
    timeline = json.loads(out)
    assert timeline == json.loads(out_file.read_text())
    assert timeline["status"] == "failed" and timeline["ok"] is False
    steps = timeline["steps"]
    assert [(s["index"], s["action"], s["status"]) for s in steps] == [
        (1, "exec", "ok"),
        (2, "wait", "ok"),
        (3, "verify", "failed"),
        (4, "exec", "not_run"),
    ]
    assert all(s["duration_s"] >= 0 for s in steps[:3]) and steps[3]["duration_s"] is None
    assert steps[0]["label"] == 'step 1 "warm up" (exec) on a1'
    assert steps[2]["figures"]["links"] == {"A:B": "promoted", "B:A": "error"}
    summary = "orders/0 error (target end unknown)"
    assert steps[2]["error"] == (
        "exit status 1, expected 0: link B:A error: target DC A: ZooKeeper 127.0.0.1:1: "
        f"unreachable; {summary}"
    )
    assert not (tmp_path / "never").exists()

    code = main(["drill", "run", str(plan), "--topology", topology.path, "--no-probe"])
    out, err = capsys.readouterr()
    assert code == 1
    assert (out + err).count(summary) == 1, out + err
    assert "drill failed at step 3 verify on b1" in err


def test_a_timed_out_local_step_is_killed_with_its_children(tmp_path: Path) -> None:
    topology = make_topology(tmp_path, 2222)
    late = f"(sleep 2; touch {tmp_path}/late-child) & sleep 2; touch {tmp_path}/late"
    result = run(
        f'[[step]]\naction = "exec"\ncommand = "touch {tmp_path}/began; {late}"\ntimeout_s = 0.5\n',
        topology,
    )
    assert (tmp_path / "began").exists()
    time.sleep(max(0.0, (tmp_path / "began").stat().st_mtime + 2.8 - time.time()))
    assert not (tmp_path / "late").exists() and not (tmp_path / "late-child").exists()
    (step,) = result.steps
    assert step.status == "timed_out"
    assert step.error.startswith("timed out after 0.5s; killed its process group ")
