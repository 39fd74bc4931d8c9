"""One chaos run end to end, and series of runs (smoke, long runs).

A run: build the hosts, create the topics, start the clients, let the
nemesis play its schedule, heal, stop the producers, drain, check. A run
that passes leaves only a line in chaos/runs/results.jsonl; a failing one
keeps its directory (history, seed, nemesis log, node logs, the store).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from talos.client import Admin, Producer
from talos.config import TopicConfig
from talos.errors import TalosError
from talos.testing.zookeeper import zookeeper_available

from .checker import check, kill_unavailability_samples, percentile
from .harness import DataCenter, Harness, Node
from .history import HistoryWriter, history_files, load_history
from .nemesis import (
    ALL_FAULT_KINDS,
    FAULT_KINDS,
    HDFS_FAULT_KINDS,
    INCARNATION_FAULT_KINDS,
    MIRROR_FAULT_KINDS,
    RECREATE_PARTITIONS,
    RECREATE_TOPIC,
    Nemesis,
    make_schedule,
    recreate_config,
)
from .netns import cleanup_stale, why_unsupported

log = logging.getLogger(__name__)

CHAOS_DIR = Path(__file__).resolve().parent
RUNS_DIR = CHAOS_DIR / "runs"
RESULTS_PATH = CHAOS_DIR / "RESULTS.md"

TOPIC = "chaos"
SEALED_TOPIC = "sealed"
PARTITIONS = 6
SEALED_MESSAGES = 240
SESSION_TIMEOUT = 4.0

#: Scenarios: the fault kinds each one draws from.
SCENARIOS: dict[str, tuple[str, ...]] = {
    "crash": ("kill", "pause", "corrupt-tail"),
    "zombie": ("pause", "zk-expire", "partition"),
    "network": ("partition", "wan", "zk-expire"),
    "disk-clock": ("corrupt-tail", "corrupt-sealed", "clock", "kill"),
    "mixed": FAULT_KINDS,
    # a topic deleted and recreated under traffic, also with its owner paused (issue 11 §1)
    "incarnation": ("recreate", "kill", "pause"),
}
#: With two datacenters (the mirror exists) these are added, and "mixed" draws from all.
MIRROR_SCENARIOS: dict[str, tuple[str, ...]] = {
    "mirror": (*MIRROR_FAULT_KINDS, "kill", "corrupt-tail"),
    "mixed": ALL_FAULT_KINDS,
}
#: `make chaos-smoke`: fixed seeds, about 60 s of faults each, every fault kind covered.
SMOKE: tuple[tuple[str, int], ...] = (
    ("crash", 101),
    ("zombie", 202),
    ("network", 303),
    ("disk-clock", 404),
    ("mixed", 505),
    ("incarnation", 606),
)
SMOKE_MIRROR: tuple[tuple[str, int], ...] = (("mirror", 679),)
#: With store "hdfs" (a MiniDFSCluster per datacenter): the HDFS faults and a broker kill,
#: plus the mirror's kill with two datacenters (its store reader tail-reads HDFS).
HDFS_SCENARIOS: dict[str, tuple[str, ...]] = {"hdfs": (*HDFS_FAULT_KINDS, "kill")}
#: Kinds that edit the posix store's files directly: not on HDFS.
POSIX_ONLY_KINDS = ("corrupt-tail", "corrupt-sealed")
#: The smoke's HDFS run (store "hdfs"), kept short: the MiniDFSCluster costs ~15 s to start.
SMOKE_HDFS: tuple[tuple[str, int], ...] = (("hdfs", 808),)
SMOKE_HDFS_DURATION = 45.0


def mirror_unavailable() -> str | None:
    """None when the cross-DC mirror can run (`mirror.worker` and `talos mirror run`)."""
    import importlib.util
    import subprocess
    import sys

    try:
        if importlib.util.find_spec("mirror.worker") is None:
            return "mirror.worker is not importable"
    except ImportError as exc:
        return f"mirror.worker is not importable: {exc}"
    probe = subprocess.run(
        [sys.executable, "-m", "talos", "mirror", "run", "--help"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        return "`talos mirror run` is not available"
    return None


def scenario_kinds(name: str, datacenters: int, store: str = "posix") -> tuple[str, ...]:
    if store == "hdfs":
        return hdfs_scenario_kinds(name, datacenters)
    if datacenters > 1 and name in MIRROR_SCENARIOS:
        return MIRROR_SCENARIOS[name]
    return SCENARIOS[name]


def hdfs_scenario_kinds(name: str, datacenters: int) -> tuple[str, ...]:
    """A scenario's kinds on HDFS: without the posix file edits, "mixed" with the HDFS
    faults, "hdfs" with the mirror kill when there is a mirror."""
    if name in HDFS_SCENARIOS:
        kinds = HDFS_SCENARIOS[name] + (("kill-mirror",) if datacenters > 1 else ())
    else:
        base = MIRROR_SCENARIOS if datacenters > 1 and name in MIRROR_SCENARIOS else SCENARIOS
        kinds = base[name] + (HDFS_FAULT_KINDS if name == "mixed" else ())
    return tuple(k for k in kinds if k not in POSIX_ONLY_KINDS)


def scenario_names(datacenters: int, store: str = "posix") -> list[str]:
    """The scenarios that can run with this many datacenters on this store."""
    names = set(SCENARIOS) | (set(MIRROR_SCENARIOS) if datacenters > 1 else set())
    if store == "hdfs":
        names = {n for n in names | set(HDFS_SCENARIOS) if hdfs_scenario_kinds(n, datacenters)}
    return sorted(names)


@dataclass(frozen=True)
class RunConfig:
    scenario: str
    seed: int
    duration: float = 60.0
    producers: int = 2
    rate: float = 80.0  # messages per second per producer
    keep_passing: bool = False
    datacenters: int = 1
    store: str = "posix"  # or "hdfs": a MiniDFSCluster per datacenter


class Interrupted(Exception):
    """SIGTERM or SIGINT: stop the run and tear everything down."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(f"signal {signum}")


