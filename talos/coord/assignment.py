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

Traffic-weighted balancing (issue 13 §3): given each partition's bytes/s,
:func:`plan_rebalance` decides which few partitions to move so that no broker
carries more than ``(1 + epsilon)`` times the mean load, and
:func:`plan_assignment` with ``traffic`` places new and orphaned partitions on
the ring with loads bounded in bytes/s instead of partition counts.
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

#: An idle partition weighs as much as one moving this many bytes/s, so with little
#: or no traffic balancing by weight is balancing by partition count.
IDLE_PARTITION_BYTES_PER_S = 1024.0
DEFAULT_EPSILON = 0.1
MAX_EPSILON = 10.0
DEFAULT_MAX_MOVES = 4
MAX_MAX_MOVES = 10_000


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
    #: Partitions moved between live brokers to even out traffic (``traffic`` given).
    moves: tuple[Move, ...] = ()


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
    traffic: Mapping[Partition, float] | None = None,
    epsilon: float = DEFAULT_EPSILON,
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
    - With ``traffic`` (bytes/s per partition; may be empty), load is weighed in
      bytes/s instead of partition counts: orphans go on the ring with loads
      bounded by (1 + epsilon/2) times the mean, and :func:`plan_rebalance`
      picks the moves (``max_moves`` of them at most; None counts as 0 here,
      since each move costs a takeover and the caller paces the rounds).
    """
    _check_options(vnodes, load_factor)
    for value, param in ((now_ms, "now_ms"), (reassign_delay_ms, "reassign_delay_ms")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgument(f"{param}: must be an integer >= 0, got {value!r}")
    if max_moves is not None and (
        isinstance(max_moves, bool) or not isinstance(max_moves, int) or max_moves < 0
    ):
        raise InvalidArgument(f"max_moves: must be None or an integer >= 0, got {max_moves!r}")
    if traffic is not None:
        epsilon = validate_epsilon(epsilon)

    ordered = _order(partitions)
    live = sorted(set(live_brokers))
    live_set = set(live)
    previous = {p: previous_owners[p] for p in ordered if p in previous_owners}
    missing = {
        broker: missing_since.get(broker, now_ms)
        for broker in sorted(set(previous.values()) - live_set)
    }

    def result(
        owners: dict[Partition, str], settled: bool = True, moves: tuple[Move, ...] = ()
    ) -> AssignmentPlan:
        still_missing = {b: t for b, t in missing.items() if b in set(owners.values())}
        changed = owners != dict(previous_owners) or still_missing != dict(missing_since)
        return AssignmentPlan(owners, still_missing, changed, settled, moves)

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
    if traffic is not None:
        moves = _balance_traffic(owners, orphans, live, ring, traffic, epsilon, max_moves or 0)
        return result(dict(sorted(owners.items())), settled=True, moves=moves)
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


# -- traffic-weighted balancing ------------------------------------------------------


def validate_epsilon(value: object, param: str = "epsilon") -> float:
    """The tolerated imbalance: a number in (0, 10]; 0.1 lets a broker carry 110% of the mean."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= MAX_EPSILON
    ):
        raise InvalidArgument(f"{param}: must be a number > 0 and <= {MAX_EPSILON}, got {value!r}")
    return float(value)


def validate_max_moves(value: object, param: str = "max_moves") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_MAX_MOVES:
        raise InvalidArgument(
            f"{param}: must be an integer between 0 and {MAX_MAX_MOVES}, got {value!r}"
        )
    return value


@dataclass(frozen=True)
class Move:
    """Hand ``partition`` from ``source`` to ``target`` (one takeover)."""

    partition: Partition
    source: str
    target: str
    #: The partition's weight: its bytes/s plus the idle weight.
    weight: float


def partition_weights(
    partitions: Iterable[Partition], traffic: Mapping[Partition, float]
) -> dict[Partition, float]:
    """Each partition's bytes/s (unknown, negative or non-finite: 0) plus the idle weight."""
    weights: dict[Partition, float] = {}
    for partition in partitions:
        rate = traffic.get(partition, 0.0)
        usable = isinstance(rate, int | float) and math.isfinite(rate) and rate > 0
        weights[partition] = IDLE_PARTITION_BYTES_PER_S + (float(rate) if usable else 0.0)
    return weights


def broker_loads(
    owners: Mapping[Partition, str], weights: Mapping[Partition, float], brokers: Iterable[str]
) -> dict[str, float]:
    """The summed weight of the partitions each of ``brokers`` owns."""
    loads = dict.fromkeys(brokers, 0.0)
    for partition, owner in owners.items():
        if owner in loads:
            loads[owner] += weights[partition]
    return loads


