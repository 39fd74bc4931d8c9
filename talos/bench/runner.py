"""One benchmark run: a cluster (ours or the caller's), a fresh topic, worker pools, figures.

``produce`` times send() to acknowledgement; ``consume`` loads the topic first
and then times reading it from the beginning; ``e2e`` produces at a fixed rate
while consumers read from the end, timing produce-time to poll.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from talos.client import Admin
from talos.config import DURABILITY_LEVELS, TopicConfig
from talos.errors import InvalidArgument, TopicExists
from talos.record.codec import parse_codec

from .pacing import STAMP_BYTES
from .pool import Pool, WorkResult, combine
from .progress import Progress
from .stats import Summary, percentile, summarize
from .talos_load import ConsumeSpec, ProduceSpec, consume, produce

MODES = ("produce", "consume", "e2e")
# Flat out, one send in this many is timed: a timing callback costs about as much
# as a send, so the share must not depend on the run length (0.2% here, whether a
# run sends 100K or 4M messages).
FLAT_OUT_SAMPLE_EVERY = 512
# Paced, every send is timed up to this offered rate; above it, this many a second.
PACED_TIMED_PER_S = 20_000


@dataclass(frozen=True)
class BenchConfig:
    mode: str = "produce"
    bootstrap: str | None = None  # None: start a LocalCluster of ``brokers`` brokers
    brokers: int = 1
    store: str = "posix"  # the log store of the cluster started here: posix or hdfs
    secure: bool = False  # the cluster started here serves TLS and requires tokens
    size: int = 100
    messages: int = 0  # 0: run for ``duration`` seconds
    duration: float = 0.0
    producers: int = 1
    consumers: int = 1
    rate: float = 0.0  # total offered messages/s; 0: as fast as possible
    linger_ms: float = 5.0
    batch_bytes: int = 256 * 1024
    compression: str = "none"
    durability: str = "flush"
    partitions: int = 4
    topic: str | None = None
    max_in_flight: int = 5
    fetch_bytes: int = 4 * 1024 * 1024
    progress: bool = True
    preload: bool = True  # consume: produce ``messages`` first; else read the topic as it is
    name: str = ""
    timeout: float = 600.0

    def validated(self) -> BenchConfig:
        if self.mode not in MODES:
            raise InvalidArgument(f"mode: must be one of {', '.join(MODES)}, got {self.mode!r}")
        _check(self.brokers, "brokers", 1, 16)
        if self.store not in ("posix", "hdfs"):
            raise InvalidArgument(f"store: must be posix or hdfs, got {self.store!r}")
        if self.secure and self.bootstrap:
            raise InvalidArgument(
                "secure: applies to the cluster started here; against --bootstrap pass "
                "--tls-ca and --token (or TALOS_TLS_CA and TALOS_TOKEN) instead"
            )
        _check(self.size, "size", 0, 16 * 1024 * 1024)
        _check(self.messages, "messages", 0, 10**12)
        if self.duration < 0 or (self.messages == 0 and self.duration <= 0 and self.preload):
            raise InvalidArgument("messages/duration: give a message count or a duration > 0 s")
        _check(self.producers, "producers", 1, 64)
        _check(self.consumers, "consumers", 1, 64)
        if self.rate < 0:
            raise InvalidArgument(f"rate: must be >= 0 messages/s, got {self.rate}")
        if self.linger_ms < 0 or self.linger_ms > 60_000:
            raise InvalidArgument(f"linger_ms: must be between 0 and 60000, got {self.linger_ms}")
        parse_codec(self.compression)
        if self.durability not in DURABILITY_LEVELS:
            raise InvalidArgument(
                f"durability: must be one of {', '.join(DURABILITY_LEVELS)}, "
                f"got {self.durability!r}"
            )
        _check(self.partitions, "partitions", 1, 1024)
        if self.mode == "e2e" and self.size < STAMP_BYTES:
            raise InvalidArgument(f"size: e2e needs messages of at least {STAMP_BYTES} bytes")
        if self.mode == "consume" and self.messages == 0 and self.preload:
            raise InvalidArgument("messages: consume needs a message count to load and read")
        if not self.preload and not self.topic:
            raise InvalidArgument("topic: reading without loading first needs an existing topic")
        return self

    def label(self) -> str:
        if self.name:
            return self.name
        rate = f" @{self.rate:,.0f}/s" if self.rate else ""
        return (
            f"talos {self.mode} {self.size} B x{self.producers}{rate} "
            f"({self.durability}, {self.brokers if not self.bootstrap else '?'} broker(s)"
            f"{', hdfs' if self.store == 'hdfs' and not self.bootstrap else ''})"
        )


def _check(value: int, param: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"{param}: must be an integer from {low} to {high}, got {value!r}")


@dataclass
class Target:
    bootstrap: str
    broker_pids: list[int] = field(default_factory=list)


@contextlib.contextmanager
def target(config: BenchConfig) -> Iterator[Target]:
    """The caller's cluster, or a LocalCluster started here and always stopped."""
    if config.bootstrap:
        yield Target(config.bootstrap)
        return
    from talos.testing.cluster import LocalCluster
    from talos.testing.hdfs import MiniDfsCluster

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="talos-bench-"))
        store = ""
        if config.store == "hdfs":  # a MiniDFSCluster of 3 DataNodes beside the brokers
            dfs = stack.enter_context(MiniDfsCluster(3, str(Path(tmp) / "hdfs"), quick_start=False))
            store = dfs.url("/talos")
        security = None
        if config.secure:  # a throwaway CA; clients here and in the workers use its admin token
            from talos.security.dev import ClusterSecurity

            security = ClusterSecurity.generate(Path(tmp) / "pki")
        cluster = LocalCluster(
            brokers=config.brokers,
            data_dir=str(Path(tmp) / "cluster"),
            store=store,
            security=security,
        )
        try:
            cluster.start()
            if security is not None:
                stack.enter_context(_client_env(security.pki.ca, cluster.admin_token_file))
            yield Target(cluster.bootstrap, [b.pid for b in cluster.brokers])
        finally:
            cluster.stop()


