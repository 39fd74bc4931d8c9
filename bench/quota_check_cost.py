"""CPU time of the broker's quota check per produce request (issue 13 §2 figures).

Measured with ``time.thread_time`` (CPU of this thread only, so other load on a
shared machine changes it little), the minimum of 7 rounds of 20,000 calls, for a
request of one batch and of four (one topic), for a tenant with no quota (the
meter only) and one with a produce quota far above its traffic (checked and charged).

Run: ``PYTHONPATH=. .venv/bin/python -m bench.quota_check_cost``
"""

from __future__ import annotations

import time

from talos.quota.enforcer import QuotaEnforcer
from talos.quota.model import Quota, QuotaState, Rates

CALLS = 20_000
ROUNDS = 7


def cost_us(enforcer: QuotaEnforcer, tenant: str, batches: list[tuple[str, int]]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.thread_time()
        for _ in range(CALLS):
            enforcer.admit_produce(tenant, batches)
        best = min(best, (time.thread_time() - started) / CALLS * 1e6)
    return best


def main() -> None:
    enforcer = QuotaEnforcer()
    high = Rates(produce_bytes=10 * 1024**3)
    enforcer.set_quotas([Quota("q-1", "quoted", None, high, QuotaState.APPROVED, "", 0)])
    for label, batches in (
        ("1 batch of 2 KiB", [("t", 2048)]),
        ("4 batches of 256 KiB", [("t", 256 * 1024)] * 4),
    ):
        free = cost_us(enforcer, "free", batches)
        quoted = cost_us(enforcer, "quoted", batches)
        print(f"{label}: no quota {free:.2f} us, quota {quoted:.2f} us per request")


if __name__ == "__main__":
    main()
