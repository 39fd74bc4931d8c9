"""The broker's admission checks and meter, on a manual clock."""

from __future__ import annotations

import pytest

from talos.clock import ManualClock
from talos.quota.enforcer import (
    CONSUME_BYTES,
    PRODUCE_BYTES,
    PRODUCE_REQUESTS,
    QuotaEnforcer,
    active_limits,
    broker_share,
)
from talos.quota.model import Quota, QuotaState, Rates


def approved(qid: str, tenant: str, topic: str | None = None, **limits: float) -> Quota:
    return Quota(qid, tenant, topic, Rates(**limits), QuotaState.APPROVED, "", 0)


def test_a_tenant_without_quota_is_never_refused_but_is_metered() -> None:
    clock = ManualClock()
    enforcer = QuotaEnforcer(clock)
    enforcer.set_quotas([approved("q-1", "other", produce_bytes=1)])
    assert enforcer.admit_produce("free", [("logs", 10**9), ("logs", 10)]) is None
    clock.advance(2.0)
    flows, interval = enforcer.take_flows()
    assert interval == pytest.approx(2.0)
    [flow] = flows
    assert (flow.tenant, flow.topic) == ("free", "logs")
    assert flow.rates == Rates(produce_bytes=(10**9 + 10) / 2, produce_requests=0.5)


def test_over_its_byte_quota_a_tenant_is_refused_with_the_time_to_wait() -> None:
    clock = ManualClock()
    enforcer = QuotaEnforcer(clock)
    enforcer.set_quotas([approved("q-1", "t", produce_bytes=1000)])
    assert enforcer.admit_produce("t", [("logs", 1500)]) == [0]  # the burst, into debt
    assert enforcer.admit_produce("t", [("logs", 10)]) == [500]  # 500 bytes of debt
    clock.advance(0.5)
    assert enforcer.admit_produce("t", [("logs", 10)]) == [0]
    assert enforcer.admit_produce("other", [("logs", 10**6)]) is None


def test_refused_batches_are_not_metered() -> None:
    clock = ManualClock()
    enforcer = QuotaEnforcer(clock)
    enforcer.set_quotas([approved("q-1", "t", produce_bytes=1000)])
    assert enforcer.admit_produce("t", [("logs", 1000), ("logs", 200)]) == [0, 0]  # together
    assert enforcer.admit_produce("t", [("logs", 700)]) == [200]
    clock.advance(1.0)
    [flow] = enforcer.take_flows()[0]
    assert flow.rates.produce_bytes == 1200


def test_a_topic_quota_limits_only_that_topic_and_both_scopes_apply() -> None:
    enforcer = QuotaEnforcer(ManualClock())
    enforcer.set_quotas(
        [
            approved("q-1", "t", "hot", produce_bytes=100),
            approved("q-2", "t", None, produce_bytes=10_000),
        ]
    )
    assert enforcer.admit_produce("t", [("hot", 200), ("cold", 5000)]) == [0, 0]
    assert enforcer.admit_produce("t", [("hot", 1), ("cold", 1)]) == [1000, 0]
    # the tenant-wide bucket has 200 + 5000 + 1 spent; 6000 more puts it 1201 in debt
    assert enforcer.admit_produce("t", [("cold", 6000)]) == [0]
    assert enforcer.admit_produce("t", [("cold", 1)]) == [121]


def test_a_request_counts_once_per_topic() -> None:
    enforcer = QuotaEnforcer(ManualClock())
    enforcer.set_quotas([approved("q-1", "t", produce_requests=2)])
    assert enforcer.admit_produce("t", [("a", 1), ("a", 1), ("b", 1)]) == [0, 0, 0]
    assert enforcer.admit_produce("t", [("a", 1)]) == [0]  # 3 of 2: now in debt
    assert enforcer.admit_produce("t", [("a", 1)]) == [500]


def test_fetch_is_admitted_then_charged_with_the_bytes_it_returned() -> None:
    clock = ManualClock()
    enforcer = QuotaEnforcer(clock)
    enforcer.set_quotas([approved("q-1", "t", consume_bytes=1000)])
    assert enforcer.admit_fetch("t", ["logs", "logs"]) == [0, 0]
    enforcer.fetched("t", [("logs", 3000), ("logs", 0)])
    assert enforcer.admit_fetch("t", ["logs"]) == [2000]
    assert enforcer.admit_fetch("free", ["logs"]) is None


def test_each_broker_enforces_its_share() -> None:
    shares = {"hot": 0.25, None: 0.5}
    enforcer = QuotaEnforcer(ManualClock())
    enforcer.set_quotas(
        [approved("q-1", "t", "hot", produce_bytes=800), approved("q-2", "t", consume_bytes=60)],
        share=lambda topic: shares[topic],
    )
    assert enforcer.rate_of(("t", "hot"), PRODUCE_BYTES) == 200
    assert enforcer.rate_of(("t", None), CONSUME_BYTES) == 30
    assert enforcer.rate_of(("t", None), PRODUCE_REQUESTS) is None  # not limited
    shares["hot"] = 0.5  # a partition moved here
    enforcer.reshare()
    assert enforcer.rate_of(("t", "hot"), PRODUCE_BYTES) == 400


def test_broker_share_follows_partitions_and_live_brokers() -> None:
    assert broker_share("hot", owned=2, partitions=8, live_brokers=3) == 0.25
    assert broker_share("hot", owned=0, partitions=8, live_brokers=3) == 0.125  # at least one
    assert broker_share(None, owned=0, partitions=0, live_brokers=4) == 0.25
    assert broker_share(None, owned=0, partitions=0, live_brokers=0) == 1.0


def test_the_newest_approved_quota_of_a_scope_is_enforced() -> None:
    older = approved("q-0000000001", "t", produce_bytes=1)
    newer = approved("q-0000000002", "t", produce_bytes=2)
    pending = Quota("q-0000000003", "t", None, Rates(produce_bytes=3), QuotaState.PENDING, "", 0)
    assert active_limits([newer, pending, older]) == {("t", None): Rates(produce_bytes=2)}


def test_a_removed_quota_stops_limiting() -> None:
    enforcer = QuotaEnforcer(ManualClock())
    enforcer.set_quotas([approved("q-1", "t", produce_bytes=1)])
    enforcer.admit_produce("t", [("a", 100)])
    assert enforcer.admit_produce("t", [("a", 1)]) != [0]
    enforcer.set_quotas([])
    assert enforcer.admit_produce("t", [("a", 1)]) is None


def test_a_topic_quota_of_every_tenant_limits_them_together() -> None:
    enforcer = QuotaEnforcer(ManualClock())
    enforcer.set_quotas([approved("q-1", "*", "hot", produce_bytes=1000)])
    assert enforcer.admit_produce("a", [("hot", 800)]) == [0]
    assert enforcer.admit_produce("b", [("hot", 800)]) == [0]  # into debt: 600
    assert enforcer.admit_produce("c", [("hot", 1)]) == [600]
    assert enforcer.admit_produce("c", [("cold", 10**6)]) == [0]  # other topics are free
    assert enforcer.admit_produce("*", [("hot", 1)]) == [600]  # '*' said by a client: once
