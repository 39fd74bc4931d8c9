"""Failover decisions, free of I/O: recovery point, promotion epochs, divergence,
truncation, refusals. Promote, failback and their dry runs all plan with these."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from talos.config import MAX_TOPIC_NAME_LENGTH, validate_topic_name
from talos.coord.partition_state import PartitionState
from talos.errors import (
    InvalidArgument,
)
from talos.record.batch import (
    HEADER_SIZE,
    BatchHeader,
)
from topology import Link

from ..state import MirrorState, Phase, pending_reverse
from ..state import promote as promote_state

Basis = Literal["source", "progress", "unknown"]

log = logging.getLogger(__name__)


# ==== pure: recovery point =====================================================================


@dataclass(frozen=True)
class SourceView:
    """What was read from the source partition itself (A's store or brokers)."""

    end: int
    #: max timestamp of the source's last batch (None when the log is empty)
    newest_ms: int | None = None
    #: first timestamp of the first batch the target does not have
    first_missing_ms: int | None = None


@dataclass(frozen=True)
class Progress:
    """The mirror worker's last heartbeat for a partition (target ZooKeeper)."""

    source_end: int
    target_end: int
    lag_ms: int
    updated_ms: int


@dataclass(frozen=True)
class PartitionRecovery:
    """The recovery point of one partition at promotion.

    Offsets ``[0, target_end)`` are in B; ``target_end - 1`` is the last
    mirrored offset. The gap is what A had beyond that: lost for B's
    readers until failback archives it.
    """

    topic: str
    source_topic: str
    partition: int
    target_end: int
    source_end: int | None
    gap_messages: int | None
    gap_ms: int | None
    basis: Basis

    @property
    def last_mirrored(self) -> int:
        return self.target_end - 1

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["last_mirrored"] = self.last_mirrored
        return data


def recovery_point(
    topic: str,
    source_topic: str,
    partition: int,
    target_end: int,
    target_newest_ms: int | None,
    source: SourceView | None,
    progress: Progress | None,
) -> PartitionRecovery:
    """Gap in messages and in seconds (RPO) between the source and what B holds.

    From the source itself when it could be read: messages are
    ``source_end - target_end``; seconds run from B's newest mirrored record
    (or the first missing batch when B has none) to A's newest record. Else
    from the worker's last progress heartbeat (its source end and lag).
    Else unknown.
    """
    _nonneg(target_end, "target_end")
    if source is not None:
        gap = max(0, source.end - target_end)
        gap_ms: int | None = 0
        if gap:
            start = target_newest_ms if target_newest_ms is not None else source.first_missing_ms
            if source.newest_ms is None or start is None:
                gap_ms = progress.lag_ms if progress is not None else None
            else:
                gap_ms = max(0, source.newest_ms - start)
        return PartitionRecovery(
            topic, source_topic, partition, target_end, source.end, gap, gap_ms, "source"
        )
    if progress is not None:
        gap = max(0, progress.source_end - target_end)
        return PartitionRecovery(
            topic,
            source_topic,
            partition,
            target_end,
            None,
            gap,
            progress.lag_ms if gap else 0,
            "progress",
        )
    return PartitionRecovery(
        topic, source_topic, partition, target_end, None, None, None, "unknown"
    )


@dataclass(frozen=True)
class RecoveryReport:
    link: str
    promoted_ms: int
    dry_run: bool
    partitions: tuple[PartitionRecovery, ...]
    #: topic -> (old epoch, new epoch); already promoted topics keep theirs
    epochs: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    already_promoted: tuple[str, ...] = ()
    source_demoted: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def gap_messages(self) -> int | None:
        gaps = [p.gap_messages for p in self.partitions]
        return None if any(g is None for g in gaps) else sum(g for g in gaps if g is not None)

    @property
    def rpo_ms(self) -> int | None:
        """The worst partition's gap in time: what the drill calls the RPO."""
        gaps = [p.gap_ms for p in self.partitions]
        if any(g is None for g in gaps):
            return None
        return max((g for g in gaps if g is not None), default=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "link": self.link,
            "promoted_ms": self.promoted_ms,
            "dry_run": self.dry_run,
            "epochs": {t: list(e) for t, e in self.epochs.items()},
            "already_promoted": list(self.already_promoted),
            "source_demoted": list(self.source_demoted),
            "gap_messages": self.gap_messages,
            "rpo_ms": self.rpo_ms,
            "partitions": [p.to_dict() for p in self.partitions],
            "notes": list(self.notes),
        }


# ==== pure: divergence =========================================================================


@dataclass(frozen=True)
class StoredBatch:
    """One batch as a log holds it; ``position`` is its byte offset in its segment (-1: unknown)."""

    header: BatchHeader
    data: bytes
    position: int = -1


def is_copy_of(a: StoredBatch, b: StoredBatch, source_cluster: str) -> bool:
    """Is ``b`` (in B) the mirror's copy of ``a`` (in A)?

    The mirror keeps every byte but the origin fields and hence the CRC, so
    compare the rest field by field, the records byte for byte, and check
    that B's copy names A (or A's own origin) as its origin.
    """
    x, y = a.header, b.header
    if y.origin_cluster != (x.origin_cluster or source_cluster):
        return False
    same_header = (
        x.base_offset,
        x.batch_length,
        x.attributes,
        x.record_count,
        x.first_timestamp,
        x.max_timestamp,
        x.producer_id,
        x.producer_epoch,
        x.base_sequence,
    ) == (
        y.base_offset,
        y.batch_length,
        y.attributes,
        y.record_count,
        y.first_timestamp,
        y.max_timestamp,
        y.producer_id,
        y.producer_epoch,
        y.base_sequence,
    )
    return same_header and a.data[HEADER_SIZE:] == b.data[HEADER_SIZE:]


@dataclass(frozen=True)
class Divergence:
    """Where A's log stops being B's history.

    A keeps ``[.., common)``; A's ``[common, a_end)`` never reached B (it is
    archived); B's ``[common, b_end)`` is what the reverse link copies to A.
    ``position`` is the byte position of A's batch at ``common`` in its
    segment (-1 when A has nothing past ``common``).
    """

    start: int
    common: int
    a_end: int
    b_end: int
    matched_batches: int
    position: int = -1

    @property
    def diverged_messages(self) -> int:
        return self.a_end - self.common

    @property
    def reverse_messages(self) -> int:
        return self.b_end - self.common

    @property
    def certain(self) -> bool:
        """False when the very first compared batch differed: the split may lie earlier."""
        return self.matched_batches > 0 or self.common == self.start == 0


def find_divergence(
    a: Iterable[StoredBatch],
    b: Iterable[StoredBatch],
    *,
    source_cluster: str,
    start: int,
    a_end: int,
    b_end: int,
) -> Divergence:
    """Walk A's and B's batches from ``start`` (a batch boundary in both) in step.

    Stops at the first pair that is not copy and original; the iterables are
    consumed lazily, so a long suffix is never read. When one log ends, the
    common point is its end.
    """
    _nonneg(start, "start")
    if not start <= a_end or not start <= b_end:
        raise InvalidArgument(
            f"start: must be at most both log ends ({a_end}, {b_end}), got {start}"
        )
    common = start
    matched = 0
    position = -1
    b_iter = iter(b)
    for x in a:
        if x.header.base_offset != common:
            raise InvalidArgument(
                f"a: batches must continue at {common}, got one at {x.header.base_offset}"
            )
        position = x.position
        y = next(b_iter, None)
        if y is None:
            break
        if y.header.base_offset != common:
            raise InvalidArgument(
                f"b: batches must continue at {common}, got one at {y.header.base_offset}"
            )
        if not is_copy_of(x, y, source_cluster):
            break
        common = x.header.next_offset
        matched += 1
        position = -1
    if common > min(a_end, b_end):
        raise InvalidArgument(
            f"a_end/b_end: the batches run to {common}, past the log ends ({a_end}, {b_end})"
        )
    return Divergence(start, common, a_end, b_end, matched, position if common < a_end else -1)


def truncated_state(state: PartitionState, divergence: Divergence) -> PartitionState:
    """A's partition state cut back to the common point and released (owner "").

    The owner that the controller assigned takes it over afresh: a newer
    epoch and a new segment starting at ``common``.
    """
    size_at = 0
    if divergence.common < state.sealed_end:
        if divergence.position < 0:
            raise InvalidArgument(
                "divergence: the byte position of A's batch at the common point is unknown"
            )
        holder = next(
            (
                s
                for s in state.segments
                if s.base_offset <= divergence.common < (s.end_offset or s.base_offset)
            ),
            None,
        )
        if holder is not None and holder.base_offset != divergence.common:
            size_at = divergence.position
    cut = state.with_truncation(divergence.common, size_at)
    return dataclasses.replace(cut, owner="")


def archive_topic_name(topic: str, stamp: str) -> str:
    """``<topic>.diverged.<stamp>``, checked against the topic name rules."""
    name = f"{topic}.diverged.{stamp}"
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        raise InvalidArgument(
            f"topic: {topic!r} is too long for an archive topic {name!r} "
            f"(at most {MAX_TOPIC_NAME_LENGTH} characters)"
        )
    return validate_topic_name(name, "archive topic")


def failback_stamp(now_ms: int) -> str:
    return datetime.fromtimestamp(now_ms / 1000, UTC).strftime("%Y%m%dT%H%M%SZ")


def failback_refusal(
    *,
    link: Link,
    promotion: Mapping[str, Any] | None,
    reverse: Link | None,
    pairs: Sequence[tuple[str, str]],
) -> str | None:
    """Why failback must not start (nothing is changed then), or None.

    ``pairs`` are (A's topic, B's topic) of the promoted mirrors.
    """
    if promotion is None or not promotion.get("topics"):
        return (
            f"link {link.name} was never promoted (no promotion record in "
            f"{link.target}'s ZooKeeper); run `talos mirror promote --link {link.name}` first"
        )
    if promotion.get("failed_back_ms"):
        return f"link {link.name} was already failed back; nothing to do"
    reverse_name = f"{link.target}:{link.source}"
    if reverse is None:
        return (
            f"failback needs the reverse link {reverse_name} in the topology to copy "
            f"{link.target}'s writes back to {link.source}; add a [[link]] with "
            f'source = "{link.target}" and target = "{link.source}"'
        )
    for a_topic, b_topic in pairs:
        if reverse.source_topic(a_topic) != b_topic:
            return (
                f"the reverse link {reverse_name} does not map {link.target}'s topic "
                f"{b_topic!r} back onto {link.source}'s {a_topic!r} (its topics: "
                f"{', '.join(reverse.topics)}, naming {reverse.naming}); fix its selector "
                "or naming"
            )
    return None


def clamped_offsets(offsets: Mapping[str, int], divergence: Divergence) -> dict[str, int]:
    """Each group whose committed offset lies past the common point, moved back to it.

    A's log is cut to ``common`` and the reverse link writes B's messages
    from there; a group left at X > common would skip B's ``[common, X)``.
    """
    return clamped_to(offsets, divergence.common)


def clamped_to(offsets: Mapping[str, int], cut: int) -> dict[str, int]:
    """Each group whose committed offset lies past ``cut``, moved back to it."""
    return {group: cut for group, offset in sorted(offsets.items()) if offset > cut}


@dataclass
class PartitionFailback:
    topic: str
    partition: int
    common: int
    a_end: int
    b_end: int
    archived: int = 0
    truncated: bool = False
    served_at: int | None = None
    note: str = ""
    #: group -> the offset it was moved back to (the common point)
    groups_clamped: dict[str, int] = field(default_factory=dict)

    @classmethod
    def planned(
        cls, topic: str, partition: int, divergence: Divergence, groups: Mapping[str, int]
    ) -> PartitionFailback:
        """The plan for one partition, as the dry run reports it and the real run starts it."""
        return cls(
            topic,
            partition,
            divergence.common,
            divergence.a_end,
            divergence.b_end,
            groups_clamped=dict(groups),
        )

    @property
    def diverged(self) -> int:
        return self.a_end - self.common

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["diverged"] = self.diverged
        return data


@dataclass
class FailbackReport:
    link: str
    reverse_link: str
    dry_run: bool
    stamp: str
    archive_topics: dict[str, str] = field(default_factory=dict)
    partitions: list[PartitionFailback] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reverse: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def archived(self) -> int:
        return sum(p.archived for p in self.partitions)

    @property
    def diverged(self) -> int:
        return sum(p.diverged for p in self.partitions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "link": self.link,
            "reverse_link": self.reverse_link,
            "dry_run": self.dry_run,
            "stamp": self.stamp,
            "archive_topics": dict(self.archive_topics),
            "diverged": self.diverged,
            "archived": self.archived,
            "partitions": [p.to_dict() for p in self.partitions],
            "skipped": list(self.skipped),
            "reverse": self.reverse,
            "notes": list(self.notes),
        }


def _nonneg(value: object, param: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{param}: must be an integer >= 0, got {value!r}")
    return value


# ==== pure: promotion ==========================================================================


@dataclass(frozen=True)
class PromotionPlan:
    """Each topic's mirror epoch before and after promotion; the dry run reports the same."""

    epochs: Mapping[str, tuple[int, int]]
    already_promoted: tuple[str, ...]


def plan_promotion(mirrors: Mapping[str, MirrorState]) -> PromotionPlan:
    """What :func:`mirror.state.promote` does to each topic (already promoted ones keep theirs)."""
    return PromotionPlan(
        epochs={
            name: (state.epoch, promote_state(state, 0).epoch)
            for name, state in sorted(mirrors.items())
        },
        already_promoted=tuple(name for name, state in sorted(mirrors.items()) if state.promoted),
    )


def source_demotion(
    current: MirrorState | None, reverse_link: str, target_dc: str, target_topic: str
) -> MirrorState | None:
    """The old primary's topic after promotion: a pending mirror of the reverse link.

    None: leave it alone (it is already another link's read-only mirror).
    """
    if current is not None and current.phase not in (Phase.FAILBACK_PENDING, Phase.PROMOTED):
        return None
    return pending_reverse(current, reverse_link, target_dc, target_topic)


# ==== pure: resync =============================================================================


def resync_refusal(link: Link, source_topic: str, target_mirror: MirrorState | None) -> str | None:
    """Why the target copy of ``source_topic`` cannot be resynced (nothing is changed), or None."""
    if target_mirror is None:
        return f"the target topic is not a mirror of {source_topic!r}; nothing to resync"
    if target_mirror.link != link.name or target_mirror.source_topic != source_topic:
        return (
            f"the target topic is a mirror of {target_mirror.source_topic!r} through link "
            f"{target_mirror.link}, not of {source_topic!r} through {link.name}"
        )
    if target_mirror.phase not in (Phase.MIRRORING, Phase.RESYNCING):
        return (
            f"the target topic is {target_mirror.phase.value}; only a topic the link still "
            "copies can be resynced"
        )
    return None


def resync_cut(state: PartitionState, source_start: int) -> PartitionState:
    """The target partition emptied and released; it starts again at the source's log start
    (or its own, if that is later), so offsets stay equal to the source's."""
    cut = state.with_truncation(state.log_start, 0)
    return dataclasses.replace(cut, log_start=max(state.log_start, source_start), owner="")


@dataclass
class PartitionResync:
    partition: int
    target_start: int
    target_end: int
    #: where the copy starts again: the source's log start (None: unknown in a dry run)
    restart_at: int | None
    archived: int = 0
    served_at: int | None = None
    groups_clamped: dict[str, int] = field(default_factory=dict)
    note: str = ""

    @property
    def replaced(self) -> int:
        """Messages of the old copy that leave the topic (into the archive)."""
        return self.target_end - self.target_start

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["replaced"] = self.replaced
        return data


@dataclass
class ResyncReport:
    link: str
    topic: str
    target_topic: str
    dry_run: bool
    archive_topic: str
    partitions: list[PartitionResync] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def archived(self) -> int:
        return sum(p.archived for p in self.partitions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "link": self.link,
            "topic": self.topic,
            "target_topic": self.target_topic,
            "dry_run": self.dry_run,
            "archive_topic": self.archive_topic,
            "archived": self.archived,
            "partitions": [p.to_dict() for p in self.partitions],
            "notes": list(self.notes),
        }
