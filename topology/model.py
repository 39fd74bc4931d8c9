"""The loaded topology: datacenters, links and topics as frozen values.

Every other part of Talos takes these objects, never raw TOML dicts, so the
rules (naming policy, topic selection, failover order) live in one place.
The parsers here raise :class:`InvalidArgument` naming the parameter; the
loader adds the file, line and key.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, TypeVar

from talos.config import validate_topic_name
from talos.errors import InvalidArgument
from talos.security.tls import ClientSecurity

K = TypeVar("K")
V = TypeVar("V")

NamingPolicy = Literal["identity", "prefixed"]
StoreKind = Literal["posix", "hdfs"]

NAMING_POLICIES: tuple[NamingPolicy, ...] = ("identity", "prefixed")
#: What a link does when the source deleted offsets it had not copied yet (retention).
GapPolicy = Literal["stop", "skip"]
GAP_POLICIES: tuple[GapPolicy, ...] = ("stop", "skip")
DEFAULT_OFFSET_SYNC_INTERVAL_S = 5.0
DEFAULT_SSH_PORT = 22
#: ``bandwidth_mb_s`` counts decimal megabytes, as throughput figures usually do.
BYTES_PER_MB = 1_000_000
MAX_WORKERS = 1024
MAX_OFFSET_SYNC_INTERVAL_S = 86_400.0

# No '.' in DC names: prefixed naming writes "<dc>.<topic>", which must split back.
_DC_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HOST_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9._-]+$")
_IPV6 = re.compile(r"^[0-9A-Fa-f:.]+(%[A-Za-z0-9._-]+)?$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_SSH_USER = re.compile(r"^[A-Za-z0-9._-]+$")
_SELECTOR_CHARS = re.compile(r"^[A-Za-z0-9._\-*?\[\]!]+$")
_GLOB_CHARS = frozenset("*?[")


class TopologyError(InvalidArgument):
    """A topology file, or a lookup in one, is wrong. Says where: file, line, key.

    ``topology.loader`` re-exports it; it lives here because the lookups on
    :class:`Topology` raise it too.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        key: str | None = None,
        line: int | None = None,
        column: int | None = None,
        problem: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.key = key
        self.line = line
        self.column = column
        self.problem = problem or message


class FrozenMap(Mapping[K, V]):
    """A read-only, hashable dict that keeps insertion order, so values stay frozen."""

    __slots__ = ("_data",)

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        self._data: dict[K, V] = dict(items)

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


# -- value parsers (pure; raise InvalidArgument naming ``param``) -------------------------------


def validate_dc_name(name: object, param: str = "dc") -> str:
    if not isinstance(name, str) or not _DC_NAME.match(name):
        raise InvalidArgument(
            f"{param}: datacenter name {name!r} must be 1 to 64 letters, digits, '_' or '-' "
            "(no '.', since prefixed naming writes '<dc>.<topic>')"
        )
    return name


def validate_host_name(name: object, param: str = "host") -> str:
    if not isinstance(name, str) or not _HOST_NAME.match(name) or name in (".", ".."):
        raise InvalidArgument(
            f"{param}: host name {name!r} must be 1 to 64 letters, digits, '.', '_' or '-'"
        )
    return name


def _parse_port(text: str, param: str, address: str) -> int:
    if not _PORT.match(text) or not 1 <= int(text) <= 65535:
        raise InvalidArgument(
            f"{param}: bad port {text!r} in {address!r}; the port must be 1 to 65535"
        )
    return int(text)


def _parse_host(text: str, param: str, address: str) -> str:
    """Returns the host as it appears in an address (IPv6 keeps its brackets)."""
    if not text:
        raise InvalidArgument(f"{param}: empty host in {address!r}")
    if text.startswith("["):
        if not text.endswith("]") or not _IPV6.match(text[1:-1]):
            raise InvalidArgument(f"{param}: bad IPv6 host {text!r} in {address!r}")
        return text
    if not _HOSTNAME.match(text):
        raise InvalidArgument(
            f"{param}: bad host {text!r} in {address!r}; "
            "a host is letters, digits, '.', '_' and '-' (or [IPv6])"
        )
    return text


