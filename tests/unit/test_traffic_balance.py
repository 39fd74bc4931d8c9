"""Traffic-weighted placement (issue 13 §3), as a specification of the pure decisions.

``plan_rebalance(owners, traffic, live brokers, epsilon, max moves) -> moves``;
``plan_assignment(..., traffic=...)`` for placing new and orphaned partitions.
Traffic is in bytes/s; an idle partition weighs IDLE_PARTITION_BYTES_PER_S.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import pytest

from talos.coord.assignment import (
    IDLE_PARTITION_BYTES_PER_S,
    Move,
    broker_loads,
    imbalanced,
    partition_weights,
    plan_assignment,
    plan_rebalance,
    ring_assign,
)
from talos.errors import InvalidArgument

Partition = tuple[str, int]
Owners = dict[Partition, str]
MB = 1_000_000.0
KB = 1_000.0
B3 = ["b0", "b1", "b2"]


def hot_and_cold(hot: int = 6, cold: int = 30) -> tuple[list[Partition], dict[Partition, float]]:
    """One hot topic (1 MB/s a partition) among a cold one (10 KB/s a partition)."""
    partitions = [("hot", p) for p in range(hot)] + [("cold", p) for p in range(cold)]
    traffic = {p: (MB if p[0] == "hot" else 10 * KB) for p in partitions}
    return partitions, traffic


def loads_of(
    owners: Owners, traffic: Mapping[Partition, float], brokers: list[str]
) -> dict[str, float]:
    return broker_loads(owners, partition_weights(owners, traffic), brokers)


def apply(owners: Owners, moves: list[Move]) -> Owners:
    result = dict(owners)
    for move in moves:
        assert result[move.partition] == move.source
        result[move.partition] = move.target
    return result


def run_rounds(
    owners: Owners,
    traffic: Mapping[Partition, float],
    brokers: list[str],
    epsilon: float,
    max_moves: int,
    limit: int = 50,
) -> tuple[Owners, list[list[Move]]]:
    """Rebalance round after round until a round moves nothing."""
    rounds: list[list[Move]] = []
    while True:
        moves = plan_rebalance(owners, traffic, brokers, epsilon, max_moves)
        if not moves:
            return owners, rounds
        rounds.append(moves)
        owners = apply(owners, moves)
        assert len(rounds) < limit, "did not reach a fixed point"


def within(loads: Mapping[str, float], epsilon: float) -> bool:
    mean = sum(loads.values()) / len(loads)
    return all(mean / (1 + epsilon) <= x <= (1 + epsilon) * mean for x in loads.values())


# -- convergence ------------------------------------------------------------------------


def test_one_hot_topic_on_one_broker_converges_in_a_few_rounds_with_few_moves() -> None:
    partitions, traffic = hot_and_cold()
    owners = ring_assign(partitions, B3)
    for p in partitions:
        if p[0] == "hot":
            owners[p] = "b0"  # the worst start: the whole hot topic on one broker
    assert not within(loads_of(owners, traffic, B3), 0.1)

    final, rounds = run_rounds(owners, traffic, B3, epsilon=0.1, max_moves=2)

    assert within(loads_of(final, traffic, B3), 0.1)
    assert len(rounds) <= 3  # 4 hot partitions must leave b0: 2 rounds of 2, maybe 1 more
    assert all(len(r) <= 2 for r in rounds)
    total = sum(len(r) for r in rounds)
    assert total <= 6
    # The hot topic ends spread: two hot partitions a broker.
    hot_per_broker = [sum(1 for p, b in final.items() if p[0] == "hot" and b == x) for x in B3]
    assert hot_per_broker == [2, 2, 2]


def test_every_round_moves_at_most_max_moves() -> None:
    partitions, traffic = hot_and_cold(hot=12, cold=60)
    owners = dict.fromkeys(partitions, "b0")
    for max_moves in (1, 3, 7):
        _final, rounds = run_rounds(owners, traffic, B3, epsilon=0.1, max_moves=max_moves)
        assert rounds and all(len(r) <= max_moves for r in rounds)
    assert plan_rebalance(owners, traffic, B3, 0.1, max_moves=0) == []


def test_random_traffic_reaches_a_fixed_point_and_each_move_lowers_the_spread() -> None:
    """Each move takes load from a broker to a less loaded one, which ends at least
    eps x the mean below the donor's old load: the sum of squared loads falls with
    every move, and rounds cannot undo each other."""
    rng = random.Random(13)
    for _ in range(30):
        brokers = [f"b{i}" for i in range(rng.randint(2, 6))]
        partitions = [("t", p) for p in range(rng.randint(5, 80))]
        traffic = {p: rng.paretovariate(1.2) * 50 * KB for p in partitions}
        owners = {p: rng.choice(brokers) for p in partitions}
        weights = partition_weights(partitions, traffic)
        while True:
            moves = plan_rebalance(owners, traffic, brokers, 0.1, max_moves=3)
            if not moves:
                break
            for move in moves:
                before = broker_loads(owners, weights, brokers)
                owners = apply(owners, [move])
                after = broker_loads(owners, weights, brokers)
                assert sum(x * x for x in after.values()) < sum(x * x for x in before.values())
                mean = sum(before.values()) / len(brokers)
                assert after[move.target] <= before[move.source] - 0.1 * mean + 1e-6


# -- hysteresis: no flapping ------------------------------------------------------------


def test_balanced_loads_move_nothing() -> None:
    partitions = [("t", p) for p in range(9)]
    traffic = dict.fromkeys(partitions, 100 * KB)
    owners = {p: B3[p[1] % 3] for p in partitions}
    assert plan_rebalance(owners, traffic, B3, 0.1, max_moves=5) == []


def test_swings_inside_the_band_move_nothing() -> None:
    """Traffic that wobbles by up to ±4% around a balanced placement stays put (epsilon 10%)."""
    partitions = [("t", p) for p in range(30)]
    owners = {p: B3[p[1] % 3] for p in partitions}
    rng = random.Random(5)
    for _ in range(200):
        traffic = {p: 200 * KB * rng.uniform(0.96, 1.04) for p in partitions}
        assert plan_rebalance(owners, traffic, B3, 0.1, max_moves=5) == []


def test_once_out_of_the_band_it_balances_past_the_edge_into_a_tighter_band() -> None:
    """Leaving the (1+eps) band starts moves that bring the busiest broker into the
    (1+eps/2) band, so the next small swing does not cross the edge again."""
    partitions = [("t", p) for p in range(30)]
    owners = {p: B3[p[1] % 3] for p in partitions}
    traffic = dict.fromkeys(partitions, 100 * KB)
    for p in partitions[:10:3]:  # b0 owns these: b0 now ~35% above the mean
        traffic[p] = 250 * KB
    assert owners[partitions[0]] == "b0"
    loads = loads_of(owners, traffic, B3)
    assert imbalanced(loads, 0.1)
    moves = plan_rebalance(owners, traffic, B3, 0.1, max_moves=10)
    assert moves and all(m.source == "b0" for m in moves[:1])
    after = loads_of(apply(owners, moves), traffic, B3)
    mean = sum(after.values()) / 3
    assert within(after, 0.1) and max(after.values()) <= 1.05 * mean


def test_a_partition_hotter_than_the_rest_together_ends_alone_and_stays() -> None:
    """No placement can meet the bound: the hot partition keeps a broker to itself,
    the others share the rest, and further rounds move nothing."""
    partitions = [("t", p) for p in range(12)]
    traffic = dict.fromkeys(partitions, 20 * KB)
    traffic[("t", 0)] = 5 * MB
    owners = {p: B3[p[1] % 3] for p in partitions}
    final, rounds = run_rounds(owners, traffic, B3, epsilon=0.1, max_moves=4)
    hot_owner = final[("t", 0)]
    assert [p for p, b in final.items() if b == hot_owner] == [("t", 0)]
    assert final[("t", 0)] == owners[("t", 0)]  # the hot one itself never moved
    assert sum(len(r) for r in rounds) <= 5
    assert plan_rebalance(final, traffic, B3, 0.1, max_moves=4) == []


def test_no_traffic_at_all_balances_by_partition_count() -> None:
    partitions = [("t", p) for p in range(12)]
    owners = {p: ("b0" if p[1] < 8 else "b1") for p in partitions}
    final, _rounds = run_rounds(owners, {}, B3, epsilon=0.1, max_moves=3)
    counts = sorted(list(final.values()).count(b) for b in B3)
    assert counts == [4, 4, 4]


def test_two_similar_partitions_are_not_swapped_on_noise() -> None:
    """b0 carries one 200 KB/s partition more than b1 and b2: moving it would only
    swap the roles, whatever the figures wobble by (up to 4%)."""
    owners = {("t", p): b for p, b in enumerate(["b0", "b0", "b0", "b1", "b1", "b2", "b2"])}
    rng = random.Random(9)
    for _ in range(100):
        traffic = {p: 200 * KB * rng.uniform(0.96, 1.04) for p in owners}
        assert imbalanced(loads_of(owners, traffic, B3), 0.1)  # 600 against a mean of 467
        assert plan_rebalance(owners, traffic, B3, 0.1, max_moves=4) == []


def test_an_off_by_one_count_that_no_move_can_improve_stays() -> None:
    owners = {("t", 0): "b0", ("t", 1): "b0", ("t", 2): "b1", ("t", 3): "b2"}
    assert imbalanced(loads_of(owners, {}, B3), 0.1)  # 2 > 1.1 * 4/3
    assert plan_rebalance(owners, {}, B3, 0.1, max_moves=3) == []


# -- brokers joining and leaving ----------------------------------------------------------


def test_a_joining_broker_takes_its_share_of_the_hot_topic_gradually() -> None:
    partitions, traffic = hot_and_cold(hot=8, cold=40)
    owners, _ = run_rounds(ring_assign(partitions, B3), traffic, B3, 0.1, max_moves=4)
    four = [*B3, "b3"]
    final, rounds = run_rounds(owners, traffic, four, epsilon=0.1, max_moves=2)
    assert within(loads_of(final, traffic, four), 0.1)
    assert rounds and all(len(r) <= 2 for r in rounds)
    moves = [m for r in rounds for m in r]
    # The first round hands the newcomer two hot partitions; cold ones then even out
    # what is left: about 0.1 MB/s over the bound, 11 KB/s a cold partition.
    assert [m.target for m in rounds[0]] == ["b3", "b3"]
    assert all(m.target == "b3" for m in moves if m.partition[0] == "hot")
    assert sum(1 for p, b in final.items() if p[0] == "hot" and b == "b3") == 2
    assert len(moves) <= 14


def test_a_leaving_broker_only_its_partitions_move_then_few_more() -> None:
    """plan_assignment with traffic: the departed broker's partitions are placed by
    load on the ring (not counted as moves); the survivors' partitions mostly stay."""
    partitions, traffic = hot_and_cold(hot=9, cold=45)
    four = [*B3, "b3"]
    owners, _ = run_rounds(ring_assign(partitions, four), traffic, four, 0.1, max_moves=4)
    plan = plan_assignment(
        partitions,
        B3,
        owners,
        {},
        now_ms=0,
        reassign_delay_ms=0,
        traffic=traffic,
        epsilon=0.1,
        max_moves=2,
    )
    assert set(plan.owners) == set(partitions) and set(plan.owners.values()) <= set(B3)
    survivors_moved = [p for p in partitions if owners[p] != "b3" and plan.owners[p] != owners[p]]
    assert len(survivors_moved) == len(plan.moves) <= 2
    final, rounds = run_rounds(plan.owners, traffic, B3, epsilon=0.1, max_moves=2)
    assert within(loads_of(final, traffic, B3), 0.1)
    assert sum(len(r) for r in rounds) <= 4


