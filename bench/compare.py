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
import signal
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

from .best import Best, best_of, best_peer, ratio, run_key, single
from .kafka_rows import CLIENTS, KafkaRuns
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

    @staticmethod
    def settle_writeback() -> None:
        """Before a paced (latency) run: write back what earlier runs left dirty.

        The throughput runs leave gigabytes of dirty pages; while the kernel writes
        them back, a write() into the page cache can be throttled, and whichever
        system's latency run comes first would measure the runs before it. (Talos's
        flush run, the first, once got p99 45 ms and max 145 ms against 4.7 ms in
        the run before; writeback is the likely cause, not a proven one.) Every
        system's latency run starts after one.
        """
        os.sync()

    # ---- Talos ---------------------------------------------------------------

    def talos(self, key: str, where: Target, **overrides: Any) -> Summary:
        config = BenchConfig(
            mode=overrides.pop("mode", "produce"),
            bootstrap=where.bootstrap,
            duration=overrides.pop("duration", self.args.duration),
            producers=overrides.pop("producers", 1),
            consumers=overrides.pop("consumers", 1),
            partitions=PARTITIONS,
            name=key,
            progress=not self.args.no_progress,
            **overrides,
        )
        if config.rate:
            self.settle_writeback()
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
        if specs[0].rate:  # a paced run, as the Talos ones above
            self.settle_writeback()
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
        self, url: str, stream: str, size: int, producers: int, rate: float = 0.0
    ) -> list[PeerSpec]:
        n = producers
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

    def peer_consume_specs(
        self, url: str, stream: str, size: int, consumers: int
    ) -> list[PeerSpec]:
        n = min(consumers, PARTITIONS)
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
    counts: tuple[int, ...] = args.processes
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

        # 1. Batched produce throughput, 100 B and 1 KB, every system at each process count.
        topics: dict[str, str] = {}
        for size, tag in ((100, "100B"), (1024, "1KB")):
            row = f"produce {tag}"
            if peers:
                asyncio.run(ensure_nats_stream(nats.url, f"p{tag}", PARTITIONS))
            for n in counts:
                for durability in ("flush", "sync"):
                    key = run_key(row, f"talos-{durability}", n)
                    summary = bench.talos(key, one, size=size, durability=durability, producers=n)
                    topics[key] = str(summary.extra["topic"])
                if not peers:
                    continue
                for name, fn, server in (
                    ("nats", nats_produce, nats),
                    ("redis", redis_produce, redis),
                ):
                    bench.peer(
                        run_key(row, name, n),
                        fn,
                        bench.peer_produce_specs(server.url, f"p{tag}", size, producers=n),
                        [server.pid],
                    )
                kafka.produce(size, tag, n)

        # 2. Consume throughput: read back what the largest 100 B produce run wrote.
        source = run_key("produce 100B", "talos-flush", max(counts))
        for n in counts:
            bench.talos(
                run_key("consume 100B", "talos", n),
                one,
                mode="consume",
                size=100,
                topic=topics[source],
                preload=False,
                messages=0,
                duration=0.0,
                consumers=n,
            )
            if not peers:
                continue
            for name, fn, server in (
                ("nats", nats_consume, nats),
                ("redis", redis_consume, redis),
            ):
                bench.peer(
                    run_key("consume 100B", name, n),
                    fn,
                    bench.peer_consume_specs(server.url, "p100B", 100, consumers=n),
                    [server.pid],
                )
            kafka.consume(n, max(counts))

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
                bench.peer_produce_specs(nats.url, "lat", 100, producers=1, rate=rate),
                [nats.pid],
                cdf=True,
            )
            bench.peer(
                f"latency {args.rate}/s redis",
                redis_produce,
                bench.peer_produce_specs(redis.url, "lat", 100, producers=1, rate=rate),
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
            producers=max(counts),
        )

    # 5. One broker process against two (a new cluster, the same load).
    with ExitStack() as stack:
        two = LocalCluster(brokers=2, data_dir=str(workdir / "talos-2"))
        stack.callback(two.stop)
        two.start()
        where = Target(two.bootstrap, [b.pid for b in two.brokers])
        n = max(counts)
        bench.talos(
            f"produce 100B talos-flush 2 brokers p{n}",
            where,
            size=100,
            durability="flush",
            producers=n,
        )
        bench.talos(
            f"produce 100B talos-flush 2 brokers p{2 * n}",
            where,
            size=100,
            durability="flush",
            producers=2 * n,
        )

    return {
        "machine": machine(),
        "settings": {
            "processes": list(counts),
            "duration_s": args.duration,
            "partitions": PARTITIONS,
            "latency_rate": args.rate,
            "latency_duration_s": args.latency_duration,
            "run_length": run_length(args),
        },
        "results": {k: v.to_dict() for k, v in bench.results.items()},
    }


def run_length(args: argparse.Namespace) -> str:
    """What every figure of one `make bench` run was measured over, for the table and the chart."""
    counts = "/".join(str(n) for n in args.processes)
    return (
        f"throughput runs {args.duration:g} s each at {counts} client processes per system "
        f"(best count shown); consume reads a whole topic; latency runs "
        f"{args.latency_duration:g} s at {args.rate:,} msg/s, 1 producer"
    )


