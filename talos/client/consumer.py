"""The consumer: manual assignment or group subscription, seeks, commits.

Group membership is a lease kept by heartbeats (JoinGroup again); every
member computes the same assignment from the sorted member list, and commits
are fenced by the generation, so a member that missed a rebalance cannot
overwrite offsets.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from talos.clock import SYSTEM_CLOCK, Clock
from talos.config import validate_group_name, validate_offset, validate_topic_name
from talos.errors import (
    CorruptRecords,
    IllegalGeneration,
    InvalidArgument,
    OffsetOutOfRange,
    TalosError,
    Throttled,
    UnknownMember,
)
from talos.proto import talos_pb2 as pb
from talos.record.batch import TupleMaker, decode_fetch_as
from talos.security.tls import ClientSecurity
from talos.wire import error_from_proto, raise_for

from .connection import Connections, retry_policy
from .routing import Router, list_offset

log = logging.getLogger(__name__)

OFFSET_RESET = ("earliest", "latest", "none")


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class Message(NamedTuple):
    """One consumed record; a tuple underneath, as poll() makes one per message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_ms: int


def assign_partitions(
    members: dict[str, list[str]], partitions: dict[str, int]
) -> dict[str, list[TopicPartition]]:
    """Round-robin each topic's partitions over the members subscribed to it."""
    result: dict[str, list[TopicPartition]] = {m: [] for m in members}
    for topic in sorted(partitions):
        subscribed = sorted(m for m, topics in members.items() if topic in topics)
        for p in range(partitions[topic]):
            if subscribed:
                result[subscribed[p % len(subscribed)]].append(TopicPartition(topic, p))
    return result


