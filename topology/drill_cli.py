"""``talos drill run PLAN.toml --topology FILE``: run a failover drill and write its timeline."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any


def cmd_drill_run(args: argparse.Namespace) -> int:
    from topology import load_topology
    from topology.drill import format_timeline, load_plan, run_drill, write_timeline

    topology = load_topology(args.topology)
    plan = load_plan(args.plan, topology)  # refuses a bad plan before anything runs
    output = args.output or plan.output or str(Path(args.plan).with_suffix(".timeline.json"))

    def progress(step: Any) -> None:
        state = "ok" if step.ok else "FAILED"
        print(
            f"[{step.started_s:8.2f}s] {step.label}: {state} ({step.duration_s:.2f}s)", flush=True
        )

    result = asyncio.run(run_drill(plan, topology, on_step=progress, probe=not args.no_probe))
    write_timeline(result, output)
    print(format_timeline(result))
    print(f"timeline written to {output}", flush=True)
    if not result.ok:
        print(f"talos: error: {result.error}", file=sys.stderr)
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
        "--no-probe", action="store_true", help="do not measure unavailability per partition"
    )
    run.set_defaults(func=cmd_drill_run)
