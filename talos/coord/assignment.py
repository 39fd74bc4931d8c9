"""Which broker owns which partition: pure decisions, no I/O (DESIGN §5).

:func:`ring_assign` places partitions on a consistent-hash ring with bounded
loads: each broker gets virtual nodes in proportion to its weight, a
partition goes to the first broker clockwise from its hash that still has
room, and no broker takes more than ``ceil(load_factor * its fair share)``.
Adding or removing a broker therefore moves few partitions.

:func:`plan_assignment` is what the controller runs: it keeps partitions
where they are (moving one costs a takeover), holds a vanished broker's
partitions for ``reassign_delay_ms`` so a rolling restart gets them back,
places new and orphaned partitions on the ring, and evens out load a few
moves at a time (so a joining broker fills up gradually).
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from talos.errors import InvalidArgument

Partition = tuple[str, int]

MAX_VNODES = 4096
MAX_LOAD_FACTOR = 100.0


def stable_hash(key: str) -> int:
    """A 64-bit hash that is the same in every process (unlike ``hash()``)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def _partition_hash(partition: Partition) -> int:
    return stable_hash(f"{partition[0]}/{partition[1]}")


def _order(partitions: Iterable[Partition]) -> list[Partition]:
    """Distinct partitions in ring order, independent of the input order."""
    return sorted(set(partitions), key=lambda p: (_partition_hash(p), p))


def _check_options(vnodes: object, load_factor: object) -> None:
    if isinstance(vnodes, bool) or not isinstance(vnodes, int) or not 1 <= vnodes <= MAX_VNODES:
        raise InvalidArgument(
            f"vnodes: must be an integer between 1 and {MAX_VNODES}, got {vnodes!r}"
        )
    if (
        isinstance(load_factor, bool)
        or not isinstance(load_factor, int | float)
        or not 1.0 <= load_factor <= MAX_LOAD_FACTOR
    ):
        raise InvalidArgument(
            f"load_factor: must be a number between 1.0 and {MAX_LOAD_FACTOR}, got {load_factor!r}"
        )


def _weights(brokers: Sequence[str], weights: Mapping[str, float] | None) -> dict[str, float]:
    result: dict[str, float] = {}
    for broker in brokers:
        weight = 1.0 if weights is None else weights.get(broker, 1.0)
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not math.isfinite(weight)
            or weight <= 0
        ):
            raise InvalidArgument(
                f"weights[{broker!r}]: must be a finite number > 0, got {weight!r}"
            )
        result[broker] = float(weight)
    return result


class _Ring:
    def __init__(self, weights: Mapping[str, float], vnodes: int) -> None:
        mean = sum(weights.values()) / len(weights)
        points: list[tuple[int, str]] = []
        for broker, weight in weights.items():
            count = max(1, round(vnodes * weight / mean))
            points.extend((stable_hash(f"{broker}#{i}"), broker) for i in range(count))
        points.sort()
        self._hashes = [h for h, _ in points]
        self._brokers = [b for _, b in points]
        self._distinct = len(weights)

    def walk(self, key_hash: int) -> Iterator[str]:
        """Every broker once, clockwise from ``key_hash``."""
        start = bisect.bisect_left(self._hashes, key_hash)
        seen: set[str] = set()
        size = len(self._brokers)
        for step in range(size):
            broker = self._brokers[(start + step) % size]
            if broker not in seen:
                seen.add(broker)
                yield broker
                if len(seen) == self._distinct:
                    return

    def first(self, partition: Partition) -> str:
        return next(self.walk(_partition_hash(partition)))


def _fair_shares(weights: Mapping[str, float], total: int) -> dict[str, float]:
    weight_sum = sum(weights.values())
    return {broker: total * weight / weight_sum for broker, weight in weights.items()}


def _caps(fair: Mapping[str, float], load_factor: float) -> dict[str, int]:
    return {broker: max(1, math.ceil(load_factor * share)) for broker, share in fair.items()}


def _place(
    partitions: Sequence[Partition],
    ring: _Ring,
    caps: Mapping[str, int],
    loads: dict[str, int],
) -> dict[Partition, str]:
    """Bounded-load placement of ``partitions`` (in ring order), updating ``loads``."""
    placed: dict[Partition, str] = {}
    for partition in partitions:
        candidates = list(ring.walk(_partition_hash(partition)))
        chosen = next((b for b in candidates if loads[b] < caps[b]), None)
        if chosen is None:
            # Only when sticky owners already exceed their caps: least loaded wins.
            chosen = min(candidates, key=lambda b: (loads[b] / caps[b], candidates.index(b)))
        placed[partition] = chosen
        loads[chosen] += 1
    return placed


def ring_assign(
    partitions: Sequence[Partition],
    brokers: Sequence[str],
    vnodes: int = 64,
    weights: Mapping[str, float] | None = None,
    load_factor: float = 1.25,
) -> dict[Partition, str]:
    """Consistent hashing with bounded loads. Deterministic; input order does not matter.

    ``weights`` (default 1.0 each) scale a broker's virtual nodes and its
    load bound, e.g. to steer traffic away from a busy broker.
    """
    _check_options(vnodes, load_factor)
    distinct = sorted(set(brokers))
    ordered = _order(partitions)
    if not distinct or not ordered:
        return {}
    weight_of = _weights(distinct, weights)
    ring = _Ring(weight_of, vnodes)
    caps = _caps(_fair_shares(weight_of, len(ordered)), load_factor)
    return _place(ordered, ring, caps, dict.fromkeys(distinct, 0))


