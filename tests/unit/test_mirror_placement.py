"""Which topics a link copies (selection, loops, create/grow/refuse) and which
partitions a worker owns (sticky consistent hashing)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mirror.placement import (
    TopicPlan,
    check_link,
    link_partitions,
    loop_reason,
    mirror_descriptor,
    owned_partitions,
    plan_topic,
)
from mirror.state import MirrorState, promote
from talos.config import TopicConfig
from talos.coord.topics import TopicMeta
from talos.errors import InvalidArgument
from topology.model import Link

AB = Link(source="A", target="B", topics=("orders", "pay.*"))
AB_PREFIXED = Link(source="A", target="B", topics=("*",), naming="prefixed")


def meta(
    name: str, partitions: int = 3, mirror: MirrorState | None = None, incarnation: str = ""
) -> TopicMeta:
    return TopicMeta(name, partitions, TopicConfig(), 1, mirror, incarnation)


def test_unselected_topics_are_skipped() -> None:
    plan = plan_topic(AB, meta("audit"), None)
    assert plan.action == "skip" and "not selected" in plan.reason


def test_a_new_selected_topic_is_created_with_the_source_partition_count() -> None:
    assert plan_topic(AB, meta("orders", 5), None) == TopicPlan(
        "orders", "orders", "create", 5, epoch=1
    )
    assert plan_topic(AB_PREFIXED, meta("orders", 2), None).target_topic == "A.orders"


def test_the_target_grows_first_when_the_source_grew() -> None:
    target = meta("orders", 3, replace(mirror_descriptor(AB, "orders"), epoch=4))
    plan = plan_topic(AB, meta("orders", 6), target)
    assert (plan.action, plan.partitions, plan.epoch) == ("grow", 6, 4)


def test_a_ready_mirror_copies_the_common_partitions_at_its_epoch() -> None:
    target = meta("orders", 4, replace(mirror_descriptor(AB, "orders"), epoch=2))
    plan = plan_topic(AB, meta("orders", 4), target)
    assert (plan.action, plan.partitions, plan.epoch) == ("ready", 4, 2)
    # a target with more partitions than the source (source re-created smaller)
    assert plan_topic(AB, meta("orders", 2), target).partitions == 2


def test_a_foreign_target_topic_is_refused() -> None:
    plan = plan_topic(AB, meta("orders"), meta("orders", 3, None))
    assert plan.action == "error" and "not a mirror" in plan.reason
    assert plan.partitions == 3  # so that each partition reports the error

    other_link = replace(mirror_descriptor(AB, "orders"), link="C:B", source="C")
    plan = plan_topic(AB, meta("orders"), meta("orders", 3, other_link))
    assert plan.action == "error" and "C:B" in plan.reason

    other_topic = mirror_descriptor(AB, "pay.x")
    assert plan_topic(AB, meta("orders"), meta("orders", 3, other_topic)).action == "error"


def test_a_promoted_target_is_not_written() -> None:
    promoted = promote(replace(mirror_descriptor(AB, "orders"), epoch=2), 1)
    plan = plan_topic(AB, meta("orders"), meta("orders", 3, promoted))
    assert plan.action == "error" and "promoted" in plan.reason and plan.epoch == 3


def test_a_mirror_of_the_target_is_never_copied_back() -> None:
    ba = Link(source="B", target="A", topics=("orders",))
    back = mirror_descriptor(ba, "orders")  # A's "orders" is B's data
    plan = plan_topic(AB, meta("orders", 3, back), None)
    assert plan.action == "skip" and "loop" in plan.reason
    # once promoted it is A's own topic and may be copied
    assert plan_topic(AB, meta("orders", 3, promote(back, 1)), None).action == "create"
    # a mirror from a third DC is forwarded (A is a hop on C -> A -> B)
    ca = mirror_descriptor(Link("C", "A", ("orders",)), "orders")
    assert loop_reason(AB, ca) == ""
    assert plan_topic(AB, meta("orders", 3, ca), None).action == "create"


def test_prefixed_naming_never_chains_names() -> None:
    # B's mirror of A's topic is named "A.orders" in B; seen from the link B -> A it is
    # not selected, so no "B.A.orders" appears in A.
    ba = Link(source="B", target="A", topics=("*",), naming="prefixed")
    in_b = meta("A.orders", 3, mirror_descriptor(AB_PREFIXED, "orders"))
    assert plan_topic(ba, in_b, None).action == "skip"


def test_link_partitions_cover_ready_and_error_topics() -> None:
    plans = [
        TopicPlan("a", "a", "ready", 2),
        TopicPlan("b", "b", "error", 1, reason="x"),
        TopicPlan("c", "", "skip"),
        TopicPlan("d", "d", "create", 4),
    ]
    assert link_partitions(plans) == [("a", 0), ("a", 1), ("b", 0)]


PARTITIONS = [(f"t{t}", p) for t in range(4) for p in range(16)]


def test_workers_split_the_partitions_without_overlap() -> None:
    workers = ["w1", "w2", "w3"]
    owned = {w: owned_partitions(PARTITIONS, workers, w) for w in workers}
    assert set().union(*owned.values()) == set(PARTITIONS)
    assert sum(len(o) for o in owned.values()) == len(PARTITIONS)
    assert all(len(o) <= 1.25 * len(PARTITIONS) / 3 + 1 for o in owned.values())


def test_a_joining_worker_takes_partitions_without_a_global_reshuffle() -> None:
    before = {w: owned_partitions(PARTITIONS, ["w1", "w2", "w3"], w) for w in ["w1", "w2", "w3"]}
    after_workers = ["w1", "w2", "w3", "w4"]
    after = {w: owned_partitions(PARTITIONS, after_workers, w) for w in after_workers}
    moved = sum(len(before[w] - after[w]) for w in before)
    assert after["w4"]  # the newcomer gets work
    # Consistent hashing: about a quarter moves (to the newcomer), far from a reshuffle.
    assert moved <= len(PARTITIONS) * 0.45, moved


def test_a_worker_counts_itself_before_it_sees_its_registration() -> None:
    assert owned_partitions(PARTITIONS, [], "w1") == set(PARTITIONS)
    assert owned_partitions(PARTITIONS, ["w2"], "w1") == owned_partitions(
        PARTITIONS, ["w1", "w2"], "w1"
    )
    with pytest.raises(InvalidArgument, match="me"):
        owned_partitions(PARTITIONS, ["w1"], "")


def test_dc_names_must_fit_the_origin_field() -> None:
    check_link(AB)
    with pytest.raises(InvalidArgument, match=r"link\.source"):
        check_link(Link(source="datacenter-east-1a", target="B", topics=("x",)))


def test_a_copy_of_another_source_incarnation_is_diverged() -> None:
    copy = mirror_descriptor(AB, "orders", "inc-1")
    same = plan_topic(AB, meta("orders", incarnation="inc-1"), meta("orders", 3, copy))
    assert (same.action, same.diverged) == ("ready", "")
    recreated = plan_topic(AB, meta("orders", incarnation="inc-2"), meta("orders", 3, copy))
    assert recreated.action == "ready" and "recreated" in recreated.diverged
    assert "inc-2" in recreated.diverged and "inc-1" in recreated.diverged
    unrecorded = mirror_descriptor(AB, "orders")  # made before incarnations: content decides
    assert (
        plan_topic(AB, meta("orders", incarnation="inc-2"), meta("orders", 3, unrecorded)).diverged
        == ""
    )
