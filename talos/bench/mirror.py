"""``talos bench mirror``: mirror throughput per worker (loopback and WAN RTT) and steady lag.

Each part starts its own two DCs (:class:`~talos.testing.multidc.MultiDC`) so the
parts do not disturb each other; everything started is stopped on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from talos.client import Admin, Producer
from talos.errors import InvalidArgument, TalosError

from .pacing import STAMP_BYTES, payload, stamped
from .pool import Pool, combine
from .progress import Progress
from .runner import BenchConfig, consume_specs, produce_specs
from .stats import percentile
from .talos_load import consume, produce

PARTS = ("throughput", "rtt", "lag")
#: Fault parts (talos/bench/mirror_faults.py), only when named in ``--only``.
FAULT_PARTS = ("kill", "stall")
#: What ``--against`` compares Talos with (``talos``: Talos alone).
AGAINST = ("talos", "mm2")


@dataclass(frozen=True)
class MirrorBenchConfig:
    messages: int = 500_000
    size: int = 100
    rtt_ms: float = 50.0
    rate: float = 5000.0
    duration: float = 20.0
    partitions: int = 4
    only: tuple[str, ...] = PARTS
    progress: bool = True
    timeout: float = 600.0
    against: str = "talos"

    def validated(self) -> MirrorBenchConfig:
        if not 1 <= self.messages <= 10**9:
            raise InvalidArgument(f"messages: must be from 1 to 10^9, got {self.messages}")
        if not STAMP_BYTES <= self.size <= 16 * 1024 * 1024:
            raise InvalidArgument(f"size: must be from {STAMP_BYTES} to 16 MiB, got {self.size}")
        if not 0 <= self.rtt_ms <= 60_000:
            raise InvalidArgument(f"rtt_ms: must be from 0 to 60000, got {self.rtt_ms}")
        if not 0 < self.rate <= 10**7:
            raise InvalidArgument(f"rate: must be > 0 and <= 10^7 messages/s, got {self.rate}")
        if not 0 < self.duration <= 86_400:
            raise InvalidArgument(f"duration: must be > 0 s and <= 1 day, got {self.duration}")
        if not 1 <= self.partitions <= 1024:
            raise InvalidArgument(f"partitions: must be from 1 to 1024, got {self.partitions}")
        parse_only(",".join(self.only))
        if self.against not in AGAINST:
            raise InvalidArgument(
                f"against: must be one of {', '.join(AGAINST)}, got {self.against!r}"
            )
        return self


def parse_only(text: str | None) -> tuple[str, ...]:
    """``--only`` value (comma-separated part names; empty or None: all parts)."""
    if not text:
        return PARTS
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    known = PARTS + FAULT_PARTS
    bad = [p for p in parts if p not in known]
    if bad or not parts:
        raise InvalidArgument(f"only: must be among {', '.join(known)}, got {text!r}")
    return tuple(p for p in known if p in parts)


def copy_rate(
    total_messages: int, size: int, seen_messages: int, seconds: float
) -> dict[str, float]:
    """Rate of the copy after the first observed progress (excludes worker start-up)."""
    copied = total_messages - seen_messages
    if seconds <= 0 or copied <= 0:
        return {"msgs_per_s": math.nan, "mb_per_s": math.nan}
    return {"msgs_per_s": copied / seconds, "mb_per_s": copied * size / seconds / 1e6}


def lag_figures(time_lag_ms: Sequence[float], message_lag: Sequence[int]) -> dict[str, Any]:
    """p50/p99/max of the time lag (ms) and of the message lag (source end - target end)."""
    ms = sorted(time_lag_ms)
    msgs = sorted(message_lag)

    def stat(values: Sequence[float], q: float) -> float | None:
        value = percentile(values, q)
        return None if math.isnan(value) else round(value, 2)

    return {
        "lag_ms_p50": stat(ms, 50),
        "lag_ms_p99": stat(ms, 99),
        "lag_ms_max": round(ms[-1], 2) if ms else None,
        "lag_ms_samples": len(ms),
        "lag_msgs_p50": stat(msgs, 50),
        "lag_msgs_p99": stat(msgs, 99),
        "lag_msgs_max": msgs[-1] if msgs else None,
        "lag_msgs_samples": len(msgs),
    }


# -- I/O ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _two_dcs(rtt_ms: float, start_mirror: bool) -> Iterator[Any]:
    from talos.testing.multidc import MultiDC

    with tempfile.TemporaryDirectory(prefix="talos-bench-mirror-") as tmp:
        # The proxy delays each direction, so half the round trip each way.
        dcs = MultiDC(
            tmp,
            brokers=1,
            wan_dcs=("B",) if rtt_ms > 0 else (),
            wan_latency_ms=rtt_ms / 2,
            start_mirror=start_mirror,
        )
        try:
            dcs.start()
            if start_mirror and dcs.mirror_skipped:
                raise TalosError(f"cannot start a mirror worker: {dcs.mirror_skipped}")
            yield dcs
        finally:
            dcs.stop()


def _create_topic(bootstrap: str, partitions: int) -> str:
    name = f"bench-mirror-{uuid.uuid4().hex[:8]}"
    with Admin(bootstrap) as admin:
        admin.create_topic(name, partitions)
        admin.wait_until_ready(name, timeout_s=60)
    return name


def _ends(admin: Admin, topic: str) -> int | None:
    """Sum of the log ends of ``topic`` (None while it does not exist or is unreachable)."""
    try:
        parts = admin.describe_topic(topic).partitions
    except TalosError:
        return None
    return sum(max(p.log_end, 0) for p in parts)


def _bench_config(config: MirrorBenchConfig, **kw: Any) -> BenchConfig:
    return BenchConfig(
        mode="e2e" if kw.get("rate") else "produce",
        size=config.size,
        partitions=config.partitions,
        progress=config.progress,
        timeout=config.timeout,
        **kw,
    )


def run_throughput(config: MirrorBenchConfig, rtt_ms: float) -> dict[str, Any]:
    """Load a backlog into A with no worker, then time one worker copying it to B."""
    with _two_dcs(rtt_ms, start_mirror=False) as dcs:
        topic = _create_topic(dcs.bootstrap("A"), config.partitions)
        load = _bench_config(config, messages=config.messages)
        specs = produce_specs(load, dcs.bootstrap("A"), topic, stamp=False)
        with Pool(produce, specs, "loaders") as pool:
            progress = Progress("load", config.messages, enabled=config.progress)
            pool.start()
            pool.wait_ready()
            progress.start = time.monotonic()
            pool.go()
            while not pool.done():
                progress.update(pool.progress())
                time.sleep(0.1)
            _m, _b, _s, _l, errors = combine(pool.results(timeout=config.timeout))
            progress.close(pool.progress())
        with Admin(dcs.bootstrap("A")) as a_admin, Admin(dcs.bootstrap("B")) as b_admin:
            total = _ends(a_admin, topic) or 0
            label = f"mirror rtt {rtt_ms:g} ms" if rtt_ms else "mirror loopback"
            progress = Progress(label, total, enabled=config.progress)
            started = time.monotonic()
            dcs.start_worker("A:B")
            first: tuple[float, int] | None = None
            done = 0
            deadline = started + config.timeout
            while done < total:
                if time.monotonic() > deadline:
                    raise TalosError(f"mirror bench: not caught up after {config.timeout} s")
                _check_worker(dcs)
                done = _ends(b_admin, topic) or 0
                now = time.monotonic()
                if first is None and done > 0:
                    first = (now, done)
                progress.update(done)
                if done < total:
                    time.sleep(0.05)
            finished = time.monotonic()
            progress.close(done)
        seconds = finished - started
        figures: dict[str, Any] = {
            "rtt_ms": rtt_ms,
            "messages": total,
            "bytes": total * config.size,
            "seconds": round(seconds, 3),
            "msgs_per_s": round(total / seconds),
            "mb_per_s": round(total * config.size / seconds / 1e6, 2),
            "load_errors": errors,
        }
        if first is not None:
            steady = copy_rate(total, config.size, first[1], finished - first[0])
            figures["startup_s"] = round(first[0] - started, 3)
            figures["copy_msgs_per_s"] = _round(steady["msgs_per_s"], 0)
            figures["copy_mb_per_s"] = _round(steady["mb_per_s"], 2)
        return figures


def _check_worker(dcs: Any) -> None:
    for worker in dcs.mirrors:
        if not worker.alive():
            raise TalosError(f"mirror worker {worker.worker_id} exited; see {worker.log_path}")


def _round(value: float, digits: int) -> float | None:
    return None if math.isnan(value) else round(value, digits)


def run_lag(config: MirrorBenchConfig) -> dict[str, Any]:
    """Produce into A at a fixed rate; a consumer in B times produce-to-readable-in-B."""
    with _two_dcs(0.0, start_mirror=True) as dcs:
        a_boot, b_boot = dcs.bootstrap("A"), dcs.bootstrap("B")
        topic = _create_topic(a_boot, config.partitions)
        warm = stamped(payload(config.size), 0)  # stamp 0: skipped by the timing consumer
        with Producer(a_boot) as producer:
            for p in range(config.partitions):
                producer.send(topic, warm, partition=p)
            producer.flush()
        with Admin(a_boot) as a_admin, Admin(b_boot) as b_admin:
            dcs.wait_for(
                lambda: _ends(b_admin, topic) == _ends(a_admin, topic),
                config.timeout,
                "the mirror to create and fill the target topic",
            )
            bench = _bench_config(config, rate=config.rate, duration=config.duration)
            producers = Pool(produce, produce_specs(bench, a_boot, topic, stamp=True), "producers")
            consumers = Pool(consume, consume_specs(bench, b_boot, topic, {}, True), "consumers")
            message_lag: list[int] = []
            with consumers, producers:
                progress = Progress("lag", None, config.duration, enabled=config.progress)
                for pool in (consumers, producers):
                    pool.start()
                for pool in (consumers, producers):
                    pool.wait_ready()
                progress.start = time.monotonic()
                consumers.go()
                producers.go()
                deadline = time.monotonic() + config.duration + config.timeout
                while not producers.done() and time.monotonic() < deadline:
                    source, target = _ends(a_admin, topic), _ends(b_admin, topic)
                    if source is not None and target is not None:
                        message_lag.append(max(source - target, 0))
                    progress.update(consumers.progress())
                    time.sleep(0.1)
                sent = producers.results(timeout=config.timeout)
                progress.close(consumers.progress())
                consumers.stop()
                received = consumers.results(timeout=60)
        sent_n, _b, seconds, _p, errors = combine(sent)
        got, _nb, _s, latencies, _e = combine(received)
        figures = {
            "rate": config.rate,
            "duration": config.duration,
            "sent": sent_n,
            "received": got,
            "offered_msgs_per_s": round(sent_n / seconds) if seconds > 0 else None,
            "errors": errors,
        }
        figures.update(lag_figures(latencies, message_lag))
        return figures


def run_mirror_bench(config: MirrorBenchConfig) -> dict[str, Any]:
    """Each selected part in turn: {"throughput": {...}, "rtt": {...}, "lag": {...}}."""
    config = config.validated()
    out: dict[str, Any] = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.__dict__.items()}
    }
    for part in config.only:
        if part == "throughput":
            out["throughput"] = run_throughput(config, 0.0)
        elif part == "rtt":
            out["rtt"] = run_throughput(config, config.rtt_ms)
        elif part == "lag":
            out["lag"] = run_lag(config)
    if config.against == "mm2":
        out["mm2"] = run_mm2(config)
    faults = [p for p in config.only if p in FAULT_PARTS]
    if faults:
        from .mirror_faults import run_faults

        out["faults"] = run_faults(
            faults, ("talos", "mm2") if config.against == "mm2" else ("talos",)
        )
    return out


def run_mm2(config: MirrorBenchConfig) -> dict[str, Any]:
    """The throughput and lag parts on Kafka + MirrorMaker 2 (no WAN proxy for Kafka: no rtt)."""
    from .mm2 import mm2_lag, mm2_throughput

    out: dict[str, Any] = {}
    if "throughput" in config.only:
        out["throughput"] = mm2_throughput(
            config.messages, config.size, config.partitions, config.progress, config.timeout
        )
    if "lag" in config.only:
        out["lag"] = mm2_lag(
            config.rate,
            config.duration,
            config.size,
            config.partitions,
            config.progress,
            config.timeout,
        )
    return out


def format_against(report: dict[str, Any]) -> str:
    """Talos and MM2 side by side: one row per figure, one column per system."""
    from .stats import format_table

    mm2 = report.get("mm2", {})
    rows: list[list[object]] = []
    perf: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("throughput", ("startup_s", "copy_msgs_per_s", "copy_mb_per_s", "msgs_per_s")),
        ("lag", ("lag_ms_p50", "lag_ms_p99", "lag_ms_max", "lag_msgs_p50", "lag_msgs_p99")),
    )
    for part, fields in perf:
        ours, theirs = report.get(part) or {}, mm2.get(part) or {}
        if ours or theirs:
            for name in fields:
                rows.append([f"{part} {name}", ours.get(name), theirs.get(name)])
    faults = report.get("faults", {})
    ours, theirs = faults.get("talos", {}), faults.get("mm2", {})
    faulty: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("kill", ("kills", "source", "target", "missing", "duplicated", "offsets_kept")),
        ("failover", ("read_in_a", "read_in_b", "redelivered", "skipped", "offsets_in_b_after_s")),
        ("stall", ("stall_reported_before_stop", "detected_s", "last_said")),
    )
    for part, fields in faulty:
        if part in ours or part in theirs:
            for name in fields:
                rows.append(
                    [
                        f"{part} {name}",
                        _cell(ours.get(part, {}).get(name)),
                        _cell(theirs.get(part, {}).get(name)),
                    ]
                )
    return format_table(["figure (1 worker)", "Talos mirror", "MirrorMaker 2"], rows)


def _cell(value: Any) -> Any:
    """Table cells: booleans as yes/no, None as "never" is left to the reader ("-")."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