@dataclass(frozen=True)
class AssignmentPlan:
    owners: dict[Partition, str]
    #: Broker id -> when it was first seen missing, for brokers still holding partitions.
    missing_since: dict[str, int]
    #: Differs from the previous owners / missing_since, so worth writing.
    changed: bool
    #: False when ``max_moves`` cut rebalancing short; plan again soon.
    settled: bool = True


def plan_assignment(
    partitions: Sequence[Partition],
    live_brokers: Sequence[str],
    previous_owners: Mapping[Partition, str],
    missing_since: Mapping[str, int],
    now_ms: int,
    reassign_delay_ms: int,
    *,
    vnodes: int = 64,
    weights: Mapping[str, float] | None = None,
    load_factor: float = 1.25,
    max_moves: int | None = None,
) -> AssignmentPlan:
    """The next assignment, given the current one.

    - A partition whose owner is live stays, unless that owner is above its
      load bound or rebalancing toward an underloaded broker picks it.
    - A partition whose owner vanished stays reserved until the owner has
      been missing for ``reassign_delay_ms``; then it is placed on the ring.
    - New partitions are placed on the ring; partitions not in
      ``partitions`` (deleted topics) drop out.
    - No live broker: the previous owners are kept.
    - At most ``max_moves`` partitions move from one live broker to another
      per plan (None: no limit); orphans are always placed.
    """
    _check_options(vnodes, load_factor)
    for value, param in ((now_ms, "now_ms"), (reassign_delay_ms, "reassign_delay_ms")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgument(f"{param}: must be an integer >= 0, got {value!r}")
    if max_moves is not None and (
        isinstance(max_moves, bool) or not isinstance(max_moves, int) or max_moves < 0
    ):
        raise InvalidArgument(f"max_moves: must be None or an integer >= 0, got {max_moves!r}")

    ordered = _order(partitions)
    live = sorted(set(live_brokers))
    live_set = set(live)
    previous = {p: previous_owners[p] for p in ordered if p in previous_owners}
    missing = {
        broker: missing_since.get(broker, now_ms)
        for broker in sorted(set(previous.values()) - live_set)
    }

    def result(owners: dict[Partition, str], settled: bool = True) -> AssignmentPlan:
        still_missing = {b: t for b, t in missing.items() if b in set(owners.values())}
        changed = owners != dict(previous_owners) or still_missing != dict(missing_since)
        return AssignmentPlan(owners, still_missing, changed, settled)

    if not live:
        return result(previous)

    owners: dict[Partition, str] = {}
    orphans: list[Partition] = []
    for partition in ordered:
        owner = previous.get(partition)
        if owner is not None and (owner in live_set or now_ms - missing[owner] < reassign_delay_ms):
            owners[partition] = owner
        else:
            orphans.append(partition)

    weight_of = _weights(live, weights)
    ring = _Ring(weight_of, vnodes)
    reserved = sum(1 for owner in owners.values() if owner not in live_set)
    fair = _fair_shares(weight_of, len(ordered) - reserved)
    caps = _caps(fair, load_factor)
    loads = dict.fromkeys(live, 0)
    for owner in owners.values():
        if owner in live_set:
            loads[owner] += 1
    budget = math.inf if max_moves is None else max_moves

    # 1. Shed what is above a broker's bound, preferring partitions the ring homes elsewhere.
    for broker in live:
        excess = loads[broker] - caps[broker]
        if excess <= 0:
            continue
        mine = [p for p in ordered if owners.get(p) == broker]
        mine.sort(key=lambda p: ring.first(p) == broker)
        for partition in mine[: int(min(excess, budget))]:
            del owners[partition]
            loads[broker] -= 1
            orphans.append(partition)
            budget -= 1

    # 2. New, orphaned and shed partitions go on the ring.
    owners.update(_place(_order(orphans), ring, caps, loads))

    # 3. Fill brokers far below their fair share (a joining broker) from those above it.
    while True:
        receivers = [b for b in live if loads[b] < fair[b] / load_factor]
        donors = [b for b in live if loads[b] > fair[b]]
        if not receivers or not donors:
            break
        if budget <= 0:
            return result(owners, settled=False)
        receiver = min(receivers, key=lambda b: (loads[b] / fair[b], b))
        donor = max(donors, key=lambda b: (loads[b] / fair[b], b))
        candidates = [p for p in ordered if owners.get(p) == donor]
        partition = min(candidates, key=lambda p: ring.first(p) != receiver)
        owners[partition] = receiver
        loads[donor] -= 1
        loads[receiver] += 1
        budget -= 1

    over = any(loads[b] > caps[b] for b in live)
    return result(dict(sorted(owners.items())), settled=not over or budget > 0)
