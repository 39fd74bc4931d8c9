"""What a quota is: typed values, their checks, and their JSON form in ZooKeeper.

A quota limits one *scope*: a tenant on every topic (``topic`` is None) or a
tenant on one topic. Limits are cluster-wide rates per second on four
dimensions; 0 means the dimension is not limited.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, fields
from typing import Any

from talos.coord import paths
from talos.errors import CoordinationError, InvalidArgument

#: The largest rate accepted (about 1 PB/s): beyond it a number is a typo.
MAX_RATE = 10**15

DEFAULT_TENANT = "default"
#: gRPC metadata in which a client names its tenant to a broker without authentication.
TENANT_METADATA = "talos-tenant"
#: The tenant of a topic quota shared by every tenant (never a tenant's own name: '*' is
#: not a valid one).
EVERY_TENANT = "*"


class QuotaState(enum.Enum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"  # a later approved quota of the same scope replaced it


@dataclass(frozen=True)
class Rates:
    """Per-second rates; 0 on a dimension means none (or no limit, for a quota)."""

    produce_bytes: float = 0
    consume_bytes: float = 0
    produce_requests: float = 0
    consume_requests: float = 0

    def __add__(self, other: Rates) -> Rates:
        return Rates(*(a + b for a, b in zip(self.values(), other.values(), strict=True)))

    def __sub__(self, other: Rates) -> Rates:
        return Rates(*(a - b for a, b in zip(self.values(), other.values(), strict=True)))

    def scaled(self, factor: float) -> Rates:
        return Rates(*(v * factor for v in self.values()))

    def values(self) -> tuple[float, float, float, float]:
        return (
            self.produce_bytes,
            self.consume_bytes,
            self.produce_requests,
            self.consume_requests,
        )

    def is_zero(self) -> bool:
        return not any(self.values())

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @staticmethod
    def from_dict(raw: Any, what: str) -> Rates:
        if not isinstance(raw, dict):
            raise CoordinationError(f"{what}: rates must be an object, got {raw!r}")
        try:
            return Rates(**{f.name: float(raw.get(f.name, 0)) for f in fields(Rates)})
        except (TypeError, ValueError) as exc:
            raise CoordinationError(f"{what}: bad rates {raw!r} ({exc})") from None


#: Option names of the four dimensions, as the CLI spells them (for messages).
DIMENSION_OPTIONS = (
    "produce-bytes-per-s",
    "consume-bytes-per-s",
    "produce-requests-per-s",
    "consume-requests-per-s",
)


def check_rate(value: object, param: str) -> int:
    """A limit is a whole number of bytes or requests per second, 1 to MAX_RATE."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{param}: must be a whole number per second, got {value!r}")
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        raise InvalidArgument(f"{param}: must be a whole number per second, got {value!r}")
    if not 1 <= value <= MAX_RATE:
        raise InvalidArgument(f"{param}: must be between 1 and {MAX_RATE}, got {value}")
    return int(value)


def parse_rate(text: str, param: str) -> int:
    """A CLI rate: digits, optionally with a K/M/G suffix (powers of 1024)."""
    raw = text.strip()
    scale = 1
    if raw[-1:].upper() in ("K", "M", "G"):
        scale = 1024 ** ("KMG".index(raw[-1].upper()) + 1)
        raw = raw[:-1]
    if not raw.isdigit():
        raise InvalidArgument(
            f"{param}: must be a positive whole number per second (e.g. 1048576 or 1M), "
            f"got {text!r}"
        )
    return check_rate(int(raw) * scale, param)


def checked_limits(limits: Rates, param_prefix: str = "") -> Rates:
    """At least one dimension set; every set one a valid rate; none negative."""
    for option, value in zip(DIMENSION_OPTIONS, limits.values(), strict=True):
        if value != 0:
            check_rate(value, param_prefix + option)
    if limits.is_zero():
        raise InvalidArgument(
            f"limits: give at least one of {', '.join('--' + o for o in DIMENSION_OPTIONS)}"
        )
    return limits


def check_tenant(tenant: object, param: str = "tenant") -> str:
    return paths.validate_name(tenant, param)


def check_scope(tenant: object, topic: str | None) -> str:
    """A tenant name, or '*' (every tenant together) for a topic quota."""
    if tenant == EVERY_TENANT:
        if topic is None:
            raise InvalidArgument("tenant: '*' (every tenant) needs --topic")
        return EVERY_TENANT
    return check_tenant(tenant)


def covers(quota_tenant: str, quota_topic: str | None, tenant: str, topic: str) -> bool:
    """Does a quota of this scope limit ``tenant``'s traffic on ``topic``?"""
    return quota_tenant in (tenant, EVERY_TENANT) and quota_topic in (None, topic)


@dataclass(frozen=True)
class Quota:
    id: str
    tenant: str
    topic: str | None
    limits: Rates
    state: QuotaState
    reason: str
    created_ms: int
    decided_ms: int = 0

    @property
    def scope(self) -> tuple[str, str | None]:
        return (self.tenant, self.topic)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "topic": self.topic,
            "limits": self.limits.to_dict(),
            "state": self.state.value,
            "reason": self.reason,
            "created_ms": self.created_ms,
            "decided_ms": self.decided_ms,
        }

    @staticmethod
    def from_dict(raw: Any, what: str) -> Quota:
        if not isinstance(raw, dict):
            raise CoordinationError(f"{what}: a quota must be an object, got {raw!r}")
        try:
            return Quota(
                id=str(raw["id"]),
                tenant=str(raw["tenant"]),
                topic=None if raw.get("topic") is None else str(raw["topic"]),
                limits=Rates.from_dict(raw["limits"], what),
                state=QuotaState(raw["state"]),
                reason=str(raw.get("reason", "")),
                created_ms=int(raw.get("created_ms", 0)),
                decided_ms=int(raw.get("decided_ms", 0)),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise CoordinationError(f"{what}: malformed quota {raw!r} ({exc!r})") from None


@dataclass(frozen=True)
class Flow:
    """One tenant's measured traffic on one topic, summed over the brokers."""

    tenant: str
    topic: str
    rates: Rates
