"""Read, validate and write topology files (TOML; see examples/topology.example.toml).

Validation is complete before anything starts: every error is a
:class:`TopologyError` whose message reads ``FILE:LINE: KEY: PROBLEM`` (the
line when it can be found), so an editor can jump to it. In keys, entries of
an array count from 1 (``link[2]`` is the second ``[[link]]``), as lines do.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, time
from functools import partial
from typing import Any, NoReturn, TypeVar

from talos.config import DURABILITY_LEVELS, MAX_PARTITIONS, validate_topic_name
from talos.coord.paths import validate_name
from talos.errors import InvalidArgument
from topology.model import (
    BYTES_PER_MB,
    DEFAULT_OFFSET_SYNC_INTERVAL_S,
    GAP_POLICIES,
    MAX_OFFSET_SYNC_INTERVAL_S,
    MAX_WORKERS,
    NAMING_POLICIES,
    Datacenter,
    DcSecurity,
    GapPolicy,
    HostSpec,
    Link,
    NamingPolicy,
    StoreSpec,
    TopicSpec,
    Topology,
    TopologyError,
    parse_address,
    parse_zookeeper,
    validate_dc_name,
    validate_selector,
)

__all__ = ["TopologyError", "dump_topology", "load_topology", "loads_topology"]

T = TypeVar("T")
Key = tuple[str | int, ...]

_DC_REQUIRED = ("zookeeper", "store", "brokers")
_DC_OPTIONAL = ("cluster", "hosts", "failover_to", "security")
_LINK_REQUIRED = ("source", "target", "topics")
_LINK_OPTIONAL = ("naming", "bandwidth_mb_s", "offset_sync_interval_s", "workers", "on_gap")
_TOPIC_REQUIRED = ("name", "dc", "partitions")
_TOPIC_OPTIONAL = ("durability",)

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_KEY_PART = re.compile(r"""\s*(?:([A-Za-z0-9_-]+)|"((?:[^"\\]|\\.)*)"|'([^']*)')\s*""")
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def load_topology(path: str | os.PathLike[str]) -> Topology:
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            raw = f.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise TopologyError(
            f"{name}: cannot read topology file: {reason}", path=name, problem=reason
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text (byte {exc.start})"
        raise TopologyError(f"{name}: {problem}", path=name, problem=problem) from None
    return loads_topology(text, name)


def loads_topology(text: str, path: str = "<string>") -> Topology:
    """Parse and validate. Relative posix store paths are taken from ``path``'s folder
    (the working directory when ``path`` is not a file name, like ``<string>``)."""
    ctx = _Context(text, path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ctx.syntax_error(exc) from None
    return _build(ctx, data)


# -- locating keys in the raw text ---------------------------------------------------------------


def _split_dotted(text: str) -> list[str] | None:
    parts: list[str] = []
    pos = 0
    while True:
        m = _KEY_PART.match(text, pos)
        if m is None:
            return None
        parts.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
        if pos == len(text):
            return parts
        if text[pos] != ".":
            return None
        pos += 1


def _key_end(line: str) -> int | None:
    """Where the key of ``key = value`` ends (at '='), or None if the line is not one."""
    pos = 0
    while True:
        m = _KEY_PART.match(line, pos)
        if m is None:
            return None
        pos = m.end()
        if pos < len(line) and line[pos] == ".":
            pos += 1
            continue
        return pos if pos < len(line) and line[pos] == "=" else None


class _LineIndex:
    """Best-effort map from key paths to 1-based line numbers, for error messages."""

    def __init__(self, text: str) -> None:
        # tomllib counts only '\n' as a line break; str.splitlines() would count more.
        self.lines = [line.removesuffix("\r") for line in text.split("\n")]
        self.where: dict[Key, int] = {}
        self.structural: set[int] = set()
        table: Key = ()
        counts: dict[Key, int] = {}
        in_string: str | None = None
        for number, line in enumerate(self.lines, start=1):
            if in_string is not None:
                if line.count(in_string) % 2 == 1:
                    in_string = None
                continue
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            header = re.match(r"^\[\[(.*?)\]\]\s*(#.*)?$", stripped)
            parts = _split_dotted(header.group(1)) if header else None
            if header and parts is not None:
                aot: Key = tuple(parts)
                index = counts.get(aot, 0)
                counts[aot] = index + 1
                table = (*aot, index)
                self._record(table, number)
                continue
            header = re.match(r"^\[(.*?)\]\s*(#.*)?$", stripped)
            parts = _split_dotted(header.group(1)) if header else None
            if header and parts is not None:
                table = self._under_aot(tuple(parts), counts)
                self._record(table, number)
                continue
            end = _key_end(stripped)
            if end is not None:
                keys = _split_dotted(stripped[:end].rstrip())
                if keys is not None:
                    self._record((*table, *keys), number)
                for quote in ('"""', "'''"):
                    if stripped[end:].count(quote) % 2 == 1:
                        in_string = quote

    @staticmethod
    def _under_aot(path: Key, counts: dict[Key, int]) -> Key:
        """``[link.x]`` after ``[[link]]`` belongs to the last link entry."""
        for cut in range(len(path), 0, -1):
            count = counts.get(path[:cut])
            if count:
                return (*path[:cut], count - 1, *path[cut:])
        return path

    def _record(self, path: Key, number: int) -> None:
        self.structural.add(number)
        for cut in range(1, len(path) + 1):
            self.where.setdefault(path[:cut], number)

    def line(self, path: Key, value: object = None) -> int | None:
        for cut in range(len(path), 0, -1):
            found = self.where.get(path[:cut])
            if found is not None:
                break
        else:
            return None
        if isinstance(value, str) and value:
            # An element of a multi-line array: find the line that holds its literal.
            for number in range(found, min(found + 200, len(self.lines)) + 1):
                if number != found and number in self.structural:
                    break
                text = self.lines[number - 1]
                if f'"{value}"' in text or f"'{value}'" in text:
                    return number
        return found


# -- validation ----------------------------------------------------------------------------------


def _label(path: Key) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part + 1}]"
        else:
            key = part if _BARE_KEY.match(part) else _toml_string(part)
            out += f".{key}" if out else key
    return out or "the top level"