@contextlib.contextmanager
def _client_env(ca: str, token_file: str) -> Iterator[None]:
    """Clients built here and in the spawned workers read their credentials from it."""
    from talos.security.tls import ENV_CA, ENV_TOKEN, ENV_TOKEN_FILE

    saved = {name: os.environ.get(name) for name in (ENV_CA, ENV_TOKEN, ENV_TOKEN_FILE)}
    os.environ.pop(ENV_TOKEN, None)
    os.environ.update({ENV_CA: ca, ENV_TOKEN_FILE: token_file})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def create_topic(bootstrap: str, config: BenchConfig) -> str:
    name = config.topic or f"bench-{uuid.uuid4().hex[:8]}"
    with Admin(bootstrap) as admin:
        try:
            admin.create_topic(name, config.partitions, TopicConfig(durability=config.durability))
        except TopicExists:
            if not config.topic:
                raise
        admin.wait_until_ready(name, timeout_s=60)
    return name


def rss_mb(pid: int) -> float:
    """Resident set size of a process from /proc (NaN when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return math.nan


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def latency_sample_every(rate: float, stamp: bool) -> int:
    """One send in how many a producer times: a bounded share, whatever the run length."""
    if stamp:
        return 1  # end-to-end: consumers time every message from its stamp
    if rate:
        return max(1, math.ceil(rate / PACED_TIMED_PER_S))
    return FLAT_OUT_SAMPLE_EVERY


def produce_specs(
    config: BenchConfig, bootstrap: str, topic: str, stamp: bool
) -> list[ProduceSpec]:
    counts = _split(config.messages, config.producers) if config.messages else None
    per_rate = config.rate / config.producers if config.rate else 0.0
    sample_every = latency_sample_every(config.rate, stamp)
    return [
        ProduceSpec(
            bootstrap=bootstrap,
            topic=topic,
            size=config.size,
            messages=counts[i] if counts else 0,
            duration=config.duration,
            rate=per_rate,
            linger_ms=config.linger_ms,
            batch_bytes=config.batch_bytes,
            compression=config.compression,
            max_in_flight=config.max_in_flight,
            sample_every=sample_every,
            stamp=stamp,
            seed=7 + i,
        )
        for i in range(config.producers)
        if not counts or counts[i] > 0
    ]


def consume_specs(
    config: BenchConfig, bootstrap: str, topic: str, expected: dict[int, int], from_end: bool
) -> list[ConsumeSpec]:
    consumers = min(config.consumers, config.partitions)
    specs = []
    for i in range(consumers):
        partitions = tuple(range(i, config.partitions, consumers))
        specs.append(
            ConsumeSpec(
                bootstrap=bootstrap,
                topic=topic,
                partitions=partitions,
                size=config.size,
                expected=sum(expected.get(p, 0) for p in partitions),
                fetch_bytes=config.fetch_bytes,
                from_end=from_end,
                stamp=from_end,
                timeout=config.timeout,
            )
        )
    return specs


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process from /proc (NaN when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return math.nan


class Sampler:
    """Broker RSS and CPU while a run goes on (RSS: peak over the progress-bar samples)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.peak: dict[int, float] = {}
        self.restart()

    def restart(self) -> None:
        """CPU is counted from here (the start of the timed part) to :meth:`finish`."""
        self._cpu0 = {pid: cpu_seconds(pid) for pid in self.pids}
        self._t0 = time.monotonic()
        self._cpu = math.nan
        self._elapsed = 0.0

    def finish(self) -> None:
        self._elapsed = max(time.monotonic() - self._t0, 1e-9)
        self._cpu = sum(cpu_seconds(pid) - self._cpu0[pid] for pid in self.pids)

    def sample(self) -> None:
        for pid in self.pids:
            value = rss_mb(pid)
            if not math.isnan(value):
                self.peak[pid] = max(self.peak.get(pid, 0.0), value)

    def figures(self) -> dict[str, Any]:
        if not self.peak:
            return {}
        if math.isnan(self._cpu):
            self.finish()
        cores = self._cpu / self._elapsed
        return {
            "broker_rss_mb_peak": round(max(self.peak.values()), 1),
            "broker_cpu_cores": None if math.isnan(cores) else round(cores, 2),
        }


