"""The broker's side of quotas: admission by token buckets, and a traffic meter.

A quota is cluster-wide; each broker enforces its *share* of it
(:func:`broker_share`), so the brokers together admit about the quota. Every
check runs on the broker's event loop and touches no ZooKeeper: the quotas
come from a watch, the shares from the assignment the broker already holds.

Produce is checked before a batch is queued (its size is known). Fetch is
checked before reading and charged after, with the bytes actually returned;
the bucket's debt makes the next fetch wait for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from talos.clock import SYSTEM_CLOCK, Clock

from .bucket import TokenBucket
from .model import EVERY_TENANT, Flow, Quota, QuotaState, Rates

PRODUCE_BYTES, CONSUME_BYTES, PRODUCE_REQUESTS, CONSUME_REQUESTS = range(4)

Scope = tuple[str, str | None]
#: A scope's share of its quota on this broker (see broker_share).
ShareOf = Callable[[str | None], float]


def broker_share(topic: str | None, owned: int, partitions: int, live_brokers: int) -> float:
    """The fraction of a cluster-wide quota this broker admits.

    A topic's quota follows its partitions: a broker owning 2 of 8 admits a
    quarter (at least one partition's worth: a request reaching it means it
    serves one). A tenant-wide quota is split evenly over the live brokers, so
    a tenant whose traffic all lands on one broker gets only that broker's
    part: the price of no cross-broker accounting on the request path.
    """
    if topic is None or partitions <= 0:
        return 1.0 / max(1, live_brokers)
    return max(1, min(owned, partitions)) / partitions


def active_limits(quotas: Sequence[Quota]) -> dict[Scope, Rates]:
    """The approved quota of each scope (the newest, should two be approved)."""
    limits: dict[Scope, Rates] = {}
    for quota in sorted(quotas, key=lambda q: q.id):
        if quota.state is QuotaState.APPROVED:
            limits[quota.scope] = quota.limits
    return limits


def _ms(wait_s: float) -> int:
    return max(1, math.ceil(wait_s * 1000))


class QuotaEnforcer:
    """Buckets for the approved quotas, and the per-(tenant, topic) traffic meter.

    Used from the broker's event loop only (one thread), so it holds no lock.
    """

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._limits: dict[Scope, Rates] = {}
        self._tenants: frozenset[str] = frozenset()
        self._everyone = False  # a topic quota of every tenant exists: check them all
        self._buckets: dict[tuple[Scope, int], TokenBucket] = {}
        self._plans: dict[tuple[str, str, int], tuple[TokenBucket, ...]] = {}
        self._share: ShareOf = lambda _topic: 1.0
        self._meter: dict[tuple[str, str], list[float]] = {}
        self._metered_since = clock.monotonic()

    # ---- configuration ----------------------------------------------------------

    def set_quotas(self, quotas: Sequence[Quota], share: ShareOf | None = None) -> None:
        """New approved quotas (from the watch); buckets of unchanged scopes keep their state."""
        if share is not None:
            self._share = share
        self._limits = active_limits(quotas)
        self._tenants = frozenset(tenant for tenant, _topic in self._limits)
        self._everyone = EVERY_TENANT in self._tenants
        self.reshare()

    def reshare(self) -> None:
        """Set every bucket's rate from its quota and this broker's current share."""
        kept: dict[tuple[Scope, int], TokenBucket] = {}
        for scope, limits in self._limits.items():
            share = self._share(scope[1])
            for dim, limit in enumerate(limits.values()):
                if limit <= 0:
                    continue
                rate = max(limit * share, 1e-9)
                bucket = self._buckets.get((scope, dim))
                if bucket is None:
                    bucket = TokenBucket(rate, self._clock)
                elif bucket.rate != rate:
                    bucket.set_rate(rate)
                kept[(scope, dim)] = bucket
        self._buckets = kept
        self._plans = {}

    def rate_of(self, scope: Scope, dim: int) -> float | None:
        bucket = self._buckets.get((scope, dim))
        return None if bucket is None else bucket.rate

    # ---- admission --------------------------------------------------------------

    def _topic_buckets(self, tenant: str, topic: str, dim: int) -> tuple[TokenBucket, ...]:
        """The buckets a tenant's traffic on a topic meets on one dimension (cached)."""
        key = (tenant, topic, dim)
        found = self._plans.get(key)
        if found is None:
            scopes: tuple[Scope, ...] = ((tenant, None), (tenant, topic), (EVERY_TENANT, topic))
            found = tuple(bucket for scope in scopes if (bucket := self._buckets.get((scope, dim))))
            self._plans[key] = found
        return found

    def _admit(
        self, tenant: str, items: Sequence[tuple[str, int]], bytes_dim: int, requests_dim: int
    ) -> list[int]:
        """Per item: 0 when admitted, else the milliseconds until its buckets are out of
        debt. The items of one topic are decided together: admitted with their bytes and
        one request charged (a request counts once per topic it carries), or refused."""
        totals: dict[str, int] = {}
        for topic, nbytes in items:
            totals[topic] = totals.get(topic, 0) + nbytes
        now = self._clock.monotonic()
        waits: dict[str, int] = {}
        for topic, total in totals.items():
            byte_buckets = self._topic_buckets(tenant, topic, bytes_dim)
            request_buckets = self._topic_buckets(tenant, topic, requests_dim)
            wait = 0.0
            for bucket in byte_buckets + request_buckets:
                wait = max(wait, bucket.retry_after(now))
            if wait > 0:
                waits[topic] = _ms(wait)
                continue
            for bucket in byte_buckets:
                bucket.charge(total, now)
            for bucket in request_buckets:
                bucket.charge(1, now)
            waits[topic] = 0
        return [waits[topic] for topic, _nbytes in items]

    def admit_produce(self, tenant: str, batches: Sequence[tuple[str, int]]) -> list[int] | None:
        """Admit (topic, bytes) batches of one produce request; None: all admitted.

        Admitted batches are metered. Meters count what is admitted, not what is asked.
        """
        waits = None
        if tenant in self._tenants or self._everyone:
            waits = self._admit(tenant, batches, PRODUCE_BYTES, PRODUCE_REQUESTS)
        counted: set[str] = set()
        for i, (topic, nbytes) in enumerate(batches):
            if waits is None or not waits[i]:
                self._count(tenant, topic, PRODUCE_BYTES, nbytes, topic not in counted)
                counted.add(topic)
        return waits

    def admit_fetch(self, tenant: str, topics: Sequence[str]) -> list[int] | None:
        """Admit the partitions of one fetch request (bytes are charged by ``fetched``)."""
        if tenant not in self._tenants and not self._everyone:
            return None
        return self._admit(tenant, [(t, 0) for t in topics], CONSUME_BYTES, CONSUME_REQUESTS)

    def fetched(self, tenant: str, results: Sequence[tuple[str, int]]) -> None:
        """Charge and meter the (topic, bytes) a fetch returned for its admitted partitions."""
        counted: set[str] = set()
        for topic, nbytes in results:
            self._count(tenant, topic, CONSUME_BYTES, nbytes, topic not in counted)
            counted.add(topic)
            if nbytes and (tenant in self._tenants or self._everyone):
                now = self._clock.monotonic()
                for bucket in self._topic_buckets(tenant, topic, CONSUME_BYTES):
                    bucket.charge(nbytes, now)

    # ---- metering ---------------------------------------------------------------

    def _count(self, tenant: str, topic: str, bytes_dim: int, nbytes: int, request: bool) -> None:
        """Bytes on ``bytes_dim``; a request on the matching requests dimension (bytes + 2)."""
        counts = self._meter.get((tenant, topic))
        if counts is None:
            counts = self._meter[(tenant, topic)] = [0.0, 0.0, 0.0, 0.0]
        counts[bytes_dim] += nbytes
        if request:
            counts[bytes_dim + 2] += 1

    def take_flows(self) -> tuple[list[Flow], float]:
        """The rates metered since the last call, and the interval they cover (seconds)."""
        now = self._clock.monotonic()
        interval = max(1e-3, now - self._metered_since)
        meter, self._meter, self._metered_since = self._meter, {}, now
        flows = [
            Flow(tenant, topic, Rates(*counts).scaled(1 / interval))
            for (tenant, topic), counts in sorted(meter.items())
        ]
        return flows, interval
