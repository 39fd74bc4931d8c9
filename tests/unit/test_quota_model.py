"""Quota input checks: each bad value is refused naming its parameter."""

from __future__ import annotations

import pytest

from talos.errors import InvalidArgument, Throttled, from_wire
from talos.quota.model import Rates, check_scope, checked_limits, parse_rate
from talos.wire import error_from_proto, error_to_proto


@pytest.mark.parametrize(
    ("text", "value"), [("1", 1), ("1048576", 1048576), ("2K", 2048), ("1m", 1024**2)]
)
def test_rates_parse(text: str, value: int) -> None:
    assert parse_rate(text, "--produce-bytes-per-s") == value


@pytest.mark.parametrize("text", ["0", "-5", "abc", "1.5", "", "K", "1e6", str(10**16)])
def test_bad_rates_are_refused_naming_the_option(text: str) -> None:
    with pytest.raises(InvalidArgument, match="--produce-bytes-per-s"):
        parse_rate(text, "--produce-bytes-per-s")


def test_limits_need_one_dimension_and_no_negative() -> None:
    with pytest.raises(InvalidArgument, match="at least one"):
        checked_limits(Rates())
    with pytest.raises(InvalidArgument, match="consume-bytes-per-s"):
        checked_limits(Rates(produce_bytes=5, consume_bytes=-1))


def test_retry_after_crosses_the_wire() -> None:
    sent = Throttled("over quota", retry_after_ms=250)
    back = error_from_proto(error_to_proto(sent))
    assert isinstance(back, Throttled) and back.retry_after_ms == 250
    assert isinstance(from_wire(9, "busy"), Throttled)


def test_every_tenant_is_a_scope_only_with_a_topic() -> None:
    assert check_scope("*", "logs") == "*"
    assert check_scope("team-a", None) == "team-a"
    with pytest.raises(InvalidArgument, match="needs --topic"):
        check_scope("*", None)
    with pytest.raises(InvalidArgument, match="tenant"):
        check_scope("a/b", "logs")
