"""Every Prometheus metric Talos exports, in one place (prometheus-client).

Brokers and mirror workers serve them on ``--metrics-listen HOST:PORT`` at
``/metrics``. Names follow Prometheus conventions: base units (seconds,
bytes), ``_total`` for counters. The hot path pays one dictionary lookup and
one counter increment per batch; values that already live in memory (log
ends, owned partitions, mirror progress, ZooKeeper state) are read when
scraped, by collectors, so they cost nothing between scrapes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import (
    REGISTRY,
    Counter,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from talos.errors import ErrorCode, InvalidArgument

if TYPE_CHECKING:
    import asyncio

T = TypeVar("T")

# No *_created series: they double the output and nothing here uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# ---- broker: request path ---------------------------------------------------------

PRODUCE_REQUESTS = Counter(
    "talos_produce_requests_total",
    "Produce requests received, counted per topic they write (one per record batch)",
    ["topic"],
)
PRODUCE_BYTES = Counter(
    "talos_produce_bytes_total", "Record batch bytes received by produce requests", ["topic"]
)
FETCH_REQUESTS = Counter(
    "talos_fetch_requests_total", "Fetch requests answered, counted per topic partition", ["topic"]
)
FETCH_BYTES = Counter("talos_fetch_bytes_total", "Record bytes returned by fetches", ["topic"])
PRODUCE_LATENCY = Histogram(
    "talos_produce_latency_seconds",
    "From receiving a produce request to its answer (write, flush, fence check included)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
GROUP_COMMIT_BATCHES = Histogram(
    "talos_group_commit_batches",
    "Record batches written by one group commit (one storage write and one flush)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
ERROR_RESPONSES = Counter(
    "talos_error_responses_total",
    "Error answers sent to clients, by wire code (THROTTLED: the client backs off)",
    ["code"],
)
TAKEOVERS = Counter(
    "talos_takeovers_total",
    "Partition takeovers (fencing protocol) by outcome",
    ["outcome"],
)
TAKEOVER_DURATION = Histogram(
    "talos_takeover_duration_seconds",
    "Duration of a successful partition takeover: CAS, fence, scan, seal, open",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

BALANCE_MOVES = Counter(
    "talos_balance_moves_total",
    "Partitions the controller moved to even out traffic (each a takeover); counted by "
    "the broker that was controller then",
)

#: Set by :func:`serve`: a process that serves no /metrics pays nothing for the hooks.
_enabled = False
_produce_children: dict[str, tuple[Any, Any]] = {}
_fetch_children: dict[str, tuple[Any, Any]] = {}
_error_children: dict[int, Any] = {}


def _children(cache: dict[str, tuple[Any, Any]], count: Counter, size: Counter, topic: str) -> Any:
    pair = cache.get(topic)
    if pair is None:
        pair = cache[topic] = (count.labels(topic), size.labels(topic))
    return pair


def produced(topic: str, nbytes: int) -> None:
    if not _enabled:
        return
    requests, size = _children(_produce_children, PRODUCE_REQUESTS, PRODUCE_BYTES, topic)
    requests.inc()
    size.inc(nbytes)


def fetched(results: Iterable[Any]) -> None:
    """One Fetch answer: its partitions' results (``topic``, ``records``)."""
    if not _enabled:
        return
    for result in results:
        requests, size = _children(_fetch_children, FETCH_REQUESTS, FETCH_BYTES, result.topic)
        requests.inc()
        size.inc(len(result.records))


def time_produce(answered: asyncio.Future[Any]) -> None:
    """Observe the produce latency when ``answered`` completes."""
    if not _enabled:
        return
    started = time.perf_counter()
    answered.add_done_callback(lambda _: PRODUCE_LATENCY.observe(time.perf_counter() - started))


def error_answered(code: int) -> None:
    if not _enabled:
        return
    child = _error_children.get(code)
    if child is None:
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = str(code)
        child = _error_children[code] = ERROR_RESPONSES.labels(name)
    child.inc()


def group_committed(batches: int) -> None:
    if _enabled:
        GROUP_COMMIT_BATCHES.observe(batches)


def balance_moved(moves: int) -> None:
    if _enabled and moves:
        BALANCE_MOVES.inc(moves)


def timed_takeover(take_over: Callable[[], T]) -> T:
    if not _enabled:
        return take_over()
    started = time.perf_counter()
    try:
        result = take_over()
    except BaseException:
        TAKEOVERS.labels("failed").inc()
        raise
    TAKEOVERS.labels("ok").inc()
    TAKEOVER_DURATION.observe(time.perf_counter() - started)
    return result


# ---- read when scraped ---------------------------------------------------------------

ZK_STATES = ("CONNECTED", "SUSPENDED", "LOST")


def zookeeper_family(sessions: Mapping[str, str]) -> GaugeMetricFamily:
    """1 for each session's current state (kazoo: CONNECTED, SUSPENDED, LOST), else 0."""
    family = GaugeMetricFamily(
        "talos_zookeeper_session_state",
        "ZooKeeper session state: 1 for the current state of each session",
        labels=["session", "state"],
    )
    for session, current in sorted(sessions.items()):
        for state in ZK_STATES:
            family.add_metric([session, state], 1.0 if current == state else 0.0)
    return family


