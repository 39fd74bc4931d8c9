"""The broker's gRPC service: thin handlers that validate, route and convert errors.

Handlers never block the event loop on ZooKeeper: coordination calls run in
a thread. The produce path touches no ZooKeeper at all.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from talos import config as cfg
from talos import metrics
from talos.errors import (
    CorruptBatch,
    Fenced,
    InvalidArgument,
    MessageTooLarge,
    ReadOnlyMirror,
    TalosError,
    Throttled,
    Unavailable,
)
from talos.proto import talos_pb2 as pb
from talos.proto import talos_pb2_grpc as pb_grpc
from talos.quota import wire as quota_wire
from talos.quota.model import Rates
from talos.quota.store import QuotaStore
from talos.record.batch import BatchHeader, iter_batches, validate_single_batch
from talos.security import interceptor as auth
from talos.security.acl import Operation
from talos.wire import error_to_proto

if TYPE_CHECKING:
    from .server import Broker

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_FETCH_BYTES = 16 * 1024 * 1024
MAX_WAIT_MS = 30_000


def throttled(wait_ms: int, what: str) -> Throttled:
    return Throttled(f"{what}: over quota; retry after {wait_ms} ms", retry_after_ms=wait_ms)


def topic_config_to_proto(config: cfg.TopicConfig) -> pb.TopicConfig:
    return pb.TopicConfig(
        max_message_bytes=config.max_message_bytes,
        durability=config.durability,
        segment_bytes=config.segment_bytes,
        segment_ms=config.segment_ms,
        retention_ms=config.retention_ms,
        retention_bytes=config.retention_bytes,
    )


def topic_config_from_proto(message: pb.TopicConfig) -> cfg.TopicConfig:
    """Zero or empty fields take the defaults."""
    defaults = cfg.TopicConfig()
    return cfg.TopicConfig(
        max_message_bytes=message.max_message_bytes or defaults.max_message_bytes,
        durability=message.durability or defaults.durability,
        segment_bytes=message.segment_bytes or defaults.segment_bytes,
        segment_ms=message.segment_ms or defaults.segment_ms,
        retention_ms=message.retention_ms or defaults.retention_ms,
        retention_bytes=message.retention_bytes or defaults.retention_bytes,
    ).validated()


Handler = Callable[[Any, Any, Any], Awaitable[Any]]


def replies_with_error(response_type: Callable[..., Any]) -> Callable[[Handler], Handler]:
    """Answer a Talos error as the response's ``error`` field instead of a gRPC failure."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def run(self: BrokerService, request: Any, context: Any) -> Any:
            try:
                return await handler(self, request, context)
            except TalosError as exc:
                return response_type(error=error_to_proto(self.broker.hint(exc, request)))

        return run

    return wrap


