"""``python -m chaos``: smoke, run, check, cleanup, and the client processes."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import client


def _datacenters(args: argparse.Namespace) -> int:
    from .runner import mirror_unavailable

    if args.one_dc:
        print("chaos: one datacenter (--one-dc)", flush=True)
        return 1
    reason = mirror_unavailable()
    if reason is not None:
        print(f"chaos: one datacenter: the mirror is not ready ({reason})", flush=True)
        return 1
    print("chaos: two datacenters with a mirror dc1 -> dc2", flush=True)
    return 2


def _smoke(args: argparse.Namespace) -> int:
    from .runner import (
        SMOKE,
        SMOKE_HDFS,
        SMOKE_HDFS_DURATION,
        SMOKE_MIRROR,
        RunConfig,
        hdfs_preflight,
        preflight,
        run_series,
        scenario_kinds,
    )

    reason = preflight()
    if reason is not None:
        print(f"chaos smoke: SKIPPED: {reason}", flush=True)
        return 0
    dcs = _datacenters(args)
    plan = SMOKE + (SMOKE_MIRROR if dcs > 1 else ())
    configs = [
        RunConfig(name, seed, duration=args.duration, datacenters=dcs) for name, seed in plan
    ]
    wanted = {k for name, _ in plan for k in scenario_kinds(name, dcs)}
    hdfs_reason = hdfs_preflight() if not args.no_hdfs else "--no-hdfs"
    if hdfs_reason is None:
        duration = min(args.duration, SMOKE_HDFS_DURATION)
        for name, seed in SMOKE_HDFS:
            configs.append(RunConfig(name, seed, duration, datacenters=dcs, store="hdfs"))
            wanted |= set(scenario_kinds(name, dcs, "hdfs"))
    else:
        print(f"chaos smoke: no HDFS run ({hdfs_reason})", flush=True)
    results = run_series(configs, "make chaos-smoke")
    code = _verdict(results, args.strict_availability)
    injected = {k for r in results for k in r.get("faults", {})}
    if wanted - injected:
        print(f"chaos smoke: fault kinds never injected: {sorted(wanted - injected)}")
        return 1
    return code


def _run(args: argparse.Namespace) -> int:
    from .runner import RunConfig, hdfs_preflight, preflight, run_series, scenario_names

    reason = preflight()
    if reason is None and args.store == "hdfs":
        reason = hdfs_preflight()
    if reason is not None:
        print(f"chaos: SKIPPED: {reason}", flush=True)
        return 0
    dcs = _datacenters(args)
    allowed = scenario_names(dcs, args.store)
    names = args.scenario or ["mixed"]
    for name in names:
        if name not in allowed:
            print(f"chaos: error: scenario: must be one of {allowed}, got {name!r}")
            return 2
    configs = [
        RunConfig(
            names[i % len(names)],
            args.seed + i,
            duration=args.duration,
            keep_passing=args.keep,
            datacenters=dcs,
            store=args.store,
        )
        for i in range(args.runs)
    ]
    store = "" if args.store == "posix" else f" --store {args.store}"
    scenarios = "".join(f" --scenario {name}" for name in args.scenario or [])
    command = (
        f'make chaos ARGS="--runs {args.runs} --duration {args.duration:g} --seed {args.seed}'
        f'{store}{scenarios}"'
    )
    return _verdict(run_series(configs, command), args.strict_availability)


def _verdict(results: list[dict[str, object]], strict_availability: bool) -> int:
    failed = [r for r in results if not r["ok"]]
    slow = [r for r in results if not r.get("unavailability_ok", True)]
    print(
        f"chaos: {len(results) - len(failed)}/{len(results)} runs clean"
        + (f"; availability target missed in {len(slow)}" if slow else ""),
        flush=True,
    )
    if failed or (strict_availability and slow):
        return 1
    return 0


def _check(args: argparse.Namespace) -> int:
    from .checker import check, kill_unavailability
    from .history import history_files, load_history

    events = load_history(history_files(Path(args.run_dir)))
    result = check(events)
    if args.json:
        data = result.to_dict() | {"unavailability": kill_unavailability(events)}
        print(json.dumps(data, indent=2, default=str))
    else:
        print(result.summary())
    return 0 if result.ok else 1


def _cleanup(args: argparse.Namespace) -> int:
    from .netns import cleanup_stale

    removed = cleanup_stale()
    print("removed: " + (", ".join(removed) if removed else "nothing"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chaos", description="Talos chaos suite")
    parser.add_argument("--log-level", default="WARNING")
    sub = parser.add_subparsers(dest="command", required=True)

    smoke = sub.add_parser("smoke", help="fixed seeds covering every fault kind (~10 min)")
    smoke.add_argument("--duration", type=float, default=60.0)
    smoke.add_argument("--strict-availability", action="store_true")
    smoke.add_argument("--one-dc", action="store_true", help="even if the mirror exists")
    smoke.add_argument("--no-hdfs", action="store_true", help="leave out the HDFS run")
    smoke.set_defaults(func=_smoke)

    run = sub.add_parser("run", help="long runs")
    run.add_argument("--runs", type=int, default=1)
    run.add_argument("--duration", type=float, default=300.0)
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--scenario", action="append", help="repeatable; default mixed")
    run.add_argument("--strict-availability", action="store_true")
    run.add_argument("--keep", action="store_true", help="keep the run directory even if clean")
    run.add_argument("--one-dc", action="store_true", help="even if the mirror exists")
    run.add_argument(
        "--store",
        choices=("posix", "hdfs"),
        default="posix",
        help="hdfs: a MiniDFSCluster per datacenter and the HDFS faults (scenario hdfs)",
    )
    run.set_defaults(func=_run)

    checker = sub.add_parser("check", help="re-check the history of a kept run")
    checker.add_argument("run_dir")
    checker.add_argument("--json", action="store_true")
    checker.set_defaults(func=_check)

    cleanup = sub.add_parser("cleanup", help="delete namespaces left by dead runs")
    cleanup.set_defaults(func=_cleanup)

    client.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=str(args.log_level).upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from .runner import Interrupted

    try:
        result: int = args.func(args)
    except Interrupted as exc:
        print(f"chaos: interrupted ({exc}); everything was torn down", flush=True)
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
