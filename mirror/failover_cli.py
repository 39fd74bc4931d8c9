"""``talos mirror promote``, ``talos mirror failback`` and ``talos mirror resync``.

Both print a human report by default and the same data with ``--json``;
bad input (an unknown link, failback before promote, an unreachable A) is
an InvalidArgument, which the CLI turns into exit code 2 with nothing changed.
"""

from __future__ import annotations

import argparse
from typing import Any


def _positive_float(name: str) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: must be a number, got {text!r}") from None
        if not 0 < value <= 3600:
            raise argparse.ArgumentTypeError(f"{name}: must be > 0 and at most 3600, got {value}")
        return value

    return parse


def cmd_promote(args: argparse.Namespace) -> int:
    from mirror.failover import PromoteOptions, format_recovery, promote, report_json
    from topology import load_topology

    topology = load_topology(args.topology)
    report = promote(
        topology,
        args.link,
        PromoteOptions(
            topics=args.topics,
            dry_run=args.dry_run,
            source_timeout_s=args.source_timeout,
        ),
    )
    print(report_json(report) if args.json else format_recovery(report), flush=True)
    return 0


def cmd_failback(args: argparse.Namespace) -> int:
    from mirror.failover import FailbackOptions, failback, format_failback, report_json
    from topology import load_topology

    topology = load_topology(args.topology)
    report = failback(
        topology,
        args.link,
        FailbackOptions(
            dry_run=args.dry_run, start_reverse=args.start_reverse, timeout_s=args.timeout
        ),
    )
    print(report_json(report) if args.json else format_failback(report), flush=True)
    return 0


def _link_command(mirror_sub: Any, name: str, help: str, link_help: str) -> Any:
    """A ``talos mirror`` command on one link of a topology; every one can dry-run and --json."""
    parser = mirror_sub.add_parser(name, help=help)
    parser.add_argument("--topology", required=True, help="topology file (TOML)")
    parser.add_argument("--link", required=True, help=link_help)
    parser.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _call_timeout(parser: Any) -> None:
    parser.add_argument(
        "--timeout",
        type=_positive_float("timeout"),
        default=10.0,
        help="seconds per call to either DC (default 10)",
    )


def add_failover_parsers(mirror_sub: Any) -> None:
    """Register ``promote``, ``failback`` and ``resync`` under the ``talos mirror`` group."""
    promote = _link_command(
        mirror_sub,
        "promote",
        "stop a link, make its target topics writable, report the recovery point",
        "the link to promote, SOURCE:TARGET",
    )
    promote.add_argument("--topics", default=None, help="only the mirror topics matching this glob")
    promote.add_argument(
        "--source-timeout",
        type=_positive_float("source-timeout"),
        default=5.0,
        help="seconds to wait for the source DC, which may be down (default 5)",
    )
    promote.set_defaults(func=cmd_promote)

    failback = _link_command(
        mirror_sub,
        "failback",
        "after a promote: archive the old primary's divergence, truncate it, reverse",
        "the promoted link, SOURCE:TARGET",
    )
    failback.add_argument(
        "--start-reverse",
        action="store_true",
        help="start a worker of the reverse link TARGET:SOURCE (else print the command)",
    )
    _call_timeout(failback)
    failback.set_defaults(func=cmd_failback)
    add_resync_parser(mirror_sub)


def cmd_resync(args: argparse.Namespace) -> int:
    from mirror.failover import report_json
    from mirror.failover.report import format_resync
    from mirror.failover.resync import ResyncOptions, resync
    from topology import load_topology

    topology = load_topology(args.topology)
    report = resync(
        topology,
        args.link,
        args.topic,
        ResyncOptions(dry_run=args.dry_run, timeout_s=args.timeout),
    )
    print(report_json(report) if args.json else format_resync(report), flush=True)
    return 0


def add_resync_parser(mirror_sub: Any) -> None:
    resync = _link_command(
        mirror_sub,
        "resync",
        "archive a diverged mirror copy and copy the source again from its log start",
        "the link, SOURCE:TARGET",
    )
    resync.add_argument("--topic", required=True, help="the SOURCE topic whose copy to replace")
    _call_timeout(resync)
    resync.set_defaults(func=cmd_resync)
