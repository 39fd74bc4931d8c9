"""Topic administration through any broker (brokers write ZooKeeper for us)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from talos.clock import SYSTEM_CLOCK, Clock
from talos.config import (
    TopicConfig,
    validate_partition_count,
    validate_retention,
    validate_topic_name,
)
from talos.errors import InvalidArgument, TalosError, TalosTimeout
from talos.proto import talos_pb2 as pb
from talos.security.tls import ClientSecurity
from talos.wire import raise_for

from .connection import Connections, retry_policy
from .routing import Router


@dataclass(frozen=True)
class PartitionDescription:
    partition: int
    owner_id: str
    owner_address: str
    log_end: int
    #: Offsets below it were removed by retention; -1 when the owner did not answer.
    log_start: int = -1


@dataclass(frozen=True)
class TopicDescription:
    name: str
    config: TopicConfig
    partitions: tuple[PartitionDescription, ...]


class Admin:
    def __init__(
        self,
        bootstrap: str | Sequence[str],
        request_timeout_s: float = 30.0,
        clock: Clock = SYSTEM_CLOCK,
        security: ClientSecurity | None = None,
    ) -> None:
        self.clock = clock
        self.connections = Connections(
            bootstrap, request_timeout=request_timeout_s, security=security
        )
        self.router = Router(self.connections, clock)

    def _admin(self, method: str, request: object) -> None:
        def call() -> None:
            response: pb.AdminResponse = self.connections.call_any(method, request)
            raise_for(response.error)

        retry_policy(30.0)(call)

    def create_topic(
        self,
        name: str,
        partitions: int,
        config: TopicConfig | None = None,
    ) -> None:
        validate_topic_name(name, "name")
        validate_partition_count(partitions)
        config = (config or TopicConfig()).validated()
        self._admin(
            "CreateTopic",
            pb.CreateTopicRequest(
                name=name,
                partitions=partitions,
                config=pb.TopicConfig(
                    max_message_bytes=config.max_message_bytes,
                    durability=config.durability,
                    segment_bytes=config.segment_bytes,
                    segment_ms=config.segment_ms,
                    retention_ms=config.retention_ms,
                    retention_bytes=config.retention_bytes,
                ),
            ),
        )

    def alter_topic(
        self,
        name: str,
        partitions: int | None = None,
        *,
        retention_ms: int | None = None,
        retention_bytes: int | None = None,
    ) -> None:
        """Grow the partition count and/or change retention (None: unchanged).
        The broker checks the new retention against the topic's other settings."""
        validate_topic_name(name, "name")
        if partitions is not None:
            validate_partition_count(partitions)
        validate_retention(retention_ms, retention_bytes)
        if partitions is None and retention_ms is None and retention_bytes is None:
            raise InvalidArgument("alter_topic: give partitions, retention_ms or retention_bytes")
        self._admin(
            "AlterTopic",
            pb.AlterTopicRequest(
                name=name,
                partitions=partitions or 0,
                retention_ms=retention_ms or 0,
                retention_bytes=retention_bytes or 0,
            ),
        )

    def delete_topic(self, name: str) -> None:
        validate_topic_name(name, "name")
        self._admin("DeleteTopic", pb.DeleteTopicRequest(name=name))

    def list_topics(self) -> list[str]:
        def call() -> list[str]:
            response: pb.ListTopicsResponse = self.connections.call_any(
                "ListTopics", pb.ListTopicsRequest()
            )
            raise_for(response.error)
            return list(response.names)

        return retry_policy(30.0)(call)

    def describe_topic(self, name: str) -> TopicDescription:
        """Owners from the routing table; log ends from each owner (only it knows them)."""
        validate_topic_name(name, "name")
        self.router.mark_stale(name)
        route = self.router.route(name)
        brokers = self.router.brokers
        log_ends = list(route.log_ends)
        log_starts = [-1] * len(log_ends)
        for owner in sorted({o for o in route.owners if o in brokers}):
            try:
                response: pb.MetadataResponse = self.connections.call(
                    brokers[owner], "Metadata", pb.MetadataRequest(topics=[name]), timeout=5.0
                )
            except TalosError:
                continue
            for info in response.topics:
                for p in info.partitions:
                    if p.partition < len(log_ends) and route.owners[p.partition] == owner:
                        log_ends[p.partition] = p.log_end
                        log_starts[p.partition] = p.log_start
        return TopicDescription(
            name=name,
            config=route.config,
            partitions=tuple(
                PartitionDescription(p, owner, brokers.get(owner, ""), log_ends[p], log_starts[p])
                for p, owner in enumerate(route.owners)
            ),
        )

    def wait_until_ready(self, name: str, timeout_s: float = 30.0) -> TopicDescription:
        """Wait until every partition has an owner that serves it."""
        deadline = self.clock.monotonic() + timeout_s
        while True:
            description = self.describe_topic(name)
            if all(p.owner_address and p.log_end >= 0 for p in description.partitions):
                return description
            if self.clock.monotonic() >= deadline:
                raise TalosTimeout(
                    f"topic {name!r}: not every partition is served after {timeout_s}s"
                )
            self.clock.sleep(0.1)

    def close(self) -> None:
        self.connections.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
