"""``talos bench produce|consume|e2e``: the argument parser and the command."""

from __future__ import annotations

import argparse
import json
import sys

from .memory import add_memory_parser
from .mirror import add_mirror_parser
from .runner import MODES, BenchConfig, run, write_json
from .stats import format_summary


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser(
        "bench",
        help="load tests: produce, consume, end-to-end (like Kafka's perf-test tools)",
        description="Starts its own local cluster unless --bootstrap is given.",
    )
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    for mode in MODES:
        p = bench_sub.add_parser(mode, help=_HELP[mode])
        _add_common(p, mode)
        p.set_defaults(func=cmd_bench, bench_mode=mode)
    add_mirror_parser(bench_sub)
    add_memory_parser(bench_sub)


_HELP = {
    "produce": "time send() to acknowledgement",
    "consume": "load a topic, then time reading it from the beginning",
    "e2e": "produce at a fixed rate and time produce to poll",
}


def _add_common(p: argparse.ArgumentParser, mode: str) -> None:
    target = p.add_argument_group("cluster")
    target.add_argument(
        "--bootstrap", default=None, help="use this running cluster (host:port,...)"
    )
    target.add_argument(
        "--brokers", type=int, default=1, help="brokers of the cluster started here (default 1)"
    )
    target.add_argument(
        "--store",
        choices=("posix", "hdfs"),
        default="posix",
        help="log store of the cluster started here (hdfs: a MiniDFSCluster is started too)",
    )
    target.add_argument(
        "--secure",
        action="store_true",
        help="the cluster started here serves TLS and requires tokens (an admin token is used)",
    )
    target.add_argument("--topic", default=None, help="topic to use (default: a fresh one)")
    target.add_argument("--partitions", type=int, default=4)
    target.add_argument("--durability", choices=("flush", "sync"), default="flush")
    load = p.add_argument_group("load")
    load.add_argument("--size", type=int, default=100, help="message size in bytes")
    load.add_argument("-n", "--messages", type=int, default=0, help="message count")
    load.add_argument("--duration", type=float, default=0.0, help="seconds, instead of a count")
    load.add_argument("--producers", type=int, default=1, help="producer processes")
    load.add_argument("--consumers", type=int, default=1, help="consumer processes")
    load.add_argument(
        "--rate",
        type=float,
        default=5000.0 if mode == "e2e" else 0.0,
        help="offered messages/s over all producers (fixed-rate mode); 0 = flat out",
    )
    client = p.add_argument_group("client")
    client.add_argument("--linger-ms", type=float, default=5.0)
    client.add_argument("--batch-bytes", type=int, default=256 * 1024)
    client.add_argument("--compression", default="none", help="none, zstd or lz4")
    client.add_argument("--max-in-flight", type=int, default=5)
    client.add_argument("--fetch-bytes", type=int, default=4 * 1024 * 1024)
    if mode == "consume":
        load.add_argument(
            "--no-load",
            action="store_true",
            help="read --topic as it is instead of producing --messages into it first",
        )
    out = p.add_argument_group("output")
    out.add_argument("--json", default=None, metavar="PATH", help="write the figures as JSON")
    out.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    out.add_argument("--timeout", type=float, default=600.0, help="give up after S seconds")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    messages = args.messages
    if not messages and not args.duration and not getattr(args, "no_load", False):
        messages = 1_000_000 if args.bench_mode != "e2e" else 50_000
    return BenchConfig(
        mode=args.bench_mode,
        bootstrap=args.bootstrap,
        brokers=args.brokers,
        store=args.store,
        secure=args.secure,
        size=args.size,
        messages=messages,
        duration=args.duration,
        producers=args.producers,
        consumers=args.consumers,
        rate=args.rate,
        linger_ms=args.linger_ms,
        batch_bytes=args.batch_bytes,
        compression=args.compression,
        durability=args.durability,
        partitions=args.partitions,
        topic=args.topic,
        max_in_flight=args.max_in_flight,
        fetch_bytes=args.fetch_bytes,
        progress=not args.no_progress,
        preload=not getattr(args, "no_load", False),
        timeout=args.timeout,
    ).validated()


def cmd_bench(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    summary = run(config)
    print(format_summary(summary))
    extra = {k: v for k, v in summary.extra.items() if k not in ("config", "cdf")}
    if extra:
        print("  " + ", ".join(f"{k}={v}" for k, v in extra.items()))
    if args.json:
        if args.json == "-":
            json.dump(summary.to_dict(), sys.stdout, indent=2)
            print()
        else:
            write_json(args.json, [summary])
    return 0 if summary.errors == 0 else 1