class BrokerService(pb_grpc.BrokerServicer):  # type: ignore[misc]
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def _coord(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(fn)

    # ---- produce / fetch ----------------------------------------------------

    async def Produce(
        self, request: pb.ProduceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ProduceResponse:
        outcomes = await self._start_produce(request, auth.tenant_of(context))
        return self._produce_response(request, outcomes)

    async def ProduceStream(
        self,
        requests: AsyncIterator[pb.ProduceRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.ProduceResponse]:
        """Pipelined produce: each request is answered as soon as its batches are acknowledged.

        Answers can overtake each other (a slow partition must not hold up the
        others); the client matches them by ``request_id``.
        """
        answers: asyncio.Queue[pb.ProduceResponse | None] = asyncio.Queue()
        tenant = auth.tenant_of(context)
        reader = asyncio.ensure_future(self._read_produce_stream(requests, answers, tenant))
        try:
            while (answer := await answers.get()) is not None:
                yield answer
        finally:
            reader.cancel()

    async def _read_produce_stream(
        self,
        requests: AsyncIterator[pb.ProduceRequest],
        answers: asyncio.Queue[pb.ProduceResponse | None],
        tenant: str,
    ) -> None:
        outstanding = 0
        ended = False

        def answered(request: pb.ProduceRequest, gathered: asyncio.Future[list[Any]]) -> None:
            nonlocal outstanding
            outstanding -= 1
            if not gathered.cancelled():
                answers.put_nowait(self._produce_response(request, gathered.result()))
            if ended and outstanding == 0:
                answers.put_nowait(None)

        try:
            async for request in requests:
                outstanding += 1
                self._start_produce(request, tenant).add_done_callback(
                    functools.partial(answered, request)
                )
        finally:  # the client half-closed or went away: end once every answer is out
            ended = True
            if outstanding == 0:
                answers.put_nowait(None)

    def _start_produce(self, request: pb.ProduceRequest, tenant: str) -> asyncio.Future[list[Any]]:
        """Hand every batch to its partition's writer; one future for all their outcomes."""
        broker = self.broker
        futures: list[Awaitable[int]] = []
        waits = self._produce_quota(request, tenant)
        for i, batch in enumerate(request.batches):
            metrics.produced(batch.topic, len(batch.records))
            try:
                auth.check(Operation.PRODUCE, batch.topic)  # a no-op without --auth
                if waits is not None and waits[i]:
                    raise throttled(waits[i], f"tenant {tenant!r} producing to {batch.topic!r}")
                plog = broker.owned_log(batch.topic, batch.partition)
                meta = broker.topic_cache.get(batch.topic)
                if meta is not None and meta.mirror is not None and not meta.mirror.writable:
                    raise ReadOnlyMirror(
                        f"topic: {batch.topic!r} is a mirror of link {meta.mirror.link} "
                        f"({meta.mirror.phase.value}); it is read-only until promoted"
                    )
                header = validate_single_batch(batch.records)
                limit = plog.config.max_message_bytes
                if header.total_size > limit:
                    raise MessageTooLarge(
                        f"records: batch of {header.total_size} bytes exceeds the topic's "
                        f"max_message_bytes {limit}"
                    )
                futures.append(plog.submit(batch.records, header))
            except TalosError as exc:
                failed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                failed.set_exception(exc)
                futures.append(failed)
        gathered = asyncio.gather(*futures, return_exceptions=True)
        metrics.time_produce(gathered)
        return gathered

    def _produce_quota(self, request: pb.ProduceRequest, tenant: str) -> list[int] | None:
        """Per batch, 0 or the ms until the tenant's quotas admit it; None: all admitted."""
        return self.broker.quotas.enforcer.admit_produce(
            tenant, [(batch.topic, len(batch.records)) for batch in request.batches]
        )

    def _produce_response(
        self, request: pb.ProduceRequest, outcomes: list[Any]
    ) -> pb.ProduceResponse:
        response = pb.ProduceResponse(request_id=request.request_id)
        for batch, outcome in zip(request.batches, outcomes, strict=True):
            result = response.results.add(topic=batch.topic, partition=batch.partition)
            if isinstance(outcome, BaseException):
                result.error.CopyFrom(error_to_proto(self.broker.hint(_as_talos(outcome), batch)))
            else:
                result.base_offset = outcome
        return response

    async def MirrorAppend(
        self, request: pb.MirrorAppendRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.MirrorAppendResponse:
        broker = self.broker
        try:
            plog = broker.owned_log(request.topic, request.partition)
            meta = broker.topic_cache.get(request.topic)
            mirror = meta.mirror if meta is not None else None
            if mirror is None:
                raise InvalidArgument(f"topic: {request.topic!r} is not a mirror topic")
            refusal = mirror.append_refusal(request.link, request.mirror_epoch)
            if refusal:
                raise Fenced(f"link {request.link}: {request.topic!r}: {refusal}")
            if request.HasField("skip_from"):
                log_end = await plog.submit_skip(
                    *skip_range(request.skip_from, request.expected_offset, request.records)
                )
                return pb.MirrorAppendResponse(log_end=log_end)
            headers = mirror_batches(request.records, request.expected_offset)
            log_end = await plog.submit_mirror(request.records, headers, request.expected_offset)
            return pb.MirrorAppendResponse(log_end=log_end)
        except TalosError as exc:
            error = error_to_proto(broker.hint(exc, request))
            plog_now = broker.logs.get((request.topic, request.partition))
            log_end = plog_now.log_end if plog_now is not None else -1
            return pb.MirrorAppendResponse(error=error, log_end=log_end)

    async def Fetch(
        self, request: pb.FetchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.FetchResponse:
        tenant = auth.tenant_of(context)
        admitted, refused = self._fetch_quota(request, tenant)
        if refused and not admitted.partitions:
            return with_refused(pb.FetchResponse(), refused)
        response = await self._serve_fetch(admitted)
        self.broker.quotas.enforcer.fetched(
            tenant, [(r.topic, len(r.records)) for r in response.results]
        )
        return with_refused(response, refused)

    async def _serve_fetch(self, request: pb.FetchRequest) -> pb.FetchResponse:
        broker = self.broker
        max_wait = min(max(request.max_wait_ms, 0), MAX_WAIT_MS) / 1000
        response = await self._fetch(request)
        if max_wait > 0 and not any(r.records for r in response.results):
            waits = []
            for part, result in zip(request.partitions, response.results, strict=True):
                if result.HasField("error"):
                    continue
                plog = broker.logs.get((part.topic, part.partition))
                if plog is not None:
                    waits.append(asyncio.ensure_future(plog.wait_for_data(part.offset, max_wait)))
            if waits:
                _done, pending = await asyncio.wait(
                    waits, timeout=max_wait, return_when=asyncio.FIRST_COMPLETED
                )
                for task in pending:
                    task.cancel()
                response = await self._fetch(request)
        metrics.fetched(response.results)
        return response

    def _fetch_quota(
        self, request: pb.FetchRequest, tenant: str
    ) -> tuple[pb.FetchRequest, dict[int, pb.FetchResult]]:
        """The partitions the tenant's consume quotas admit, and THROTTLED answers (by
        position in the request) for the others."""
        waits = self.broker.quotas.enforcer.admit_fetch(
            tenant, [part.topic for part in request.partitions]
        )
        if waits is None or not any(waits):
            return request, {}
        admitted = pb.FetchRequest(max_wait_ms=request.max_wait_ms)
        refused: dict[int, pb.FetchResult] = {}
        for i, (part, wait) in enumerate(zip(request.partitions, waits, strict=True)):
            if not wait:
                admitted.partitions.append(part)
                continue
            error = throttled(wait, f"tenant {tenant!r} consuming {part.topic!r}")
            refused[i] = pb.FetchResult(
                topic=part.topic, partition=part.partition, error=error_to_proto(error)
            )
        return admitted, refused

    async def _fetch(self, request: pb.FetchRequest) -> pb.FetchResponse:
        """Reads that return data go to a thread, so the loop keeps serving produces."""
        logs = self.broker.logs
        for part in request.partitions:
            plog = logs.get((part.topic, part.partition))
            if plog is not None and part.offset < plog.log_end:
                return await asyncio.to_thread(self._fetch_once, request)
        return self._fetch_once(request)  # nothing to read: answering is cheap

    def _fetch_once(self, request: pb.FetchRequest) -> pb.FetchResponse:
        broker = self.broker
        response = pb.FetchResponse()
        for part in request.partitions:
            result = response.results.add(topic=part.topic, partition=part.partition)
            try:
                cfg.validate_offset(part.offset)
                max_bytes = part.max_bytes if part.max_bytes > 0 else 1024 * 1024
                plog = broker.owned_log(part.topic, part.partition, serving=True)
                result.records = plog.read(part.offset, min(max_bytes, MAX_FETCH_BYTES))
                result.log_start = plog.log_start
                result.log_end = plog.log_end
            except TalosError as exc:
                result.error.CopyFrom(error_to_proto(broker.hint(exc, part)))
        return response

    @replies_with_error(pb.ListOffsetsResponse)
    async def ListOffsets(
        self, request: pb.ListOffsetsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListOffsetsResponse:
        plog = self.broker.owned_log(request.topic, request.partition, serving=True)
        if request.timestamp_ms == -1:
            offset = plog.log_end
        elif request.timestamp_ms == -2:
            offset = plog.log_start
        elif request.timestamp_ms < 0:
            raise InvalidArgument(
                f"timestamp_ms: must be -1 (latest), -2 (earliest) or >= 0, "
                f"got {request.timestamp_ms}"
            )
        else:
            offset = await asyncio.to_thread(plog.offset_for_time, request.timestamp_ms)
        return pb.ListOffsetsResponse(offset=offset)

    # ---- metadata and admin -------------------------------------------------

    async def Metadata(
        self, request: pb.MetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.MetadataResponse:
        return self.broker.metadata(list(request.topics))

    @replies_with_error(pb.AdminResponse)
    async def CreateTopic(
        self, request: pb.CreateTopicRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AdminResponse:
        cfg.validate_topic_name(request.name, "name")
        cfg.validate_partition_count(request.partitions)
        config = topic_config_from_proto(request.config)
        await self._coord(
            lambda: self.broker.topics.create(
                request.name, request.partitions, config, self.broker.clock.wall_ms()
            )
        )
        await self.broker.topic_cache.refresh_async(request.name)
        return pb.AdminResponse()

    @replies_with_error(pb.AdminResponse)
    async def AlterTopic(
        self, request: pb.AlterTopicRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AdminResponse:
        cfg.validate_topic_name(request.name, "name")
        retention_ms = request.retention_ms or None
        retention_bytes = request.retention_bytes or None
        retention = retention_ms is not None or retention_bytes is not None
        if not retention and not request.partitions:
            raise InvalidArgument(
                "alter: give partitions, retention_ms or retention_bytes (nothing to change)"
            )
        if retention:  # checked before anything is stored: bad input changes nothing
            meta = await self._coord(lambda: self.broker.topics.get(request.name))
            meta.config.with_retention(retention_ms, retention_bytes)
        if request.partitions:
            await self._coord(
                lambda: self.broker.topics.add_partitions(
                    request.name, request.partitions, param="partitions"
                )
            )
        if retention:
            await self._coord(
                lambda: self.broker.topics.alter_retention(
                    request.name, retention_ms, retention_bytes
                )
            )
        await self.broker.topic_cache.refresh_async(request.name)
        return pb.AdminResponse()

    @replies_with_error(pb.AdminResponse)
    async def DeleteTopic(
        self, request: pb.DeleteTopicRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AdminResponse:
        cfg.validate_topic_name(request.name, "name")
        await self._coord(lambda: self.broker.delete_topic(request.name))
        await self.broker.topic_cache.refresh_async(request.name)
        return pb.AdminResponse()

    @replies_with_error(pb.ListTopicsResponse)
    async def ListTopics(
        self, request: pb.ListTopicsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListTopicsResponse:
        names = await self._coord(self.broker.topics.list)
        return pb.ListTopicsResponse(names=names)

    @replies_with_error(pb.InitProducerResponse)
    async def InitProducer(
        self, request: pb.InitProducerRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.InitProducerResponse:
        producer_id = await self._coord(self.broker.allocate_producer_id)
        return pb.InitProducerResponse(producer_id=producer_id, producer_epoch=0)

    # ---- consumer groups ----------------------------------------------------

    @replies_with_error(pb.JoinGroupResponse)
    async def JoinGroup(
        self, request: pb.JoinGroupRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.JoinGroupResponse:
        cfg.validate_group_name(request.group)
        for topic in request.topics:
            cfg.validate_topic_name(topic, "topics")
        timeout_ms = request.session_timeout_ms or 10_000
        if not 1000 <= timeout_ms <= 300_000:
            raise InvalidArgument(
                f"session_timeout_ms: must be between 1000 and 300000, got {timeout_ms}"
            )
        view = await self._coord(
            lambda: self.broker.groups.join(
                request.group,
                request.member_id,
                sorted(request.topics),
                timeout_ms,
                self.broker.clock.wall_ms(),
            )
        )
        response = pb.JoinGroupResponse(member_id=view.member_id, generation=view.generation)
        for member_id, topics in sorted(view.members.items()):
            response.members.add(member_id=member_id, topics=topics)
        return response

    @replies_with_error(pb.AdminResponse)
    async def LeaveGroup(
        self, request: pb.LeaveGroupRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AdminResponse:
        cfg.validate_group_name(request.group)
        await self._coord(
            lambda: self.broker.groups.leave(
                request.group, request.member_id, self.broker.clock.wall_ms()
            )
        )
        return pb.AdminResponse()

    @replies_with_error(pb.AdminResponse)
    async def CommitOffsets(
        self, request: pb.OffsetCommitRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AdminResponse:
        cfg.validate_group_name(request.group)
        offsets = {}
        for item in request.offsets:
            cfg.validate_topic_name(item.topic)
            cfg.validate_offset(item.offset)
            offsets[(item.topic, item.partition)] = item.offset
        await self._coord(
            lambda: self.broker.groups.commit(
                request.group, request.member_id, request.generation, offsets
            )
        )
        return pb.AdminResponse()

    @replies_with_error(pb.OffsetFetchResponse)
    async def FetchOffsets(
        self, request: pb.OffsetFetchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.OffsetFetchResponse:
        cfg.validate_group_name(request.group)
        wanted = [(tp.topic, tp.partition) for tp in request.partitions]
        found = await self._coord(lambda: self.broker.groups.fetch(request.group, wanted))
        response = pb.OffsetFetchResponse()
        for (topic, partition), offset in sorted(found.items()):
            response.offsets.add(topic=topic, partition=partition, offset=offset)
        return response

    # ---- consumer group administration --------------------------------------

    @replies_with_error(pb.ListGroupsResponse)
    async def ListGroups(
        self, request: pb.ListGroupsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListGroupsResponse:
        groups = await self._coord(
            lambda: self.broker.groups.list_groups(self.broker.clock.wall_ms())
        )
        response = pb.ListGroupsResponse()
        for g in groups:
            response.groups.add(group=g.group, live_members=g.live_members, generation=g.generation)
        return response

    @replies_with_error(pb.DescribeGroupResponse)
    async def DescribeGroup(
        self, request: pb.DescribeGroupRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DescribeGroupResponse:
        found = await self._coord(
            lambda: self.broker.groups.describe(request.group, self.broker.clock.wall_ms())
        )
        response = pb.DescribeGroupResponse(generation=found.generation)
        for member in found.members:
            response.members.add(
                member_id=member.member_id, topics=member.topics, expires_ms=member.expires_ms
            )
        for (topic, partition), offset in sorted(found.offsets.items()):
            response.offsets.add(topic=topic, partition=partition, offset=offset)
        return response

    @replies_with_error(pb.AdminResponse)
    async def AlterGroupOffsets(
        self, request: pb.AlterGroupOffsetsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AdminResponse:
        offsets = {(item.topic, item.partition): item.offset for item in request.offsets}
        await self._coord(
            lambda: self.broker.groups.alter_offsets(
                request.group, offsets, self.broker.clock.wall_ms()
            )
        )
        return pb.AdminResponse()

    @replies_with_error(pb.AdminResponse)
    async def DeleteGroup(
        self, request: pb.DeleteGroupRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AdminResponse:
        await self._coord(
            lambda: self.broker.groups.delete(request.group, self.broker.clock.wall_ms())
        )
        return pb.AdminResponse()

    # ---- quotas (talos quota ...) ---------------------------------------------

    def _quota_store(self) -> QuotaStore:
        store = self.broker.quotas.store
        if store is None:
            raise Unavailable("quotas: this broker is still starting; retry")
        return store

    @replies_with_error(pb.QuotaResponse)
    async def RequestQuota(
        self, request: pb.RequestQuotaRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.QuotaResponse:
        store, live = self._quota_store(), len(self.broker.live_brokers)
        info = await self._coord(lambda: quota_wire.request_quota(store, request, live))
        return pb.QuotaResponse(quota=info)

    @replies_with_error(pb.QuotaResponse)
    async def DecideQuota(
        self, request: pb.DecideQuotaRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.QuotaResponse:
        store = self._quota_store()
        quota = await self._coord(lambda: store.decide(request.id, request.approve))
        return pb.QuotaResponse(quota=quota_wire.quota_to_proto(quota, Rates()))

    @replies_with_error(pb.ListQuotasResponse)
    async def ListQuotas(
        self, request: pb.ListQuotasRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListQuotasResponse:
        store, live = self._quota_store(), len(self.broker.live_brokers)
        view = await self._coord(lambda: store.view(live))
        return quota_wire.view_to_proto(view)

    @replies_with_error(pb.ListQuotasResponse)
    async def SetQuotaCapacity(
        self, request: pb.SetQuotaCapacityRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListQuotasResponse:
        store, live = self._quota_store(), len(self.broker.live_brokers)
        view = await self._coord(lambda: quota_wire.set_capacity(store, request, live))
        return quota_wire.view_to_proto(view)


def skip_range(skip_from: int, expected_offset: int, records: bytes) -> tuple[int, int]:
    """A mirror skip's checked ``(skip_from, skip_to)``; it carries no records."""
    cfg.validate_offset(skip_from, "skip_from")
    cfg.validate_offset(expected_offset, "expected_offset")
    if records:
        raise InvalidArgument("records: a mirror skip (skip_from set) carries no records")
    return skip_from, expected_offset


def mirror_batches(records: bytes, expected_offset: int) -> list[BatchHeader]:
    """Whole, CRC-valid, contiguous batches starting at expected_offset; else an error."""
    cfg.validate_offset(expected_offset, "expected_offset")
    headers: list[BatchHeader] = []
    consumed = 0
    for position, header in iter_batches(records):
        if position != consumed:
            break
        want = headers[-1].next_offset if headers else expected_offset
        if header.base_offset != want:
            raise InvalidArgument(
                f"records: batch at offset {header.base_offset} does not continue at {want}"
            )
        headers.append(header)
        consumed = position + header.total_size
    if not headers or consumed != len(records):
        raise CorruptBatch(
            f"records: {len(records) - consumed} bytes at position {consumed} are not a "
            "whole CRC-valid batch"
        )
    return headers


def with_refused(
    response: pb.FetchResponse, refused: dict[int, pb.FetchResult]
) -> pb.FetchResponse:
    """The served results with the refused ones put back at their places in the request."""
    if not refused:
        return response
    served = iter(response.results)
    merged = pb.FetchResponse()
    for i in range(len(response.results) + len(refused)):
        merged.results.append(refused[i] if i in refused else next(served))
    return merged


def _as_talos(exc: BaseException) -> TalosError:
    if isinstance(exc, TalosError):
        return exc
    log.error("unexpected error on the produce path: %r", exc)
    return TalosError(f"internal error: {exc!r}")