def test_partitions_reserved_for_a_missing_broker_neither_move_nor_count() -> None:
    partitions, traffic = hot_and_cold(hot=3, cold=9)
    owners = ring_assign(partitions, ["b0", "b1", "gone"])
    plan = plan_assignment(
        partitions,
        ["b0", "b1"],
        owners,
        {"gone": 1_000},
        now_ms=2_000,
        reassign_delay_ms=60_000,
        traffic=traffic,
        max_moves=10,
    )
    assert all(plan.owners[p] == "gone" for p in partitions if owners[p] == "gone")
    assert all(m.source != "gone" and m.target != "gone" for m in plan.moves)
    assert plan.missing_since == {"gone": 1_000}


def test_new_partitions_are_placed_by_traffic_without_moves() -> None:
    partitions, traffic = hot_and_cold(hot=6, cold=30)
    plan = plan_assignment(
        partitions,
        B3,
        {},
        {},
        now_ms=0,
        reassign_delay_ms=0,
        traffic=traffic,
        epsilon=0.1,
        max_moves=0,
    )
    assert plan.moves == () and plan.changed
    assert within(loads_of(plan.owners, traffic, B3), 0.1)


def test_traffic_plans_are_deterministic_and_ignore_input_order() -> None:
    partitions, traffic = hot_and_cold()
    owners = dict.fromkeys(partitions, "b1")
    first = plan_rebalance(owners, traffic, B3, 0.1, 4)
    shuffled = list(owners.items())
    random.Random(3).shuffle(shuffled)
    assert plan_rebalance(dict(shuffled), traffic, list(reversed(B3)), 0.1, 4) == first


