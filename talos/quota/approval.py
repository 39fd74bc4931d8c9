"""Auto-approval: does the cluster have the headroom for a requested quota?

Headroom on a dimension is the configured capacity per broker times the live
brokers, minus the limits of the quotas already granted, minus the traffic
measured over the last interval that no granted quota covers (traffic a quota
covers is already counted by its limit, so it is not counted twice). A
request for a scope that already has an approved quota replaces it, so that
quota's limit is not counted against it. A dimension the request does not
limit needs no headroom; a dimension it limits but the capacity does not
configure cannot be judged, so the request waits for an operator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .model import DIMENSION_OPTIONS, Flow, Quota, QuotaState, Rates, covers


@dataclass(frozen=True)
class Decision:
    approve: bool
    reason: str
    headroom: Rates


def _covers(quota: Quota, flow: Flow) -> bool:
    return covers(quota.tenant, quota.topic, flow.tenant, flow.topic)


def unreserved_traffic(flows: Sequence[Flow], granted: Sequence[Quota]) -> Rates:
    """Measured traffic on each dimension that no granted quota limits."""
    total = Rates()
    for flow in flows:
        covering = [q for q in granted if _covers(q, flow)]
        kept = [
            0.0 if any(q.limits.values()[d] > 0 for q in covering) else flow.rates.values()[d]
            for d in range(4)
        ]
        total = total + Rates(*kept)
    return total


def decide(
    tenant: str,
    topic: str | None,
    limits: Rates,
    *,
    capacity_per_broker: Rates,
    live_brokers: int,
    quotas: Sequence[Quota],
    flows: Sequence[Flow],
) -> Decision:
    """Approve ``limits`` for (tenant, topic) now, or leave it pending with the reason."""
    granted = [q for q in quotas if q.state is QuotaState.APPROVED and q.scope != (tenant, topic)]
    # The request counts as granted for coverage: the traffic it will limit is its limit.
    asking = Quota("", tenant, topic, limits, QuotaState.APPROVED, "", 0)
    unreserved = unreserved_traffic(flows, [*granted, asking])
    reserved = sum((q.limits for q in granted), Rates())
    total = capacity_per_broker.scaled(live_brokers)
    headroom = total - reserved - unreserved
    if live_brokers < 1:
        return Decision(False, "no live broker: the capacity cannot be judged", headroom)
    short: list[str] = []
    for d, option in enumerate(DIMENSION_OPTIONS):
        want = limits.values()[d]
        if want <= 0:
            continue
        if capacity_per_broker.values()[d] <= 0:
            short.append(f"{option}: no capacity configured (talos quota capacity --{option} N)")
        elif want > headroom.values()[d]:
            short.append(
                f"{option}: asks {want:.0f}, headroom {max(0.0, headroom.values()[d]):.0f} "
                f"(capacity {capacity_per_broker.values()[d]:.0f} x {live_brokers} broker(s) "
                f"- granted {reserved.values()[d]:.0f} "
                f"- unreserved traffic {unreserved.values()[d]:.0f})"
            )
    if short:
        return Decision(False, "; ".join(short), headroom)
    asked = ", ".join(
        f"{option} {limits.values()[d]:.0f} of {headroom.values()[d]:.0f}"
        for d, option in enumerate(DIMENSION_OPTIONS)
        if limits.values()[d] > 0
    )
    return Decision(True, f"within headroom: {asked}", headroom)