@dataclass(frozen=True)
class PartitionView:
    topic: str
    partition: int
    log_start: int
    log_end: int


class BrokerCollector(Collector):
    """Partition and session gauges of one broker, read from its memory at scrape time."""

    def __init__(
        self,
        partitions: Callable[[], list[PartitionView]],
        zk_state: Callable[[], str],
        traffic: Callable[[], Mapping[tuple[str, int], tuple[float, float]]] | None = None,
    ) -> None:
        self._partitions = partitions
        self._zk_state = zk_state
        #: (produce, fetch) bytes/s per partition as last reported to ZooKeeper.
        self._traffic = traffic

    def collect(self) -> Iterator[Metric]:
        views = self._partitions()
        owned = GaugeMetricFamily("talos_owned_partitions", "Partitions this broker serves")
        owned.add_metric([], len(views))
        start = GaugeMetricFamily(
            "talos_partition_log_start_offset", "First offset still stored", labels=LABELS
        )
        end = GaugeMetricFamily(
            "talos_partition_log_end_offset", "Offset the next message gets", labels=LABELS
        )
        for view in views:
            start.add_metric([view.topic, str(view.partition)], view.log_start)
            end.add_metric([view.topic, str(view.partition)], view.log_end)
        yield from (owned, start, end, zookeeper_family({"cluster": self._zk_state()}))
        if self._traffic is not None:
            rate = GaugeMetricFamily(
                "talos_partition_traffic_bytes_per_second",
                "Bytes/s over the last traffic interval, as reported for placement",
                labels=[*LABELS, "direction"],
            )
            for (topic, partition), (produce, fetch) in sorted(self._traffic().items()):
                rate.add_metric([topic, str(partition), "produce"], produce)
                rate.add_metric([topic, str(partition), "fetch"], fetch)
            yield rate


LABELS = ["topic", "partition"]


@dataclass(frozen=True)
class MirrorView:
    """One copied partition of a link as its worker knows it now."""

    topic: str  # the target (mirror) topic
    partition: int
    source_end: int
    target_end: int
    lag_ms: int
    last_progress_ms: int
    bytes_total: int
    messages_total: int


class MirrorCollector(Collector):
    """Per link and partition: lag (messages, seconds), bytes copied, progress age."""

    def __init__(
        self,
        link: str,
        partitions: Callable[[], list[MirrorView]],
        sessions: Callable[[], dict[str, str]],
        wall_ms: Callable[[], int],
    ) -> None:
        self._link = link
        self._partitions = partitions
        self._sessions = sessions
        self._wall_ms = wall_ms

    def collect(self) -> Iterator[Metric]:
        labels = ["link", *LABELS]
        now_ms = self._wall_ms()
        lag = GaugeMetricFamily(
            "talos_mirror_lag_messages", "Source log end minus target log end", labels=labels
        )
        lag_s = GaugeMetricFamily(
            "talos_mirror_lag_seconds",
            "Age of the oldest message not yet copied (0 when caught up)",
            labels=labels,
        )
        age = GaugeMetricFamily(
            "talos_mirror_progress_age_seconds",
            "Seconds since the target log end last moved",
            labels=labels,
        )
        copied = CounterMetricFamily(
            "talos_mirror_copied_bytes", "Bytes appended to the target", labels=labels
        )
        messages = CounterMetricFamily(
            "talos_mirror_copied_messages", "Messages appended to the target", labels=labels
        )
        views = self._partitions()
        for view in views:
            key = [self._link, view.topic, str(view.partition)]
            behind = view.source_end - view.target_end if view.target_end >= 0 else 0
            lag.add_metric(key, max(behind, 0))
            lag_s.add_metric(key, view.lag_ms / 1000)
            age.add_metric(key, max(now_ms - view.last_progress_ms, 0) / 1000)
            copied.add_metric(key, view.bytes_total)
            messages.add_metric(key, view.messages_total)
        owned = GaugeMetricFamily(
            "talos_mirror_owned_partitions", "Partitions this worker copies", labels=["link"]
        )
        owned.add_metric([self._link], len(views))
        yield from (lag, lag_s, age, copied, messages, owned)
        yield zookeeper_family(self._sessions())


# ---- the endpoint -----------------------------------------------------------------------


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidArgument(f"metrics-listen: must be HOST:PORT, got {listen!r}")
    return host, int(port)


def serve(listen: str, collector: Collector | None = None) -> str:
    """Serve /metrics on ``listen`` (port 0: any free port); the address it serves on."""
    global _enabled
    host, port = parse_listen(listen)
    if collector is not None:
        REGISTRY.register(collector)
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        raise InvalidArgument(f"metrics-listen: cannot listen on {listen}: {exc}") from None
    _enabled = True
    return f"{host}:{server.server_port}"
