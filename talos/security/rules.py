"""What each RPC needs: the (operation, topic) pairs the caller must be granted.

Produce requests are checked per batch in the service instead (a stream carries
many topics; each batch is refused on its own, as any other per-batch error).
Metadata, ListTopics, ListOffsets, InitProducer, LeaveGroup and the group listings need
authentication only: offsets are metadata (Metadata shows every log end to any
authenticated caller), and a mirror worker asks the target's log end with mirror rights.
"""

from __future__ import annotations

from typing import Any

from .acl import Operation

Wanted = list[tuple[Operation, str | None]]

#: Methods checked per batch inside the service (see talos.security.interceptor.check).
PER_BATCH = frozenset({"Produce", "ProduceStream"})
AUTHENTICATED_ONLY = frozenset(
    {
        "Metadata",
        "ListTopics",
        "ListOffsets",
        "InitProducer",
        "LeaveGroup",
        "ListGroups",
        "DescribeGroup",
    }
)


def required(method: str, request: Any) -> Wanted:
    """The grants ``method`` with ``request`` needs. An unknown method needs admin on '*'
    (fail closed: a new RPC is refused until someone writes its rule here)."""
    if method in PER_BATCH or method in AUTHENTICATED_ONLY:
        return []
    if method == "Fetch":
        return _each(Operation.CONSUME, (p.topic for p in request.partitions))
    if method == "MirrorAppend":
        return [(Operation.MIRROR, request.topic)]
    if method in ("CreateTopic", "AlterTopic", "DeleteTopic"):
        return [(Operation.ADMIN, request.name)]
    if method == "JoinGroup":
        return _each(Operation.CONSUME, request.topics)
    if method in ("CommitOffsets", "AlterGroupOffsets"):
        return _each(Operation.CONSUME, (o.topic for o in request.offsets))
    if method == "FetchOffsets":
        return _each(Operation.CONSUME, (p.topic for p in request.partitions))
    return [(Operation.ADMIN, None)]  # DeleteGroup, and anything new


def _each(operation: Operation, topics: Any) -> Wanted:
    return [(operation, topic) for topic in dict.fromkeys(topics)]