def imbalanced(loads: Mapping[str, float], epsilon: float) -> bool:
    """True when a broker carries more than (1+epsilon) times the mean, or less than
    the mean divided by (1+epsilon) (a joining broker)."""
    if not loads:
        return False
    mean = sum(loads.values()) / len(loads)
    return any(
        load > (1 + epsilon) * mean or load * (1 + epsilon) < mean for load in loads.values()
    )


def plan_rebalance(
    owners: Mapping[Partition, str],
    traffic: Mapping[Partition, float],
    live_brokers: Sequence[str],
    epsilon: float,
    max_moves: int,
) -> list[Move]:
    """The partitions to move this round so that loads (bytes/s) even out.

    - Nothing moves while every live broker carries between mean/(1+epsilon) and
      (1+epsilon) times the mean load. Once that band is left, moves continue
      until the tighter band of epsilon/2 is reached (or no move helps, or
      ``max_moves`` is used up), so small swings of traffic do not make
      partitions flap.
    - Each move takes a partition from the most loaded broker to the least
      loaded one, and only if the receiver then carries at least epsilon
      times the mean less than the donor did: the sum of squared loads
      strictly falls, so rounds on unchanged traffic reach a fixed point, and
      undoing a move would take a swing of traffic larger than that margin
      (two similar partitions are never swapped back and forth on noise). A
      partition hotter than the gap stays put (an indivisible hot partition
      ends up alone, not bounced around).
    - The partition chosen brings the two loads closest together.
    - Partitions of brokers not in ``live_brokers`` (reserved during the
      reassign delay) neither move nor count.
    """
    epsilon = validate_epsilon(epsilon)
    validate_max_moves(max_moves)
    live = sorted(set(live_brokers))
    mine = {p: b for p, b in owners.items() if b in set(live)}
    if len(live) < 2 or max_moves == 0 or not mine:
        return []
    weights = partition_weights(_order(mine), traffic)
    loads = broker_loads(mine, weights, live)
    if not imbalanced(loads, epsilon):
        return []
    mean = sum(loads.values()) / len(live)
    high, low = (1 + epsilon / 2) * mean, mean / (1 + epsilon / 2)
    margin = epsilon * mean
    holdings: dict[str, list[Partition]] = {b: [] for b in live}
    for partition in _order(mine):
        holdings[mine[partition]].append(partition)
    moves: list[Move] = []
    moved: set[Partition] = set()
    while len(moves) < max_moves and any(not low <= x <= high for x in loads.values()):
        receiver = min(live, key=lambda b: (loads[b], b))
        move = None
        for donor in sorted(live, key=lambda b: (-loads[b], b)):
            room = loads[donor] - loads[receiver] - margin
            fits = [p for p in holdings[donor] if p not in moved and weights[p] <= room]
            if fits:
                gap = loads[donor] - loads[receiver]
                best = min(fits, key=lambda p: abs(gap - 2 * weights[p]))
                move = Move(best, donor, receiver, weights[best])
                break
        if move is None:
            break
        moves.append(move)
        moved.add(move.partition)
        holdings[move.source].remove(move.partition)
        holdings[move.target].append(move.partition)
        loads[move.source] -= move.weight
        loads[move.target] += move.weight
    return moves


def _place_weighted(
    partitions: Sequence[Partition],
    ring: _Ring,
    weights: Mapping[Partition, float],
    loads: dict[str, float],
    cap: float,
) -> dict[Partition, str]:
    """Bounded-load placement in bytes/s: heaviest first, each on the first broker
    clockwise from its hash that stays within ``cap``; else on the least loaded."""
    placed: dict[Partition, str] = {}
    for partition in sorted(partitions, key=lambda p: (-weights[p], _partition_hash(p), p)):
        weight = weights[partition]
        candidates = list(ring.walk(_partition_hash(partition)))
        chosen = next((b for b in candidates if loads[b] + weight <= cap), None)
        if chosen is None:
            chosen = min(candidates, key=lambda b: (loads[b], candidates.index(b)))
        placed[partition] = chosen
        loads[chosen] += weight
    return placed


def _balance_traffic(
    owners: dict[Partition, str],
    orphans: list[Partition],
    live: list[str],
    ring: _Ring,
    traffic: Mapping[Partition, float],
    epsilon: float,
    max_moves: int,
) -> tuple[Move, ...]:
    """Place ``orphans`` by bytes/s, then rebalance; updates ``owners`` in place."""
    live_set = set(live)
    weights = partition_weights([*owners, *orphans], traffic)
    loads = broker_loads(owners, weights, live)
    cap = (1 + epsilon / 2) * (sum(loads.values()) + sum(weights[p] for p in orphans)) / len(live)
    owners.update(_place_weighted(orphans, ring, weights, loads, cap))
    moves = plan_rebalance(
        {p: b for p, b in owners.items() if b in live_set}, traffic, live, epsilon, max_moves
    )
    for move in moves:
        owners[move.partition] = move.target
    return tuple(moves)
