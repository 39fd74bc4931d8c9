"""chaos/RESULTS.md: one table row per scenario, written by the tool after its runs."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .checker import ANOMALY_KINDS, percentile
from .nemesis import ALL_FAULT_KINDS, HDFS_FAULT_KINDS, INCARNATION_FAULT_KINDS

KINDS = (*ALL_FAULT_KINDS, *INCARNATION_FAULT_KINDS, *HDFS_FAULT_KINDS)

SHORT = {
    "lost-write": "lost",
    "unseen": "unseen",
    "duplicate": "dup",
    "inconsistent-offset": "incons",
    "non-monotonic": "nonmono",
    "poll-skip": "skip",
    "aborted-read": "aborted",
    "phantom": "phantom",
    "fenced-ack": "fenced-ack",
    "corrupt-read": "corrupt",
    "mirror-mismatch": "mirror",
    "divergence": "diverge",
    "old-incarnation": "old-inc",
}


def _seconds(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "never"
    return f"{value:.1f}"


def render(
    runs: Sequence[Mapping[str, Any]],
    command: str,
    session_timeout: float,
    now: float | None = None,
) -> str:
    """The whole RESULTS.md for these runs (pure; ``now`` only stamps the header)."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now if now is not None else 0))
    target = session_timeout + 5.0
    lines = [
        "# Chaos results",
        "",
        f"Written by `{command}` on {stamp}. Each run: one datacenter"
        f"{' or two' if any(r.get('datacenters', 1) > 1 for r in runs) else ''} in network "
        f"namespaces (ZooKeeper, 3 brokers, posix store unless said otherwise), ZooKeeper "
        "session timeout "
        f"{session_timeout:g} s, the faults of chaos/README.md on a seeded schedule; the "
        "history is checked after a final drain.",
        "",
        "Unavailability: seconds from a SIGKILL of a partition's owner until the first "
        "acknowledgement of a message sent after the kill to that partition "
        f"(target: p99 <= session timeout + 5 s = {target:g} s).",
        "",
    ]
    posix = [r for r in runs if r.get("store", "posix") != "hdfs"]
    hdfs = [r for r in runs if r.get("store", "posix") == "hdfs"]
    lines += _table(posix, target) if posix else ["(no run on the posix store)"]
    if hdfs:
        lines += [
            "",
            "## HDFS store",
            "",
            "The same checks with the log store on HDFS: per datacenter a MiniDFSCluster "
            "(one NameNode, three DataNodes, replication 3, one JVM in a namespace of its "
            "own) under the brokers and the mirror's store reader, and the HDFS faults of "
            "chaos/README.md (a DataNode stopped during writes, the NameNode stopped and "
            "restarted, an owner SIGSTOPped until its partition is taken over and resumed "
            "while its lease is recovered).",
            "",
            *_table(hdfs, target),
        ]
    lines += [
        "",
        "Anomaly columns: " + ", ".join(f"{SHORT[k]} = {k}" for k in ANOMALY_KINDS) + ".",
        "",
    ]
    failing = [r for r in runs if not r.get("ok")]
    if failing:
        lines.append("## Failing runs (kept under chaos/runs/)")
        lines.append("")
        for run in failing:
            lines.append(
                f"- {run['scenario']} seed {run['seed']}: {run.get('error') or run.get('summary')}"
                f" — {run.get('run_dir', '')}"
            )
        lines.append("")
    return "\n".join(lines)


def _table(runs: Sequence[Mapping[str, Any]], target: float) -> list[str]:
    """One row per scenario."""
    scenarios: dict[str, list[Mapping[str, Any]]] = {}
    for run in runs:
        scenarios.setdefault(str(run["scenario"]), []).append(run)
    lines: list[str] = []
    kind_header = " | ".join(SHORT[k] for k in ANOMALY_KINDS)
    lines.append(
        "| scenario | runs | seeds | acked msgs | faults injected | "
        f"{kind_header} | unavail p50 s | unavail p99 s | verdict |"
    )
    lines.append("|" + "---|" * (8 + len(ANOMALY_KINDS)))
    for name, group in sorted(scenarios.items()):
        faults: dict[str, int] = {}
        for run in group:
            for kind, count in run.get("faults", {}).items():
                faults[kind] = faults.get(kind, 0) + int(count)
        unavailable = [float(v) for run in group for v in run.get("unavailability", [])]
        counts = {k: sum(int(r.get("counts", {}).get(k, 0)) for r in group) for k in ANOMALY_KINDS}
        p50, p99 = percentile(unavailable, 0.5), percentile(unavailable, 0.99)
        errors = sum(1 for r in group if r.get("error"))
        anomalies = sum(counts.values())
        verdict = "ok"
        if anomalies:
            verdict = "ANOMALIES"
        elif errors:
            verdict = f"{errors} run(s) failed to run"
        elif unavailable and p99 > target:
            verdict = "availability target missed"
        fault_text = ", ".join(f"{k} {faults[k]}" for k in KINDS if faults.get(k))
        total_faults = sum(faults.values())
        lines.append(
            f"| {name} | {len(group)} | {', '.join(str(r['seed']) for r in group)} | "
            f"{sum(int(r.get('acked', 0)) for r in group)} | {total_faults} ({fault_text}) | "
            + " | ".join(str(counts[k]) for k in ANOMALY_KINDS)
            + f" | {_seconds(p50)} ({len(unavailable)} samples) | {_seconds(p99)} | {verdict} |"
        )
    return lines


#: RESULTS.md from this line on is not the chaos tool's: kept when it rewrites the file
#: (the Talos-against-MirrorMaker-2 fault table of `make bench-mirror`).
KEPT_MARKER = "<!-- kept across chaos runs -->"


def with_kept_section(new: str, old: str) -> str:
    """``new`` followed by the part of ``old`` from :data:`KEPT_MARKER` on, if any."""
    at = old.find(KEPT_MARKER)
    return new if at < 0 else new.rstrip("\n") + "\n\n" + old[at:]


def write(path: Path, text: str) -> None:
    if path.exists():
        text = with_kept_section(text, path.read_text(encoding="utf-8"))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
