"""Topic ACLs and the authorization decision: a plain function, no I/O.

An ACL grants one tenant one operation on a topic pattern: an exact topic name,
a prefix ending in ``*`` (``orders.*``), or ``*`` for every topic. Anything not
granted is denied. A superuser (a token created with ``--superuser``) may do
everything, as Kafka's ``super.users``. Operations that name no topic (deleting a
consumer group) need the operation granted on ``*``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from talos.coord.paths import validate_name
from talos.errors import InvalidArgument


class Operation(enum.Enum):
    PRODUCE = "produce"
    CONSUME = "consume"
    ADMIN = "admin"
    MIRROR = "mirror"


OPERATIONS = tuple(op.value for op in Operation)

_PATTERN = re.compile(r"^(\*|[A-Za-z0-9._-]{1,249}\*?)$")


def parse_operation(text: str, param: str = "operation") -> Operation:
    try:
        return Operation(text)
    except ValueError:
        raise InvalidArgument(
            f"{param}: must be one of {', '.join(OPERATIONS)}, got {text!r}"
        ) from None


def validate_pattern(pattern: str, param: str = "topic") -> str:
    if not _PATTERN.match(pattern):
        raise InvalidArgument(
            f"{param}: {pattern!r} must be a topic name, a prefix ending in '*' "
            "(e.g. 'orders.*') or '*' for every topic"
        )
    return pattern


@dataclass(frozen=True, order=True)
class AclEntry:
    tenant: str
    operation: Operation
    pattern: str

    def __post_init__(self) -> None:
        validate_name(self.tenant, "tenant")
        validate_pattern(self.pattern)

    def matches(self, topic: str | None) -> bool:
        """``topic`` None: an operation on no topic, matched only by '*'."""
        if self.pattern == "*":
            return True
        if topic is None:
            return False
        if self.pattern.endswith("*"):
            return topic.startswith(self.pattern[:-1])
        return topic == self.pattern

    @property
    def node_name(self) -> str:
        """The znode name: one node per entry makes add and remove idempotent."""
        return f"{self.tenant}:{self.operation.value}:{self.pattern}"

    def describe(self) -> str:
        return f"{self.operation.value} on {self.pattern!r}"


@dataclass(frozen=True)
class AclSet:
    entries: tuple[AclEntry, ...] = ()

    @classmethod
    def of(cls, entries: Iterable[AclEntry]) -> AclSet:
        return cls(
            tuple(sorted(set(entries), key=lambda e: (e.tenant, e.operation.value, e.pattern)))
        )

    def of_tenant(self, tenant: str) -> tuple[AclEntry, ...]:
        return tuple(e for e in self.entries if e.tenant == tenant)


@dataclass(frozen=True)
class Principal:
    """Who made a request: the tenant its token maps to."""

    tenant: str
    superuser: bool = False
    token_id: str = ""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


def authorize(
    principal: Principal, operation: Operation, topic: str | None, acls: AclSet
) -> Decision:
    """May ``principal`` do ``operation`` on ``topic``? The reason names the rule either way."""
    what = f"topic {topic!r}" if topic is not None else "the cluster (an ACL on '*')"
    if principal.superuser:
        return Decision(True, f"tenant {principal.tenant!r} is a superuser")
    own = acls.of_tenant(principal.tenant)
    for entry in own:
        if entry.operation is operation and entry.matches(topic):
            return Decision(True, f"tenant {principal.tenant!r} has {entry.describe()}")
    held = ", ".join(entry.describe() for entry in own) or "none"
    return Decision(
        False,
        f"tenant {principal.tenant!r} may not {operation.value} {what}: no ACL grants it "
        f"(its ACLs: {held}); an admin can run "
        f"`talos acl add {principal.tenant} {operation.value} {topic or '*'}`",
    )


def first_denial(
    principal: Principal, wanted: Sequence[tuple[Operation, str | None]], acls: AclSet
) -> Decision | None:
    """The first of ``wanted`` that is denied, or None when all are allowed."""
    for operation, topic in wanted:
        decision = authorize(principal, operation, topic, acls)
        if not decision.allowed:
            return decision
    return None
