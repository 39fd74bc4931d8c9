"""Quotas in ZooKeeper, changed by compare-and-set, watched by every broker.

Layout under the cluster chroot (kept here, beside its only users):

    /quotas/capacity            {"per_broker": rates}          talos quota capacity
    /quotas/entries             a change counter; its version is the CAS token
    /quotas/entries/q-NNNNNNNNNN  one quota (sequential id)
    /quotas/traffic/<broker>    ephemeral: the broker's measured flows, last interval

Every change to an entry also sets ``/quotas/entries`` at the version read
before the decision, in one transaction: two requests decided at once cannot
both spend the same headroom (the loser re-reads and decides again), and a
broker needs one data watch to see every change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from talos.clock import SYSTEM_CLOCK, Clock
from talos.coord.zk import dumps, loads, txn_failure, zk_errors
from talos.errors import CoordinationError, InvalidArgument

from .approval import decide
from .model import Flow, Quota, QuotaState, Rates, check_scope, covers

log = logging.getLogger(__name__)

ROOT = "/quotas"
CAPACITY = "/quotas/capacity"
ENTRIES = "/quotas/entries"
TRAFFIC = "/quotas/traffic"
_PREFIX = "q-"
_CAS_ATTEMPTS = 20

#: A broker's traffic report older than this many of its intervals is ignored (it died
#: or stalled without its session ending yet).
STALE_INTERVALS = 3


def entry_path(quota_id: str) -> str:
    return f"{ENTRIES}/{quota_id}"


def traffic_path(broker_id: str) -> str:
    return f"{TRAFFIC}/{broker_id}"


@dataclass(frozen=True)
class QuotaView:
    """Everything ``talos quota list`` shows."""

    quotas: list[Quota]
    capacity_per_broker: Rates
    live_brokers: int
    flows: list[Flow]


def use_of(quota: Quota, flows: Sequence[Flow]) -> Rates:
    """The measured traffic a quota's scope covers."""
    total = Rates()
    for flow in flows:
        if covers(quota.tenant, quota.topic, flow.tenant, flow.topic):
            total = total + flow.rates
    return total