def run_once(config: RunConfig) -> dict[str, Any]:
    """One run; returns its result (never raises for a failed run, only for interrupts)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    store = "" if config.store == "posix" else f"-{config.store}"
    run_dir = RUNS_DIR / f"{stamp}-{config.scenario}{store}-s{config.seed}"
    (run_dir / "history").mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "scenario": config.scenario,
        "seed": config.seed,
        "duration": config.duration,
        "datacenters": config.datacenters,
        "store": config.store,
        "run_dir": str(run_dir),
        "ok": False,
        "error": "",
    }
    (run_dir / "config.json").write_text(json.dumps(result | {"rate": config.rate}, indent=2))
    harness = Harness(
        run_dir,
        datacenters=config.datacenters,
        session_timeout=SESSION_TIMEOUT,
        store=config.store,
    )
    runner_history = HistoryWriter(run_dir / "history" / "runner.jsonl", "runner")
    nemesis: Nemesis | None = None
    started = time.monotonic()
    kinds = scenario_kinds(config.scenario, config.datacenters, config.store)
    # the topic the "recreate" nemesis deletes and recreates, with a producer of its own
    extra_topics = [RECREATE_TOPIC] if set(kinds) & set(INCARNATION_FAULT_KINDS) else []
    try:
        harness.start()
        dc = harness.dcs[0]
        _create_topics(dc)
        _create_extra_topics(dc, extra_topics)
        harness.wait_until_served(dc, [TOPIC, SEALED_TOPIC, *extra_topics])
        _fill_sealed(dc, runner_history)
        producers = [
            harness.start_client(
                dc,
                f"p{i}",
                [
                    "produce",
                    *_common(dc, f"p{i}", run_dir),
                    "--topic",
                    TOPIC,
                    "--rate",
                    str(config.rate),
                    "--poison-every",
                    "97",
                ],
            )
            for i in range(1, config.producers + 1)
        ]
        producers += _extra_producers(harness, dc, run_dir, extra_topics, config.rate)
        readers = [
            harness.start_client(dc, "r1", ["read", *_common(dc, "r1", run_dir), "--topic", TOPIC])
        ]
        target = harness.dcs[1] if len(harness.dcs) > 1 else None
        if target is not None:
            harness.start_mirror(dc, target, [TOPIC])
            runner_history.write(
                "mirror",
                source_dc=dc.name,
                source_topic=TOPIC,
                target_dc=target.name,
                target_topic=TOPIC,
            )
            readers.append(
                harness.start_client(
                    target, "r2", ["read", *_common(target, "r2", run_dir), "--topic", TOPIC]
                )
            )
        time.sleep(3.0)
        schedule = make_schedule(
            config.seed,
            config.duration,
            kinds,
            SESSION_TIMEOUT,
            PARTITIONS,
        )
        nemesis_log = run_dir / "nemesis.log"
        nemesis = Nemesis(harness, runner_history, nemesis_log, TOPIC, SEALED_TOPIC, config.seed)
        nemesis.note(
            f"seed {config.seed}, scenario {config.scenario}, store {config.store}, schedule:"
        )
        for fault in schedule:
            nemesis.note(f"  {fault.describe()}")
        nemesis.run_in_background(schedule)
        nemesis.join()
        nemesis.heal()
        harness.wait_until_served(dc, [TOPIC, SEALED_TOPIC, *extra_topics], timeout=120)
        time.sleep(5.0)  # traffic after the last heal: the last kill's recovery is measured
        _stop_all(producers, 90.0)
        if target is not None:
            result["mirror_caught_up"] = _wait_for_mirror(harness, dc, target, 120.0)
        time.sleep(3.0)
        _stop_all(readers, 30.0)
        drains = [
            harness.start_client(
                dc,
                "drain",
                [
                    "drain",
                    *_common(dc, "drain", run_dir),
                    "--topics",
                    TOPIC,
                    SEALED_TOPIC,
                    *extra_topics,
                    "--expect-corrupt",
                    SEALED_TOPIC,
                ],
            )
        ]
        if target is not None:
            drains.append(
                harness.start_client(
                    target,
                    "drain",
                    ["drain", *_common(target, "drain", run_dir), "--topics", TOPIC],
                )
            )
        for drain in drains:
            if drain.process is not None:
                drain.process.wait(timeout=300)
                if drain.process.returncode != 0:
                    raise TalosError(f"{drain.name} failed (exit {drain.process.returncode})")
        for node in [*producers, *readers]:
            code = node.process.returncode if node.process is not None else None
            if code not in (0, None):
                raise TalosError(f"client {node.name} exited with {code}; see {node.log_path}")
        result["faults"] = dict(nemesis.injected)
        result["nemesis_errors"] = nemesis.errors
        if nemesis.errors:
            raise TalosError(f"the nemesis could not inject: {'; '.join(nemesis.errors)}")
    except Interrupted:
        result["error"] = "interrupted"
        raise
    except (TalosError, OSError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        log.exception("run %s/%s failed", config.scenario, config.seed)
    finally:
        # teardown must not be cut short by a second Ctrl-C or SIGTERM
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            if nemesis is not None:
                nemesis.stop.set()
                nemesis.join()
                result.setdefault("faults", dict(nemesis.injected))
            runner_history.close()
            harness.stop()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        result["elapsed_s"] = round(time.monotonic() - started, 1)
    _check(result, run_dir)
    if result["ok"] and result["unavailability_ok"] and not config.keep_passing:
        shutil.rmtree(run_dir, ignore_errors=True)
        result["run_dir"] = ""
    return result


def _check(result: dict[str, Any], run_dir: Path) -> None:
    events = load_history(history_files(run_dir))
    checked = check(events)
    samples = kill_unavailability_samples(events)
    unavailable = [sample.seconds for sample in samples if not sample.confounded]
    result["unavailability_confounded"] = sum(1 for s in samples if s.confounded)
    result["counts"] = checked.counts
    result["acked"] = checked.stats.get("acked", 0)
    result["stats"] = checked.stats
    result["unavailability"] = [round(v, 3) if math.isfinite(v) else v for v in unavailable]
    result["summary"] = checked.summary()
    target = SESSION_TIMEOUT + 5.0
    p99 = percentile(unavailable, 0.99)
    result["unavailability_ok"] = not unavailable or p99 <= target
    result["slow_recoveries"] = [
        f"{s.node} killed at {time.strftime('%H:%M:%S', time.localtime(s.killed_at))}: "
        f"{s.dc}/{s.topic}/{s.partition} back after {s.seconds:.1f} s"
        + (" (another fault meanwhile; not counted)" if s.confounded else "")
        for s in samples
        if s.seconds > target
    ]
    result["ok"] = checked.ok and not result["error"]
    (run_dir / "check.json").write_text(
        json.dumps(checked.to_dict() | {"unavailability": unavailable}, indent=2, default=str)
    )
    (run_dir / "summary.txt").write_text(checked.summary() + "\n")


def _log_ends(harness: Harness, dc: DataCenter, topic: str) -> dict[int, int]:
    """partition -> log end, from each owner (-1 where not served)."""
    ends: dict[int, int] = {}
    owners = harness.owners(dc, topic)
    for owner in sorted(set(owners.values())):
        if not owner:
            continue
        with contextlib.suppress(TalosError):
            response = harness.metadata_from(dc.broker(owner), [topic])
            for t in response.topics:
                for p in t.partitions:
                    if p.owner_id == owner:
                        ends[p.partition] = p.log_end
    return ends


def _wait_for_mirror(
    harness: Harness, source: DataCenter, target: DataCenter, timeout: float
) -> bool:
    """Until the target's log ends equal the source's (the mirror caught up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(TalosError):
            want = _log_ends(harness, source, TOPIC)
            have = _log_ends(harness, target, TOPIC)
            if len(want) == PARTITIONS and want == have:
                return True
        time.sleep(1.0)
    return False


def _common(dc: DataCenter, proc: str, run_dir: Path) -> list[str]:
    return [
        "--bootstrap",
        dc.bootstrap,
        "--dc",
        dc.name,
        "--proc",
        proc,
        "--history",
        str(run_dir / "history" / f"{dc.name}-{proc}.jsonl"),
    ]


def _create_topics(dc: DataCenter) -> None:
    with Admin(dc.bootstrap) as admin:
        admin.create_topic(
            TOPIC, PARTITIONS, TopicConfig(durability="sync", segment_bytes=64 * 1024)
        )
        admin.create_topic(SEALED_TOPIC, 1, TopicConfig(durability="sync", segment_bytes=4096))


def _create_extra_topics(dc: DataCenter, topics: Sequence[str]) -> None:
    """The topics only some scenarios use (RECREATE_TOPIC: the "recreate" nemesis)."""
    if RECREATE_TOPIC in topics:
        with Admin(dc.bootstrap) as admin:
            admin.create_topic(RECREATE_TOPIC, RECREATE_PARTITIONS, recreate_config())


def _extra_producers(
    harness: Harness, dc: DataCenter, run_dir: Path, topics: Sequence[str], rate: float
) -> list[Node]:
    """One producer per extra topic (no live reader: offsets are reused across
    incarnations, so the checker reads a recreated topic through the final drain)."""
    return [
        harness.start_client(
            dc,
            f"q{i}",
            [
                "produce",
                *_common(dc, f"q{i}", run_dir),
                "--topic",
                topic,
                "--rate",
                str(rate / 2),
            ],
        )
        for i, topic in enumerate(topics, start=1)
    ]


def _fill_sealed(dc: DataCenter, history: HistoryWriter) -> None:
    """The sacrificial topic: one record per batch, several sealed segments."""
    with Producer(dc.bootstrap, linger_ms=0) as producer:
        for i in range(SEALED_MESSAGES):
            value = f"sealed-{i}"
            history.write("send", dc=dc.name, topic=SEALED_TOPIC, value=value, partition=0)
            meta = producer.send(SEALED_TOPIC, value.encode(), partition=0).result(timeout=60)
            history.write(
                "ack",
                dc=dc.name,
                topic=SEALED_TOPIC,
                value=value,
                partition=meta.partition,
                offset=meta.offset,
            )


def _stop_all(nodes: Sequence[Node], timeout: float) -> None:
    for node in nodes:
        node.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for node in nodes:
        if node.process is None:
            continue
        try:
            node.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:  # the run reports it through the exit code
            node.signal(signal.SIGABRT)  # clients dump their threads' stacks to their log
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(timeout=5.0)
            node.kill()


# ---- series of runs --------------------------------------------------------------------


def preflight() -> str | None:
    """Why the suite cannot run here (it skips), or None."""
    reason = why_unsupported()
    if reason is None:
        reason = zookeeper_available()
    return reason


def hdfs_preflight() -> str | None:
    """Why the HDFS runs cannot run here (they are left out), or None."""
    from talos.testing.hdfs import hdfs_available

    return hdfs_available()


def run_series(configs: Sequence[RunConfig], command: str) -> list[dict[str, Any]]:
    from . import report

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    results: list[dict[str, Any]] = []
    try:
        removed = cleanup_stale()
        if removed:
            print(f"removed leftovers of dead chaos runs: {', '.join(removed)}", flush=True)
        RUNS_DIR.mkdir(parents=True, exist_ok=True)
        for config in configs:
            on = "" if config.store == "posix" else f" on {config.store}"
            print(
                f"== {config.scenario}{on} seed {config.seed}, {config.duration:g} s ...",
                flush=True,
            )
            result = run_once(config)
            results.append(result)
            with (RUNS_DIR / "results.jsonl").open("a") as out:
                out.write(json.dumps(result, default=str) + "\n")
            verdict = "ok" if result["ok"] else "FAIL"
            unavailable = [float(v) for v in result.get("unavailability", [])]
            print(
                f"   {verdict} in {result['elapsed_s']} s: {result.get('acked', 0)} acked, "
                f"faults {result.get('faults', {})}, unavailability after kill "
                f"{[round(v, 1) for v in unavailable]}",
                flush=True,
            )
            if result["error"]:
                print(f"   error: {result['error']}", flush=True)
            for line in result.get("slow_recoveries", []):
                print(f"   slow: {line}", flush=True)
            if not result["ok"] or not result["unavailability_ok"]:
                print("   " + result["summary"].replace("\n", "\n   "), flush=True)
                print(f"   kept: {result['run_dir']}", flush=True)
        report.write(
            RESULTS_PATH, report.render(results, command, SESSION_TIMEOUT, now=time.time())
        )
        print(f"wrote {RESULTS_PATH}", flush=True)
    finally:
        for sig, handler in previous.items():
            with contextlib.suppress(ValueError):
                signal.signal(sig, handler)
    return results
