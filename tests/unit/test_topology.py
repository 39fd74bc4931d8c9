"""Topology files: loading, validation messages, round trips, selectors and failover order."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from talos.errors import InvalidArgument
from topology import (
    Datacenter,
    HostSpec,
    Link,
    StoreSpec,
    TopicSpec,
    Topology,
    TopologyError,
    dump_topology,
    load_topology,
    loads_topology,
    parse_address,
    validate_selector,
)
from topology import loader as loader_module

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "topology.example.toml"

BASE = """\
[dc.A]
zookeeper = "127.0.0.1:2181"
store = "posix:/srv/talos/a"
brokers = ["127.0.0.1:9092", "127.0.0.1:9093"]
failover_to = ["B"]

[dc.A.hosts]
a1 = "ssh://talos@10.0.0.1:22"

[dc.B]
zookeeper = "127.0.0.1:2182"
store = "posix:/srv/talos/b"
brokers = [
    "127.0.0.1:9192",
    "127.0.0.1:9193",
]
hosts = { b1 = "ssh://10.0.0.2" }

[dc.C]
zookeeper = "127.0.0.1:2183"
cluster = "third"
store = "hdfs://namenode:8020/talos/c"
brokers = ["127.0.0.1:9292"]

[[link]]
source = "A"
target = "B"
topics = ["orders", "payments.*"]
bandwidth_mb_s = 50

[[link]]
source = "B"
target = "A"
topics = ["*"]
naming = "prefixed"
offset_sync_interval_s = 2.5
workers = 2

[[link]]
source = "A"
target = "C"
topics = ["orders"]