class QuotaStore:
    def __init__(self, zk: KazooClient, clock: Clock = SYSTEM_CLOCK) -> None:
        self._zk = zk
        self._clock = clock
        with zk_errors("creating the quota znodes"):
            for path in (ROOT, ENTRIES, TRAFFIC):
                self._zk.ensure_path(path)

    # ---- capacity ---------------------------------------------------------------

    def capacity(self) -> Rates:
        with zk_errors("reading the quota capacity"):
            try:
                data, _stat = self._zk.get(CAPACITY)
            except NoNodeError:
                return Rates()
        raw: Any = loads(data, "quota capacity")
        return Rates.from_dict(raw.get("per_broker") if isinstance(raw, dict) else raw, CAPACITY)

    def set_capacity(self, per_broker: Rates) -> None:
        """Replace the dimensions given (non-zero); the others keep their value."""
        with zk_errors("setting the quota capacity"):
            current = self.capacity()
            merged = Rates(
                *(
                    new or old
                    for new, old in zip(per_broker.values(), current.values(), strict=True)
                )
            )
            data = dumps({"per_broker": merged.to_dict()})
            try:
                self._zk.create(CAPACITY, data)
            except NodeExistsError:
                self._zk.set(CAPACITY, data)

    # ---- entries ----------------------------------------------------------------

    def _read(self) -> tuple[list[Quota], int]:
        """Every quota, by id, and the version of the entries znode read before them."""
        _data, stat = self._zk.get(ENTRIES)
        names = sorted(c for c in self._zk.get_children(ENTRIES) if c.startswith(_PREFIX))
        pending = [(name, self._zk.get_async(entry_path(name))) for name in names]
        quotas: list[Quota] = []
        for name, result in pending:
            try:
                data, _ = result.get()
            except NoNodeError:
                continue
            raw: Any = loads(data, f"quota {name}")
            if isinstance(raw, dict):
                raw = {**raw, "id": name}
            quotas.append(Quota.from_dict(raw, f"quota {name}"))
        return quotas, stat.version

    def quotas(self) -> list[Quota]:
        with zk_errors("listing quotas"):
            return self._read()[0]

    def request(self, tenant: str, topic: str | None, limits: Rates, live_brokers: int) -> Quota:
        """Store a quota request, approved at once when the headroom allows it."""
        check_scope(tenant, topic)
        with zk_errors(f"requesting a quota for tenant {tenant!r}"):
            for _ in range(_CAS_ATTEMPTS):
                quotas, version = self._read()
                decision = decide(
                    tenant,
                    topic,
                    limits,
                    capacity_per_broker=self.capacity(),
                    live_brokers=live_brokers,
                    quotas=quotas,
                    flows=self.flows(),
                )
                now = self._clock.wall_ms()
                state = QuotaState.APPROVED if decision.approve else QuotaState.PENDING
                quota = Quota("", tenant, topic, limits, state, decision.reason, now)
                txn = self._zk.transaction()
                txn.set_data(ENTRIES, dumps(version + 1), version=version)
                txn.create(entry_path(_PREFIX), _entry_data(quota), sequence=True)
                if decision.approve:
                    _supersede(txn, quotas, quota, now)
                results = txn.commit()
                failure = txn_failure(results)
                if failure is None:
                    return replace(quota, id=str(results[1]).rsplit("/", 1)[-1])
                if not isinstance(failure, BadVersionError):
                    raise CoordinationError(f"storing the quota request: {failure!r}")
        raise CoordinationError(f"quota request: {_CAS_ATTEMPTS} conflicting writers in a row")

    def decide(self, quota_id: str, approve: bool) -> Quota:
        """An operator's approve or reject of a pending quota."""
        action = "approve" if approve else "reject"
        with zk_errors(f"{action} quota {quota_id!r}"):
            for _ in range(_CAS_ATTEMPTS):
                quotas, version = self._read()
                found = [q for q in quotas if q.id == quota_id]
                if not found:
                    raise InvalidArgument(
                        f"id: no quota {quota_id!r} (`talos quota list` shows the ids)"
                    )
                quota = found[0]
                if quota.state is not QuotaState.PENDING:
                    raise InvalidArgument(
                        f"id: quota {quota_id} is {quota.state.value}; only a pending quota "
                        f"can be {action}d"
                    )
                now = self._clock.wall_ms()
                state = QuotaState.APPROVED if approve else QuotaState.REJECTED
                decided = replace(
                    quota, state=state, reason=f"{action}d by an operator", decided_ms=now
                )
                txn = self._zk.transaction()
                txn.set_data(ENTRIES, dumps(version + 1), version=version)
                txn.set_data(entry_path(quota_id), _entry_data(decided))
                if approve:
                    _supersede(txn, quotas, decided, now)
                failure = txn_failure(txn.commit())
                if failure is None:
                    return decided
                if not isinstance(failure, BadVersionError):
                    raise CoordinationError(f"storing the decision: {failure!r}")
        raise CoordinationError(f"quota {action}: {_CAS_ATTEMPTS} conflicting writers in a row")

    def watch(self, callback: Callable[[list[Quota]], None]) -> None:
        """Call ``callback`` with every quota now and after each change."""

        def on_change(_data: bytes | None, _stat: Any) -> None:
            try:
                callback(self.quotas())
            except Exception:
                log.exception("quota watch callback failed")

        with zk_errors("watching quotas"):
            self._zk.DataWatch(ENTRIES, on_change)

    # ---- measured traffic -------------------------------------------------------

    def publish_traffic(self, broker_id: str, flows: Sequence[Flow], interval_s: float) -> None:
        data = dumps(
            {
                "at_ms": self._clock.wall_ms(),
                "interval_s": interval_s,
                "flows": [
                    {"tenant": f.tenant, "topic": f.topic, "rates": f.rates.to_dict()}
                    for f in flows
                ],
            }
        )
        path = traffic_path(broker_id)
        with zk_errors(f"publishing broker {broker_id}'s traffic"):
            try:
                self._zk.set(path, data)
            except NoNodeError:
                try:
                    self._zk.create(path, data, ephemeral=True)
                except NodeExistsError:
                    self._zk.set(path, data)

    def flows(self) -> list[Flow]:
        """Every fresh broker report's flows, summed per (tenant, topic)."""
        now_ms = self._clock.wall_ms()
        with zk_errors("reading measured traffic"):
            brokers = self._zk.get_children(TRAFFIC)
            pending = [(b, self._zk.get_async(traffic_path(b))) for b in brokers]
            summed: dict[tuple[str, str], Rates] = {}
            for broker_id, result in pending:
                try:
                    data, _ = result.get()
                except NoNodeError:
                    continue
                raw: Any = loads(data, f"traffic of broker {broker_id}")
                try:
                    age_ms = now_ms - int(raw["at_ms"])
                    if age_ms > STALE_INTERVALS * float(raw["interval_s"]) * 1000:
                        continue
                    for item in raw["flows"]:
                        key = (str(item["tenant"]), str(item["topic"]))
                        rates = Rates.from_dict(item["rates"], f"traffic of broker {broker_id}")
                        summed[key] = summed.get(key, Rates()) + rates
                except (KeyError, TypeError, ValueError) as exc:
                    log.warning("broker %s: malformed traffic report (%r)", broker_id, exc)
        return [Flow(t, p, r) for (t, p), r in sorted(summed.items())]

    def view(self, live_brokers: int) -> QuotaView:
        return QuotaView(self.quotas(), self.capacity(), live_brokers, self.flows())


def _entry_data(quota: Quota) -> bytes:
    raw = quota.to_dict()
    raw.pop("id")  # the znode's name is the id
    return dumps(raw)


def _supersede(txn: Any, quotas: Sequence[Quota], winner: Quota, now_ms: int) -> None:
    """Approved quotas of the winner's scope are replaced by it."""
    for old in quotas:
        if old.scope == winner.scope and old.state is QuotaState.APPROVED and old.id != winner.id:
            done = replace(
                old,
                state=QuotaState.SUPERSEDED,
                reason=f"replaced by {winner.id or 'a newer quota'}",
                decided_ms=now_ms,
            )
            txn.set_data(entry_path(old.id), _entry_data(done))
