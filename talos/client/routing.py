"""Client-side addressing: which broker owns which partition.

The table comes from any broker's Metadata answer and is cached. A NOT_OWNER
answer or a dead broker marks it stale; the next lookup refreshes it. Brokers
never forward requests to each other.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from talos.clock import SYSTEM_CLOCK, Clock
from talos.config import TopicConfig
from talos.errors import NotOwner, TalosError, Unavailable, UnknownTopic
from talos.proto import talos_pb2 as pb
from talos.wire import error_from_proto

from .connection import Connections, retry_policy


@dataclass(frozen=True)
class TopicRoute:
    name: str
    config: TopicConfig
    owners: tuple[str, ...]  # owner broker id per partition ("" if none)
    log_ends: tuple[int, ...]

    @property
    def partitions(self) -> int:
        return len(self.owners)


class Router:
    def __init__(
        self,
        connections: Connections,
        clock: Clock = SYSTEM_CLOCK,
        max_age_s: float = 30.0,
        topic_wait_s: float = 5.0,
    ) -> None:
        self.connections = connections
        self.clock = clock
        self.max_age_s = max_age_s
        self.topic_wait_s = topic_wait_s
        self._topics: dict[str, TopicRoute] = {}
        self._brokers: dict[str, str] = {}
        self._fetched_at: dict[str, float] = {}
        self._stale: set[str] = set()
        self._lock = threading.Lock()

    @property
    def brokers(self) -> dict[str, str]:
        return dict(self._brokers)

    def refresh(self, topics: list[str]) -> pb.MetadataResponse:
        response: pb.MetadataResponse = self.connections.call_any(
            "Metadata", pb.MetadataRequest(topics=topics), addresses=list(self._brokers.values())
        )
        self.apply(response)
        return response

    def apply(self, response: pb.MetadataResponse) -> None:
        """Take a Metadata answer into the cache (however it was fetched)."""
        now = self.clock.monotonic()
        with self._lock:
            if response.brokers:
                self._brokers = {b.id: b.address for b in response.brokers}
            for info in response.topics:
                if info.HasField("error") and info.error.code:
                    self._topics.pop(info.name, None)
                    continue
                self._topics[info.name] = TopicRoute(
                    name=info.name,
                    config=TopicConfig(
                        max_message_bytes=info.config.max_message_bytes,
                        durability=info.config.durability,
                        segment_bytes=info.config.segment_bytes,
                        segment_ms=info.config.segment_ms,
                        retention_ms=info.config.retention_ms or TopicConfig.retention_ms,
                        retention_bytes=info.config.retention_bytes or TopicConfig.retention_bytes,
                    ),
                    owners=tuple(p.owner_id for p in info.partitions),
                    log_ends=tuple(p.log_end for p in info.partitions),
                )
                self._fetched_at[info.name] = now
                self._stale.discard(info.name)

    def cached(self, topic: str) -> TopicRoute | None:
        """The cached route however old, without asking anyone (None if never seen)."""
        return self._topics.get(topic)

    def cached_owner(self, topic: str, partition: int) -> str:
        """The owner's address from the cache, "" when unknown; never asks a broker."""
        route = self._topics.get(topic)
        if route is None or partition >= route.partitions:
            return ""
        return self._brokers.get(route.owners[partition], "")

    def needs_refresh(self, topic: str) -> bool:
        """Marked stale, or older than ``max_age_s``."""
        return (
            topic in self._stale
            or self.clock.monotonic() - self._fetched_at.get(topic, 0.0) >= self.max_age_s
        )

    def route(self, topic: str) -> TopicRoute:
        """The cached route, refreshed when stale; waits briefly for a new topic to appear."""
        now = self.clock.monotonic()
        route = self._topics.get(topic)
        fresh = (
            route is not None
            and topic not in self._stale
            and now - self._fetched_at.get(topic, 0.0) < self.max_age_s
        )
        if fresh and route is not None:
            return route
        deadline = now + self.topic_wait_s
        while True:
            response = self.refresh([topic])
            route = self._topics.get(topic)
            if route is not None:
                return route
            if self.clock.monotonic() >= deadline:
                for info in response.topics:
                    error = error_from_proto(info.error)
                    if error is not None:
                        raise error
                raise UnknownTopic(f"topic: {topic!r} does not exist")
            self.clock.sleep(0.1)

    def owner_address(self, topic: str, partition: int) -> str:
        route = self.route(topic)
        owner = route.owners[partition] if partition < route.partitions else ""
        address = self._brokers.get(owner, "")
        if not address:
            self.mark_stale(topic)
            raise Unavailable(f"{topic}/{partition} has no live owner yet")
        return address

    def mark_stale(self, topic: str) -> None:
        self._stale.add(topic)


def partition_error(error: pb.Error) -> TalosError | None:
    """A broker's answer for one partition, as the client should act on it.

    UNKNOWN_TOPIC there is retried through the metadata (as NotOwner): a broker
    learns of a new topic a moment after the others, and the router's next
    lookup waits for the topic or says it is gone.
    """
    found = error_from_proto(error)
    if isinstance(found, UnknownTopic):
        return NotOwner(str(found))
    return found


def list_offset(
    connections: Connections, router: Router, topic: str, partition: int, timestamp_ms: int
) -> int:
    """Ask the owner: -1 for its log end, -2 its log start, else the first offset at a time."""

    def call() -> int:
        address = router.owner_address(topic, partition)
        response: pb.ListOffsetsResponse = connections.call(
            address,
            "ListOffsets",
            pb.ListOffsetsRequest(topic=topic, partition=partition, timestamp_ms=timestamp_ms),
        )
        error = error_from_proto(response.error)
        if error is not None:
            if isinstance(error, NotOwner):
                router.mark_stale(topic)
            raise error
        return int(response.offset)

    return retry_policy(30.0)(call)
