"""The ``talos mirror status`` command: the status table, as text or JSON, once or watching.

Its exit code makes it a monitoring check: 1 when any partition is stalled,
in error, diverged or has a gap (an unreachable DC counts as an error), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any, TextIO

from mirror.status import (
    DEFAULT_LAGGING_AFTER_MS,
    DEFAULT_STALL_AFTER_S,
    MAX_STALL_AFTER_S,
    LinkStatus,
    StatusReader,
    exit_code,
    read_status,
    render_table,
)
from talos.errors import InvalidArgument
from topology import Link, Topology, load_topology

DEFAULT_WATCH_S = 2.0
_CLEAR = "\x1b[H\x1b[2J"


def _seconds(name: str, low: float, high: float) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name}: must be a number of seconds, got {text!r}"
            ) from None
        if not low < value <= high or value != value:
            raise argparse.ArgumentTypeError(f"{name}: must be > {low} and <= {high}, got {text}")
        return value

    return parse


def add_status_parser(mirror_sub: Any) -> argparse.ArgumentParser:
    """Register ``status`` under the ``talos mirror`` subcommands."""
    status: argparse.ArgumentParser = mirror_sub.add_parser(
        "status",
        help="lag, throughput and state of each mirror link (exit 1 unless ok or lagging)",
    )
    status.add_argument("--topology", required=True, help="the topology file (TOML)")
    status.add_argument("--link", default=None, help="only this link, SOURCE:TARGET")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--watch",
        nargs="?",
        type=_seconds("watch", 0.0, 3600.0),
        const=DEFAULT_WATCH_S,
        default=None,
        metavar="SECONDS",
        help=f"refresh every SECONDS (default {DEFAULT_WATCH_S:g}) until Ctrl-C",
    )
    status.add_argument(
        "--stall-after",
        type=_seconds("stall-after", 0.0, MAX_STALL_AFTER_S),
        default=DEFAULT_STALL_AFTER_S,
        metavar="S",
        help="a lagging partition with no progress for S seconds is stalled "
        f"(default {DEFAULT_STALL_AFTER_S:g})",
    )
    status.add_argument(
        "--lagging-after",
        type=_seconds("lagging-after", -1.0, MAX_STALL_AFTER_S),
        default=DEFAULT_LAGGING_AFTER_MS / 1000,
        metavar="S",
        help="a partition behind by more than S seconds is lagging "
        f"(default {DEFAULT_LAGGING_AFTER_MS / 1000:g})",
    )
    status.add_argument(
        "--timeout",
        type=_seconds("timeout", 0.0, 300.0),
        default=3.0,
        metavar="S",
        help="how long to wait for each ZooKeeper or broker (default 3)",
    )
    status.set_defaults(func=cmd_mirror_status)
    return status


def _links(topology: Topology, spec: str | None) -> list[Link]:
    if spec:
        return [topology.link(spec)]
    if not topology.links:
        raise InvalidArgument(f"topology: {topology.path} defines no links")
    return list(topology.links)


def print_status(
    statuses: list[LinkStatus], as_json: bool, out: TextIO, one_line: bool = False
) -> None:
    """The tables, or one JSON document (one line each round under ``--watch``)."""
    if as_json:
        document = {
            "healthy": exit_code(statuses) == 0,
            "links": [status.to_dict() for status in statuses],
        }
        out.write(json.dumps(document, indent=None if one_line else 2) + "\n")
    else:
        out.write("\n\n".join(render_table(status) for status in statuses) + "\n")
    out.flush()


def cmd_mirror_status(args: argparse.Namespace) -> int:
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # An unreachable ZooKeeper is reported in the table; kazoo's retries
        # would only repeat it on stderr.
        logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    topology = load_topology(args.topology)
    links = _links(topology, args.link)
    stall_after_ms = int(args.stall_after * 1000)
    lagging_after_ms = max(0, int(args.lagging_after * 1000))
    out = sys.stdout
    with StatusReader(topology, timeout_s=args.timeout) as reader:
        code = 0
        try:
            while True:
                started = time.monotonic()
                statuses = read_status(topology, links, reader, stall_after_ms, lagging_after_ms)
                code = exit_code(statuses)
                if args.watch is not None and not args.json and out.isatty():
                    out.write(_CLEAR)
                print_status(statuses, args.json, out, one_line=args.watch is not None)
                if args.watch is None:
                    return code
                if not args.json:
                    out.write("\n")
                time.sleep(max(0.0, args.watch - (time.monotonic() - started)))
        except KeyboardInterrupt:
            return code