def _toml_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, datetime | date | time):
        return "date/time"
    return type(value).__name__


class _Context:
    def __init__(self, text: str, path: str) -> None:
        self.path = path
        self.index = _LineIndex(text)
        is_file = not (path.startswith("<") and path.endswith(">"))
        self.base_dir = os.path.dirname(os.path.abspath(path)) if is_file else os.getcwd()

    def error(
        self, at: Key, problem: str, *, value: object = None, with_key: bool = True
    ) -> TopologyError:
        line = self.index.line(at, value)
        key = _label(at)
        where = f"{self.path}:{line}" if line is not None else self.path
        message = f"{where}: {key}: {problem}" if with_key else f"{where}: {problem}"
        return TopologyError(message, path=self.path, key=key, line=line, problem=problem)

    def fail(self, at: Key, problem: str, *, value: object = None) -> NoReturn:
        raise self.error(at, problem, value=value)

    def syntax_error(self, exc: tomllib.TOMLDecodeError) -> TopologyError:
        text = str(exc)
        m = _TOML_POSITION.search(text)
        line = int(m.group(1)) if m else None
        column = int(m.group(2)) if m else None
        if m is None and text.endswith("(at end of document)"):
            line = max(len(self.index.lines), 1)
        detail = _TOML_POSITION.sub("", text).removesuffix(" (at end of document)")
        problem = f"TOML syntax error: {detail}"
        where = self.path if line is None else f"{self.path}:{line}"
        where += f":{column}" if column is not None else ""
        return TopologyError(
            f"{where}: {problem}", path=self.path, line=line, column=column, problem=problem
        )

    def check(self, at: Key, parse: Callable[[str], T], *, value: object = None) -> T:
        """Run a model parser that names its parameter; re-raise with file and line."""
        label = _label(at)
        try:
            return parse(label)
        except TopologyError:
            raise
        except InvalidArgument as exc:
            self.fail(at, exc.message.removeprefix(f"{label}: "), value=value)

    def keys(
        self, table: dict[str, Any], at: Key, required: Sequence[str], optional: Sequence[str]
    ) -> None:
        allowed = (*required, *optional)
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise self.error(
                    (*at, key),
                    f"unknown key {key!r} in {_label(at)}; allowed: {', '.join(allowed)}{hint}",
                    with_key=False,
                )
        for key in required:
            if key not in table:
                self.fail((*at, key), f"missing required key {key!r} in {_label(at)}")

    def table(self, value: object, at: Key) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(at, f"must be a table, got {_toml_type(value)} {value!r}")
        return value

    def string(self, value: object, at: Key) -> str:
        if not isinstance(value, str):
            self.fail(at, f"must be a string, got {_toml_type(value)} {value!r}")
        return value

    def strings(self, value: object, at: Key, *, allow_empty: bool) -> list[str]:
        if not isinstance(value, list):
            self.fail(at, f"must be an array of strings, got {_toml_type(value)} {value!r}")
        if not value and not allow_empty:
            self.fail(at, "must not be empty")
        for i, item in enumerate(value):
            self.string(item, (*at, i))
        seen: set[str] = set()
        for i, item in enumerate(value):
            if item in seen:
                self.fail((*at, i), f"{item!r} is listed twice", value=item)
            seen.add(item)
        return value

    def integer(self, value: object, at: Key, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(at, f"must be an integer, got {_toml_type(value)} {value!r}")
        if not low <= value <= high:
            self.fail(at, f"must be between {low} and {high}, got {value}")
        return value

    def positive_number(self, value: object, at: Key, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(at, f"must be a number, got {_toml_type(value)} {value!r}")
        if not math.isfinite(value) or not 0 < value <= high:
            self.fail(at, f"must be > 0 and at most {high:g}, got {value!r}")
        return float(value)


def _datacenter(ctx: _Context, name: str, raw: object) -> Datacenter:
    at: Key = ("dc", name)
    ctx.check(at, partial(validate_dc_name, name))
    table = ctx.table(raw, at)
    ctx.keys(table, at, _DC_REQUIRED, _DC_OPTIONAL)

    zk_at = (*at, "zookeeper")
    zk_text = ctx.string(table["zookeeper"], zk_at)
    zookeeper = ctx.check(zk_at, partial(parse_zookeeper, zk_text))

    cluster_at = (*at, "cluster")
    cluster = ctx.string(table.get("cluster", name), cluster_at)
    ctx.check(cluster_at, partial(validate_name, cluster))

    store_at = (*at, "store")
    store_text = ctx.string(table["store"], store_at)
    store = ctx.check(
        store_at, lambda param: StoreSpec.parse(store_text, param, base_dir=ctx.base_dir)
    )

    brokers_at = (*at, "brokers")
    brokers: list[str] = []
    for i, item in enumerate(ctx.strings(table["brokers"], brokers_at, allow_empty=False)):
        host, port = ctx.check((*brokers_at, i), partial(parse_address, item), value=item)
        brokers.append(f"{host}:{port}")

    hosts_at = (*at, "hosts")
    hosts: dict[str, HostSpec] = {}
    for host_name, uri in ctx.table(table.get("hosts", {}), hosts_at).items():
        host_at = (*hosts_at, host_name)
        hosts[host_name] = ctx.check(host_at, partial(HostSpec.parse, host_name, uri), value=uri)

    failover_at = (*at, "failover_to")
    failover = ctx.strings(table.get("failover_to", []), failover_at, allow_empty=True)
    security = _dc_security(ctx, (*at, "security"), table.get("security"))
    return Datacenter(
        name=name,
        zookeeper=zookeeper,
        cluster=cluster,
        store=store,
        brokers=tuple(brokers),
        hosts=hosts,
        failover_to=tuple(failover),
        security=security,
    )


def _dc_security(ctx: _Context, at: Key, raw: object) -> DcSecurity | None:
    """``[dc.X.security]``: files relative to the topology file's folder; each must exist."""
    if raw is None:
        return None
    table = ctx.table(raw, at)
    ctx.keys(table, at, (), DcSecurity.KEYS)
    paths: dict[str, str] = {}
    for key in DcSecurity.KEYS:
        if key not in table:
            continue
        text = ctx.string(table[key], (*at, key))
        path = os.path.normpath(os.path.join(ctx.base_dir, os.path.expanduser(text)))
        if not os.path.isfile(path):
            ctx.fail((*at, key), f"no such file: {path}", value=text)
        paths[key] = path
    if ("tls_client_cert" in paths) != ("tls_client_key" in paths):
        ctx.fail(at, "tls_client_cert and tls_client_key go together")
    return DcSecurity(**paths)


def _check_datacenters(ctx: _Context, datacenters: dict[str, Datacenter]) -> None:
    """Cross-DC rules: references resolve, and no two DCs share what must be theirs alone."""
    known = ", ".join(datacenters)
    host_owner: dict[str, str] = {}
    broker_owner: dict[str, str] = {}
    store_owner: dict[str, str] = {}
    chroot_owner: dict[tuple[str, str], str] = {}
    for dc in datacenters.values():
        at: Key = ("dc", dc.name)
        for i, target in enumerate(dc.failover_to):
            if target == dc.name:
                ctx.fail((*at, "failover_to", i), f"{dc.name!r} cannot fail over to itself")
            if target not in datacenters:
                ctx.fail(
                    (*at, "failover_to", i),
                    f"unknown datacenter {target!r}; datacenters: {known}",
                    value=target,
                )
        for host_name in dc.hosts:
            if host_name in host_owner:
                ctx.fail(
                    (*at, "hosts", host_name),
                    f"host name {host_name!r} is also used in dc.{host_owner[host_name]}; "
                    "drill plans name hosts alone, so host names must be unique in the file",
                )
            host_owner[host_name] = dc.name
        for i, broker in enumerate(dc.brokers):
            if broker in broker_owner:
                other = broker_owner[broker]
                where = "listed twice" if other == dc.name else f"also listed in dc.{other}"
                ctx.fail((*at, "brokers", i), f"broker {broker} is {where}", value=broker)
            broker_owner[broker] = dc.name
        if dc.store.uri in store_owner:
            ctx.fail(
                (*at, "store"),
                f"{dc.store.uri} is also the store of dc.{store_owner[dc.store.uri]}; "
                "each DC needs its own log store",
            )
        store_owner[dc.store.uri] = dc.name
        for server in dc.zookeeper_servers:
            owner = chroot_owner.get((server, dc.cluster))
            if owner is not None:
                ctx.fail(
                    (*at, "cluster"),
                    f"dc.{owner} uses the same ZooKeeper ({server}) and cluster "
                    f"{dc.cluster!r}; set a different 'cluster' so each DC has its own chroot",
                )
            chroot_owner[(server, dc.cluster)] = dc.name


def _link(ctx: _Context, index: int, raw: object, datacenters: dict[str, Datacenter]) -> Link:
    at: Key = ("link", index)
    table = ctx.table(raw, at)
    ctx.keys(table, at, _LINK_REQUIRED, _LINK_OPTIONAL)
    known = ", ".join(datacenters)
    ends = []
    for key in ("source", "target"):
        name = ctx.string(table[key], (*at, key))
        if name not in datacenters:
            ctx.fail((*at, key), f"unknown datacenter {name!r}; datacenters: {known}")
        ends.append(name)
    source, target = ends
    if source == target:
        ctx.fail((*at, "target"), f"a link from {source!r} to itself is not allowed")

    topics_at = (*at, "topics")
    selectors = ctx.strings(table["topics"], topics_at, allow_empty=False)
    for i, selector in enumerate(selectors):
        ctx.check((*topics_at, i), partial(validate_selector, selector), value=selector)

    naming_at = (*at, "naming")
    naming_text = ctx.string(table.get("naming", "identity"), naming_at)
    naming: NamingPolicy
    if naming_text == "identity":
        naming = "identity"
    elif naming_text == "prefixed":
        naming = "prefixed"
    else:
        ctx.fail(
            naming_at,
            f"unknown naming policy {naming_text!r}; allowed: {', '.join(NAMING_POLICIES)} "
            f"(prefixed writes '<source>.<topic>')",
        )

    bandwidth: int | None = None
    if "bandwidth_mb_s" in table:
        bw_at = (*at, "bandwidth_mb_s")
        mb = ctx.positive_number(table["bandwidth_mb_s"], bw_at, 1e9)
        bandwidth = round(mb * BYTES_PER_MB)
        if bandwidth < 1:
            ctx.fail(bw_at, f"must be at least 1 byte/s (0.000001 MB/s), got {mb!r}")

    interval = DEFAULT_OFFSET_SYNC_INTERVAL_S
    if "offset_sync_interval_s" in table:
        interval = ctx.positive_number(
            table["offset_sync_interval_s"],
            (*at, "offset_sync_interval_s"),
            MAX_OFFSET_SYNC_INTERVAL_S,
        )
    workers = ctx.integer(table.get("workers", 1), (*at, "workers"), 1, MAX_WORKERS)
    gap_at = (*at, "on_gap")
    gap_text = ctx.string(table.get("on_gap", "stop"), gap_at)
    if gap_text not in GAP_POLICIES:
        ctx.fail(gap_at, f"must be one of {', '.join(GAP_POLICIES)}, got {gap_text!r}")
    on_gap: GapPolicy = gap_text
    return Link(
        source=source,
        target=target,
        topics=tuple(selectors),
        naming=naming,
        bandwidth_bytes_s=bandwidth,
        offset_sync_interval_s=interval,
        workers=workers,
        on_gap=on_gap,
    )


def _topic(ctx: _Context, index: int, raw: object, datacenters: dict[str, Datacenter]) -> TopicSpec:
    at: Key = ("topic", index)
    table = ctx.table(raw, at)
    ctx.keys(table, at, _TOPIC_REQUIRED, _TOPIC_OPTIONAL)
    name = ctx.string(table["name"], (*at, "name"))
    ctx.check((*at, "name"), partial(validate_topic_name, name))
    dc = ctx.string(table["dc"], (*at, "dc"))
    if dc not in datacenters:
        ctx.fail((*at, "dc"), f"unknown datacenter {dc!r}; datacenters: {', '.join(datacenters)}")
    partitions = ctx.integer(table["partitions"], (*at, "partitions"), 1, MAX_PARTITIONS)
    durability = ctx.string(table.get("durability", "sync"), (*at, "durability"))
    if durability not in DURABILITY_LEVELS:
        ctx.fail(
            (*at, "durability"),
            f"must be one of {', '.join(DURABILITY_LEVELS)}, got {durability!r}",
        )
    return TopicSpec(name=name, dc=dc, partitions=partitions, durability=durability)


def _entries(ctx: _Context, data: dict[str, Any], key: str) -> list[object]:
    value = data.get(key, [])
    if not isinstance(value, list):
        ctx.fail((key,), f"must be an array of tables ([[{key}]]), got {_toml_type(value)}")
    return value


def _build(ctx: _Context, data: dict[str, Any]) -> Topology:
    ctx.keys(data, (), ("dc",), ("link", "topic"))
    dc_table = ctx.table(data["dc"], ("dc",))
    if not dc_table:
        ctx.fail(("dc",), "at least one [dc.<name>] table is required")
    datacenters = {name: _datacenter(ctx, name, raw) for name, raw in dc_table.items()}
    _check_datacenters(ctx, datacenters)

    links: list[Link] = []
    first_line: dict[tuple[str, str], int] = {}
    for i, raw in enumerate(_entries(ctx, data, "link")):
        link = _link(ctx, i, raw, datacenters)
        pair = (link.source, link.target)
        if pair in first_line:
            ctx.fail(
                ("link", i),
                f"duplicate link {link.name} (first is link[{first_line[pair] + 1}]); "
                "merge their topic selectors into one link",
            )
        first_line[pair] = i
        links.append(link)

    topics: list[TopicSpec] = []
    first_topic: dict[tuple[str, str], int] = {}
    for i, raw in enumerate(_entries(ctx, data, "topic")):
        topic = _topic(ctx, i, raw, datacenters)
        key = (topic.dc, topic.name)
        if key in first_topic:
            ctx.fail(
                ("topic", i, "name"),
                f"duplicate topic {topic.name!r} in dc {topic.dc!r} "
                f"(first is topic[{first_topic[key] + 1}])",
            )
        first_topic[key] = i
        topics.append(topic)
    return Topology(
        path=ctx.path, datacenters=datacenters, links=tuple(links), topics=tuple(topics)
    )


# -- writing -------------------------------------------------------------------------------------


def _toml_string(text: str) -> str:
    out = ['"']
    for c in text:
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_value(value: str | int | float | Iterable[str]) -> str:
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, bool):
        raise TypeError("booleans are not used in topology files")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"cannot write non-finite float {value!r}")
        return repr(value)
    return "[" + ", ".join(_toml_string(item) for item in value) + "]"


