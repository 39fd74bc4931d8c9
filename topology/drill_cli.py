"""``talos drill run PLAN.toml --topology FILE [--dry-run] [--json]``: run a failover drill.

Progress goes to stderr as each step ends; the timeline (text, or JSON with
``--json``) goes to stdout and to the timeline file. A failing step's error
is printed once, under that step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any


def cmd_drill_run(args: argparse.Namespace) -> int:
    from topology import load_topology
    from topology.drill import (
        dry_run,
        format_dry_run,
        format_timeline,
        load_plan,
        run_drill,
        write_timeline,
    )

    topology = load_topology(args.topology)
    plan = load_plan(args.plan, topology)  # refuses a bad plan before anything runs

    if args.dry_run:

        def checked(host: Any) -> None:
            state = "ok" if host.ok else f"FAILED: {host.error}"
            print(f"checked {host.host}: {state}", file=sys.stderr, flush=True)

        report = asyncio.run(dry_run(plan, topology, on_host=checked))
        if args.json:
            print(json.dumps(report.to_dict(), indent=2, sort_keys=True), flush=True)
        else:
            print(format_dry_run(report), flush=True)
        if not report.ok:
            failed = ", ".join(h.host for h in report.hosts if not h.ok)
            print(f"talos: error: dry run found problems on: {failed}", file=sys.stderr)
            return 1
        return 0

    output = args.output or plan.output or str(Path(args.plan).with_suffix(".timeline.json"))

    def progress(step: Any) -> None:
        print(
            f"[{step.started_s:8.2f}s] {step.label}: {step.status} ({step.duration_s:.2f}s)",
            file=sys.stderr,
            flush=True,
        )

    result = asyncio.run(run_drill(plan, topology, on_step=progress, probe=not args.no_probe))
    write_timeline(result, output)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True), flush=True)
    else:
        print(format_timeline(result), flush=True)
    print(f"timeline written to {output}", file=sys.stderr, flush=True)
    if not result.ok:
        failed = next((s.label for s in result.steps if not s.ok), result.name)
        print(f"talos: error: drill failed at {failed} (see its error above)", file=sys.stderr)
        return 1
    return 0


def add_drill_parser(sub: Any) -> None:
    """Register ``talos drill run`` on the top-level subcommands."""
    drill = sub.add_parser("drill", help="failover drills over SSH")
    drill_sub = drill.add_subparsers(dest="drill_command", required=True)
    run = drill_sub.add_parser("run", help="run the steps of a drill plan on the topology's hosts")
    run.add_argument("plan", help="the drill plan (TOML)")
    run.add_argument("--topology", required=True, help="topology file (TOML)")
    run.add_argument("--output", default=None, help="timeline JSON (default PLAN.timeline.json)")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="connect to every host, check that talos runs there, print the filled-in "
        "commands; run no step",
    )
    run.add_argument("--json", action="store_true", help="print the timeline (or dry run) as JSON")
    run.add_argument(
        "--no-probe", action="store_true", help="do not measure unavailability per partition"
    )
    run.set_defaults(func=cmd_drill_run)