def _split_host_port(
    address: str, param: str, *, port_required: bool, shown: str | None = None
) -> tuple[str, int | None]:
    """``shown`` is what messages quote: the whole URI when ``address`` is a part of one."""
    whole = shown or address
    port_text: str | None
    if address.startswith("["):
        end = address.find("]")
        host, rest = (address[: end + 1], address[end + 1 :]) if end != -1 else (address, "")
        if rest and not rest.startswith(":"):
            raise InvalidArgument(f"{param}: bad address {whole!r}; expected [v6]:port")
        port_text = rest[1:] if rest else None
    elif address.count(":") > 1:
        raise InvalidArgument(
            f"{param}: {whole!r} is ambiguous; write IPv6 hosts in brackets, e.g. [::1]:2181"
        )
    else:
        host, sep, port_text = address.partition(":")
        port_text = port_text if sep else None
    host = _parse_host(host, param, whole)
    if port_text is None:
        if port_required:
            raise InvalidArgument(f"{param}: missing port in {whole!r}; expected host:port")
        return host, None
    return host, _parse_port(port_text, param, whole)


def parse_address(address: object, param: str = "address") -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) -> (host, port), port 1 to 65535."""
    if not isinstance(address, str):
        raise InvalidArgument(f"{param}: must be a string 'host:port', got {address!r}")
    if not address or address != address.strip() or any(c.isspace() for c in address):
        raise InvalidArgument(f"{param}: {address!r} must be 'host:port' without spaces")
    host, port = _split_host_port(address, param, port_required=True)
    return host, port if port is not None else 0


def format_address(host: str, port: int) -> str:
    return f"{host}:{port}"


def parse_zookeeper(connect: object, param: str = "zookeeper") -> str:
    """A ZooKeeper connect string ``host:port[,host:port...]``, normalised (no spaces)."""
    if not isinstance(connect, str):
        raise InvalidArgument(f"{param}: must be a string 'host:port[,host:port]', got {connect!r}")
    if "/" in connect:
        raise InvalidArgument(
            f"{param}: {connect!r} has a chroot; leave it out and set 'cluster' instead "
            "(Talos uses /talos/<cluster>)"
        )
    parts = [part.strip() for part in connect.split(",")]
    if not connect.strip() or any(not part for part in parts):
        raise InvalidArgument(
            f"{param}: {connect!r} must be 'host:port[,host:port]' with no empty entries"
        )
    seen: set[str] = set()
    out = []
    for part in parts:
        canonical = format_address(*parse_address(part, param))
        if canonical in seen:
            raise InvalidArgument(f"{param}: server {canonical} is listed twice")
        seen.add(canonical)
        out.append(canonical)
    return ",".join(out)


# -- values -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreSpec:
    """Where a DC's logs live: ``posix:/path`` or ``hdfs://namenode[:port]/path``."""

    kind: StoreKind
    path: str
    uri: str
    host: str = ""
    port: int | None = None

    @property
    def root(self) -> Path:
        """The local directory of a posix store."""
        if self.kind != "posix":
            raise InvalidArgument(f"store: {self.uri} is not a posix store; it has no local root")
        return Path(self.path)

    @classmethod
    def parse(
        cls, uri: object, param: str = "store", base_dir: str | os.PathLike[str] | None = None
    ) -> StoreSpec:
        """Relative posix paths are taken from ``base_dir`` (the topology file's folder)."""
        allowed = "expected 'posix:/path' or 'hdfs://namenode[:port]/path'"
        if not isinstance(uri, str):
            raise InvalidArgument(f"{param}: must be a string, {allowed}; got {uri!r}")
        if "\x00" in uri:
            raise InvalidArgument(f"{param}: contains a NUL character")
        if uri.startswith("posix:"):
            raw = uri[len("posix:") :]
            if raw.startswith("//"):
                raise InvalidArgument(f"{param}: {uri!r}: write 'posix:/path', not 'posix://'")
            if not raw:
                raise InvalidArgument(f"{param}: {uri!r} has an empty path; {allowed}")
            base = os.fspath(base_dir) if base_dir is not None else os.getcwd()
            path = os.path.normpath(os.path.join(base, os.path.expanduser(raw)))
            return cls(kind="posix", path=path, uri=f"posix:{path}")
        if uri.startswith("hdfs://"):
            rest = uri[len("hdfs://") :]
            authority, slash, raw_path = rest.partition("/")
            if any(c in rest for c in "?#@") or any(c.isspace() for c in rest):
                raise InvalidArgument(
                    f"{param}: {uri!r}: no user, query, fragment or spaces allowed; {allowed}"
                )
            if not authority:
                raise InvalidArgument(f"{param}: {uri!r} names no namenode; {allowed}")
            host, port = _split_host_port(authority, param, port_required=False, shown=uri)
            if not slash:
                raise InvalidArgument(f"{param}: {uri!r} has no path; {allowed}")
            path = posixpath.normpath("/" + raw_path)
            if path.startswith("//"):
                path = "/" + path.lstrip("/")
            netloc = host if port is None else format_address(host, port)
            return cls(kind="hdfs", path=path, uri=f"hdfs://{netloc}{path}", host=host, port=port)
        raise InvalidArgument(f"{param}: unsupported store {uri!r}; {allowed}")


