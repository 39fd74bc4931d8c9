"""``talos quota request|approve|reject|list|capacity``: quotas with auto-approval.

A request is approved at once when the cluster's headroom allows it, else it
stays pending, with the reason, for an operator's approve or reject.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from talos.errors import InvalidArgument
from talos.proto import talos_pb2 as pb
from talos.quota.model import DIMENSION_OPTIONS, Rates, parse_rate

#: A request is never retried blindly: a lost answer could store it twice.
_RETRIED = ("ListQuotas", "SetQuotaCapacity")


def _call(args: argparse.Namespace, method: str, request: Any) -> Any:
    from talos.cli import resolve_bootstrap
    from talos.client.connection import Connections, retry_policy
    from talos.wire import raise_for

    connections = Connections(resolve_bootstrap(args.bootstrap))
    try:

        def call() -> Any:
            response = connections.call_any(method, request)
            raise_for(response.error)
            return response

        return retry_policy(30.0)(call) if method in _RETRIED else call()
    finally:
        connections.close()


def _rates(args: argparse.Namespace) -> Rates:
    """The rate options given, each checked (a bad one names its option)."""
    values = []
    for option in DIMENSION_OPTIONS:
        text = getattr(args, option.replace("-", "_"))
        values.append(0 if text is None else parse_rate(text, "--" + option))
    return Rates(*values)


def _rates_dict(message: pb.QuotaRates) -> dict[str, int]:
    return {
        "produce_bytes_per_s": message.produce_bytes,
        "consume_bytes_per_s": message.consume_bytes,
        "produce_requests_per_s": message.produce_requests,
        "consume_requests_per_s": message.consume_requests,
    }


def _quota_dict(info: pb.QuotaInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "tenant": info.tenant,
        "topic": info.topic or None,
        "state": info.state,
        "reason": info.reason,
        "limits": _rates_dict(info.limits),
        "use": _rates_dict(info.use),
        "created_ms": info.created_ms,
        "decided_ms": info.decided_ms,
    }


def _show_rates(message: pb.QuotaRates) -> str:
    shown = [
        f"{name.removesuffix('_per_s').replace('_', '-')} {value}/s"
        for name, value in _rates_dict(message).items()
        if value
    ]
    return ", ".join(shown) or "-"


def _print_quota(info: pb.QuotaInfo) -> None:
    scope = f"topic {info.topic}" if info.topic else "all topics"
    print(f"quota {info.id}: tenant {info.tenant}, {scope}: {_show_rates(info.limits)}")
    print(f"  {info.state}: {info.reason}")


def cmd_quota_request(args: argparse.Namespace) -> int:
    limits = _rates(args)
    if limits.is_zero():
        raise InvalidArgument(
            f"limits: give at least one of {', '.join('--' + o for o in DIMENSION_OPTIONS)}"
        )
    request = pb.RequestQuotaRequest(tenant=args.tenant, topic=args.topic or "")
    for name, value in limits.to_dict().items():
        setattr(request.limits, name, int(value))
    response: pb.QuotaResponse = _call(args, "RequestQuota", request)
    if args.json:
        print(json.dumps(_quota_dict(response.quota), indent=2))
    else:
        _print_quota(response.quota)
    return 0


def _decide(approve: bool) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        response: pb.QuotaResponse = _call(
            args, "DecideQuota", pb.DecideQuotaRequest(id=args.id, approve=approve)
        )
        if args.json:
            print(json.dumps(_quota_dict(response.quota), indent=2))
        else:
            _print_quota(response.quota)
        return 0

    return run


def _print_view(response: pb.ListQuotasResponse, as_json: bool) -> None:
    if as_json:
        view = {
            "capacity_per_broker": _rates_dict(response.capacity_per_broker),
            "live_brokers": response.live_brokers,
            "measured": _rates_dict(response.measured),
            "quotas": [_quota_dict(q) for q in response.quotas],
        }
        print(json.dumps(view, indent=2))
        return
    print(
        f"capacity per broker: {_show_rates(response.capacity_per_broker)} "
        f"x {response.live_brokers} live broker(s); measured: {_show_rates(response.measured)}"
    )
    header = f"{'id':<14} {'tenant':<16} {'topic':<16} {'state':<10} {'limits':<34} use"
    print(header)
    for q in response.quotas:
        print(
            f"{q.id:<14} {q.tenant:<16} {q.topic or '*':<16} {q.state:<10} "
            f"{_show_rates(q.limits):<34} {_show_rates(q.use)}"
        )
        if q.state == "pending":
            print(f"{'':<14} pending: {q.reason}")


def cmd_quota_list(args: argparse.Namespace) -> int:
    _print_view(_call(args, "ListQuotas", pb.ListQuotasRequest()), args.json)
    return 0


def cmd_quota_capacity(args: argparse.Namespace) -> int:
    per_broker = _rates(args)
    if per_broker.is_zero():  # show it
        _print_view(_call(args, "ListQuotas", pb.ListQuotasRequest()), args.json)
        return 0
    request = pb.SetQuotaCapacityRequest()
    for name, value in per_broker.to_dict().items():
        setattr(request.per_broker, name, int(value))
    _print_view(_call(args, "SetQuotaCapacity", request), args.json)
    return 0


def _rate_options(parser: argparse.ArgumentParser, what: str) -> None:
    for option in DIMENSION_OPTIONS:
        parser.add_argument(
            f"--{option}",
            default=None,
            metavar="N",
            help=f"{what} ({option.replace('-', ' ')}; K/M/G suffixes are powers of 1024)",
        )


def add_quota_parser(sub: Any) -> None:
    quota = sub.add_parser("quota", help="produce/consume quotas per tenant, with auto-approval")
    quota_sub = quota.add_subparsers(dest="quota_command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = quota_sub.add_parser(name, help=help_text)
        p.add_argument("--bootstrap", default=None, help="broker host:port[,host:port]")
        p.add_argument("--json", action="store_true")
        return p

    request = command("request", "ask for a quota; approved at once if the headroom allows")
    request.add_argument("tenant", help="the tenant, or '*' with --topic: every tenant together")
    request.add_argument("--topic", default=None, help="limit one topic (default: every topic)")
    _rate_options(request, "cluster-wide limit")
    request.set_defaults(func=cmd_quota_request)
    for name, approve in (("approve", True), ("reject", False)):
        decide = command(name, f"{name} a pending quota")
        decide.add_argument("id")
        decide.set_defaults(func=_decide(approve))
    listing = command("list", "every quota with its state and measured use")
    listing.set_defaults(func=cmd_quota_list)
    capacity = command("capacity", "show, or set, the capacity of one broker (auto-approval)")
    _rate_options(capacity, "capacity of each broker")
    capacity.set_defaults(func=cmd_quota_capacity)
