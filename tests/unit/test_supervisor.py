"""`talos dev up` supervision with real child processes (small Python sleepers)."""

from __future__ import annotations

import io
import sys
import threading
from pathlib import Path

import pytest

from talos.errors import InvalidArgument, TalosError
from talos.testing.cluster import BrokerProcess
from talos.testing.supervisor import (
    PID_FILE,
    Supervisor,
    control_dir,
    describe_exit,
    member_id,
    request_restart,
    resolve_target,
)

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_resolve_target_names_and_choices() -> None:
    one_dc = ["broker b1", "broker b2"]
    assert resolve_target("broker", "b2", one_dc) == "broker b2"
    two_dc = ["broker A/b1", "broker B/b1", "broker B/b2", "mirror A:B"]
    assert resolve_target("broker", "B/b1", two_dc) == "broker B/b1"
    assert resolve_target("broker", "b2", two_dc) == "broker B/b2"  # only B has a b2
    assert resolve_target("mirror", "A:B", two_dc) == "mirror A:B"
    with pytest.raises(InvalidArgument, match="'b1' is ambiguous; use one of A/b1, B/b1, B/b2"):
        resolve_target("broker", "b1", two_dc)
    with pytest.raises(InvalidArgument, match=r"no mirror 'B:A'.*mirrors: A:B"):
        resolve_target("mirror", "B:A", two_dc)
    with pytest.raises(InvalidArgument, match="kind: must be one of broker, mirror"):
        resolve_target("zookeeper", "z", two_dc)
    assert member_id("broker A/b1") == "b1" == member_id("broker b1")


def test_describe_exit() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(-15) == "was killed by SIGTERM"


@pytest.fixture
def sleepers(tmp_path: Path) -> dict[str, BrokerProcess]:
    procs = {
        f"broker {name}": BrokerProcess(name, 0, str(tmp_path / f"{name}.log"), SLEEPER)
        for name in ("b1", "b2")
    }
    for proc in procs.values():
        proc.start()
    yield procs
    for proc in procs.values():
        proc.kill()


def test_an_exit_is_reported_once_and_the_rest_keep_running(
    tmp_path: Path, sleepers: dict[str, BrokerProcess]
) -> None:
    out = io.StringIO()
    with Supervisor(tmp_path, sleepers, out=out) as supervisor:
        sleepers["broker b1"].kill()
        supervisor.poll()
        supervisor.poll()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert "broker b1 was killed by SIGKILL; the rest keep running" in lines[0]
    assert "talos dev restart broker b1" in lines[0]
    assert sleepers["broker b2"].alive()


def test_a_restart_request_is_served_by_the_running_supervisor(
    tmp_path: Path, sleepers: dict[str, BrokerProcess]
) -> None:
    out = io.StringIO()
    old_pid = sleepers["broker b1"].pid
    sleepers["broker b1"].kill()
    stop = threading.Event()
    with Supervisor(tmp_path, sleepers, {"broker b1": "127.0.0.1:1"}, out=out) as supervisor:
        assert (control_dir(tmp_path) / PID_FILE).exists()

        def loop() -> None:
            while not stop.wait(0.05):
                supervisor.poll()

        thread = threading.Thread(target=loop)
        thread.start()
        try:
            reply = request_restart(tmp_path, "broker", "b1", timeout_s=10)
            with pytest.raises(InvalidArgument, match="no broker 'b7'"):
                request_restart(tmp_path, "broker", "b7", timeout_s=10)
        finally:
            stop.set()
            thread.join()
    assert reply.ok and not reply.was_running and reply.process == "broker b1"
    assert reply.pid == sleepers["broker b1"].pid != old_pid
    assert reply.address == "127.0.0.1:1"
    assert sleepers["broker b1"].alive()
    assert "broker b1 restarted" in out.getvalue()
    assert list(control_dir(tmp_path).iterdir()) == []  # requests, replies, pid file: gone


def test_restart_without_a_running_dev_up_says_so(tmp_path: Path) -> None:
    with pytest.raises(TalosError, match="no `talos dev up` is running"):
        request_restart(tmp_path, "broker", "b1")
    control_dir(tmp_path).mkdir()
    (control_dir(tmp_path) / PID_FILE).write_text("999999999\n")  # a dead pid
    with pytest.raises(TalosError, match="no `talos dev up` is running"):
        request_restart(tmp_path, "broker", "b1")
