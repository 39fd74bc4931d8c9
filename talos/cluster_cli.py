"""``talos cluster load``: the bytes/s each broker carries, as the controller balances it.

Reads ZooKeeper directly (the brokers' traffic reports and the assignment), so it
works while brokers come and go. ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from talos.coord.traffic import BrokerTraffic
from talos.errors import TalosError

Partition = tuple[str, int]


@dataclass(frozen=True)
class BrokerLoad:
    broker: str
    live: bool
    partitions: int  # assigned to it now
    produce_bytes_per_s: float  # over its last reported interval
    fetch_bytes_per_s: float
    bytes_per_s: float
    vs_mean: float  # bytes_per_s / the mean over live brokers (0 when there is no traffic)
    report_age_s: float | None  # None: no report (not started, or an old broker)


def load_view(
    owners: Mapping[Partition, str],
    reports: Mapping[str, BrokerTraffic],
    live: list[str],
    now_ms: int,
) -> list[BrokerLoad]:
    """One row per live broker and per broker still holding partitions."""
    brokers = sorted(set(live) | set(owners.values()) | set(reports))
    counts = {b: 0 for b in brokers}
    for owner in owners.values():
        counts[owner] += 1
    live_loads = [reports[b].bytes_per_s for b in live if b in reports]
    mean = sum(live_loads) / len(live) if live else 0.0
    rows = []
    for broker in brokers:
        report = reports.get(broker)
        total = report.bytes_per_s if report else 0.0
        rows.append(
            BrokerLoad(
                broker=broker,
                live=broker in live,
                partitions=counts[broker],
                produce_bytes_per_s=round(report.produce_bytes_per_s, 1) if report else 0.0,
                fetch_bytes_per_s=round(report.fetch_bytes_per_s, 1) if report else 0.0,
                bytes_per_s=round(total, 1),
                vs_mean=round(total / mean, 3) if mean > 0 else 0.0,
                report_age_s=round((now_ms - report.at_ms) / 1000, 1) if report else None,
            )
        )
    return rows


def _rate(value: float) -> str:
    for unit, size in (("MB/s", 1e6), ("KB/s", 1e3)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B/s"


def cmd_cluster_load(args: argparse.Namespace) -> int:
    from talos.clock import SYSTEM_CLOCK
    from talos.coord.brokers import BrokerRegistry
    from talos.coord.controller import current_controller, read_assignment
    from talos.coord.traffic import read_broker_traffic
    from talos.coord.zk import connect

    zk = connect(args.zookeeper, args.cluster, connect_timeout=args.timeout)
    try:
        live = sorted(BrokerRegistry(zk).live())
        owners = read_assignment(zk).owners
        reports = read_broker_traffic(zk)
        controller = current_controller(zk)
    finally:
        zk.stop()
        zk.close()
    if not live and not owners and not reports:
        raise TalosError(
            f"cluster {args.cluster!r}: no live broker, assignment or traffic report in "
            f"ZooKeeper at {args.zookeeper} (is --cluster right?)"
        )
    rows = load_view(owners, reports, live, SYSTEM_CLOCK.wall_ms())
    if args.json:
        out: dict[str, Any] = {"controller": controller, "brokers": [asdict(r) for r in rows]}
        print(json.dumps(out, indent=2))
        return 0
    print(f"controller: {controller or '(none)'}")
    heads = ("PRODUCE", "FETCH", "TOTAL")
    print(
        f"{'BROKER':<12} {'PARTS':>5} " + " ".join(f"{h:>12}" for h in heads) + " VS MEAN  REPORT"
    )
    for r in rows:
        age = "none" if r.report_age_s is None else f"{r.report_age_s:.0f}s ago"
        name = r.broker if r.live else f"{r.broker} (gone)"
        print(
            f"{name:<12} {r.partitions:>5} {_rate(r.produce_bytes_per_s):>12} "
            f"{_rate(r.fetch_bytes_per_s):>12} {_rate(r.bytes_per_s):>12} {r.vs_mean:>7.2f}  {age}"
        )
    return 0


def add_parser(sub: Any) -> None:
    cluster = sub.add_parser("cluster", help="cluster-wide views")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", required=True)
    load = cluster_sub.add_parser(
        "load", help="bytes/s per broker (produce + fetch, last interval) and its share"
    )
    load.add_argument(
        "--zookeeper",
        default=os.environ.get("TALOS_ZOOKEEPER"),
        required=not os.environ.get("TALOS_ZOOKEEPER"),
        help="ZooKeeper host:port (default: $TALOS_ZOOKEEPER)",
    )
    load.add_argument("--cluster", default="local", help="cluster name (ZooKeeper chroot)")
    load.add_argument("--timeout", type=float, default=10.0, help="seconds to reach ZooKeeper")
    load.add_argument("--json", action="store_true")
    load.set_defaults(func=cmd_cluster_load)
