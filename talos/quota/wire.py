"""Quota values <-> their protobuf messages, and the admin calls the broker serves."""

from __future__ import annotations

from talos.config import validate_topic_name
from talos.proto import talos_pb2 as pb

from .model import Quota, Rates, check_scope, checked_limits
from .store import QuotaStore, QuotaView, use_of


def rates_to_proto(rates: Rates) -> pb.QuotaRates:
    return pb.QuotaRates(**{k: round(v) for k, v in rates.to_dict().items()})


def rates_from_proto(message: pb.QuotaRates) -> Rates:
    return Rates(
        message.produce_bytes,
        message.consume_bytes,
        message.produce_requests,
        message.consume_requests,
    )


def quota_to_proto(quota: Quota, use: Rates) -> pb.QuotaInfo:
    return pb.QuotaInfo(
        id=quota.id,
        tenant=quota.tenant,
        topic=quota.topic or "",
        limits=rates_to_proto(quota.limits),
        state=quota.state.value,
        reason=quota.reason,
        created_ms=quota.created_ms,
        decided_ms=quota.decided_ms,
        use=rates_to_proto(use),
    )


def view_to_proto(view: QuotaView) -> pb.ListQuotasResponse:
    response = pb.ListQuotasResponse(
        capacity_per_broker=rates_to_proto(view.capacity_per_broker),
        live_brokers=view.live_brokers,
        measured=rates_to_proto(sum((f.rates for f in view.flows), Rates())),
    )
    for quota in view.quotas:
        response.quotas.append(quota_to_proto(quota, use_of(quota, view.flows)))
    return response


def request_quota(store: QuotaStore, request: pb.RequestQuotaRequest, live: int) -> pb.QuotaInfo:
    """Check everything before anything is stored: bad input changes nothing."""
    topic = validate_topic_name(request.topic, "topic") if request.topic else None
    tenant = check_scope(request.tenant, topic)
    limits = checked_limits(rates_from_proto(request.limits))
    quota = store.request(tenant, topic, limits, live)
    return quota_to_proto(quota, Rates())


def set_capacity(store: QuotaStore, request: pb.SetQuotaCapacityRequest, live: int) -> QuotaView:
    store.set_capacity(checked_limits(rates_from_proto(request.per_broker)))
    return store.view(live)