def _bandwidth_mb(bytes_s: int) -> int | float:
    whole, rest = divmod(bytes_s, BYTES_PER_MB)
    return whole if rest == 0 else bytes_s / BYTES_PER_MB


def dump_topology(topology: Topology) -> str:
    """TOML text that loads back to an equal topology.

    It checks that by loading its own output, so a topology built in code
    (``talos dev up``) that would not validate is refused here, not later.
    """
    out = ["# Talos topology; the format is documented in examples/topology.example.toml."]
    for dc in topology.datacenters.values():
        out += ["", f"[dc.{_toml_key(dc.name)}]"]
        out.append(f"zookeeper = {_toml_value(dc.zookeeper)}")
        out.append(f"cluster = {_toml_value(dc.cluster)}")
        out.append(f"store = {_toml_value(dc.store.uri)}")
        out.append(f"brokers = {_toml_value(dc.brokers)}")
        if dc.failover_to:
            out.append(f"failover_to = {_toml_value(dc.failover_to)}")
        if dc.security is not None:
            out += ["", f"[dc.{_toml_key(dc.name)}.security]"]
            for key in DcSecurity.KEYS:
                if getattr(dc.security, key):
                    out.append(f"{key} = {_toml_value(getattr(dc.security, key))}")
        if dc.hosts:
            out += ["", f"[dc.{_toml_key(dc.name)}.hosts]"]
            for name, host in dc.hosts.items():
                out.append(f"{_toml_key(name)} = {_toml_value(host.uri)}")
    for link in topology.links:
        out += ["", "[[link]]"]
        out.append(f"source = {_toml_value(link.source)}")
        out.append(f"target = {_toml_value(link.target)}")
        out.append(f"topics = {_toml_value(link.topics)}")
        out.append(f"naming = {_toml_value(link.naming)}")
        if link.bandwidth_bytes_s is not None:
            out.append(f"bandwidth_mb_s = {_toml_value(_bandwidth_mb(link.bandwidth_bytes_s))}")
        out.append(f"offset_sync_interval_s = {_toml_value(float(link.offset_sync_interval_s))}")
        out.append(f"workers = {_toml_value(link.workers)}")
        out.append(f"on_gap = {_toml_value(link.on_gap)}")
    for topic in topology.topics:
        out += ["", "[[topic]]"]
        out.append(f"name = {_toml_value(topic.name)}")
        out.append(f"dc = {_toml_value(topic.dc)}")
        out.append(f"partitions = {_toml_value(topic.partitions)}")
        out.append(f"durability = {_toml_value(topic.durability)}")
    text = "\n".join(out) + "\n"
    where = f"<dump of {topology.path}>"
    reloaded = loads_topology(text, where)
    if reloaded != topology:
        raise TopologyError(
            f"{where}: the topology does not survive a write and a read "
            "(was it built in code with unnormalised values? build values with "
            "StoreSpec.parse and HostSpec.parse)",
            path=where,
        )
    return text
