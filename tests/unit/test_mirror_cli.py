"""``talos mirror run``: parsing, and bad input that is refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror.cli import cmd_mirror_run
from talos.cli import build_parser, main

TOPOLOGY = """
[dc.A]
zookeeper = "127.0.0.1:1"
store = "posix:/tmp/talos-a"
brokers = ["127.0.0.1:2"]

[dc.B]
zookeeper = "127.0.0.1:3"
store = "hdfs://namenode:8020/talos/b"
brokers = ["127.0.0.1:4"]

[[link]]
source = "A"
target = "B"
topics = ["*"]

[[link]]
source = "B"
target = "A"
topics = ["*"]
"""


def test_the_run_command_parses(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["mirror", "run", "--topology", "t.toml", "--link", "A:B", "--reader", "fetch"]
    )
    assert args.func is cmd_mirror_run
    assert (args.topology, args.link, args.reader, args.worker_id) == (
        "t.toml",
        "A:B",
        "fetch",
        None,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--link", "A:C"], "no link A:C"),
        (["--link", "AB"], "SOURCE:TARGET"),
        (["--link", "A:B", "--worker-id", "a/b"], "worker_id"),
        (["--link", "A:B", "--append-bytes", "5"], "append_bytes"),
    ],
)
def test_bad_input_is_refused_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    topology = tmp_path / "topology.toml"
    topology.write_text(TOPOLOGY)
    # The ZooKeeper addresses are unreachable: reaching them would fail differently (code 1).
    assert main(["mirror", "run", "--topology", str(topology), *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_topology_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.toml"
    assert main(["mirror", "run", "--topology", str(missing), "--link", "A:B"]) == 2
    assert str(missing) in capsys.readouterr().err