# -- input ------------------------------------------------------------------------------------


def test_unusable_traffic_figures_count_as_idle() -> None:
    weights = partition_weights(
        [("t", 0), ("t", 1), ("t", 2), ("t", 3)],
        {("t", 0): float("nan"), ("t", 1): -5.0, ("t", 2): float("inf")},
    )
    assert set(weights.values()) == {IDLE_PARTITION_BYTES_PER_S}


@pytest.mark.parametrize("epsilon", [0, -0.1, float("nan"), float("inf"), 11, True, "0.1", None])
def test_bad_epsilon_is_refused(epsilon: object) -> None:
    with pytest.raises(InvalidArgument, match="epsilon: must be a number > 0"):
        plan_rebalance({}, {}, B3, epsilon, 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="epsilon"):
        plan_assignment([("t", 0)], B3, {}, {}, 0, 0, traffic={}, epsilon=epsilon)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_moves", [-1, 1.5, True, None, 10_001])
def test_bad_max_moves_is_refused(max_moves: object) -> None:
    with pytest.raises(InvalidArgument, match="max_moves: must be an integer between 0"):
        plan_rebalance({}, {}, B3, 0.1, max_moves)  # type: ignore[arg-type]


def test_controller_balance_settings_are_checked_when_made() -> None:
    from talos.coord.controller import Balance

    assert Balance(0.2, 1.0, 0).max_moves == 0
    with pytest.raises(InvalidArgument, match="balance_epsilon"):
        Balance(epsilon=0)
    with pytest.raises(InvalidArgument, match="traffic_interval_s"):
        Balance(interval_s=0)
    with pytest.raises(InvalidArgument, match="max_moves_per_round"):
        Balance(max_moves=-1)
