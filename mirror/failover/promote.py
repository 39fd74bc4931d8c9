"""``talos mirror promote``: fence the link, read the recovery point, open the target."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kazoo.client import KazooClient

from talos.coord.topics import TopicStore
from talos.errors import (
    InvalidArgument,
    TalosError,
    UnknownTopic,
)
from topology import Link, Topology

from ..paths import promotion_path
from ..state import MirrorState, fence, lifted
from ..state import promote as promoted_state
from .common import (
    FallbackReader,
    MirrorTopic,
    close_zk,
    mirror_pairs,
    newest_ms,
    open_zk,
    read_json,
    read_progress,
    settled_ends,
    source_reader,
    source_view,
    target_reader,
    write_control,
    write_json,
)
from .plan import (
    PartitionRecovery,
    RecoveryReport,
    plan_promotion,
    recovery_point,
    source_demotion,
)

# ==== promote ==================================================================================

log = logging.getLogger(__name__)


@dataclass
class PromoteOptions:
    topics: str | None = None
    dry_run: bool = False
    #: bound on each attempt to reach the source (A), which may be down
    source_timeout_s: float = 5.0
    #: bound on reaching the target (B), which must answer
    target_timeout_s: float = 10.0
    #: how long target ends must stay still after fencing before they are reported
    settle_s: float = 0.5
    settle_max_s: float = 15.0


def promote(
    topology: Topology,
    link_spec: str,
    options: PromoteOptions | None = None,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> RecoveryReport:
    """Promote the target of ``link_spec``; with ``dry_run`` only report.

    Refuses (changing nothing) an unknown link, or a link with no mirror
    topic in the target.
    """
    options = options or PromoteOptions()
    link = topology.link(link_spec)
    target_dc = topology.dc(link.target)
    source_dc = topology.dc(link.source)
    zk_b = open_zk(target_dc, options.target_timeout_s)
    zk_a: KazooClient | None = None
    notes: list[str] = []
    readers: list[FallbackReader] = []
    try:
        topics_b = TopicStore(zk_b)
        pairs = mirror_pairs(topics_b, link, options.topics)
        if not pairs:
            narrowed = f" matching {options.topics!r}" if options.topics else ""
            raise InvalidArgument(
                f"link: {link.name} has no mirror topics{narrowed} in {link.target}; "
                "nothing to promote"
            )
        stamp = now_ms()
        plan = plan_promotion({t.name: t.mirror for t in pairs})
        try:
            zk_a = open_zk(source_dc, options.source_timeout_s)
        except TalosError as exc:
            notes.append(f"{link.source}'s ZooKeeper is unreachable ({exc})")
        demoted: list[str] = []
        if not options.dry_run:
            write_control(zk_b, link.name, "stopped", "promoted", stamp)
            # Fence first and keep producers out, so the ends read next are
            # exactly what the mirror copied; open the topics only after that.
            for t in pairs:
                topics_b.update_mirror(t.name, lifted(fence))
        target = target_reader(target_dc, zk_b, options.target_timeout_s)
        readers.append(target)
        ends = settled_ends(
            target, pairs, options.settle_s if not options.dry_run else 0.0, options.settle_max_s
        )
        if not options.dry_run:
            for t in pairs:
                topics_b.update_mirror(t.name, lifted(lambda m: promoted_state(m, stamp)))
            if zk_a is not None:
                demoted = _demote_source(zk_a, link, pairs, notes)
            else:
                notes.append(
                    f"{link.source}'s topics stay writable until failback makes them read-only"
                )
        source = source_reader(source_dc, zk_a, options.source_timeout_s, notes)
        if source is not None:
            readers.append(source)
        partitions: list[PartitionRecovery] = []
        for t in pairs:
            for p in range(t.partitions):
                target_end = ends[(t.name, p)]
                partitions.append(
                    recovery_point(
                        t.name,
                        t.source_topic,
                        p,
                        target_end,
                        newest_ms(target, t.name, p, target_end),
                        source_view(source, t.source_topic, p, target_end, notes),
                        read_progress(zk_b, link.name, t.name, p),
                    )
                )
        report = RecoveryReport(
            link=link.name,
            promoted_ms=stamp,
            dry_run=options.dry_run,
            partitions=tuple(partitions),
            epochs=plan.epochs,
            already_promoted=plan.already_promoted,
            source_demoted=tuple(demoted),
            notes=tuple(notes),
        )
        if not options.dry_run:
            _record_promotion(zk_b, link, pairs, report)
        return report
    finally:
        for reader in readers:
            reader.close()
        close_zk(zk_a)
        close_zk(zk_b)


def _demotion(
    reverse: str, target_dc: str, target_topic: str
) -> Callable[[MirrorState | None], MirrorState | None]:
    return lambda current: source_demotion(current, reverse, target_dc, target_topic) or current


def _demote_source(
    zk_a: KazooClient, link: Link, pairs: Sequence[MirrorTopic], notes: list[str]
) -> list[str]:
    """Make A's topics read-only (pending mirrors of B:A) so nobody writes A's old history."""
    topics_a = TopicStore(zk_a)
    reverse = f"{link.target}:{link.source}"
    demoted = []
    for t in pairs:
        try:
            current = topics_a.get(t.source_topic)
        except UnknownTopic:
            notes.append(f"{link.source} has no topic {t.source_topic!r} to make read-only")
            continue
        if source_demotion(current.mirror, reverse, link.target, t.name) is None:
            continue  # already someone's read-only mirror
        topics_a.update_mirror(t.source_topic, _demotion(reverse, link.target, t.name))
        demoted.append(t.source_topic)
    return demoted


def _record_promotion(
    zk_b: KazooClient, link: Link, pairs: Sequence[MirrorTopic], report: RecoveryReport
) -> None:
    record = read_json(zk_b, promotion_path(link.name)) or {"topics": {}}
    if record.get("failed_back_ms"):
        record = {"topics": {}}
    topics = dict(record.get("topics") or {})
    by_topic: dict[str, list[int]] = {}
    for p in report.partitions:
        by_topic.setdefault(p.topic, []).append(p.target_end)
    for t in pairs:
        if t.name in topics:
            continue  # the first promotion's recovery point stays
        topics[t.name] = {
            "source_topic": t.source_topic,
            "epoch": report.epochs.get(t.name, (0, 0))[1],
            "target_ends": by_topic.get(t.name, []),
        }
    record.update(
        {
            "link": link.name,
            "promoted_ms": record.get("promoted_ms") or report.promoted_ms,
            "topics": topics,
            "failed_back_ms": None,
            "report": report.to_dict(),
        }
    )
    write_json(zk_b, promotion_path(link.name), record)
