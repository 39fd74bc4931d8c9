"""Consumer group offset sync decisions: forward only, clamped to the target end, idempotent."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mirror.offset_sync import OffsetUpdate, plan_offset_sync
from topology import Link

IDENTITY = Link("A", "B", ("*",))
PREFIXED = Link("A", "B", ("orders", "pay*"), naming="prefixed")


def test_copies_a_new_group_offset() -> None:
    plan = plan_offset_sync(
        IDENTITY, {("g", "orders", 0): 40}, {}, {("orders", 0): 100}, {"orders"}
    )
    assert plan == [OffsetUpdate("g", "orders", 0, 40, -1, 40)]


def test_never_moves_the_target_backwards() -> None:
    plan = plan_offset_sync(
        IDENTITY,
        {("g", "orders", 0): 40, ("g", "orders", 1): 50},
        {("g", "orders", 0): 45, ("g", "orders", 1): 50},
        {("orders", 0): 100, ("orders", 1): 100},
        {"orders"},
    )
    assert plan == []


def test_never_past_the_target_end() -> None:
    (update,) = plan_offset_sync(
        IDENTITY,
        {("g", "orders", 0): 900},
        {("g", "orders", 0): 10},
        {("orders", 0): 300},
        {"orders"},
    )
    assert (update.offset, update.previous, update.source_offset) == (300, 10, 900)
    assert update.clamped
    # at the end already: nothing to do until the mirror copies more
    assert (
        plan_offset_sync(
            IDENTITY,
            {("g", "orders", 0): 900},
            {("g", "orders", 0): 300},
            {("orders", 0): 300},
            {"orders"},
        )
        == []
    )


def test_unknown_end_and_uncopied_topics_are_left_alone() -> None:
    source = {("g", "orders", 0): 5, ("g", "orders", 1): 5, ("g", "local", 0): 5}
    plan = plan_offset_sync(
        IDENTITY,
        source,
        {},
        {("orders", 0): None, ("local", 0): 10},  # orders/1 absent: unknown too
        {"orders"},  # "local" is not copied (e.g. a mirror of B's own topic)
    )
    assert plan == []


def test_no_committed_offset_in_the_source_is_not_copied() -> None:
    assert plan_offset_sync(IDENTITY, {("g", "t", 0): -1}, {}, {("t", 0): 9}, {"t"}) == []


def test_prefixed_naming_writes_the_target_topic_and_skips_unselected() -> None:
    plan = plan_offset_sync(
        PREFIXED,
        {("g", "orders", 0): 3, ("g", "payments", 0): 4, ("g", "audit", 0): 5},
        {},
        {("A.orders", 0): 10, ("A.payments", 0): 10, ("A.audit", 0): 10},
        {"orders", "payments", "audit"},
    )
    assert [(u.topic, u.offset) for u in plan] == [("A.orders", 3), ("A.payments", 4)]


def test_groups_are_independent() -> None:
    plan = plan_offset_sync(
        IDENTITY,
        {("g1", "t", 0): 8, ("g2", "t", 0): 3},
        {("g1", "t", 0): 9, ("g2", "t", 0): 1},
        {("t", 0): 20},
        {"t"},
    )
    assert plan == [OffsetUpdate("g2", "t", 0, 3, 1, 3)]


keys = st.tuples(st.sampled_from(["g1", "g2"]), st.sampled_from(["t", "u"]), st.integers(0, 2))
offsets = st.integers(-1, 60)


@given(
    source=st.dictionaries(keys, offsets, max_size=12),
    target=st.dictionaries(keys, offsets, max_size=12),
    ends=st.dictionaries(
        st.tuples(st.sampled_from(["t", "u"]), st.integers(0, 2)),
        st.one_of(st.none(), st.integers(0, 60)),
        max_size=6,
    ),
)
def test_properties_forward_only_bounded_and_idempotent(
    source: dict[tuple[str, str, int], int],
    target: dict[tuple[str, str, int], int],
    ends: dict[tuple[str, int], int | None],
) -> None:
    plan = plan_offset_sync(IDENTITY, source, target, ends, {"t", "u"})
    for update in plan:
        key = (update.group, update.topic, update.partition)
        end = ends[(update.topic, update.partition)]
        assert end is not None
        assert update.offset > target.get(key, -1)  # forward only
        assert update.offset <= end  # never past the target end
        assert update.offset == min(source[key], end)
    assert len({(u.group, u.topic, u.partition) for u in plan}) == len(plan)
    applied = {**target, **{(u.group, u.topic, u.partition): u.offset for u in plan}}
    assert plan_offset_sync(IDENTITY, source, applied, ends, {"t", "u"}) == []
    # everything the plan left out was either behind, unknown or already there
    for key, offset in source.items():
        end = ends.get((key[1], key[2]))
        if offset >= 0 and end is not None:
            assert applied.get(key, -1) >= min(offset, end)