def drive(
    pools: Sequence[Pool],
    measured: Pool,
    progress: Progress,
    sampler: Sampler,
    timeout: float,
    then_stop: Sequence[Pool] = (),
) -> list[WorkResult]:
    """Start every pool together, show progress of ``measured``, collect its results."""
    for pool in pools:
        pool.start()
    for pool in pools:
        pool.wait_ready()
    progress.start = time.monotonic()
    for pool in pools:
        pool.go()
    sampler.restart()
    deadline = time.monotonic() + timeout
    while not measured.done() and time.monotonic() < deadline:
        progress.update(measured.progress())
        sampler.sample()
        time.sleep(0.1)
    results = measured.results(timeout=max(deadline - time.monotonic(), 10))
    sampler.finish()
    progress.close(sum(r.messages for r in results))
    for pool in then_stop:
        pool.stop()
    return results


def run(config: BenchConfig, where: Target | None = None) -> Summary:
    """One run against ``where`` (a running cluster), else per ``config``'s bootstrap/brokers."""
    config = config.validated()
    with contextlib.ExitStack() as stack:
        if where is None:
            where = stack.enter_context(target(config))
        topic = create_topic(where.bootstrap, config)
        sampler = Sampler(where.broker_pids)
        if config.mode == "produce":
            summary = _run_produce(config, where.bootstrap, topic, sampler)
        elif config.mode == "consume":
            summary = _run_consume(config, where.bootstrap, topic, sampler)
        else:
            summary = _run_e2e(config, where.bootstrap, topic, sampler)
        summary.extra.update(sampler.figures())
        summary.extra["topic"] = topic
        summary.extra["config"] = {
            k: v for k, v in config.__dict__.items() if k not in ("progress", "name")
        }
        return summary


