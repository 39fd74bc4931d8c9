"""`make bench`: Talos against NATS JetStream, Redis Streams and Kafka 4, tables, JSON, a chart.

Run from the repository root: ``.venv/bin/python -m bench.compare``. It starts a
Talos local cluster (ZooKeeper + broker processes, as ``talos dev up`` does),
nats-server, redis-server and a one-node Kafka (KRaft) on loopback, drives all of them with the same
load shape (talos.bench.pool worker processes), and stops every process it
started, whatever happens. See bench/README.md for what differs between them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from talos.bench.pool import Pool, Worker
from talos.bench.progress import Progress
from talos.bench.runner import BenchConfig, Sampler, Target, drive, run
from talos.bench.stats import Summary, format_summary, format_table, summarize
from talos.testing.cluster import LocalCluster
from talos.testing.kafka import KafkaServer, jars_dir, kafka_available

from .kafka_rows import CLIENTS, KafkaRuns, kafka_table
from .peer_load import (
    PeerSpec,
    ensure_nats_stream,
    nats_consume,
    nats_produce,
    redis_consume,
    redis_produce,
)
from .servers import NatsServer, RedisServer

RESULTS = Path(__file__).parent / "results"
PARTITIONS = 4


def machine() -> dict[str, Any]:
    def cmd(*args: str) -> str:
        try:
            out = subprocess.run(args, capture_output=True, text=True, timeout=10).stdout
            return out.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    model = ""
    for line in cmd("lscpu").splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nats_server": cmd("nats-server", "--version"),
        "redis_server": cmd("redis-server", "--version").split(" sha=")[0],
        "kafka": " ".join(sorted(p.name for p in jars_dir().glob("kafka_2.13-*.jar"))),
        # Anything else running shares the two cores: say how busy the machine was.
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
    }


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.results: dict[str, Summary] = {}

    def log(self, summary: Summary) -> None:
        print(format_summary(summary), flush=True)

    # ---- Talos ---------------------------------------------------------------

    def talos(self, key: str, where: Target, **overrides: Any) -> Summary:
        config = BenchConfig(
            mode=overrides.pop("mode", "produce"),
            bootstrap=where.bootstrap,
            duration=overrides.pop("duration", self.args.duration),
            producers=overrides.pop("producers", self.args.producers),
            consumers=overrides.pop("consumers", self.args.producers),
            partitions=PARTITIONS,
            name=key,
            progress=not self.args.no_progress,
            **overrides,
        )
        summary = run(config, where)
        self.results[key] = summary
        self.log(summary)
        return summary

    # ---- peers ---------------------------------------------------------------

    def peer(
        self,
        key: str,
        fn: Worker,
        specs: Sequence[PeerSpec],
        pids: Sequence[int],
        cdf: bool = False,
    ) -> Summary:
        sampler = Sampler(pids)
        with Pool(fn, specs, key) as pool:
            progress = Progress(
                key, None, specs[0].duration or None, enabled=not self.args.no_progress
            )
            results = drive([pool], pool, progress, sampler, 900)
        messages = sum(r.messages for r in results)
        nbytes = sum(r.bytes for r in results)
        seconds = max(r.finished for r in results) - min(r.started for r in results)
        latencies = [x for r in results for x in r.latencies_ms]
        errors = sum(r.errors for r in results)
        summary = summarize(key, messages, nbytes, max(seconds, 1e-9), latencies, errors, cdf=cdf)
        summary.extra.update(sampler.figures())
        self.results[key] = summary
        self.log(summary)
        return summary

    def peer_produce_specs(
        self, url: str, stream: str, size: int, rate: float = 0.0, producers: int | None = None
    ) -> list[PeerSpec]:
        n = producers or self.args.producers
        return [
            PeerSpec(
                url=url,
                stream=stream,
                partitions=tuple(range(PARTITIONS)),
                size=size,
                messages=0,
                duration=self.args.latency_duration if rate else self.args.duration,
                rate=rate / n if rate else 0.0,
                sample_every=1 if rate else 100,
                seed=7 + i,
            )
            for i in range(n)
        ]

    def peer_consume_specs(self, url: str, stream: str, size: int) -> list[PeerSpec]:
        n = min(self.args.producers, PARTITIONS)
        return [
            PeerSpec(
                url=url,
                stream=stream,
                partitions=tuple(range(i, PARTITIONS, n)),
                size=size,
                messages=0,
                duration=0.0,
                rate=0.0,
                sample_every=0,
            )
            for i in range(n)
        ]


def run_all(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    bench = Bench(args, workdir)
    with ExitStack() as stack:
        cluster = LocalCluster(brokers=1, data_dir=str(workdir / "talos-1"))
        stack.callback(cluster.stop)
        cluster.start()
        one = Target(cluster.bootstrap, [b.pid for b in cluster.brokers])
        peers = not args.talos_only
        if peers:
            nats = NatsServer(workdir)
            stack.callback(nats.stop)
            nats.start()
            redis = RedisServer(workdir)
            stack.callback(redis.stop)
            redis.start()
            kafka_server = KafkaServer(data_dir=str(workdir / "kafka"), partitions=PARTITIONS)
            stack.callback(kafka_server.stop)
            kafka_server.start()
            kafka = KafkaRuns(bench, kafka_server, PARTITIONS)

        # 1. Batched produce throughput, 100 B and 1 KB.
        topics: dict[str, str] = {}
        for size, tag in ((100, "100B"), (1024, "1KB")):
            for durability in ("flush", "sync"):
                key = f"produce {tag} talos-{durability}"
                summary = bench.talos(key, one, size=size, durability=durability)
                topics[key] = str(summary.extra["topic"])
            if peers:
                stream = f"p{tag}"
                asyncio.run(ensure_nats_stream(nats.url, stream, PARTITIONS))
                bench.peer(
                    f"produce {tag} nats",
                    nats_produce,
                    bench.peer_produce_specs(nats.url, stream, size),
                    [nats.pid],
                )
                bench.peer(
                    f"produce {tag} redis",
                    redis_produce,
                    bench.peer_produce_specs(redis.url, stream, size),
                    [redis.pid],
                )
                kafka.produce(size, tag)

        # 1b. The same 100 B produce load from one client process.
        bench.talos(
            "produce 100B talos-flush 1 producer", one, size=100, durability="flush", producers=1
        )
        if peers:
            for name, fn, server in (("nats", nats_produce, nats), ("redis", redis_produce, redis)):
                bench.peer(
                    f"produce 100B {name} 1 producer",
                    fn,
                    bench.peer_produce_specs(server.url, "p100B", 100, producers=1),
                    [server.pid],
                )
            kafka.produce(100, "100B", producers=1)

        # 2. Consume throughput: read back what the 100 B runs wrote, from the start.
        bench.talos(
            "consume 100B talos",
            one,
            mode="consume",
            size=100,
            topic=topics["produce 100B talos-flush"],
            preload=False,
            messages=0,
            duration=0.0,
        )
        if peers:
            bench.peer(
                "consume 100B nats",
                nats_consume,
                bench.peer_consume_specs(nats.url, "p100B", 100),
                [nats.pid],
            )
            bench.peer(
                "consume 100B redis",
                redis_consume,
                bench.peer_consume_specs(redis.url, "p100B", 100),
                [redis.pid],
            )
            kafka.consume()

        # 3. Produce latency at a fixed offered rate, one producer, one request at a time.
        rate = float(args.rate)
        for durability in ("flush", "sync"):
            bench.talos(
                f"latency {args.rate}/s talos-{durability}",
                one,
                size=100,
                durability=durability,
                rate=rate,
                producers=1,
                linger_ms=0.0,
                duration=args.latency_duration,
            )
        if peers:
            asyncio.run(ensure_nats_stream(nats.url, "lat", PARTITIONS))
            bench.peer(
                f"latency {args.rate}/s nats",
                nats_produce,
                bench.peer_produce_specs(nats.url, "lat", 100, rate=rate, producers=1),
                [nats.pid],
                cdf=True,
            )
            bench.peer(
                f"latency {args.rate}/s redis",
                redis_produce,
                bench.peer_produce_specs(redis.url, "lat", 100, rate=rate, producers=1),
                [redis.pid],
                cdf=True,
            )
            kafka.latency(args.rate)

        # 4. Broker memory at an offered 100K msg/s.
        bench.talos(
            "rss at 100K msg/s talos-flush",
            one,
            size=100,
            rate=100_000.0,
            duration=args.latency_duration,
        )

    # 5. One broker process against two (a new cluster, the same load).
    with ExitStack() as stack:
        two = LocalCluster(brokers=2, data_dir=str(workdir / "talos-2"))
        stack.callback(two.stop)
        two.start()
        where = Target(two.bootstrap, [b.pid for b in two.brokers])
        bench.talos("produce 100B talos-flush 2 brokers", where, size=100, durability="flush")
        bench.talos(
            "produce 100B talos-flush 2 brokers 4 producers",
            where,
            size=100,
            durability="flush",
            producers=4,
        )

    return {
        "machine": machine(),
        "settings": {
            "producers": args.producers,
            "duration_s": args.duration,
            "partitions": PARTITIONS,
            "latency_rate": args.rate,
            "latency_duration_s": args.latency_duration,
        },
        "results": {k: v.to_dict() for k, v in bench.results.items()},
    }


def _get(data: dict[str, Any], key: str, field: str = "msgs_per_s") -> float:
    entry = data["results"].get(key)
    if entry is None or entry.get(field) is None:
        return math.nan
    return float(entry[field])


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def table(data: dict[str, Any]) -> str:
    rows: list[list[object]] = []
    rate = data["settings"]["latency_rate"]
    lines = [
        ("produce 100B msg/s", "produce 100B", "msgs_per_s"),
        ("produce 1KB msg/s", "produce 1KB", "msgs_per_s"),
        ("produce 1KB MB/s", "produce 1KB", "mb_per_s"),
        (f"p99 ms @{rate}/s", f"latency {rate}/s", "p99_ms"),
        (f"p50 ms @{rate}/s", f"latency {rate}/s", "p50_ms"),
    ]
    for label, prefix, field in lines:
        flush = _get(data, f"{prefix} talos-flush", field)
        sync = _get(data, f"{prefix} talos-sync", field)
        nats = _get(data, f"{prefix} nats", field)
        redis = _get(data, f"{prefix} redis", field)
        rows.append([label, flush, sync, nats, redis, _ratio(flush, nats), _ratio(flush, redis)])
    consume = _get(data, "consume 100B talos")
    nats = _get(data, "consume 100B nats")
    redis = _get(data, "consume 100B redis")
    rows.append(
        [
            "consume 100B msg/s",
            consume,
            None,
            nats,
            redis,
            _ratio(consume, nats),
            _ratio(consume, redis),
        ]
    )
    headers = ["metric", "talos flush", "talos sync", "NATS JS", "Redis", "x NATS", "x Redis"]
    out = [format_table(headers, rows)]
    one = _get(data, "produce 100B talos-flush")
    two = _get(data, "produce 100B talos-flush 2 brokers")
    two4 = _get(data, "produce 100B talos-flush 2 brokers 4 producers")
    rss = _get(data, "rss at 100K msg/s talos-flush", "msgs_per_s")
    rss_mb = (
        data["results"]
        .get("rss at 100K msg/s talos-flush", {})
        .get("extra", {})
        .get("broker_rss_mb_peak")
    )
    out.append("")
    out.append(
        f"talos produce 100B flush: 1 broker {one:,.0f} msg/s; 2 brokers {two:,.0f} msg/s "
        f"(x{_ratio(two, one):.2f}); 2 brokers, 4 producers {two4:,.0f} msg/s"
    )
    out.append(f"talos broker RSS peak at {rss:,.0f} msg/s offered 100K: {rss_mb} MB")
    out += ["", kafka_table(data)]
    return "\n".join(out)


def chart(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [
        ("talos-flush", "Talos (flush)"),
        ("talos-sync", "Talos (sync)"),
        ("nats", "NATS JetStream"),
        ("redis", "Redis Streams"),
        *CLIENTS.items(),
    ]
    groups = [
        ("produce 100B", "produce 100 B"),
        ("produce 1KB", "produce 1 KB"),
        ("consume 100B", "consume 100 B"),
    ]
    fig, (bars, cdf) = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.8 / len(systems)
    for i, (sys_key, sys_label) in enumerate(systems):
        values = []
        for prefix, _ in groups:
            key = f"{prefix} {sys_key}"
            if prefix.startswith("consume") and sys_key.startswith("talos"):
                key = "consume 100B talos" if sys_key == "talos-flush" else ""
            values.append(_get(data, key) / 1000 if key else 0.0)
        xs = [g + (i - (len(systems) - 1) / 2) * width for g in range(len(groups))]
        bars.bar(xs, [0 if math.isnan(v) else v for v in values], width, label=sys_label)
    bars.set_xticks(range(len(groups)), [label for _, label in groups])
    bars.set_ylabel("thousand messages/s")
    bars.set_title(f"Throughput ({data['settings']['producers']} client processes, 2 cores)")
    bars.legend()
    rate = data["settings"]["latency_rate"]
    for sys_key, sys_label in systems:
        entry = data["results"].get(f"latency {rate}/s {sys_key}")
        points = (entry or {}).get("extra", {}).get("cdf")
        if points:
            cdf.plot([p[0] for p in points], [p[1] for p in points], label=sys_label)
    cdf.set_xscale("log")
    cdf.set_xlabel("produce latency, ms (log)")
    cdf.set_ylabel("fraction of messages")
    cdf.set_title(f"Latency CDF at {rate:,} msg/s offered, 100 B, one producer")
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.compare", description=__doc__)
    parser.add_argument("--producers", type=int, default=2, help="client processes per run")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per throughput run")
    parser.add_argument("--rate", type=int, default=5000, help="offered msg/s for latency")
    parser.add_argument("--latency-duration", type=float, default=10.0)
    parser.add_argument("--talos-only", action="store_true", help="skip NATS, Redis and Kafka")
    parser.add_argument("--out", default=str(RESULTS), help="directory for latest.json/png")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not args.talos_only:
        missing = [s.binary for s in (NatsServer, RedisServer) if not s.available()]
        missing += [m for m in ("confluent_kafka", "aiokafka") if find_spec(m) is None]
        if kafka_available() is not None:
            missing.append(str(kafka_available()))
        if missing:
            print(f"bench: {', '.join(missing)} missing: run `make bench-deps`", file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="talos-compare-", dir=os.environ.get("BENCH_DIR")))
    started = time.time()
    load_at_start = round(os.getloadavg()[0], 2)
    try:
        data = run_all(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    data["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    data["machine"]["loadavg_1m_at_start"] = load_at_start
    data["command"] = (
        "make bench  (.venv/bin/python -m bench.compare "
        + " ".join(sys.argv[1:] if argv is None else argv)
        + ")"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(data, indent=2) + "\n")
    text = table(data)
    (out / "latest.txt").write_text(text + "\n")
    print()
    print(text)
    chart(data, out / "latest.png")
    print(f"\nwrote {out / 'latest.json'}, {out / 'latest.txt'} and {out / 'latest.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
