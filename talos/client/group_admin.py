"""Consumer group administration through any broker, as kafka-consumer-groups does it.

Brokers read and write the groups in ZooKeeper; log ends and offsets by time
come from each partition's owner, since only it knows them. The reset plan is
decided by :func:`talos.coord.groups.plan_offset_reset` and applied in one
request that the broker refuses while the group has live members.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from talos.config import validate_group_name, validate_topic_name
from talos.coord.groups import (
    GroupDescription,
    GroupSummary,
    MemberLease,
    OffsetReset,
    PartitionBounds,
    ResetKind,
    ResetSpec,
    plan_offset_reset,
)
from talos.errors import GroupNotEmpty, UnknownTopic
from talos.proto import talos_pb2 as pb
from talos.wire import raise_for

from .admin import Admin
from .connection import retry_policy
from .consumer import assign_partitions
from .routing import list_offset

T = TypeVar("T")
Partition = tuple[str, int]


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    member_id: str  # "" when no live member is assigned the partition
    committed: int  # -1: nothing committed
    log_end: int  # -1: the owner did not answer
    lag: int | None  # None when either side is unknown


@dataclass(frozen=True)
class MemberStatus:
    member_id: str
    topics: tuple[str, ...]
    expires_ms: int
    assignment: tuple[Partition, ...]


@dataclass(frozen=True)
class GroupStatus:
    group: str
    state: str  # "Stable" with live members, else "Empty"
    generation: int
    members: tuple[MemberStatus, ...]
    partitions: tuple[PartitionLag, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "state": self.state,
            "generation": self.generation,
            "members": [
                {
                    "member_id": m.member_id,
                    "topics": list(m.topics),
                    "lease_expires_ms": m.expires_ms,
                    "assignment": [{"topic": t, "partition": p} for t, p in m.assignment],
                }
                for m in self.members
            ],
            "partitions": [
                {
                    "topic": p.topic,
                    "partition": p.partition,
                    "member_id": p.member_id or None,
                    "committed": p.committed if p.committed >= 0 else None,
                    "log_end": p.log_end if p.log_end >= 0 else None,
                    "lag": p.lag,
                }
                for p in self.partitions
            ],
        }


def group_lag(
    members: Sequence[MemberLease],
    partition_counts: Mapping[str, int],
    committed: Mapping[Partition, int],
    log_ends: Mapping[Partition, int],
) -> tuple[tuple[MemberStatus, ...], tuple[PartitionLag, ...]]:
    """Who holds each partition (the consumers' own assignment rule) and how far behind it is.

    Every partition of a subscribed or committed topic is listed; lag is the
    log end minus the committed offset, unknown while either is.
    """
    assigned = assign_partitions(
        {m.member_id: list(m.topics) for m in members}, dict(partition_counts)
    )
    holder = {(tp.topic, tp.partition): m for m, tps in assigned.items() for tp in tps}
    keys = {(t, p) for t, count in partition_counts.items() for p in range(count)}
    keys.update(committed)
    rows = []
    for key in sorted(keys):
        offset = committed.get(key, -1)
        end = log_ends.get(key, -1)
        lag = max(end - offset, 0) if offset >= 0 and end >= 0 else None
        rows.append(PartitionLag(key[0], key[1], holder.get(key, ""), offset, end, lag))
    statuses = tuple(
        MemberStatus(
            m.member_id,
            m.topics,
            m.expires_ms,
            tuple((tp.topic, tp.partition) for tp in assigned.get(m.member_id, [])),
        )
        for m in members
    )
    return statuses, tuple(rows)


class GroupAdmin:
    """``talos group`` operations on one cluster, through an :class:`Admin`'s connections."""

    def __init__(self, admin: Admin) -> None:
        self.admin = admin

    def _call(self, method: str, request: object, read: Callable[[Any], T]) -> T:
        def call() -> T:
            response = self.admin.connections.call_any(method, request)
            raise_for(response.error)
            return read(response)

        return retry_policy(30.0)(call)

    def list_groups(self) -> list[GroupSummary]:
        return self._call(
            "ListGroups",
            pb.ListGroupsRequest(),
            lambda r: [GroupSummary(g.group, g.live_members, g.generation) for g in r.groups],
        )

    def _describe(self, group: str) -> GroupDescription:
        validate_group_name(group)

        def read(r: pb.DescribeGroupResponse) -> GroupDescription:
            return GroupDescription(
                group=group,
                generation=r.generation,
                members=tuple(
                    MemberLease(m.member_id, tuple(m.topics), m.expires_ms) for m in r.members
                ),
                offsets={(o.topic, o.partition): o.offset for o in r.offsets},
            )

        return self._call("DescribeGroup", pb.DescribeGroupRequest(group=group), read)

    def describe(self, group: str) -> GroupStatus:
        found = self._describe(group)
        topics = {t for m in found.members for t in m.topics} | {t for t, _ in found.offsets}
        counts: dict[str, int] = {}
        log_ends: dict[Partition, int] = {}
        for topic in sorted(topics):
            try:
                description = self.admin.describe_topic(topic)
            except UnknownTopic:
                continue  # deleted since: its committed offsets are still listed
            counts[topic] = len(description.partitions)
            for p in description.partitions:
                log_ends[(topic, p.partition)] = p.log_end
        members, rows = group_lag(found.members, counts, found.offsets, log_ends)
        return GroupStatus(
            group=group,
            state="Stable" if members else "Empty",
            generation=found.generation,
            members=members,
            partitions=rows,
        )

    def plan_reset(self, group: str, topic: str, spec: ResetSpec) -> list[OffsetReset]:
        """The reset of every partition of ``topic``; refused while the group has live members."""
        validate_topic_name(topic, "topic")
        found = self._describe(group)
        if found.members:
            ids = ", ".join(m.member_id for m in found.members)
            raise GroupNotEmpty(
                f"group {group!r} has {len(found.members)} live member(s) ({ids}); "
                "stop its consumers before you reset its offsets"
            )
        connections, router = self.admin.connections, self.admin.router
        router.mark_stale(topic)
        bounds: dict[Partition, PartitionBounds] = {}
        for p in range(router.route(topic).partitions):

            def ask(timestamp_ms: int, p: int = p) -> int:
                return list_offset(connections, router, topic, p, timestamp_ms)

            time_offset = ask(spec.value) if spec.kind is ResetKind.DATETIME else None
            bounds[(topic, p)] = PartitionBounds(ask(-2), ask(-1), time_offset)
        return plan_offset_reset(spec, found.offsets, bounds)

    def reset_offsets(
        self, group: str, topic: str, spec: ResetSpec, dry_run: bool = False
    ) -> list[OffsetReset]:
        plan = self.plan_reset(group, topic, spec)
        if not dry_run:
            request = pb.AlterGroupOffsetsRequest(group=group)
            for item in plan:
                request.offsets.add(topic=item.topic, partition=item.partition, offset=item.new)
            self._call("AlterGroupOffsets", request, lambda r: None)
        return plan

    def delete(self, group: str) -> None:
        validate_group_name(group)
        self._call("DeleteGroup", pb.DeleteGroupRequest(group=group), lambda r: None)
