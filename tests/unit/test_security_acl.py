"""The authorization decision, as its specification: who may do what on which topic."""

from __future__ import annotations

import pytest

from talos.errors import InvalidArgument
from talos.proto import talos_pb2 as pb
from talos.security.acl import (
    AclEntry,
    AclSet,
    Decision,
    Operation,
    Principal,
    authorize,
    first_denial,
    parse_operation,
)
from talos.security.rules import required

PRODUCE, CONSUME, ADMIN, MIRROR = (
    Operation.PRODUCE,
    Operation.CONSUME,
    Operation.ADMIN,
    Operation.MIRROR,
)
SHOP = Principal("shop")
BILLING = Principal("billing")
ROOT = Principal("admin", superuser=True)
ACLS = AclSet.of(
    [
        AclEntry("shop", PRODUCE, "orders"),
        AclEntry("shop", CONSUME, "orders.*"),
        AclEntry("billing", CONSUME, "*"),
        AclEntry("mirror-b", MIRROR, "orders"),
    ]
)


def test_an_exact_acl_allows_that_operation_on_that_topic_only() -> None:
    assert authorize(SHOP, PRODUCE, "orders", ACLS).allowed
    assert not authorize(SHOP, PRODUCE, "orders2", ACLS).allowed
    assert not authorize(SHOP, ADMIN, "orders", ACLS).allowed


def test_a_prefix_acl_allows_every_topic_starting_with_it() -> None:
    assert authorize(SHOP, CONSUME, "orders.eu", ACLS).allowed
    assert authorize(SHOP, CONSUME, "orders.", ACLS).allowed
    assert not authorize(SHOP, CONSUME, "orders", ACLS).allowed  # "orders.*" needs the dot


def test_star_allows_every_topic_and_operations_on_no_topic() -> None:
    assert authorize(BILLING, CONSUME, "anything", ACLS).allowed
    assert authorize(BILLING, CONSUME, None, ACLS).allowed
    assert not authorize(SHOP, PRODUCE, None, ACLS).allowed  # "orders" is not "*"


def test_acls_of_another_tenant_grant_nothing() -> None:
    decision = authorize(BILLING, PRODUCE, "orders", ACLS)
    assert decision == Decision(False, decision.reason)
    assert "tenant 'billing' may not produce topic 'orders'" in decision.reason
    assert "consume on '*'" in decision.reason  # what it does hold
    assert "talos acl add billing produce orders" in decision.reason


def test_mirror_is_its_own_right_and_produce_does_not_imply_it() -> None:
    assert authorize(Principal("mirror-b"), MIRROR, "orders", ACLS).allowed
    assert not authorize(SHOP, MIRROR, "orders", ACLS).allowed
    assert not authorize(Principal("mirror-b"), PRODUCE, "orders", ACLS).allowed


def test_a_superuser_may_do_everything_without_acls() -> None:
    for operation in Operation:
        assert authorize(ROOT, operation, "x", AclSet()).allowed
    assert authorize(ROOT, ADMIN, None, AclSet()).reason == "tenant 'admin' is a superuser"


def test_a_tenant_without_acls_is_denied_and_told_it_has_none() -> None:
    decision = authorize(Principal("new"), CONSUME, "orders", ACLS)
    assert not decision.allowed
    assert "(its ACLs: none)" in decision.reason


def test_first_denial_names_the_first_topic_refused() -> None:
    wanted = [(CONSUME, "orders.a"), (CONSUME, "secret"), (CONSUME, "other")]
    denial = first_denial(SHOP, wanted, ACLS)
    assert denial is not None and "'secret'" in denial.reason
    assert first_denial(SHOP, wanted[:1], ACLS) is None


@pytest.mark.parametrize("pattern", ["", "a*b", "**", "a/b", "x" * 250])
def test_bad_patterns_are_refused_naming_the_parameter(pattern: str) -> None:
    with pytest.raises(InvalidArgument, match="topic: "):
        AclEntry("shop", PRODUCE, pattern)


def test_bad_tenant_and_operation_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="tenant: "):
        AclEntry("a:b", PRODUCE, "orders")
    with pytest.raises(InvalidArgument, match="operation: must be one of produce, consume"):
        parse_operation("write")


def test_each_rpc_needs_the_right_operation_on_the_topics_it_names() -> None:
    fetch = pb.FetchRequest(
        partitions=[
            pb.FetchPartition(topic="a", partition=0),
            pb.FetchPartition(topic="a", partition=1),
            pb.FetchPartition(topic="b", partition=0),
        ]
    )
    assert required("Fetch", fetch) == [(CONSUME, "a"), (CONSUME, "b")]
    assert required("MirrorAppend", pb.MirrorAppendRequest(topic="t")) == [(MIRROR, "t")]
    assert required("CreateTopic", pb.CreateTopicRequest(name="t")) == [(ADMIN, "t")]
    assert required("DeleteTopic", pb.DeleteTopicRequest(name="t")) == [(ADMIN, "t")]
    assert required("JoinGroup", pb.JoinGroupRequest(topics=["t"])) == [(CONSUME, "t")]
    assert required("Metadata", pb.MetadataRequest()) == []
    assert required("ListOffsets", pb.ListOffsetsRequest(topic="t")) == []  # log ends: metadata
    # Produce is checked per batch in the service; a new RPC is refused until it has a rule.
    assert required("Produce", pb.ProduceRequest()) == []
    assert required("SomethingNew", None) == [(ADMIN, None)]
    assert required("DeleteGroup", pb.DeleteGroupRequest(group="g")) == [(ADMIN, None)]


def test_a_mirror_append_refused_for_credentials_is_an_error_now_and_retried_slowly() -> None:
    from mirror.appender import ReplyDecision, decide_reply
    from talos.errors import NotAuthorized, Unauthenticated

    for error in (NotAuthorized("no ACL"), Unauthenticated("no token")):
        decision = decide_reply(0, 10, error, -1)
        assert decision == ReplyDecision(
            "retry", message=f"{type(error).__name__}: {error.message}", refused=True
        )