class Consumer:
    def __init__(
        self,
        bootstrap: str | Sequence[str],
        *,
        group_id: str | None = None,
        auto_offset_reset: str = "latest",
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 1000,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 1000,
        fetch_max_bytes: int = 1024 * 1024,
        fetch_max_wait_ms: int = 200,
        request_timeout_s: float = 30.0,
        clock: Clock = SYSTEM_CLOCK,
        tenant: str | None = None,
        security: ClientSecurity | None = None,
    ) -> None:
        if group_id is not None:
            validate_group_name(group_id, "group_id")
        if auto_offset_reset not in OFFSET_RESET:
            raise InvalidArgument(
                f"auto_offset_reset: must be one of {', '.join(OFFSET_RESET)}, "
                f"got {auto_offset_reset!r}"
            )
        if not 1000 <= session_timeout_ms <= 300_000:
            raise InvalidArgument(
                f"session_timeout_ms: must be between 1000 and 300000, got {session_timeout_ms}"
            )
        self.group_id = group_id
        self.auto_offset_reset = auto_offset_reset
        self.enable_auto_commit = enable_auto_commit and group_id is not None
        self.auto_commit_interval_s = auto_commit_interval_ms / 1000
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_s = heartbeat_interval_ms / 1000
        self.fetch_max_bytes = fetch_max_bytes
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.clock = clock
        self.connections = Connections(
            bootstrap, request_timeout=request_timeout_s, tenant=tenant, security=security
        )
        self.router = Router(self.connections, clock)
        self._subscription: list[str] = []
        self._assigned: list[TopicPartition] = []
        self._positions: dict[TopicPartition, int] = {}
        self._committed_positions: dict[TopicPartition, int] = {}
        self._member_id = ""
        self._generation = -1
        self._last_heartbeat = 0.0
        self._last_commit = 0.0
        self._closed = False
        # fetched but not yet returned by poll(); positions are already past them
        self._buffered: list[Message] = []
        # a batch that could not be decoded, per partition: raised by poll() once the
        # records before it were returned; the position stays at it until a seek
        self._corrupt: dict[TopicPartition, CorruptRecords] = {}
        # partitions the broker answered THROTTLED (a quota): not fetched until then
        self._throttled_until: dict[TopicPartition, float] = {}

    # ---- assignment ---------------------------------------------------------

    def subscribe(self, topics: Iterable[str]) -> None:
        if self.group_id is None:
            raise InvalidArgument("group_id: subscribe() needs a consumer group; use assign()")
        self._subscription = sorted(validate_topic_name(t, "topics") for t in topics)
        self._rejoin()

    def assign(self, partitions: Iterable[TopicPartition | tuple[str, int]]) -> None:
        self._subscription = []
        wanted = [TopicPartition(*tp) for tp in partitions]
        for tp in wanted:
            route = self.router.route(validate_topic_name(tp.topic))
            if not 0 <= tp.partition < route.partitions:
                raise InvalidArgument(
                    f"partition: must be between 0 and {route.partitions - 1}, got {tp.partition}"
                )
        self._set_assignment(wanted)

    def assignment(self) -> list[TopicPartition]:
        return list(self._assigned)

    def _set_assignment(self, partitions: list[TopicPartition]) -> None:
        """Keeps the position (and what was fetched from it) only of partitions that stay
        assigned with their position; everything else starts again from its committed
        offset, so a later commit cannot move back to a stale buffered message."""
        self._assigned = sorted(partitions)
        self._positions = {tp: p for tp, p in self._positions.items() if tp in self._assigned}
        self._buffered = [
            m for m in self._buffered if TopicPartition(m.topic, m.partition) in self._positions
        ]
        self._corrupt = {tp: e for tp, e in self._corrupt.items() if tp in self._positions}
        missing = [tp for tp in self._assigned if tp not in self._positions]
        if missing and self.group_id is not None:
            for tp, offset in self.committed(missing).items():
                if offset >= 0:
                    self._positions[tp] = offset
                    self._committed_positions[tp] = offset

    def _rejoin(self) -> None:
        assert self.group_id is not None
        request = pb.JoinGroupRequest(
            group=self.group_id,
            member_id=self._member_id,
            topics=self._subscription,
            session_timeout_ms=self.session_timeout_ms,
        )
        response: pb.JoinGroupResponse = retry_policy(30.0)(
            lambda: self._call_checked("JoinGroup", request)
        )
        self._last_heartbeat = self.clock.monotonic()
        self._member_id = response.member_id
        if response.generation == self._generation:
            return
        self._generation = response.generation
        members = {m.member_id: list(m.topics) for m in response.members}
        counts = {t: self.router.route(t).partitions for t in self._subscription}
        mine = assign_partitions(members, counts).get(self._member_id, [])
        log.info("group %s generation %d: assigned %s", self.group_id, self._generation, mine)
        self._positions = {}
        self._set_assignment(mine)

    def _call_checked(self, method: str, request: object) -> pb.JoinGroupResponse:
        response: pb.JoinGroupResponse = self.connections.call_any(
            method, request, list(self.router.brokers.values())
        )
        raise_for(response.error)
        return response

    # ---- positions ----------------------------------------------------------

    def seek(self, tp: TopicPartition | tuple[str, int], offset: int) -> None:
        tp = TopicPartition(*tp)
        validate_offset(offset)
        if tp not in self._assigned:
            raise InvalidArgument(f"partition: {tp.topic}/{tp.partition} is not assigned")
        self._set_position(tp, offset)

    def _set_position(self, tp: TopicPartition, offset: int) -> None:
        self._buffered = [m for m in self._buffered if (m.topic, m.partition) != tp]
        self._corrupt.pop(tp, None)
        self._positions[tp] = offset

    def seek_to_beginning(self, tps: Iterable[TopicPartition] | None = None) -> None:
        for tp in tps or self._assigned:
            self._set_position(TopicPartition(*tp), self._list_offset(TopicPartition(*tp), -2))

    def seek_to_end(self, tps: Iterable[TopicPartition] | None = None) -> None:
        for tp in tps or self._assigned:
            self._set_position(TopicPartition(*tp), self._list_offset(TopicPartition(*tp), -1))

    def seek_to_timestamp(self, tp: TopicPartition | tuple[str, int], timestamp_ms: int) -> int:
        tp = TopicPartition(*tp)
        if timestamp_ms < 0:
            raise InvalidArgument(f"timestamp_ms: must be >= 0, got {timestamp_ms}")
        offset = self._list_offset(tp, timestamp_ms)
        self._set_position(tp, offset)
        return offset

    def position(self, tp: TopicPartition | tuple[str, int]) -> int:
        """The offset of the next message poll() will return for this partition."""
        tp = TopicPartition(*tp)
        for message in self._buffered:
            if (message.topic, message.partition) == tp:
                return message.offset
        return self._fetch_position(tp)

    def _fetch_position(self, tp: TopicPartition) -> int:
        if tp not in self._positions:
            self._positions[tp] = self._reset_position(tp)
        return self._positions[tp]

    def _list_offset(self, tp: TopicPartition, timestamp_ms: int) -> int:
        return list_offset(self.connections, self.router, tp.topic, tp.partition, timestamp_ms)

    def _reset_position(self, tp: TopicPartition) -> int:
        if self.auto_offset_reset == "none":
            raise OffsetOutOfRange(f"offset: no committed offset for {tp.topic}/{tp.partition}")
        return self._list_offset(tp, -2 if self.auto_offset_reset == "earliest" else -1)

    # ---- polling ------------------------------------------------------------

    def poll(self, timeout_s: float = 1.0, max_records: int = 10_000) -> list[Message]:
        """Messages from the assigned partitions, waiting up to timeout_s for any.

        A batch that cannot be decoded raises CorruptRecords (naming topic, partition
        and offset) once every record fetched before it was returned; the position stays
        at the bad batch, so the next poll raises again until the application seeks past
        it (to ``error.next_offset``).
        """
        if self._closed:
            raise InvalidArgument("consumer: already closed")
        if max_records < 1:
            raise InvalidArgument(f"max_records: must be at least 1, got {max_records}")
        deadline = self.clock.monotonic() + timeout_s
        while not self._buffered:
            if self._corrupt:
                tp = next(iter(self._corrupt))
                raise self._corrupt.pop(tp)
            self._maybe_heartbeat()
            self._maybe_auto_commit()
            self._buffered = self._fetch_once(max(0.0, min(deadline - self.clock.monotonic(), 5.0)))
            if self.clock.monotonic() >= deadline:
                break
        messages, self._buffered = self._buffered[:max_records], self._buffered[max_records:]
        return messages

    def _fetch_once(self, wait_s: float) -> list[Message]:
        if not self._assigned:
            self.clock.sleep(min(wait_s, 0.1))
            return []
        by_address: dict[str, list[TopicPartition]] = {}
        now = self.clock.monotonic()
        for tp in self._assigned:
            if tp in self._corrupt:
                continue  # stays at the bad batch until poll() raised it
            if self._throttled_until.get(tp, 0.0) > now:
                continue  # over the tenant's consume quota: wait its retry-after
            try:
                self._fetch_position(tp)
                address = self.router.owner_address(tp.topic, tp.partition)
            except TalosError as exc:
                if not exc.retriable:
                    raise
                continue
            by_address.setdefault(address, []).append(tp)
        if not by_address:
            self.clock.sleep(min(wait_s, 0.1))
            return []
        messages: list[Message] = []
        # One broker at a time; only the first waits, the others answer at once.
        wait_ms = int(wait_s * 1000) if len(by_address) == 1 else min(int(wait_s * 1000), 20)
        for address, tps in by_address.items():
            request = pb.FetchRequest(max_wait_ms=min(wait_ms, self.fetch_max_wait_ms))
            for tp in tps:
                request.partitions.add(
                    topic=tp.topic,
                    partition=tp.partition,
                    offset=self._positions[tp],
                    max_bytes=self.fetch_max_bytes,
                )
            try:
                response: pb.FetchResponse = self.connections.call(address, "Fetch", request)
            except TalosError as exc:
                if not exc.retriable:
                    raise
                for tp in tps:
                    self.router.mark_stale(tp.topic)
                continue
            for result in response.results:
                messages.extend(self._take(result))
        return messages

    def _take(self, result: pb.FetchResult) -> list[Message]:
        tp = TopicPartition(result.topic, result.partition)
        error = error_from_proto(result.error)
        if error is not None:
            if isinstance(error, OffsetOutOfRange):
                log.warning("%s: %s; resetting (%s)", tp, error.message, self.auto_offset_reset)
                self._positions[tp] = self._reset_position(tp)
            elif isinstance(error, Throttled):
                wait_s = max(error.retry_after_ms, 1) / 1000
                self._throttled_until[tp] = self.clock.monotonic() + wait_s
            elif error.retriable:
                self.router.mark_stale(tp.topic)
            else:
                raise error
            return []
        if not result.records or tp not in self._positions:
            return []
        position = self._positions[tp]
        # Messages built as (topic, partition, offset, key, value, headers, timestamp_ms);
        # the native decoder builds these tuples itself, with no Python call per record.
        make = TupleMaker(Message, tp.topic, tp.partition)

        # A fetch decodes into up to millions of tuples that all stay alive: the cyclic
        # GC would scan them again and again (it doubled the cost); they form no cycles.
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            out, bad = decode_fetch_as(result.records, make, position)
        finally:
            if paused:
                gc.enable()
        if out:
            self._positions[tp] = out[-1].offset + 1
        if bad is not None:
            self._positions[tp] = bad.offset
            self._corrupt[tp] = CorruptRecords(
                f"{tp.topic}/{tp.partition}: the batch at offset {bad.offset} cannot be "
                f"decoded ({bad.error.message}); seek to {bad.next_offset} to skip it",
                topic=tp.topic,
                partition=tp.partition,
                offset=bad.offset,
                next_offset=bad.next_offset,
            )
        return out

    # ---- groups -------------------------------------------------------------

    def _maybe_heartbeat(self) -> None:
        if self.group_id is None or not self._subscription:
            return
        if self.clock.monotonic() - self._last_heartbeat >= self.heartbeat_interval_s:
            self._rejoin()

    def _maybe_auto_commit(self) -> None:
        if self.enable_auto_commit and (
            self.clock.monotonic() - self._last_commit >= self.auto_commit_interval_s
        ):
            try:
                self.commit()
            except (IllegalGeneration, UnknownMember):
                self._rejoin()

    def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        """Commit the next offsets to read (default: the current positions)."""
        if self.group_id is None:
            raise InvalidArgument("group_id: commit() needs a consumer group")
        self._last_commit = self.clock.monotonic()
        if offsets is None:
            offsets = {tp: self.position(tp) for tp in self._positions}
        offsets = {
            TopicPartition(*tp): o
            for tp, o in offsets.items()
            if self._committed_positions.get(TopicPartition(*tp)) != o
        }
        if not offsets:
            return
        for offset in offsets.values():
            validate_offset(offset)
        request = pb.OffsetCommitRequest(
            group=self.group_id,
            member_id=self._member_id if self._subscription else "",
            generation=self._generation if self._subscription else -1,
        )
        for tp, offset in offsets.items():
            request.offsets.add(topic=tp.topic, partition=tp.partition, offset=offset)

        def call() -> None:
            response: pb.AdminResponse = self.connections.call_any(
                "CommitOffsets", request, list(self.router.brokers.values())
            )
            raise_for(response.error)

        retry_policy(30.0)(call)
        self._committed_positions.update(offsets)

    def committed(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Committed offsets (-1 where none)."""
        if self.group_id is None:
            raise InvalidArgument("group_id: committed() needs a consumer group")
        request = pb.OffsetFetchRequest(group=self.group_id)
        for tp in tps:
            request.partitions.add(topic=tp[0], partition=tp[1])

        def call() -> pb.OffsetFetchResponse:
            response: pb.OffsetFetchResponse = self.connections.call_any(
                "FetchOffsets", request, list(self.router.brokers.values())
            )
            raise_for(response.error)
            return response

        response = retry_policy(30.0)(call)
        return {TopicPartition(o.topic, o.partition): o.offset for o in response.offsets}

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self.enable_auto_commit:
                try:
                    self.commit()
                except TalosError as exc:
                    log.warning("final commit failed: %s", exc)
            if self.group_id is not None and self._member_id:
                try:
                    self.connections.call_any(
                        "LeaveGroup",
                        pb.LeaveGroupRequest(group=self.group_id, member_id=self._member_id),
                    )
                except TalosError as exc:
                    log.warning("leaving group failed: %s", exc)
        finally:
            self._closed = True
            self.connections.close()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