[[topic]]
name = "orders"
dc = "A"
partitions = 4
"""


def write(tmp_path: Path, text: str, name: str = "topology.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the n-th line containing ``needle`` (the test's own oracle)."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    return hits[occurrence - 1]


def edit(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# -- loading a good file ---------------------------------------------------------------------


def test_loads_every_field_with_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    topo = load_topology(path)
    assert topo.path == str(path)
    assert list(topo.datacenters) == ["A", "B", "C"]

    a = topo.dc("A")
    assert a.zookeeper == "127.0.0.1:2181"
    assert a.cluster == "A"  # defaults to the DC name
    assert a.store == StoreSpec(kind="posix", path="/srv/talos/a", uri="posix:/srv/talos/a")
    assert a.store.root == Path("/srv/talos/a")
    assert a.brokers == ("127.0.0.1:9092", "127.0.0.1:9093")
    assert a.bootstrap == "127.0.0.1:9092,127.0.0.1:9093"
    assert a.failover_to == ("B",)
    assert a.hosts["a1"] == HostSpec(name="a1", user="talos", host="10.0.0.1", port=22)

    b = topo.dc("B")
    assert b.brokers == ("127.0.0.1:9192", "127.0.0.1:9193")
    assert b.hosts["b1"] == HostSpec(name="b1", user=None, host="10.0.0.2", port=22)

    c = topo.dc("C")
    assert c.cluster == "third"
    assert c.store.kind == "hdfs"
    assert (c.store.host, c.store.port, c.store.path) == ("namenode", 8020, "/talos/c")
    with pytest.raises(InvalidArgument, match="not a posix store"):
        _ = c.store.root

    ab = topo.link("A:B")
    assert ab.name == "A:B"
    assert ab.topics == ("orders", "payments.*")
    assert ab.naming == "identity"
    assert ab.bandwidth_bytes_s == 50_000_000
    assert ab.offset_sync_interval_s == 5.0
    assert ab.workers == 1

    ba = topo.link("B:A")
    assert ba.naming == "prefixed"
    assert ba.bandwidth_bytes_s is None
    assert ba.offset_sync_interval_s == 2.5
    assert ba.workers == 2

    assert topo.topics == (TopicSpec(name="orders", dc="A", partitions=4, durability="sync"),)
    assert [link.name for link in topo.links_from("A")] == ["A:B", "A:C"]
    assert [link.name for link in topo.links_into("A")] == ["B:A"]
    assert topo.host("b1") == (b, b.hosts["b1"])


def test_relative_posix_store_is_taken_from_the_file_folder(tmp_path: Path) -> None:
    path = write(tmp_path, edit('store = "posix:/srv/talos/a"', 'store = "posix:data/a"'))
    topo = load_topology(path)
    assert topo.dc("A").store.root == tmp_path / "data" / "a"
    again = loads_topology(dump_topology(topo))
    assert again.dc("A").store.root == tmp_path / "data" / "a"


def test_active_active_identity_with_overlapping_selectors_is_legal() -> None:
    text = edit('topics = ["*"]\nnaming = "prefixed"', 'topics = ["orders", "*"]')
    topo = loads_topology(text)
    assert topo.link("A:B").selects("orders") and topo.link("B:A").selects("orders")
    assert topo.link("B:A").naming == "identity"


def test_example_file_loads_and_round_trips() -> None:
    topo = load_topology(EXAMPLE)
    assert set(topo.datacenters) == {"A", "B"}
    assert {link.name for link in topo.links} == {"A:B", "B:A"}
    assert loads_topology(dump_topology(topo)) == topo


# -- round trip ------------------------------------------------------------------------------


def test_round_trip_load_dump_load_is_equal(tmp_path: Path) -> None:
    first = load_topology(write(tmp_path, BASE))
    text = dump_topology(first)
    second = load_topology(write(tmp_path, text, "dumped.toml"))
    assert second == first
    assert second.path != first.path  # equality is about content, not where it came from
    assert dump_topology(second) == text  # a dump is a fixed point


def test_topology_built_in_code_dumps_and_loads_back() -> None:
    """What `talos dev up --dcs 2` does: build values, write them, read them back."""
    dcs = {
        name: Datacenter(
            name=name,
            zookeeper=f"127.0.0.1:{2181 + i}",
            cluster=f"dev-{name.lower()}",
            store=StoreSpec.parse(f"posix:/tmp/talos-dev/{name}"),
            brokers=(f"127.0.0.1:{9092 + 100 * i}",),
            hosts={f"{name.lower()}1": HostSpec.parse(f"{name.lower()}1", "ssh://127.0.0.1:2222")},
        )
        for i, name in enumerate(["A", "B"])
    }
    topo = Topology(
        path="<dev>",
        datacenters=dcs,
        links=(Link(source="A", target="B", topics=("*",), bandwidth_bytes_s=1_234_567),),
        topics=(TopicSpec(name="demo", dc="A", partitions=3),),
    )
    text = dump_topology(topo)
    assert loads_topology(text) == topo
    assert tomllib.loads(text)["link"][0]["bandwidth_mb_s"] == 1.234567


def test_dump_refuses_a_topology_that_would_not_load() -> None:
    topo = loads_topology(BASE)
    broken = Topology(
        path="<built>",
        datacenters=topo.datacenters,
        links=(Link(source="A", target="Z", topics=("*",)),),
    )
    with pytest.raises(TopologyError, match="unknown datacenter 'Z'"):
        dump_topology(broken)


@settings(max_examples=60, deadline=None)
@given(
    path=st.text(
        alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
        min_size=1,
        max_size=30,
    ),
    bandwidth=st.integers(min_value=1, max_value=10**13),
    interval=st.floats(min_value=0.001, max_value=86_400.0),
)
def test_round_trip_survives_awkward_strings_and_numbers(
    path: str, bandwidth: int, interval: float
) -> None:
    assume(not path.startswith("/"))
    base = loads_topology(BASE)
    a = base.dc("A")
    store = StoreSpec.parse("posix:/" + path)
    dcs = dict(base.datacenters)
    dcs["A"] = Datacenter(
        name="A",
        zookeeper=a.zookeeper,
        cluster=a.cluster,
        store=store,
        brokers=a.brokers,
        hosts=a.hosts,
        failover_to=a.failover_to,
    )
    links = (
        Link(
            source="A",
            target="B",
            topics=("*",),
            bandwidth_bytes_s=bandwidth,
            offset_sync_interval_s=interval,
        ),
    )
    topo = Topology(path="<hyp>", datacenters=dcs, links=links)
    if store.uri in {d.store.uri for n, d in dcs.items() if n != "A"}:
        return
    assert loads_topology(dump_topology(topo)) == topo


# -- bad files -------------------------------------------------------------------------------

# (id, old text, new text, key in the message, needle for the expected line, problem)
BAD_CASES: list[tuple[str, str, str, str, str | None, str]] = [
    (
        "missing-zookeeper",
        'zookeeper = "127.0.0.1:2181"\n',
        "",
        "dc.A.zookeeper",
        "[dc.A]",
        "missing required key",
    ),
    (
        "unknown-key-typo",
        'zookeeper = "127.0.0.1:2181"',
        'zookeeper = "127.0.0.1:2181"\nzookeper = "x:1"',
        "zookeper",
        "zookeper",
        "unknown key 'zookeper' in dc.A; allowed: zookeeper, store, brokers",
    ),
    (
        "unknown-top-level-key",
        "[dc.A]",
        "version = 2\n\n[dc.A]",
        "version",
        "version = 2",
        "unknown key",
    ),
    (
        "brokers-wrong-type",
        'brokers = ["127.0.0.1:9092", "127.0.0.1:9093"]',
        'brokers = "127.0.0.1:9092"',
        "dc.A.brokers",
        'brokers = "127.0.0.1:9092"',
        "must be an array of strings, got string",
    ),
    (
        "brokers-empty",
        'brokers = ["127.0.0.1:9292"]',
        "brokers = []",
        "dc.C.brokers",
        "brokers = []",
        "must not be empty",
    ),
    (
        "workers-wrong-type",
        "workers = 2",
        'workers = "2"',
        "link[2].workers",
        'workers = "2"',
        "must be an integer, got string",
    ),
    (
        "workers-bool",
        "workers = 2",
        "workers = true",
        "link[2].workers",
        "workers = true",
        "integer",
    ),
    (
        "workers-zero",
        "workers = 2",
        "workers = 0",
        "link[2].workers",
        "workers = 0",
        "between 1 and",
    ),
    (
        "link-unknown-dc",
        'source = "A"\ntarget = "C"',
        'source = "A"\ntarget = "D"',
        "link[3].target",
        'target = "D"',
        "unknown datacenter 'D'; datacenters: A, B, C",
    ),
    (
        "link-to-itself",
        'source = "A"\ntarget = "C"',
        'source = "A"\ntarget = "A"',
        "link[3].target",
        'target = "A"|2',
        "to itself",
    ),
    (
        "duplicate-link",
        'source = "A"\ntarget = "C"',
        'source = "A"\ntarget = "B"',
        "link[3]",
        "[[link]]|3",
        "duplicate link A:B (first is link[1])",
    ),
    (
        "duplicate-topic",
        "partitions = 4\n",
        'partitions = 4\n\n[[topic]]\nname = "orders"\ndc = "A"\npartitions = 8\n',
        "topic[2].name",
        'name = "orders"|2',
        "duplicate topic 'orders'",
    ),
    (
        "duplicate-host-name",
        'hosts = { b1 = "ssh://10.0.0.2" }',
        'hosts = { a1 = "ssh://10.0.0.2" }',
        "dc.B.hosts.a1",
        'hosts = { a1 = "ssh://10.0.0.2" }',
        "also used in dc.A",
    ),
    (
        "duplicate-broker-across-dcs",
        '"127.0.0.1:9193",',
        '"127.0.0.1:9093",',
        "dc.B.brokers[2]",
        '"127.0.0.1:9093",',
        "also listed in dc.A",
    ),
    (
        "duplicate-broker-in-dc",
        'brokers = ["127.0.0.1:9092", "127.0.0.1:9093"]',
        'brokers = ["127.0.0.1:9092", "127.0.0.1:9092"]',
        "dc.A.brokers[2]",
        'brokers = ["127.0.0.1:9092", "127.0.0.1:9092"]',
        "listed twice",
    ),
    (
        "bad-port-zero",
        '"127.0.0.1:9193",',
        '"127.0.0.1:0",',
        "dc.B.brokers[2]",
        '"127.0.0.1:0",',
        "port must be 1 to 65535",
    ),
    (
        "bad-port-too-big",
        'zookeeper = "127.0.0.1:2182"',
        'zookeeper = "127.0.0.1:2182,zk2:65536"',
        "dc.B.zookeeper",
        "zk2:65536",
        "bad port '65536'",
    ),
    (
        "empty-host",
        'brokers = ["127.0.0.1:9292"]',
        'brokers = [":9292"]',
        "dc.C.brokers[1]",
        '":9292"',
        "empty host",
    ),
    (
        "missing-port",
        'zookeeper = "127.0.0.1:2181"',
        'zookeeper = "zk1"',
        "dc.A.zookeeper",
        'zookeeper = "zk1"',
        "missing port",
    ),
    (
        "zookeeper-chroot",
        'zookeeper = "127.0.0.1:2181"',
        'zookeeper = "zk1:2181/talos"',
        "dc.A.zookeeper",
        "zk1:2181/talos",
        "set 'cluster'",
    ),
    (
        "unbracketed-ipv6",
        'brokers = ["127.0.0.1:9292"]',
        'brokers = ["::1:9292"]',
        "dc.C.brokers[1]",
        "::1:9292",
        "brackets",
    ),
    (
        "ssh-wrong-scheme",
        'a1 = "ssh://talos@10.0.0.1:22"',
        'a1 = "http://10.0.0.1"',
        "dc.A.hosts.a1",
        "http://10.0.0.1",
        "not an ssh:// URI",
    ),
    (
        "ssh-empty-host",
        'a1 = "ssh://talos@10.0.0.1:22"',
        'a1 = "ssh://talos@:22"',
        "dc.A.hosts.a1",
        "ssh://talos@:22",
        "empty host in 'ssh://talos@:22'",
    ),
    (
        "ssh-bad-port",
        'hosts = { b1 = "ssh://10.0.0.2" }',
        'hosts = { b1 = "ssh://10.0.0.2:99999" }',
        "dc.B.hosts.b1",
        "99999",
        "port must be 1 to 65535",
    ),
    (
        "store-unknown-scheme",
        'store = "posix:/srv/talos/a"',
        'store = "s3://bucket/a"',
        "dc.A.store",
        "s3://bucket/a",
        "unsupported store",
    ),
    (
        "store-empty-posix",
        'store = "posix:/srv/talos/a"',
        'store = "posix:"',
        "dc.A.store",
        'store = "posix:"',
        "empty path",
    ),
    (
        "store-hdfs-no-namenode",
        'store = "hdfs://namenode:8020/talos/c"',
        'store = "hdfs:///talos/c"',
        "dc.C.store",
        "hdfs:///talos/c",
        "no namenode",
    ),
    (
        "store-hdfs-no-path",
        'store = "hdfs://namenode:8020/talos/c"',
        'store = "hdfs://namenode:8020"',
        "dc.C.store",
        "hdfs://namenode:8020",
        "no path",
    ),
    (
        "store-shared-by-two-dcs",
        'store = "posix:/srv/talos/b"',
        'store = "posix:/srv/talos/a/"',
        "dc.B.store",
        "posix:/srv/talos/a/",
        "also the store of dc.A",
    ),
    (
        "same-zookeeper-and-cluster",
        'zookeeper = "127.0.0.1:2182"',
        'zookeeper = "127.0.0.1:2181"\ncluster = "A"',
        "dc.B.cluster",
        'cluster = "A"',
        "own chroot",
    ),
    (
        "bad-naming",
        'naming = "prefixed"',
        'naming = "prefix"',
        "link[2].naming",
        'naming = "prefix"',
        "unknown naming policy 'prefix'; allowed: identity, prefixed",
    ),
    (
        "bandwidth-zero",
        "bandwidth_mb_s = 50",
        "bandwidth_mb_s = 0",
        "link[1].bandwidth_mb_s",
        "bandwidth_mb_s = 0",
        "must be > 0",
    ),
    (
        "bandwidth-negative",
        "bandwidth_mb_s = 50",
        "bandwidth_mb_s = -5.5",
        "link[1].bandwidth_mb_s",
        "bandwidth_mb_s",
        "must be > 0",
    ),
    (
        "bandwidth-nan",
        "bandwidth_mb_s = 50",
        "bandwidth_mb_s = nan",
        "link[1].bandwidth_mb_s",
        "bandwidth_mb_s",
        "must be > 0",
    ),
    (
        "bandwidth-string",
        "bandwidth_mb_s = 50",
        'bandwidth_mb_s = "50MB"',
        "link[1].bandwidth_mb_s",
        "bandwidth_mb_s",
        "must be a number, got string",
    ),
    (
        "offset-sync-zero",
        "offset_sync_interval_s = 2.5",
        "offset_sync_interval_s = 0",
        "link[2].offset_sync_interval_s",
        "offset_sync_interval_s",
        "must be > 0",
    ),
    (
        "selector-bad-char",
        'topics = ["orders", "payments.*"]',
        'topics = ["orders", "payments/*"]',
        "link[1].topics[2]",
        "payments/*",
        "'/'",
    ),
    (
        "selector-unbalanced-bracket",
        'topics = ["orders", "payments.*"]',
        'topics = ["orders", "pay[ab"]',
        "link[1].topics[2]",
        "pay[ab",
        "unbalanced",
    ),
    (
        "selector-empty-string",
        'topics = ["orders"]',
        'topics = [""]',
        "link[3].topics[1]",
        'topics = [""]',
        "non-empty",
    ),
    (
        "selector-list-empty",
        'topics = ["orders"]',
        "topics = []",
        "link[3].topics",
        "topics = []",
        "must not be empty",
    ),
    (
        "link-missing-topics",
        'topics = ["orders"]\n',
        "",
        "link[3].topics",
        "[[link]]|3",
        "missing required key 'topics'",
    ),
    (
        "failover-unknown-dc",
        'failover_to = ["B"]',
        'failover_to = ["B", "Z"]',
        "dc.A.failover_to[2]",
        'failover_to = ["B", "Z"]',
        "unknown datacenter 'Z'",
    ),
    (
        "failover-to-itself",
        'failover_to = ["B"]',
        'failover_to = ["A"]',
        "dc.A.failover_to[1]",
        'failover_to = ["A"]',
        "itself",
    ),
    (
        "dc-name-with-dot",
        "[dc.C]",
        '[dc."C.east"]',
        'dc."C.east"',
        '[dc."C.east"]',
        "no '.'",
    ),
    (
        "bad-cluster-name",
        'cluster = "third"',
        'cluster = "th/ird"',
        "dc.C.cluster",
        "th/ird",
        "letters, digits",
    ),
    (
        "topic-unknown-dc",
        'dc = "A"\npartitions',
        'dc = "Q"\npartitions',
        "topic[1].dc",
        'dc = "Q"',
        "unknown datacenter 'Q'",
    ),
    (
        "topic-bad-partitions",
        "partitions = 4",
        "partitions = 0",
        "topic[1].partitions",
        "partitions = 0",
        "between 1 and 1024",
    ),
    (
        "topic-bad-durability",
        "partitions = 4\n",
        'partitions = 4\ndurability = "fsync"\n',
        "topic[1].durability",
        'durability = "fsync"',
        "flush, sync",
    ),
    (
        "topic-bad-name",
        'name = "orders"',
        'name = "ord ers"',
        "topic[1].name",
        'name = "ord ers"',
        "may contain only",
    ),
]


def _expected_line(text: str, needle: str | None) -> int | None:
    if needle is None:
        return None
    what, _, nth = needle.partition("|")
    return line_of(text, what, int(nth) if nth else 1)


@pytest.mark.parametrize(
    ("old", "new", "key", "needle", "problem"),
    [case[1:] for case in BAD_CASES],
    ids=[case[0] for case in BAD_CASES],
)
def test_bad_file_names_file_key_line_and_problem(
    tmp_path: Path, old: str, new: str, key: str, needle: str | None, problem: str
) -> None:
    text = edit(old, new)
    path = write(tmp_path, text)
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:") or message.startswith(f"{path} "), message
    assert key in message, message
    assert problem in message, message
    line = _expected_line(text, needle)
    if line is not None:
        assert message.startswith(f"{path}:{line}: "), message
        assert caught.value.line == line
    assert caught.value.path == str(path)
    assert isinstance(caught.value, InvalidArgument)


def test_link_written_as_a_table_is_a_type_error(tmp_path: Path) -> None:
    text = BASE.split("[[link]]")[0] + '[link]\nsource = "A"\n'
    path = write(tmp_path, text)
    with pytest.raises(TopologyError, match=r"link: must be an array of tables \(\[\[link\]\]\)"):
        load_topology(path)


def test_dc_that_is_not_a_table_is_a_type_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[dc]\nA = "x"\n')
    with pytest.raises(TopologyError, match=f"{path}:2: dc.A: must be a table, got string"):
        load_topology(path)


def test_toml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    text = edit('store = "posix:/srv/talos/b"', "store = posix:/srv/talos/b")
    path = write(tmp_path, text)
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    line = line_of(text, "store = posix:")
    assert str(caught.value).startswith(f"{path}:{line}:9: TOML syntax error"), caught.value
    assert (caught.value.line, caught.value.column) == (line, 9)


def test_toml_duplicate_dc_table_is_a_syntax_error(tmp_path: Path) -> None:
    text = BASE + '\n[dc.A]\nzookeeper = "x:1"\n'
    path = write(tmp_path, text)
    with pytest.raises(TopologyError, match="TOML syntax error") as caught:
        load_topology(path)
    assert caught.value.line == line_of(text, "[dc.A]", 2)


def test_missing_file_and_non_utf8_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(TopologyError, match=f"{missing}: cannot read topology file"):
        load_topology(missing)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b'[dc.A]\nzookeeper = "\xff"\n')
    with pytest.raises(TopologyError, match="not UTF-8"):
        load_topology(binary)


def test_empty_file_needs_a_datacenter(tmp_path: Path) -> None:
    path = write(tmp_path, "# nothing\n")
    with pytest.raises(TopologyError, match=f"{path}: dc: missing required key 'dc'"):
        load_topology(path)
    path = write(tmp_path, "[dc]\n")
    with pytest.raises(TopologyError, match="at least one"):
        load_topology(path)


def test_line_finder_ignores_multiline_strings_and_handles_dotted_keys() -> None:
    text = 'x = """\n[dc.A]\nbrokers = 1\n"""\n[dc]\nA.zookeeper = "z:1"\n'
    index = loader_module._LineIndex(text)
    assert index.line(("dc", "A", "zookeeper")) == 6
    assert index.line(("dc", "A", "brokers")) == 6  # falls back to the nearest known parent


# -- lookups ---------------------------------------------------------------------------------


def test_lookup_errors_name_the_file_and_what_exists(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    topo = load_topology(path)
    with pytest.raises(TopologyError, match=f"no link C:A in {path}; links: A:B, B:A, A:C"):
        topo.link("C:A")
    with pytest.raises(TopologyError, match="must be SOURCE:TARGET"):
        topo.link("AB")
    with pytest.raises(
        TopologyError, match=f"unknown datacenter 'Z' in {path}; datacenters: A, B, C"
    ):
        topo.dc("Z")
    with pytest.raises(TopologyError, match="unknown datacenter 'Z'"):
        topo.links_from("Z")
    with pytest.raises(TopologyError, match=r"unknown host 'zz'.*hosts: a1, b1"):
        topo.host("zz")


# -- selectors and naming --------------------------------------------------------------------


def test_selectors_match_exact_names_and_globs() -> None:
    link = Link(source="A", target="B", topics=("orders", "pay.*", "log-[0-9]", "x?[!z]"))
    assert link.selects("orders")
    assert not link.selects("orders2")
    assert not link.selects("Orders")  # case-sensitive
    assert link.selects("pay.eu") and link.selects("pay.")
    assert not link.selects("payments")
    assert link.selects("log-7") and not link.selects("log-x") and not link.selects("log-10")
    assert link.selects("xay") and not link.selects("xaz")
    assert not link.selects("")
    everything = Link(source="A", target="B", topics=("*",))
    assert everything.selects("anything.at_all-1")


def test_identity_naming_maps_names_unchanged() -> None:
    link = Link(source="A", target="B", topics=("orders",))
    assert link.target_topic("orders") == "orders"
    assert link.source_topic("orders") == "orders"
    assert link.source_topic("payments") is None
    with pytest.raises(InvalidArgument, match="not selected by link A:B"):
        link.target_topic("payments")


def test_prefixed_naming_and_its_inverse() -> None:
    link = Link(source="A", target="B", topics=("orders", "pay.*"), naming="prefixed")
    assert link.target_topic("orders") == "A.orders"
    assert link.target_topic("pay.eu") == "A.pay.eu"
    for topic in ("orders", "pay.eu", "pay.us.west"):
        assert link.source_topic(link.target_topic(topic)) == topic
    assert link.source_topic("orders") is None  # not prefixed: not this link's
    assert link.source_topic("C.orders") is None  # another source
    assert link.source_topic("A.shipping") is None  # prefixed, but not selected
    assert link.source_topic("A.") is None


def test_prefixed_naming_never_selects_the_targets_own_mirrors() -> None:
    """In active-active with prefixed naming, B's topics arrive in A as "B.x"; A->B must
    not copy them back as "A.B.x"."""
    ab = Link(source="A", target="B", topics=("*",), naming="prefixed")
    ba = Link(source="B", target="A", topics=("*",), naming="prefixed")
    assert ab.selects("orders")
    mirrored_in_a = ba.target_topic("orders")
    assert mirrored_in_a == "B.orders"
    assert not ab.selects(mirrored_in_a)
    assert ab.source_topic("A.B.orders") is None
    # Identity naming has no prefix to recognise; provenance prevents the loop there.
    assert Link(source="A", target="B", topics=("*",)).selects("B.orders")


def test_prefixed_target_name_too_long_is_refused() -> None:
    link = Link(source="A", target="B", topics=("*",), naming="prefixed")
    with pytest.raises(InvalidArgument, match="target topic"):
        link.target_topic("t" * 249)


@pytest.mark.parametrize(
    "selector", ["orders", "*", "pay.*", "a?c", "log-[0-9]", "x[!yz]", "[ab]*", "a_b-c.d"]
)
def test_valid_selectors(selector: str) -> None:
    assert validate_selector(selector) == selector


@pytest.mark.parametrize(
    "selector", ["", "a b", "a/b", "pay[", "pay]", "a[]", "a[!]", "!a", "a[b[c]]", "..", "é*"]
)
def test_invalid_selectors(selector: str) -> None:
    with pytest.raises(InvalidArgument, match="topics"):
        validate_selector(selector)


@pytest.mark.parametrize(
    ("address", "expected"),
    [("h:1", ("h", 1)), ("10.0.0.1:65535", ("10.0.0.1", 65535)), ("[::1]:2181", ("[::1]", 2181))],
)
def test_parse_address(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize(
    "address",
    ["h", "h:", ":1", "h:0", "h:65536", "h:-1", "h:+1", "h :1", "::1:9", "[::1]", "a@b:1"],
)
def test_parse_address_rejects(address: str) -> None:
    with pytest.raises(InvalidArgument, match="address"):
        parse_address(address)


def test_host_and_store_uri_parsing() -> None:
    assert HostSpec.parse("h", "ssh://root@[::1]:2200") == HostSpec("h", "root", "[::1]", 2200)
    assert HostSpec.parse("h", "ssh://example.org").uri == "ssh://example.org:22"
    for bad in ("ssh://u@h/path", "ssh://", "ssh://bad user@h", "ssh://h:0"):
        with pytest.raises(InvalidArgument):
            HostSpec.parse("h", bad)
    hdfs = StoreSpec.parse("hdfs://nn/a//b/")
    assert (hdfs.host, hdfs.port, hdfs.path, hdfs.uri) == ("nn", None, "/a/b", "hdfs://nn/a/b")
    assert StoreSpec.parse("posix:/a/./b/../c").uri == "posix:/a/c"


# -- failover order --------------------------------------------------------------------------


def test_failover_order_follows_failover_to_then_stops() -> None:
    topo = loads_topology(BASE)
    # A names B explicitly: C (linked from A) is not tried.
    assert topo.failover_order("A") == ["A", "B"]


def test_failover_order_defaults_to_link_targets_in_file_order() -> None:
    topo = loads_topology(edit('failover_to = ["B"]\n', ""))
    assert topo.failover_order("A") == ["A", "B", "C"]
    assert topo.failover_order("B") == ["B", "A"]
    assert topo.failover_order("C") == ["C"]  # no links out, nothing named: stay home


def test_failover_order_explicit_list_and_unknown_home() -> None:
    topo = loads_topology(edit('failover_to = ["B"]', 'failover_to = ["C", "B"]'))
    assert topo.failover_order("A") == ["A", "C", "B"]
    with pytest.raises(TopologyError, match="unknown datacenter 'Q'"):
        topo.failover_order("Q")


def test_unknown_key_suggests_the_close_one() -> None:
    with pytest.raises(TopologyError, match="did you mean 'bandwidth_mb_s'"):
        loads_topology(edit("bandwidth_mb_s = 50", "bandwith_mb_s = 50"))


def test_syntax_error_at_end_of_document_points_at_the_last_line(tmp_path: Path) -> None:
    text = BASE + 'extra = "unterminated\n'
    path = write(tmp_path, text)
    with pytest.raises(TopologyError, match="TOML syntax error") as caught:
        load_topology(path)
    assert caught.value.line == line_of(text, "unterminated")


def test_loaded_values_are_frozen_and_hashable() -> None:
    topo = loads_topology(BASE)
    assert hash(topo) == hash(loads_topology(BASE))
    assert len({topo.link("A:B"), topo.link("A:B"), topo.link("B:A")}) == 2
    with pytest.raises(TypeError):
        topo.dc("A").hosts["x"] = HostSpec("x", None, "h", 22)  # type: ignore[index]


def test_a_links_gap_policy_is_stop_unless_told_and_a_bad_one_is_named() -> None:
    topo = loads_topology(BASE)
    assert {link.on_gap for link in topo.links} == {"stop"}
    skip = BASE.replace("bandwidth_mb_s = 50\n", 'bandwidth_mb_s = 50\non_gap = "skip"\n', 1)
    assert loads_topology(skip).links[0].on_gap == "skip"
    assert loads_topology(dump_topology(loads_topology(skip))) == loads_topology(skip)
    with pytest.raises(TopologyError, match=r"on_gap.*must be one of stop, skip, got 'drop'"):
        loads_topology(skip.replace('"skip"', '"drop"'))
