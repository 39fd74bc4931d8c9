"""``talos health``: is this broker serving? (the container healthcheck asks it).

Healthy means the broker answered Metadata within the timeout and, when its
id is given, lists itself among the live brokers (it holds a ZooKeeper
session; a broker that lost it answers but must not count as healthy).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from typing import Any

from talos.errors import InvalidArgument, TalosError
from talos.proto import talos_pb2 as pb


@dataclass(frozen=True)
class Health:
    healthy: bool
    address: str
    reason: str
    cluster: str = ""
    live_brokers: tuple[str, ...] = ()


def judge(address: str, response: pb.MetadataResponse, broker_id: str | None) -> Health:
    """The verdict on one Metadata answer."""
    live = tuple(sorted(b.id for b in response.brokers))
    if broker_id is not None and broker_id not in live:
        reason = f"broker {broker_id!r} is not registered (live: {', '.join(live) or 'none'})"
        return Health(False, address, reason, response.cluster, live)
    if not live:
        return Health(False, address, "no live broker registered", response.cluster, live)
    return Health(True, address, "serving", response.cluster, live)


def check(address: str, broker_id: str | None, timeout_s: float) -> Health:
    from talos.client.connection import Connections

    connections = Connections(address, request_timeout=timeout_s)
    try:
        response: pb.MetadataResponse = connections.call(
            address, "Metadata", pb.MetadataRequest(), timeout=timeout_s
        )
    except TalosError as exc:
        return Health(False, address, f"no answer: {exc}")
    finally:
        connections.close()
    return judge(address, response, broker_id)


def cmd_health(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise InvalidArgument(f"--timeout: must be > 0, got {args.timeout}")
    health = check(args.address, args.broker_id, args.timeout)
    if args.json:
        print(json.dumps(asdict(health)))
    elif health.healthy:
        print(f"{health.address}: {health.reason} (cluster {health.cluster})")
    else:
        print(f"talos: error: {health.address}: unhealthy: {health.reason}", file=sys.stderr)
    return 0 if health.healthy else 1


def add_parser(sub: Any) -> None:
    p = sub.add_parser("health", help="exit 0 if the broker at ADDRESS answers Metadata")
    p.add_argument(
        "--address",
        default=os.environ.get("TALOS_HEALTH_ADDRESS", "127.0.0.1:9092"),
        help="broker host:port (default $TALOS_HEALTH_ADDRESS, else 127.0.0.1:9092)",
    )
    p.add_argument(
        "--broker-id",
        default=os.environ.get("TALOS_BROKER_ID") or None,
        help="also require this id to be registered (default $TALOS_BROKER_ID)",
    )
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_health)
