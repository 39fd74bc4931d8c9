"""The healthcheck's verdict on a broker's Metadata answer."""

from __future__ import annotations

from talos.health import judge
from talos.proto import talos_pb2 as pb


def metadata(*ids: str) -> pb.MetadataResponse:
    response = pb.MetadataResponse(cluster="dc-a")
    for broker_id in ids:
        response.brokers.add(id=broker_id, address=f"{broker_id}:9092")
    return response


def test_a_broker_listed_among_the_live_ones_is_healthy() -> None:
    health = judge("b1:9092", metadata("b1", "b2"), "b1")
    assert health.healthy and health.live_brokers == ("b1", "b2") and health.cluster == "dc-a"


def test_a_broker_that_lost_its_registration_is_unhealthy() -> None:
    health = judge("b1:9092", metadata("b2"), "b1")
    assert not health.healthy and "'b1' is not registered (live: b2)" in health.reason


def test_without_an_id_any_live_broker_will_do_but_none_is_unhealthy() -> None:
    assert judge("x:1", metadata("b2"), None).healthy
    assert not judge("x:1", metadata(), None).healthy
