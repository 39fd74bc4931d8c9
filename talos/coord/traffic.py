"""Per-partition traffic: brokers measure it, report it to ZooKeeper, and others read it.

Each broker counts the bytes its partitions take in (produce, mirror
appends) and hand out (fetch) in a :class:`ByteCounter` per partition log.
Every ``interval`` seconds a :class:`TrafficReporter` turns the counters
into rates over the last interval and writes them, one small JSON value, to
its own ephemeral znode ``/traffic/<broker>`` (a dead broker's report
vanishes with its session). One write per broker per interval keeps
ZooKeeper off the per-message path.

Readers: the controller weights partitions by these rates when it balances
the assignment (:func:`merge_traffic` keeps the newest figure of each), quota
approval can subtract the traffic measured over the last interval, and
``talos cluster load`` shows them. :func:`read_broker_traffic` is the one
read API; :class:`BrokerTraffic` the typed value it returns.

Znode value (JSON): ``{"at_ms": wall ms of the measurement, "interval_s":
seconds measured, "partitions": {"<topic>/<partition>": [produce B/s,
fetch B/s], ...}}``. About 30 bytes a partition: ZooKeeper's 1 MiB value
limit is reached near 30K partitions on one broker.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError

from talos.clock import SYSTEM_CLOCK, Clock
from talos.coord import paths
from talos.coord.zk import dumps, loads, zk_errors
from talos.errors import CoordinationError, InvalidArgument, TalosError

log = logging.getLogger(__name__)

Partition = tuple[str, int]

#: Default seconds between two reports of a broker (and between two balancing rounds).
DEFAULT_INTERVAL_S = 10.0
MIN_INTERVAL_S = 0.1
MAX_INTERVAL_S = 3600.0


def validate_interval(value: object, param: str = "traffic_interval_s") -> float:
    """Seconds between reports: a finite number in [0.1, 3600]."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not MIN_INTERVAL_S <= value <= MAX_INTERVAL_S
    ):
        raise InvalidArgument(
            f"{param}: must be a number of seconds between {MIN_INTERVAL_S} and "
            f"{MAX_INTERVAL_S}, got {value!r}"
        )
    return float(value)


class ByteCounter:
    """Cumulative bytes into and out of one partition log, and when the first came.

    A rate is measured from the first byte on (see :class:`TrafficWindow`), so a
    partition just taken over is not diluted by the takeover and the clients'
    re-routing. Produce runs on the event loop, fetches on threads: a lock keeps
    the sums exact.
    """

    __slots__ = ("_fetched", "_lock", "_now", "_produced", "created", "first_byte")

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self.created = now()
        #: Monotonic time of the first byte counted (None: idle so far).
        self.first_byte: float | None = None
        self._lock = threading.Lock()
        self._produced = 0
        self._fetched = 0

    def produced(self, nbytes: int) -> None:
        with self._lock:
            self._produced += nbytes
            if self.first_byte is None and nbytes:
                self.first_byte = self._now()

    def fetched(self, nbytes: int) -> None:
        with self._lock:
            self._fetched += nbytes
            if self.first_byte is None and nbytes:
                self.first_byte = self._now()

    def totals(self) -> tuple[int, int]:
        """(produced, fetched) bytes so far."""
        with self._lock:
            return self._produced, self._fetched


@dataclass(frozen=True)
class PartitionRate:
    """Bytes per second of one partition over the last interval."""

    produce: float
    fetch: float

    @property
    def total(self) -> float:
        return self.produce + self.fetch


@dataclass(frozen=True)
class BrokerTraffic:
    """One broker's last report: the rates of the partitions it owned then."""

    broker: str
    at_ms: int
    interval_s: float
    partitions: dict[Partition, PartitionRate] = field(default_factory=dict)

    @property
    def produce_bytes_per_s(self) -> float:
        return sum(rate.produce for rate in self.partitions.values())

    @property
    def fetch_bytes_per_s(self) -> float:
        return sum(rate.fetch for rate in self.partitions.values())

    @property
    def bytes_per_s(self) -> float:
        return self.produce_bytes_per_s + self.fetch_bytes_per_s

    def by_topic(self) -> dict[str, PartitionRate]:
        """Produce and fetch bytes/s summed per topic (per-topic quotas)."""
        sums: dict[str, tuple[float, float]] = {}
        for (topic, _partition), rate in self.partitions.items():
            produce, fetch = sums.get(topic, (0.0, 0.0))
            sums[topic] = (produce + rate.produce, fetch + rate.fetch)
        return {topic: PartitionRate(p, f) for topic, (p, f) in sorted(sums.items())}

    def encode(self) -> bytes:
        return dumps(
            {
                "at_ms": self.at_ms,
                "interval_s": round(self.interval_s, 3),
                "partitions": {
                    paths.partition_key(t, p): [round(r.produce, 1), round(r.fetch, 1)]
                    for (t, p), r in sorted(self.partitions.items())
                },
            }
        )

    @classmethod
    def decode(cls, broker: str, data: bytes | None) -> BrokerTraffic:
        raw: Any = loads(data, f"traffic of broker {broker}")
        try:
            rates = {
                paths.parse_partition_key(key): PartitionRate(float(value[0]), float(value[1]))
                for key, value in raw["partitions"].items()
            }
            return cls(broker, int(raw["at_ms"]), float(raw["interval_s"]), rates)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise CoordinationError(f"traffic of broker {broker}: malformed ({exc!r})") from None