def format_report(report: dict[str, Any]) -> str:
    """Human lines for the parts that ran."""
    lines = []
    for part in ("throughput", "rtt"):
        f = report.get(part)
        if f:
            lines.append(
                f"mirror {part} (rtt {f['rtt_ms']:g} ms, 1 worker): {f['messages']:,} msgs "
                f"in {f['seconds']:.2f} s = {f['msgs_per_s']:,} msg/s, {f['mb_per_s']:.1f} MB/s"
                f"; after start-up ({f.get('startup_s')} s): {f.get('copy_msgs_per_s')} msg/s, "
                f"{f.get('copy_mb_per_s')} MB/s"
            )
    f = report.get("lag")
    if f:
        lines.append(
            f"mirror lag @{f['rate']:,.0f}/s for {f['duration']:g} s "
            f"(sent {f['sent']:,}, read in B {f['received']:,}): "
            f"time lag ms p50 {f['lag_ms_p50']} p99 {f['lag_ms_p99']} max {f['lag_ms_max']}; "
            f"message lag p50 {f['lag_msgs_p50']} p99 {f['lag_msgs_p99']} max {f['lag_msgs_max']}"
        )
    return "\n".join(lines)


# -- the command -------------------------------------------------------------------------------


def add_mirror_parser(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = bench_sub.add_parser(
        "mirror",
        help="mirror throughput per worker (loopback, WAN round trip) and lag at a steady rate",
        description="Starts its own two DCs (A -> B) for each part and stops them after.",
    )
    p.add_argument("-n", "--messages", type=int, default=500_000, help="backlog to copy")
    p.add_argument("--size", type=int, default=100, help="message size in bytes")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--rtt-ms", type=float, default=50.0, help="worker-to-target round trip")
    p.add_argument("--rate", type=float, default=5000.0, help="lag part: offered messages/s")
    p.add_argument("--duration", type=float, default=20.0, help="lag part: seconds")
    p.add_argument(
        "--only",
        default=None,
        help="comma-separated: throughput, rtt, lag, kill, stall (default: the first three; "
        "with --against mm2 all five)",
    )
    p.add_argument(
        "--against",
        choices=AGAINST,
        default="talos",
        help="mm2: also run the throughput and lag parts on Kafka 4 + MirrorMaker 2 "
        "(needs `make bench-deps`) and print both side by side",
    )
    p.add_argument("--json", default=None, metavar="PATH", help="write the figures as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--timeout", type=float, default=600.0, help="give up after S seconds")
    p.set_defaults(func=cmd_bench_mirror)


def cmd_bench_mirror(args: argparse.Namespace) -> int:
    config = MirrorBenchConfig(
        messages=args.messages,
        size=args.size,
        rtt_ms=args.rtt_ms,
        rate=args.rate,
        duration=args.duration,
        partitions=args.partitions,
        only=parse_only(args.only) if args.only or args.against == "talos" else PARTS + FAULT_PARTS,
        progress=not args.no_progress,
        timeout=args.timeout,
        against=args.against,
    )
    report = run_mirror_bench(config)
    print(format_report(report))
    if "mm2" in report or "faults" in report:
        print()
        print(format_against(report))
    if args.json == "-":
        json.dump(report, sys.stdout, indent=2)
        print()
    elif args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    lag = report.get("lag", {})
    return 1 if lag.get("errors") else 0
