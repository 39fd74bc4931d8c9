"""``talos export parquet TOPIC --to PATH|hdfs://...``."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from talos.errors import InvalidArgument


def parse_time(text: str, param: str) -> int:
    """Milliseconds since the epoch, or an ISO 8601 date-time (UTC unless it names a zone)."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(
            f"{param}: {text!r} is neither milliseconds since 1970 nor an ISO 8601 date-time "
            "(e.g. 2026-12-02T18:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def cmd_export_parquet(args: argparse.Namespace) -> int:
    from talos.bench.progress import Progress
    from talos.cli import resolve_bootstrap

    from .parquet import export_parquet
    from .plan import Bound

    start = Bound(
        args.from_offset,
        None if args.from_time is None else parse_time(args.from_time, "--from-time"),
    )
    stop = Bound(
        args.to_offset, None if args.to_time is None else parse_time(args.to_time, "--to-time")
    )
    if args.row_group_mb < 1:
        raise InvalidArgument(f"--row-group-mb: must be >= 1, got {args.row_group_mb}")
    bar: dict[str, Any] = {}

    def on_plan(total: int) -> None:
        bar["p"] = Progress("export", total, enabled=not args.no_progress)

    def on_progress(done: int) -> None:
        bar["p"].update(done)
        bar["done"] = done

    result = export_parquet(
        resolve_bootstrap(args.bootstrap),
        args.topic,
        args.to,
        partitions=args.partitions,
        start=start,
        stop=stop,
        row_group_bytes=args.row_group_mb << 20,
        on_plan=on_plan,
        on_progress=on_progress,
    )
    if "p" in bar:
        bar["p"].close(bar.get("done", 0))
    if args.json:
        print(result.to_json())
    elif result.file is None:
        print(f"nothing new to export from {args.topic} to {args.to}")
    else:
        spans = ", ".join(
            f"p{p}:[{s},{e})" for p, ranges in sorted(result.ranges.items()) for s, e in ranges
        )
        print(f"exported {result.rows} message(s) of {args.topic} to {args.to}/{result.file}")
        print(f"offsets {spans}", file=sys.stderr)
    return 0


def add_parser(sub: Any) -> None:
    export = sub.add_parser("export", help="land a topic in files (Parquet)")
    formats = export.add_subparsers(dest="export_format", required=True)
    p = formats.add_parser(
        "parquet",
        help="export a topic to Parquet files, resumably (a rerun adds only what is new)",
    )
    p.add_argument("topic")
    p.add_argument(
        "--to", required=True, help="destination directory: a local path or hdfs://nn:port/path"
    )
    p.add_argument("--bootstrap", default=None, help="broker host:port[,host:port]")
    p.add_argument("--partitions", default=None, help="e.g. 0,2,5-7 (default: all)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-offset", type=int, default=None, help="first offset (inclusive)")
    start.add_argument("--from-time", default=None, help="ms since 1970 or ISO 8601")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument(
        "--to-offset", type=int, default=None, help="end offset (exclusive; default: log end)"
    )
    stop.add_argument("--to-time", default=None, help="ms since 1970 or ISO 8601 (exclusive)")
    p.add_argument("--row-group-mb", type=int, default=64, help="row group size (about)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_export_parquet)
