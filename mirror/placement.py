"""Pure decisions of a link worker: which topics to mirror, and which partitions are mine.

No I/O here. The worker reads ZooKeeper, calls these, then acts:

- :func:`plan_topic`: skip a source topic (not selected, or a loop), create
  its mirror on the target, grow it, copy it, or refuse (the target name is
  taken by a topic that is not this link's mirror).
- :func:`owned_partitions`: sticky consistent hashing over the live workers
  of the link (``ring_assign``), so a joining or leaving worker moves few
  partitions and there is no global rebalance. Every worker computes the same
  answer from the same inputs; while inputs differ for a moment, a partition
  may run twice, which the conditional append makes harmless.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from talos.coord.assignment import ring_assign
from talos.coord.topics import TopicMeta
from talos.errors import InvalidArgument
from talos.record.batch import ORIGIN_CLUSTER_MAX
from topology.model import Link

from .state import MirrorState, new_mirror, target_problem
from .state import loop_reason as state_loop_reason

Partition = tuple[str, int]
TopicAction = Literal["skip", "create", "grow", "ready", "error"]


@dataclass(frozen=True)
class TopicPlan:
    """What to do with one source topic. ``partitions``: how many to create, grow to or copy."""

    source_topic: str
    target_topic: str
    action: TopicAction
    partitions: int = 0
    epoch: int = 0
    reason: str = ""
    #: Not "": the target holds a copy of another incarnation of the source topic.
    diverged: str = ""


def check_link(link: Link) -> None:
    """The DC names are stamped into batches as the origin cluster, which has 16 bytes."""
    for param, name in (("link.source", link.source), ("link.target", link.target)):
        if len(name) > ORIGIN_CLUSTER_MAX or not name.isascii():
            raise InvalidArgument(
                f"{param}: datacenter name {name!r} is stamped into record batches as their "
                f"origin and must be at most {ORIGIN_CLUSTER_MAX} ASCII characters"
            )


def mirror_descriptor(
    link: Link, source_topic: str, source_incarnation: str | None = None
) -> MirrorState:
    """The mirror state of a target topic created by ``link`` (from that source incarnation)."""
    return new_mirror(link.name, link.source, source_topic, source_incarnation)


def loop_reason(link: Link, source_mirror: MirrorState | None) -> str:
    """Why a source topic must not be copied to avoid a loop; "" if it may be."""
    return state_loop_reason(link.source, link.target, source_mirror)


def plan_topic(link: Link, source: TopicMeta, target: TopicMeta | None) -> TopicPlan:
    """The action for ``source`` given the target topic of the same mapped name (or None)."""
    name = source.name
    if not link.selects(name):
        return TopicPlan(name, "", "skip", reason=f"not selected by link {link.name}")
    looped = loop_reason(link, source.mirror)
    if looped:
        return TopicPlan(name, "", "skip", reason=looped)
    target_name = link.target_topic(name)
    if target is None:
        return TopicPlan(name, target_name, "create", source.partitions, epoch=1)
    mirror = target.mirror
    problem = target_problem(link.name, name, mirror)
    if problem or mirror is None:
        return TopicPlan(
            name,
            target_name,
            "error",
            source.partitions,
            mirror.epoch if mirror is not None else 0,
            reason=f"{link.target}/{target_name}: {problem}",
        )
    if target.partitions < source.partitions:
        return TopicPlan(name, target_name, "grow", source.partitions, mirror.epoch)
    diverged = ""
    recorded = mirror.source_incarnation
    if recorded is not None and source.incarnation and recorded != source.incarnation:
        diverged = (
            f"the source topic was recreated (incarnation {source.incarnation}; this copy holds "
            f"incarnation {recorded})"
        )
    return TopicPlan(
        name,
        target_name,
        "ready",
        min(source.partitions, target.partitions),
        mirror.epoch,
        diverged=diverged,
    )


def link_partitions(plans: Iterable[TopicPlan]) -> list[Partition]:
    """The (source topic, partition) pairs the link's workers share: ready and error topics.

    Error topics are placed too, so that exactly one worker reports their error.
    """
    out: list[Partition] = []
    for plan in plans:
        if plan.action in ("ready", "error"):
            out.extend((plan.source_topic, p) for p in range(plan.partitions))
    return out


def owned_partitions(
    partitions: Sequence[Partition],
    workers: Sequence[str],
    me: str,
    *,
    vnodes: int = 64,
    load_factor: float = 1.25,
) -> set[Partition]:
    """The partitions ``me`` copies. A worker that has not seen itself registered yet
    counts itself in, so it never idles on a stale membership view."""
    if not isinstance(me, str) or not me:
        raise InvalidArgument(f"me: must be a non-empty worker id, got {me!r}")
    live = sorted({*workers, me})
    owners = ring_assign(partitions, live, vnodes=vnodes, load_factor=load_factor)
    return {partition for partition, owner in owners.items() if owner == me}
