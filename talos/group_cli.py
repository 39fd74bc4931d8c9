"""``talos group list|describe|reset-offsets|delete``, as Kafka's kafka-consumer-groups."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from talos.coord.groups import OffsetReset, ResetKind, ResetSpec
from talos.errors import InvalidArgument


def _group_admin(args: argparse.Namespace) -> Any:
    from talos.cli import resolve_bootstrap
    from talos.client import Admin
    from talos.client.group_admin import GroupAdmin

    admin = Admin(resolve_bootstrap(args.bootstrap))
    return admin, GroupAdmin(admin)


def _show(value: int | None) -> str:
    return "-" if value is None or value < 0 else str(value)


def cmd_group_list(args: argparse.Namespace) -> int:
    admin, groups = _group_admin(args)
    with admin:
        found = groups.list_groups()
    if args.json:
        rows = [
            {
                "group": g.group,
                "state": "Stable" if g.live_members else "Empty",
                "live_members": g.live_members,
                "generation": g.generation,
            }
            for g in found
        ]
        print(json.dumps(rows, indent=2))
        return 0
    for g in found:
        print(g.group)
    return 0


def cmd_group_describe(args: argparse.Namespace) -> int:
    admin, groups = _group_admin(args)
    with admin:
        status = groups.describe(args.group)
    if args.json:
        print(json.dumps(status.to_dict(), indent=2))
        return 0
    print(
        f"group {status.group}: {status.state}, generation {status.generation}, "
        f"{len(status.members)} live member(s)"
    )
    for m in status.members:
        held = ", ".join(f"{t}/{p}" for t, p in m.assignment) or "(none)"
        print(f"  member {m.member_id}  topics={','.join(m.topics)}  assigned: {held}")
    print(f"{'topic':<24} {'partition':>9} {'committed':>12} {'log end':>12} {'lag':>10}  member")
    for p in status.partitions:
        print(
            f"{p.topic:<24} {p.partition:>9} {_show(p.committed):>12} {_show(p.log_end):>12} "
            f"{_show(p.lag):>10}  {p.member_id or '-'}"
        )
    return 0


def parse_datetime(text: str) -> int:
    """ISO 8601 to epoch milliseconds; a time without a zone is UTC."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(
            f"to-datetime: {text!r} is not an ISO 8601 time (e.g. 2026-12-02T18:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    millis = int(moment.timestamp() * 1000)
    if millis < 0:
        raise InvalidArgument(f"to-datetime: {text!r} is before 1970")
    return millis


def reset_spec(args: argparse.Namespace) -> ResetSpec:
    if args.to_earliest:
        return ResetSpec(ResetKind.EARLIEST)
    if args.to_latest:
        return ResetSpec(ResetKind.LATEST)
    if args.to_offset is not None:
        if args.to_offset < 0:
            raise InvalidArgument(f"to-offset: must be >= 0, got {args.to_offset}")
        return ResetSpec(ResetKind.OFFSET, args.to_offset)
    return ResetSpec(ResetKind.DATETIME, parse_datetime(args.to_datetime))


def _plan_rows(plan: list[OffsetReset]) -> list[dict[str, Any]]:
    return [
        {
            "topic": r.topic,
            "partition": r.partition,
            "current": r.current if r.current >= 0 else None,
            "new": r.new,
            **({"note": r.note} if r.note else {}),
        }
        for r in plan
    ]


def cmd_group_reset(args: argparse.Namespace) -> int:
    spec = reset_spec(args)
    admin, groups = _group_admin(args)
    with admin:
        plan = groups.reset_offsets(args.group, args.topic, spec, dry_run=args.dry_run)
    if args.json:
        rows = _plan_rows(plan)
        print(json.dumps({"group": args.group, "dry_run": args.dry_run, "offsets": rows}, indent=2))
        return 0
    print(f"{'topic':<24} {'partition':>9} {'current':>12} {'new':>12}")
    for r in plan:
        note = f"  ({r.note})" if r.note else ""
        print(f"{r.topic:<24} {r.partition:>9} {_show(r.current):>12} {r.new:>12}{note}")
    if args.dry_run:
        print("dry run: nothing changed (run without --dry-run to apply)")
    else:
        print(f"group {args.group}: {len(plan)} offset(s) reset")
    return 0


def cmd_group_delete(args: argparse.Namespace) -> int:
    admin, groups = _group_admin(args)
    with admin:
        groups.delete(args.group)
    if args.json:
        print(json.dumps({"group": args.group, "deleted": True}))
    else:
        print(f"deleted group {args.group}")
    return 0


def add_group_parser(sub: Any) -> None:
    group = sub.add_parser("group", help="list, describe, reset offsets of, delete consumer groups")
    group_sub = group.add_subparsers(dest="group_command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = group_sub.add_parser(name, help=help_text)
        p.add_argument("--bootstrap", default=None, help="broker host:port[,host:port]")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    listing = command("list", "every consumer group")
    listing.set_defaults(func=cmd_group_list)

    describe = command("describe", "members, assignment, committed offsets, log ends, lag")
    describe.add_argument("group")
    describe.set_defaults(func=cmd_group_describe)

    reset = command("reset-offsets", "move a group's offsets (only while it has no live member)")
    reset.add_argument("group")
    reset.add_argument("--topic", required=True, help="reset every partition of this topic")
    target = reset.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-earliest", action="store_true", help="each partition's log start")
    target.add_argument("--to-latest", action="store_true", help="each partition's log end")
    target.add_argument(
        "--to-offset", type=int, default=None, help="offset N (kept inside the log's range)"
    )
    target.add_argument(
        "--to-datetime",
        default=None,
        metavar="ISO",
        help="first offset at or after this ISO 8601 time (no zone: UTC)",
    )
    reset.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    reset.set_defaults(func=cmd_group_reset)

    delete = command("delete", "remove a group with no live member and its offsets")
    delete.add_argument("group")
    delete.set_defaults(func=cmd_group_delete)
