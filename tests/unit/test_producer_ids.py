"""The next producer id, from what the id znode holds (a pure decision, issue 11 §5)."""

from __future__ import annotations

import struct

import pytest

from talos.coord.producer_ids import MAX_PRODUCER_ID, next_producer_id
from talos.errors import CoordinationError


def stored(last: int) -> bytes:
    return struct.pack(">q", last)


def test_the_id_after_the_stored_one_ignores_the_version() -> None:
    assert next_producer_id(stored(0), 0) == 1
    assert next_producer_id(stored(41), 7) == 42
    # past 32 bits, and whatever the (wrapping) version says
    assert next_producer_id(stored(2**31 - 1), -(2**31)) == 2**31
    assert next_producer_id(stored(2**40), 3) == 2**40 + 1


def test_an_old_empty_znode_goes_on_from_its_version() -> None:
    """The old scheme handed out the version itself: the next id must be above it."""
    assert next_producer_id(b"", 17) == 18


@pytest.mark.parametrize("data", [b"\x01", stored(-5), stored(MAX_PRODUCER_ID)])
def test_a_damaged_or_exhausted_counter_is_an_error(data: bytes) -> None:
    with pytest.raises(CoordinationError, match="/producer_ids"):
        next_producer_id(data, 1)
