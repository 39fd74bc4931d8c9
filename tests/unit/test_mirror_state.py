"""The typed mirror state: its phases, transitions and the one loop and target rule."""

from __future__ import annotations

import pytest

from mirror.state import (
    MirrorState,
    Phase,
    begin_resync,
    fence,
    finish_failback,
    finish_resync,
    loop_reason,
    new_mirror,
    parse_mirror,
    pending_reverse,
    promote,
    target_problem,
)
from talos.errors import CoordinationError, InvalidArgument

AB = new_mirror("A:B", "A", "orders")


def test_promotion_fences_first_then_opens_at_the_same_epoch() -> None:
    fenced = fence(AB)
    assert (fenced.link, fenced.epoch, fenced.phase) == ("A:B", 2, Phase.PROMOTING)
    assert not fenced.writable and fence(fenced) == fenced
    opened = promote(fenced, 99)
    assert (opened.epoch, opened.phase, opened.promoted_ms) == (2, Phase.PROMOTED, 99)
    assert opened.writable
    assert promote(AB, 99) == opened  # one step: through the fence
    assert promote(opened, 100) == opened


def test_appends_land_only_for_the_link_at_its_epoch_and_never_after_promotion() -> None:
    assert AB.append_refusal("A:B", 1) == ""
    assert "epoch 2" in AB.append_refusal("A:B", 2)
    assert "C:B" in AB.append_refusal("C:B", 1)
    assert "promoting" in fence(AB).append_refusal("A:B", 2)
    assert "promoted" in promote(AB, 1).append_refusal("A:B", 2)


def test_failback_and_resync_bump_the_epoch_so_no_worker_appends() -> None:
    pending = pending_reverse(promote(new_mirror("B:A", "B", "t"), 1), "B:A", "B", "t")
    assert (pending.epoch, pending.phase) == (3, Phase.FAILBACK_PENDING)
    assert pending_reverse(pending, "B:A", "B", "t") == pending
    assert "epoch 2" in pending.append_refusal("B:A", 2)
    done = finish_failback(pending)
    assert (done.phase, done.epoch, done.link) == (Phase.MIRRORING, 3, "B:A")
    with pytest.raises(InvalidArgument, match="pending failback"):
        finish_failback(fence(AB))

    resyncing = begin_resync(AB)
    assert (resyncing.epoch, resyncing.phase) == (2, Phase.RESYNCING)
    assert "epoch 1" in resyncing.append_refusal("A:B", 1)
    again = finish_resync(resyncing, "inc-2")
    assert (again.phase, again.epoch, again.source_incarnation) == (Phase.MIRRORING, 2, "inc-2")
    with pytest.raises(InvalidArgument, match="mirroring"):
        begin_resync(promote(AB, 1))


def test_the_znode_form_round_trips_and_old_untyped_descriptors_are_read() -> None:
    for state in (AB, fence(AB), promote(AB, 5), begin_resync(AB)):
        assert MirrorState.from_dict(state.to_dict()) == state
    legacy = {"link": "A:B (promoting)", "source": "A", "source_topic": "o", "epoch": 4}
    assert parse_mirror(legacy) == MirrorState("A:B", "A", "o", 4, Phase.PROMOTING)
    pending = {"link": "B:A (failback pending)", "source": "B", "epoch": 2, "failback": "pending"}
    assert parse_mirror(pending, "o") == MirrorState("B:A", "B", "o", 2, Phase.FAILBACK_PENDING)
    promoted = {"link": "A:B", "source": "A", "epoch": 2, "promoted": True, "promoted_ms": 7}
    assert parse_mirror(promoted, "o") == MirrorState("A:B", "A", "o", 2, Phase.PROMOTED, 7)
    with pytest.raises(CoordinationError, match="malformed mirror"):
        parse_mirror({"link": "A:B", "phase": "sideways"}, "o")
    with pytest.raises(InvalidArgument, match=r"mirror\.epoch"):
        MirrorState("A:B", "A", "o", -1)


def test_one_target_rule_names_every_reason_not_to_copy() -> None:
    assert target_problem("A:B", "orders", AB) == ""
    assert "not a mirror" in target_problem("A:B", "orders", None)
    assert "C:B" in target_problem("A:B", "orders", new_mirror("C:B", "C", "orders"))
    # the same link, but another source topic: status used to call this fine
    assert "'pay'" in target_problem("A:B", "orders", new_mirror("A:B", "A", "pay"))
    assert "being promoted" in target_problem("A:B", "orders", fence(AB))
    assert "was promoted" in target_problem("A:B", "orders", promote(AB, 1))
    assert "resynced" in target_problem("A:B", "orders", begin_resync(AB))


def test_the_loop_rule() -> None:
    b_copy_of_a = new_mirror("A:B", "A", "orders")
    assert "loop" in loop_reason("B", "A", b_copy_of_a)
    assert loop_reason("B", "A", promote(b_copy_of_a, 1)) == ""
    assert loop_reason("B", "C", b_copy_of_a) == ""  # forwarded: B is a hop on A -> B -> C
    assert loop_reason("B", "A", None) == ""