def _run_produce(config: BenchConfig, bootstrap: str, topic: str, sampler: Sampler) -> Summary:
    with Pool(produce, produce_specs(config, bootstrap, topic, stamp=False), "producers") as pool:
        progress = Progress(
            "produce", config.messages or None, config.duration or None, enabled=config.progress
        )
        results = drive([pool], pool, progress, sampler, config.timeout)
    messages, nbytes, seconds, latencies, errors = combine(results)
    summary = summarize(
        config.label(), messages, nbytes, seconds, latencies, errors, cdf=config.rate > 0
    )
    summary.extra["requests"] = sum(r.extra.get("requests", 0) for r in results)
    summary.extra["batches"] = sum(r.extra.get("batches_sent", 0) for r in results)
    return summary


def _log_ends(bootstrap: str, topic: str) -> dict[int, int]:
    with Admin(bootstrap) as admin:
        return {p.partition: max(p.log_end, 0) for p in admin.describe_topic(topic).partitions}


def _run_consume(config: BenchConfig, bootstrap: str, topic: str, sampler: Sampler) -> Summary:
    loaded: list[WorkResult] = []
    if config.preload:
        load = replace(config, rate=0.0, duration=0.0)
        with Pool(produce, produce_specs(load, bootstrap, topic, stamp=False), "loaders") as pool:
            progress = Progress("load", config.messages, enabled=config.progress)
            loaded = drive([pool], pool, progress, sampler, config.timeout)
    expected = _log_ends(bootstrap, topic)
    specs = consume_specs(config, bootstrap, topic, expected, from_end=False)
    with Pool(consume, specs, "consumers") as pool:
        progress = Progress("consume", sum(expected.values()), enabled=config.progress)
        results = drive([pool], pool, progress, sampler, config.timeout)
    messages, nbytes, seconds, _latencies, errors = combine(results)
    summary = summarize(config.label(), messages, nbytes, seconds, (), errors)
    if loaded:
        lm, lb, ls, _l, _e = combine(loaded)
        summary.extra["load_msgs_per_s"] = round(lm / ls)
        summary.extra["load_mb_per_s"] = round(lb / ls / 1e6, 1)
    return summary


def _run_e2e(config: BenchConfig, bootstrap: str, topic: str, sampler: Sampler) -> Summary:
    specs = consume_specs(config, bootstrap, topic, {}, from_end=True)
    produce_pool = Pool(produce, produce_specs(config, bootstrap, topic, stamp=True), "producers")
    with Pool(consume, specs, "consumers") as consumers, produce_pool as producers:
        progress = Progress(
            "e2e", config.messages or None, config.duration or None, enabled=config.progress
        )
        sent = drive(
            [consumers, producers], producers, progress, sampler, config.timeout, [consumers]
        )
        received = consumers.results(timeout=60)
    messages, _b, seconds, produce_latencies, errors = combine(sent)
    got, nbytes, _s, latencies, _e = combine(received)
    summary = summarize(config.label(), got, nbytes, seconds, latencies, errors)
    summary.extra["sent"] = messages
    produce_ordered = sorted(produce_latencies)
    if produce_ordered:
        summary.extra["produce_p99_ms"] = round(percentile(produce_ordered, 99), 3)
    return summary


def write_json(path: str, summaries: Sequence[Summary]) -> None:
    data = [s.to_dict() for s in summaries]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data if len(data) > 1 else data[0], indent=2) + "\n")