class TrafficWindow:
    """Turns cumulative counters into rates over the time since the previous look.

    A partition log new in this window (taken over meanwhile) is measured from its
    first byte, and left out of the report until that is at least ``min_measured_s``
    ago: a short measurement says little, and the previous figure (reported by the
    old owner) serves meanwhile. An idle new log reports 0 once it is that old.
    """

    def __init__(self, started: float, min_measured_s: float = 0.0) -> None:
        self._last = started
        self._min = min_measured_s
        self._seen: dict[Partition, tuple[ByteCounter, int, int]] = {}

    def advance(
        self, counters: Mapping[Partition, ByteCounter], now: float
    ) -> tuple[float, dict[Partition, PartitionRate]]:
        """(seconds since the previous look, the rates of the partitions measured long enough)."""
        rates: dict[Partition, PartitionRate] = {}
        seen: dict[Partition, tuple[ByteCounter, int, int]] = {}
        for key, counter in counters.items():
            produced, fetched = counter.totals()
            before = self._seen.get(key)
            if before is not None and before[0] is counter:
                base_p, base_f, start = before[1], before[2], self._last
            else:  # a log not reported yet: every byte it counted came after its first
                base_p, base_f = 0, 0
                start = counter.created if counter.first_byte is None else counter.first_byte
                if now - start < self._min:
                    continue  # not yet: counted from its start at the next look
            elapsed = now - start
            if elapsed > 0:
                rates[key] = PartitionRate(
                    (produced - base_p) / elapsed, (fetched - base_f) / elapsed
                )
            else:
                rates[key] = PartitionRate(0.0, 0.0)
            seen[key] = (counter, produced, fetched)
        measured = now - self._last
        self._seen = seen
        self._last = now
        return measured, rates


@dataclass(frozen=True)
class TrafficFigure:
    """The latest bytes/s known for one partition, and who measured it when."""

    bytes_per_s: float
    at_ms: int
    broker: str


def merge_traffic(
    known: Mapping[Partition, TrafficFigure],
    reports: Mapping[str, BrokerTraffic],
    now_ms: int,
    max_age_ms: int,
) -> dict[Partition, TrafficFigure]:
    """The newest figure of every partition (a pure decision).

    Traffic follows the partition: right after a move the new owner has not
    reported it yet, so the figure its old owner reported stands until a newer one
    comes. Figures older than ``max_age_ms`` are dropped (a partition nobody
    reports any more: deleted, or on a broker that stopped reporting).
    """
    result = {p: f for p, f in known.items() if now_ms - f.at_ms <= max_age_ms}
    for report in sorted(reports.values(), key=lambda r: (r.at_ms, r.broker)):
        if now_ms - report.at_ms > max_age_ms:
            continue
        for key, rate in report.partitions.items():
            current = result.get(key)
            if current is None or report.at_ms >= current.at_ms:
                result[key] = TrafficFigure(rate.total, report.at_ms, report.broker)
    return result


def unreported(
    live_brokers: Iterable[str], reports: Mapping[str, BrokerTraffic], now_ms: int, max_age_ms: int
) -> list[str]:
    """The live brokers without a report younger than ``max_age_ms`` (just started, or
    stalled): until they report, their partitions' traffic is unknown, not zero."""
    return sorted(
        b for b in set(live_brokers) if b not in reports or now_ms - reports[b].at_ms > max_age_ms
    )


def read_broker_traffic(zk: KazooClient) -> dict[str, BrokerTraffic]:
    """Every live broker's last report, by broker id (a malformed one is skipped, logged)."""
    result: dict[str, BrokerTraffic] = {}
    with zk_errors("reading broker traffic"):
        try:
            children = zk.get_children(paths.TRAFFIC)
        except NoNodeError:
            return {}
        for broker in sorted(children):
            try:
                data, _stat = zk.get(paths.traffic(broker))
            except NoNodeError:
                continue  # its session ended meanwhile
            try:
                result[broker] = BrokerTraffic.decode(broker, data)
            except CoordinationError as exc:
                log.warning("%s", exc)
    return result


def write_broker_traffic(zk: KazooClient, report: BrokerTraffic) -> None:
    """Set the broker's ephemeral report znode, creating it (and /traffic) if needed."""
    path = paths.traffic(report.broker)
    data = report.encode()
    with zk_errors(f"reporting the traffic of broker {report.broker}"):
        try:
            zk.set(path, data)
            return
        except NoNodeError:
            pass
        zk.ensure_path(paths.TRAFFIC)
        try:
            zk.create(path, data, ephemeral=True)
        except NodeExistsError:  # created meanwhile (a previous session not yet expired)
            zk.set(path, data)


class TrafficReporter:
    """Writes this broker's per-partition rates every ``interval_s`` seconds.

    ``counters`` returns the counters of the partitions the broker serves now.
    """

    def __init__(
        self,
        zk: KazooClient,
        broker_id: str,
        counters: Callable[[], Mapping[Partition, ByteCounter]],
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._zk = zk
        self._broker_id = broker_id
        self._counters = counters
        self._interval = validate_interval(interval_s)
        self._clock = clock
        self._window = TrafficWindow(clock.monotonic(), min_measured_s=self._interval / 2)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: The last report written (None before the first).
        self.last: BrokerTraffic | None = None

    def measure(self) -> BrokerTraffic:
        """The rates since the previous measurement (advances the window)."""
        measured, rates = self._window.advance(self._counters(), self._clock.monotonic())
        return BrokerTraffic(self._broker_id, self._clock.wall_ms(), measured, rates)

    def report_once(self) -> BrokerTraffic:
        report = self.measure()
        write_broker_traffic(self._zk, report)
        self.last = report
        return report

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"talos-traffic-{self._broker_id}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.report_once()
            except TalosError as exc:  # ZooKeeper away: the next interval tries again
                log.warning("broker %s: %s", self._broker_id, exc)
            except Exception:
                log.exception("broker %s: traffic report failed", self._broker_id)