#: result-key system -> column label, in table order.
SYSTEMS = {
    "talos-flush": "talos flush",
    "talos-sync": "talos sync",
    "nats": "NATS JS",
    "redis": "Redis",
    **{key: label.replace("Kafka (", "Kafka ").rstrip(")") for key, label in CLIENTS.items()},
}
PEER_KEYS = ("nats", "redis", *CLIENTS)


def _system(row: str, key: str) -> str:
    """Consume runs are Talos's without a durability (it reads what flush wrote)."""
    return "talos" if row.startswith("consume") and key == "talos-flush" else key


def _cell(best: Best) -> str:
    """A figure with the process count it was best at, e.g. ``226,028 (2p)``."""
    if not best.measured:
        return "-"
    number = f"{best.value:,.0f}" if best.value >= 100 else f"{best.value:.2f}"
    return f"{number} ({best.processes}p)"


def table(data: dict[str, Any]) -> str:
    results = data["results"]
    counts = data["settings"]["processes"]
    rate = data["settings"]["latency_rate"]
    throughput = [
        ("produce 100B msg/s", "produce 100B", "msgs_per_s"),
        ("produce 1KB msg/s", "produce 1KB", "msgs_per_s"),
        ("produce 1KB MB/s", "produce 1KB", "mb_per_s"),
        ("consume 100B msg/s", "consume 100B", "msgs_per_s"),
    ]
    rows: list[list[object]] = []
    for label, row, field in throughput:
        systems = {
            key: best_of(
                results,
                row,
                "talos" if row.startswith("consume") and key == "talos-flush" else key,
                counts,
                field,
            )
            for key in SYSTEMS
        }
        name, peer = best_peer({SYSTEMS[k]: systems[k] for k in PEER_KEYS})
        talos = systems["talos-flush"]
        rows.append(
            [label, *(_cell(b) for b in systems.values()), name, ratio(talos.value, peer.value)]
        )
    for label, field in ((f"p99 ms @{rate}/s", "p99_ms"), (f"p50 ms @{rate}/s", "p50_ms")):
        systems = {key: single(results, f"latency {rate}/s {key}", field) for key in SYSTEMS}
        name, peer = best_peer({SYSTEMS[k]: systems[k] for k in PEER_KEYS}, lower_is_better=True)
        rows.append(
            [
                label,
                *(b.value if b.measured else None for b in systems.values()),
                name,
                ratio(systems["talos-flush"].value, peer.value),
            ]
        )
    headers = ["metric", *SYSTEMS.values(), "best peer", "x best peer"]
    out = [data["settings"]["run_length"], "", format_table(headers, rows)]
    out.append(
        "(Np: the client process count of a system's best run. x best peer: Talos flush over "
        "the best peer; for latency rows above 1 means Talos is slower.)"
    )
    n = max(counts)
    one = best_of(results, "produce 100B", "talos-flush", counts)
    two = _get(data, f"produce 100B talos-flush 2 brokers p{n}")
    two_more = _get(data, f"produce 100B talos-flush 2 brokers p{2 * n}")
    rss = _get(data, "rss at 100K msg/s talos-flush", "msgs_per_s")
    rss_mb = (
        results.get("rss at 100K msg/s talos-flush", {}).get("extra", {}).get("broker_rss_mb_peak")
    )
    out.append("")
    out.append(
        f"talos produce 100B flush: 1 broker {_cell(one)} msg/s; 2 brokers {two:,.0f} msg/s "
        f"with {n} producers; 2 brokers, {2 * n} producers {two_more:,.0f} msg/s"
    )
    out.append(f"talos broker RSS peak at {rss:,.0f} msg/s offered 100K: {rss_mb} MB")
    return "\n".join(out)


def _get(data: dict[str, Any], key: str, field: str = "msgs_per_s") -> float:
    entry = data["results"].get(key)
    if entry is None or entry.get(field) is None:
        return math.nan
    return float(entry[field])


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
    counts = data["settings"]["processes"]
    fig, (bars, cdf) = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.8 / len(systems)
    for i, (sys_key, sys_label) in enumerate(systems):
        values = []
        for prefix, _ in groups:
            system = sys_key
            if prefix.startswith("consume") and sys_key.startswith("talos"):
                system = "talos" if sys_key == "talos-flush" else ""
            best = best_of(data["results"], prefix, system, counts) if system else None
            values.append(best.value / 1000 if best and best.measured else 0.0)
        xs = [g + (i - (len(systems) - 1) / 2) * width for g in range(len(groups))]
        bars.bar(xs, values, width, label=sys_label)
    bars.set_xticks(range(len(groups)), [label for _, label in groups])
    bars.set_ylabel("thousand messages/s")
    bars.set_title(
        f"Throughput, best of {'/'.join(map(str, counts))} client processes, "
        f"{data['settings']['duration_s']:g} s runs, 2 cores",
        fontsize=10,
    )
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
    fig.suptitle(data["settings"]["run_length"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def process_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        counts = ()
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(
            f"--processes: expected positive integers separated by commas, got {text!r}"
        )
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.compare", description=__doc__)
    parser.add_argument(
        "--processes",
        type=process_counts,
        default=(1, 2),
        help="client process counts every system runs with, comma-separated (default 1,2)",
    )
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


def _unwind_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every server this run started is stopped
    (it used to leave ZooKeeper, a broker, NATS, Redis and Kafka running)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


if __name__ == "__main__":
    _unwind_on_sigterm()
    sys.exit(main())
