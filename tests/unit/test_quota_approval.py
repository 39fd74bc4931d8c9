"""Auto-approval, as a specification: headroom = capacity per broker x live brokers
- granted quotas - measured traffic no granted quota covers."""

from __future__ import annotations

from talos.quota.approval import decide, unreserved_traffic
from talos.quota.model import Flow, Quota, QuotaState, Rates

MB = 1_000_000


def quota(
    qid: str, tenant: str, produce: float, state: QuotaState = QuotaState.APPROVED, topic=None
) -> Quota:
    return Quota(qid, tenant, topic, Rates(produce_bytes=produce), state, "", 0)


CAPACITY = Rates(produce_bytes=10 * MB)


def ask(limits: Rates, quotas=(), flows=(), capacity=CAPACITY, live=3, **kw):
    return decide(
        kw.get("tenant", "t"),
        kw.get("topic"),
        limits,
        capacity_per_broker=capacity,
        live_brokers=live,
        quotas=list(quotas),
        flows=list(flows),
    )


def test_approved_when_capacity_times_brokers_covers_it() -> None:
    decision = ask(Rates(produce_bytes=30 * MB))
    assert decision.approve
    assert decision.headroom.produce_bytes == 30 * MB


def test_pending_when_it_exceeds_the_capacity_of_the_live_brokers() -> None:
    decision = ask(Rates(produce_bytes=30 * MB), live=2)
    assert not decision.approve
    assert "produce-bytes-per-s: asks 30000000, headroom 20000000" in decision.reason
    assert "x 2 broker(s)" in decision.reason


def test_granted_quotas_are_subtracted_pending_and_rejected_ones_are_not() -> None:
    quotas = [
        quota("q-1", "a", 15 * MB),
        quota("q-2", "b", 10 * MB, QuotaState.PENDING),
        quota("q-3", "c", 10 * MB, QuotaState.REJECTED),
        quota("q-4", "d", 10 * MB, QuotaState.SUPERSEDED),
    ]
    assert ask(Rates(produce_bytes=15 * MB), quotas).approve
    assert not ask(Rates(produce_bytes=15 * MB + 1), quotas).approve


def test_measured_traffic_outside_any_quota_is_subtracted() -> None:
    flows = [Flow("someone", "logs", Rates(produce_bytes=12 * MB))]
    decision = ask(Rates(produce_bytes=20 * MB), flows=flows)
    assert not decision.approve
    assert "unreserved traffic 12000000" in decision.reason
    assert ask(Rates(produce_bytes=18 * MB), flows=flows).approve


def test_traffic_a_granted_quota_covers_is_counted_once_by_its_limit() -> None:
    granted = [quota("q-1", "a", 10 * MB)]
    flows = [Flow("a", "logs", Rates(produce_bytes=8 * MB))]
    assert ask(Rates(produce_bytes=20 * MB), granted, flows).approve


def test_a_topic_quota_covers_only_its_topic() -> None:
    granted = [quota("q-1", "a", 5 * MB, topic="logs")]
    flows = [
        Flow("a", "logs", Rates(produce_bytes=4 * MB)),
        Flow("a", "metrics", Rates(produce_bytes=6 * MB)),
    ]
    assert unreserved_traffic(flows, granted) == Rates(produce_bytes=6 * MB)


def test_a_quota_limits_only_its_dimensions() -> None:
    granted = [quota("q-1", "a", 5 * MB)]  # produce bytes only
    flows = [Flow("a", "logs", Rates(produce_bytes=4 * MB, consume_bytes=3 * MB))]
    assert unreserved_traffic(flows, granted) == Rates(consume_bytes=3 * MB)


def test_a_request_replaces_its_scopes_approved_quota_and_its_traffic() -> None:
    """Raising a tenant's quota needs headroom only for the increase."""
    granted = [quota("q-1", "t", 25 * MB)]
    flows = [Flow("t", "logs", Rates(produce_bytes=20 * MB))]
    assert ask(Rates(produce_bytes=30 * MB), granted, flows).approve
    assert not ask(Rates(produce_bytes=30 * MB), granted, flows, tenant="other").approve


def test_a_dimension_without_configured_capacity_waits_for_an_operator() -> None:
    decision = ask(Rates(produce_bytes=MB, consume_bytes=MB))
    assert not decision.approve
    assert "consume-bytes-per-s: no capacity configured" in decision.reason
    assert "produce-bytes-per-s" not in decision.reason  # that one fits


def test_no_capacity_at_all_leaves_every_request_pending() -> None:
    decision = ask(Rates(produce_bytes=1), capacity=Rates())
    assert not decision.approve
    assert "no capacity configured" in decision.reason


def test_no_live_broker_cannot_be_judged() -> None:
    decision = ask(Rates(produce_bytes=1), live=0)
    assert not decision.approve
    assert "no live broker" in decision.reason


def test_exactly_the_headroom_is_approved() -> None:
    assert ask(Rates(produce_bytes=30 * MB)).approve
    assert not ask(Rates(produce_bytes=30 * MB + 1)).approve


def test_a_topic_quota_of_every_tenant_covers_every_tenants_traffic_there() -> None:
    granted = [quota("q-1", "*", 5 * MB, topic="logs")]
    flows = [
        Flow("a", "logs", Rates(produce_bytes=2 * MB)),
        Flow("b", "logs", Rates(produce_bytes=2 * MB)),
        Flow("b", "other", Rates(produce_bytes=1 * MB)),
    ]
    assert unreserved_traffic(flows, granted) == Rates(produce_bytes=1 * MB)
