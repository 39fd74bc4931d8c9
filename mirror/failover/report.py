"""Text and JSON output of promote and failback."""

from __future__ import annotations

import json

from .plan import FailbackReport, RecoveryReport, ResyncReport

# ==== text output ==============================================================================


def format_recovery(report: RecoveryReport) -> str:
    lines = []
    head = "DRY RUN: would promote" if report.dry_run else "promoted"
    lines.append(f"{head} link {report.link}")
    for topic, (old, new) in sorted(report.epochs.items()):
        lines.append(f"  {topic}: mirror epoch {old} -> {new}")
    for topic in report.already_promoted:
        lines.append(f"  {topic}: was already promoted")
    if report.source_demoted:
        lines.append(f"  made read-only in the source: {', '.join(report.source_demoted)}")
    lines.append("")
    lines.append(
        f"{'topic':<24} {'part':>4} {'last mirrored':>13} {'source end':>10} "
        f"{'gap msgs':>9} {'gap s':>8}  basis"
    )
    for p in report.partitions:
        lines.append(
            f"{p.topic:<24} {p.partition:>4} {p.last_mirrored:>13} "
            f"{_show(p.source_end):>10} {_show(p.gap_messages):>9} "
            f"{_seconds(p.gap_ms):>8}  {p.basis}"
        )
    lines.append(
        f"total gap: {_show(report.gap_messages)} message(s); "
        f"RPO: {_seconds(report.rpo_ms)} s (worst partition)"
    )
    lines.extend(f"note: {note}" for note in report.notes)
    return "\n".join(lines)


def format_failback(report: FailbackReport) -> str:
    head = "DRY RUN: would fail back" if report.dry_run else "failed back"
    lines = [f"{head} link {report.link} (reverse link {report.reverse_link})"]
    lines.append(
        f"{'topic':<24} {'part':>4} {'common':>8} {'A end':>8} {'B end':>8} "
        f"{'diverged':>8} {'archived':>8}  truncated"
    )
    for p in report.partitions:
        lines.append(
            f"{p.topic:<24} {p.partition:>4} {p.common:>8} {p.a_end:>8} {p.b_end:>8} "
            f"{p.diverged:>8} {p.archived:>8}  {'yes' if p.truncated else 'no'}"
            + (f"  ({p.note})" if p.note else "")
        )
    for topic, archive in sorted(report.archive_topics.items()):
        lines.append(f"archive of {topic}'s diverged messages: {archive}")
    lines.append(f"diverged: {report.diverged} message(s); archived: {report.archived}")
    lines.extend(f"skipped {s}" for s in report.skipped)
    lines.extend(f"note: {n}" for n in report.notes)
    if report.reverse:
        lines.append(report.reverse)
    return "\n".join(lines)


def format_resync(report: ResyncReport) -> str:
    head = "DRY RUN: would resync" if report.dry_run else "resynced"
    lines = [
        f"{head} {report.target_topic} (copy of {report.topic} through link {report.link})",
        f"{'part':>4} {'old start':>9} {'old end':>8} {'restart at':>10} {'archived':>8}  groups",
    ]
    for p in report.partitions:
        groups = ", ".join(f"{g}->{o}" for g, o in sorted(p.groups_clamped.items())) or "-"
        lines.append(
            f"{p.partition:>4} {p.target_start:>9} {p.target_end:>8} {_show(p.restart_at):>10} "
            f"{p.archived:>8}  {groups}" + (f"  ({p.note})" if p.note else "")
        )
    lines.append(f"archive of the old copy: {report.archive_topic}")
    lines.extend(f"note: {n}" for n in report.notes)
    return "\n".join(lines)


def _show(value: int | None) -> str:
    return "?" if value is None else str(value)


def _seconds(ms: int | None) -> str:
    return "?" if ms is None else f"{ms / 1000:.3f}"


def report_json(report: RecoveryReport | FailbackReport | ResyncReport) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=True)
