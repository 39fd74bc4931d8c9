"""The producer's batching decisions, as plain functions."""

from __future__ import annotations

from talos.client.producer import nagle_hold


def test_an_idle_broker_holds_nothing() -> None:
    assert nagle_hold(in_flight=0, answers=7, held_at=-1) == (False, -1)
    assert nagle_hold(in_flight=0, answers=7, held_at=3) == (False, -1)


def test_a_busy_broker_holds_a_batch_until_its_next_answer() -> None:
    hold, held_at = nagle_hold(in_flight=1, answers=4, held_at=-1)
    assert (hold, held_at) == (True, 4)
    assert nagle_hold(in_flight=2, answers=4, held_at=held_at) == (True, 4)  # no answer yet


def test_a_broker_that_never_goes_idle_does_not_starve_it() -> None:
    # other partitions keep two requests in flight; one of them was answered
    assert nagle_hold(in_flight=2, answers=5, held_at=4) == (False, 4)
