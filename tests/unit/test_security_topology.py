"""Per-DC client credentials in the topology file (what mirror workers use)."""

from __future__ import annotations

from pathlib import Path

import pytest

from talos.security import pki
from topology.loader import dump_topology, load_topology, loads_topology
from topology.model import DcSecurity, TopologyError

BASE = """
[dc.A]
zookeeper = "127.0.0.1:2181"
store = "posix:/tmp/a"
brokers = ["127.0.0.1:9092"]

[dc.B]
zookeeper = "127.0.0.1:2182"
store = "posix:/tmp/b"
brokers = ["127.0.0.1:9093"]
"""


def test_paths_are_taken_from_the_file_folder_and_round_trip(tmp_path: Path) -> None:
    files = pki.generate(tmp_path / "pki")
    (tmp_path / "b.token").write_text("talos_0123456789ab_" + "x" * 43 + "\n")
    path = tmp_path / "topology.toml"
    path.write_text(BASE + '\n[dc.B.security]\ntls_ca = "pki/ca.pem"\ntoken_file = "b.token"\n')
    topo = load_topology(path)
    assert topo.dc("A").security is None
    assert topo.dc("B").security == DcSecurity(
        tls_ca=files.ca, token_file=str(tmp_path / "b.token")
    )
    client = topo.dc("B").client_security()
    assert client is not None and client.tls and client.token.startswith("talos_0123")
    assert loads_topology(dump_topology(topo)) == topo


def test_a_missing_file_or_unknown_key_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "topology.toml"
    path.write_text(BASE + '\n[dc.B.security]\ntls_ca = "nope.pem"\n')
    with pytest.raises(TopologyError, match=r"dc\.B\.security\.tls_ca: no such file: "):
        load_topology(path)
    path.write_text(BASE + '\n[dc.B.security]\ntoken = "inline"\n')
    with pytest.raises(TopologyError, match=r"unknown key 'token'.*did you mean 'token_file'"):
        load_topology(path)
