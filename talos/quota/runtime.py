"""The broker's quota threads: the watch that feeds the enforcer, and the traffic reporter.

Both live off the request path. The watch hands new quotas to the event loop;
every interval the reporter recomputes the shares (the assignment may have
moved partitions), takes the meter's rates and writes them to ZooKeeper, where
``talos quota list`` and the auto-approval read them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from talos.errors import TalosError

from .enforcer import QuotaEnforcer, broker_share
from .model import Quota
from .store import QuotaStore

if TYPE_CHECKING:
    from talos.broker.server import Broker

log = logging.getLogger(__name__)

#: How often a broker publishes its measured traffic (the "last interval").
REPORT_INTERVAL_S = 5.0


class BrokerQuotas:
    def __init__(self, broker: Broker, report_interval_s: float = REPORT_INTERVAL_S) -> None:
        self._broker = broker
        self.report_interval_s = report_interval_s
        self.enforcer = QuotaEnforcer(broker.clock)
        self.store: QuotaStore | None = None
        self._task: asyncio.Future[None] | None = None

    async def start(self) -> None:
        broker = self._broker
        loop = asyncio.get_running_loop()
        self.store = store = await asyncio.to_thread(QuotaStore, broker.zk, broker.clock)

        def on_quotas(quotas: list[Quota]) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(self.enforcer.set_quotas, quotas, self.share)

        await asyncio.to_thread(store.watch, on_quotas)
        self._task = asyncio.ensure_future(self._report_loop(store))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def share(self, topic: str | None) -> float:
        broker = self._broker
        live = len(broker.live_brokers)
        if topic is None:
            return broker_share(None, 0, 0, live)
        meta = broker.topic_cache.get(topic)
        owned = sum(
            1
            for (name, _p), owner in broker.assignment.owners.items()
            if name == topic and owner == broker.broker_id
        )
        return broker_share(topic, owned, meta.partitions if meta else 0, live)

    async def _report_loop(self, store: QuotaStore) -> None:
        while True:
            await asyncio.sleep(self.report_interval_s)
            self.enforcer.reshare()
            flows, interval = self.enforcer.take_flows()
            try:
                await asyncio.to_thread(
                    store.publish_traffic, self._broker.broker_id, flows, interval
                )
            except TalosError as exc:
                log.warning("quota traffic report failed: %s", exc)