@dataclass(frozen=True)
class HostSpec:
    """A machine a drill reaches over SSH. ``user`` None means the drill runner's default."""

    name: str
    user: str | None
    host: str
    port: int = DEFAULT_SSH_PORT

    @property
    def uri(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"ssh://{user}{self.host}:{self.port}"

    @classmethod
    def parse(cls, name: str, uri: object, param: str = "host") -> HostSpec:
        """``ssh://[user@]host[:port]``; the port defaults to 22."""
        validate_host_name(name, param)
        expected = "expected 'ssh://[user@]host[:port]'"
        if not isinstance(uri, str):
            raise InvalidArgument(f"{param}: must be a string, {expected}; got {uri!r}")
        if not uri.startswith("ssh://"):
            raise InvalidArgument(f"{param}: {uri!r} is not an ssh:// URI; {expected}")
        rest = uri[len("ssh://") :]
        if any(c in rest for c in "/?#") or any(c.isspace() for c in rest):
            raise InvalidArgument(
                f"{param}: {uri!r}: no path, query, fragment or spaces allowed; {expected}"
            )
        user: str | None = None
        if "@" in rest:
            user, _, rest = rest.rpartition("@")
            if not _SSH_USER.match(user):
                raise InvalidArgument(
                    f"{param}: bad user {user!r} in {uri!r}; letters, digits, '.', '_', '-'"
                )
        if not rest:
            raise InvalidArgument(f"{param}: {uri!r} names no host; {expected}")
        host, port = _split_host_port(rest, param, port_required=False, shown=uri)
        return cls(name=name, user=user, host=host, port=DEFAULT_SSH_PORT if port is None else port)


@dataclass(frozen=True)
class DcSecurity:
    """How clients of this DC (mirror workers, failover tools) reach its brokers: files
    named in the topology, absolute after loading. The token file is read when a client
    is built, so a rotated token needs no topology change."""

    tls_ca: str = ""
    tls_client_cert: str = ""
    tls_client_key: str = ""
    token_file: str = ""

    KEYS: ClassVar[tuple[str, ...]] = ("tls_ca", "tls_client_cert", "tls_client_key", "token_file")

    def client(self) -> ClientSecurity:
        """InvalidArgument naming the file when one cannot be read."""
        return ClientSecurity.from_settings(
            ca=self.tls_ca,
            cert=self.tls_client_cert,
            key=self.tls_client_key,
            token_file=self.token_file,
        )


@dataclass(frozen=True)
class Datacenter:
    """One DC: its ZooKeeper chroot ``/talos/<cluster>``, log store, brokers and drill hosts.

    ``failover_to`` is where producers and consumers homed here go next, in order.
    """

    name: str
    zookeeper: str
    cluster: str
    store: StoreSpec
    brokers: tuple[str, ...]
    hosts: Mapping[str, HostSpec] = field(default_factory=FrozenMap)
    failover_to: tuple[str, ...] = ()
    security: DcSecurity | None = None  # None: plaintext, no token

    def __post_init__(self) -> None:
        object.__setattr__(self, "hosts", FrozenMap(self.hosts))
        object.__setattr__(self, "brokers", tuple(self.brokers))
        object.__setattr__(self, "failover_to", tuple(self.failover_to))

    @property
    def zookeeper_servers(self) -> tuple[str, ...]:
        return tuple(self.zookeeper.split(","))

    @property
    def bootstrap(self) -> str:
        """Broker addresses as one comma-separated string, as clients take them."""
        return ",".join(self.brokers)

    def client_security(self) -> ClientSecurity | None:
        """The credentials for this DC's brokers; None: the process default."""
        return self.security.client() if self.security is not None else None


def validate_selector(selector: object, param: str = "topics") -> str:
    """An exact topic name, or a shell-style glob over the topic name charset."""
    if not isinstance(selector, str) or not selector:
        raise InvalidArgument(f"{param}: a selector must be a non-empty string, got {selector!r}")
    if not _SELECTOR_CHARS.match(selector):
        bad = sorted({c for c in selector if not _SELECTOR_CHARS.match(c)})
        raise InvalidArgument(
            f"{param}: selector {selector!r} has {''.join(bad)!r}; allowed are letters, digits, "
            "'.', '_', '-' and the glob characters '*', '?', '[...]' ('[!...]' negates)"
        )
    if not _GLOB_CHARS.intersection(selector):
        if "]" in selector or "!" in selector:
            raise InvalidArgument(f"{param}: selector {selector!r}: ']' or '!' without '['")
        validate_topic_name(selector, param)
        return selector
    if len(selector) > 249:
        raise InvalidArgument(f"{param}: selector {selector!r} is longer than 249 characters")
    i = 0
    while i < len(selector):
        c = selector[i]
        if c in "]!":
            raise InvalidArgument(f"{param}: selector {selector!r}: {c!r} outside '[...]'")
        if c == "[":
            end = selector.find("]", i + 1)
            inner = selector[i + 1 : end] if end != -1 else ""
            body = inner[1:] if inner.startswith("!") else inner
            if end == -1 or not body or "[" in body or "!" in body:
                raise InvalidArgument(
                    f"{param}: selector {selector!r}: unbalanced or empty '[...]' at character "
                    f"{i + 1}"
                )
            i = end
        i += 1
    return selector


@dataclass(frozen=True)
class Link:
    """A mirror from ``source`` to ``target`` of the topics its selectors pick.

    Under prefixed naming a topic named ``<target>.<...>`` in the source is the
    mirror of one of the target's own topics; the link never selects it, so
    active-active with prefixed naming does not grow ``A.B.A...`` chains.
    """

    source: str
    target: str
    topics: tuple[str, ...]
    naming: NamingPolicy = "identity"
    bandwidth_bytes_s: int | None = None
    offset_sync_interval_s: float = DEFAULT_OFFSET_SYNC_INTERVAL_S
    workers: int = 1
    on_gap: GapPolicy = "stop"

    def __post_init__(self) -> None:
        object.__setattr__(self, "topics", tuple(self.topics))

    @property
    def name(self) -> str:
        return f"{self.source}:{self.target}"

    @property
    def _prefix(self) -> str:
        return f"{self.source}."

    def selects(self, topic: str) -> bool:
        if not topic:
            return False
        if self.naming == "prefixed" and topic.startswith(f"{self.target}."):
            return False
        for selector in self.topics:
            if _GLOB_CHARS.intersection(selector):
                if fnmatch.fnmatchcase(topic, selector):
                    return True
            elif topic == selector:
                return True
        return False

    def target_topic(self, source_topic: str) -> str:
        if not self.selects(source_topic):
            raise InvalidArgument(
                f"source_topic: {source_topic!r} is not selected by link {self.name} "
                f"(topics: {', '.join(self.topics)})"
            )
        if self.naming == "identity":
            return source_topic
        return validate_topic_name(self._prefix + source_topic, "target topic")

    def source_topic(self, target_topic: str) -> str | None:
        """The inverse of :meth:`target_topic`; None if this link does not write that topic."""
        if self.naming == "identity":
            candidate = target_topic
        elif target_topic.startswith(self._prefix):
            candidate = target_topic[len(self._prefix) :]
        else:
            return None
        return candidate if self.selects(candidate) else None


@dataclass(frozen=True)
class TopicSpec:
    """A topic created in its home DC ``dc``."""

    name: str
    dc: str
    partitions: int
    durability: str = "sync"


@dataclass(frozen=True)
class Topology:
    """A loaded, validated topology. ``path`` says where it came from; equality ignores it."""

    path: str = field(compare=False)
    datacenters: Mapping[str, Datacenter]
    links: tuple[Link, ...] = ()
    topics: tuple[TopicSpec, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "datacenters", FrozenMap(self.datacenters))
        object.__setattr__(self, "links", tuple(self.links))
        object.__setattr__(self, "topics", tuple(self.topics))

    def dc(self, name: str) -> Datacenter:
        try:
            return self.datacenters[name]
        except KeyError:
            known = ", ".join(self.datacenters) or "none"
            raise TopologyError(
                f"unknown datacenter {name!r} in {self.path}; datacenters: {known}",
                path=self.path,
                key="dc",
                problem=f"unknown datacenter {name!r}",
            ) from None

    def link(self, spec: str) -> Link:
        """The link named ``SOURCE:TARGET``."""
        source, sep, target = spec.strip().partition(":")
        if not sep or not source or not target or ":" in target:
            raise TopologyError(
                f"link: {spec!r} must be SOURCE:TARGET, e.g. A:B",
                path=self.path,
                key="link",
                problem=f"{spec!r} must be SOURCE:TARGET",
            )
        for link in self.links:
            if link.source == source.strip() and link.target == target.strip():
                return link
        known = ", ".join(link.name for link in self.links) or "none"
        name = f"{source.strip()}:{target.strip()}"
        raise TopologyError(
            f"no link {name} in {self.path}; links: {known}",
            path=self.path,
            key="link",
            problem=f"no link {name}",
        )

    def links_from(self, dc: str) -> tuple[Link, ...]:
        self.dc(dc)
        return tuple(link for link in self.links if link.source == dc)

    def links_into(self, dc: str) -> tuple[Link, ...]:
        self.dc(dc)
        return tuple(link for link in self.links if link.target == dc)

    def failover_order(self, home: str) -> list[str]:
        """The DCs a client homed in ``home`` tries, in order: home first.

        Then the home DC's ``failover_to`` if set; otherwise the targets of the
        links out of home, in file order (the DCs that hold home's data). A DC
        the file does not name for home is never tried, so a client cannot
        wander into a region its operator did not choose.
        """
        datacenter = self.dc(home)
        nexts = datacenter.failover_to or tuple(link.target for link in self.links_from(home))
        order = [home]
        for name in nexts:
            if name not in order:
                order.append(name)
        return order

    def host(self, name: str) -> tuple[Datacenter, HostSpec]:
        """A drill host by its name (unique across the file) and the DC it belongs to."""
        for datacenter in self.datacenters.values():
            if name in datacenter.hosts:
                return datacenter, datacenter.hosts[name]
        known = ", ".join(h for d in self.datacenters.values() for h in d.hosts) or "none"
        raise TopologyError(
            f"unknown host {name!r} in {self.path}; hosts: {known}",
            path=self.path,
            key="hosts",
            problem=f"unknown host {name!r}",
        )
