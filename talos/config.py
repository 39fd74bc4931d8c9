"""Limits, defaults and the validation of user-facing parameters.

Every check raises :class:`InvalidArgument` with a message that names the
parameter and what is allowed, before anything is stored.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from talos.errors import InvalidArgument

MAX_TOPIC_NAME_LENGTH = 249
MAX_PARTITIONS = 1024
MAX_OFFSET = 2**63 - 1
DURABILITY_LEVELS = ("flush", "sync")
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_GROUP_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def validate_topic_name(name: object, param: str = "topic") -> str:
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"{param}: must be a non-empty string, got {name!r}")
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        raise InvalidArgument(
            f"{param}: at most {MAX_TOPIC_NAME_LENGTH} characters allowed, got {len(name)}"
        )
    if name in (".", "..") or not _TOPIC_NAME.match(name):
        raise InvalidArgument(
            f"{param}: {name!r} may contain only letters, digits, '.', '_' and '-' "
            "and may not be '.' or '..'"
        )
    return name


def validate_group_name(name: object, param: str = "group") -> str:
    if not isinstance(name, str) or not _GROUP_NAME.match(name) or name in (".", ".."):
        raise InvalidArgument(
            f"{param}: {name!r} must be 1 to 249 letters, digits, '.', '_' or '-'"
        )
    return name


def validate_partition_count(count: object, param: str = "partitions") -> int:
    if isinstance(count, bool) or not isinstance(count, int):
        raise InvalidArgument(f"{param}: must be an integer, got {count!r}")
    if not 1 <= count <= MAX_PARTITIONS:
        raise InvalidArgument(f"{param}: must be between 1 and {MAX_PARTITIONS}, got {count}")
    return count


def validate_partition(partition: object, count: int, param: str = "partition") -> int:
    if isinstance(partition, bool) or not isinstance(partition, int):
        raise InvalidArgument(f"{param}: must be an integer, got {partition!r}")
    if not 0 <= partition < count:
        raise InvalidArgument(f"{param}: must be between 0 and {count - 1}, got {partition}")
    return partition


def validate_offset(offset: object, param: str = "offset") -> int:
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise InvalidArgument(f"{param}: must be an integer, got {offset!r}")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidArgument(f"{param}: must be between 0 and {MAX_OFFSET}, got {offset}")
    return offset


def _validate_int(value: object, param: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{param}: must be an integer, got {value!r}")
    if not low <= value <= high:
        raise InvalidArgument(f"{param}: must be between {low} and {high}, got {value}")
    return value


DAY_MS = 24 * 3600 * 1000
#: retention_bytes value meaning "no size limit" (Kafka's -1).
UNLIMITED = -1
#: Retention of ``<topic>.diverged.<time>`` archives (issue 11 §2, issue 12 §1).
ARCHIVE_RETENTION_MS = 30 * DAY_MS
ARCHIVE_MARKER = ".diverged."


MAX_RETENTION_MS = 2**53


def validate_retention(retention_ms: object, retention_bytes: object) -> None:
    """The checks that need no other setting (the client makes them too); None: unchanged."""
    if retention_ms is not None and (
        isinstance(retention_ms, bool) or not isinstance(retention_ms, int) or retention_ms <= 0
    ):
        raise InvalidArgument(
            f"retention_ms: must be a positive integer (milliseconds), got {retention_ms!r}"
        )
    if retention_bytes is not None and (
        isinstance(retention_bytes, bool)
        or not isinstance(retention_bytes, int)
        or not (retention_bytes == UNLIMITED or 1 <= retention_bytes <= 2**62)
    ):
        raise InvalidArgument(
            f"retention_bytes: must be a positive integer (bytes, at most {2**62}) or "
            f"{UNLIMITED} for unlimited, got {retention_bytes!r}"
        )


@dataclass(frozen=True)
class TopicConfig:
    """Per-topic settings, stored with the topic in ZooKeeper."""

    max_message_bytes: int = 1024 * 1024
    durability: str = "sync"
    segment_bytes: int = 256 * 1024 * 1024
    segment_ms: int = 24 * 3600 * 1000
    #: Sealed segments whose newest record is older than this are deleted.
    retention_ms: int = 7 * DAY_MS
    #: Oldest sealed segments are deleted while the partition is larger; UNLIMITED: never.
    retention_bytes: int = UNLIMITED

    def validated(self) -> TopicConfig:
        _validate_int(self.max_message_bytes, "max_message_bytes", 64, 64 * 1024 * 1024)
        if self.durability not in DURABILITY_LEVELS:
            raise InvalidArgument(
                f"durability: must be one of {', '.join(DURABILITY_LEVELS)}, "
                f"got {self.durability!r}"
            )
        _validate_int(self.segment_bytes, "segment_bytes", 4096, 2**40)
        _validate_int(self.segment_ms, "segment_ms", 1000, 2**40)
        validate_retention(self.retention_ms, self.retention_bytes)
        if not self.segment_ms <= self.retention_ms <= MAX_RETENTION_MS:
            raise InvalidArgument(
                f"retention_ms: must be at least segment_ms ({self.segment_ms}) and at most "
                f"{MAX_RETENTION_MS}, got {self.retention_ms}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_retention(
        self, retention_ms: int | None = None, retention_bytes: int | None = None
    ) -> TopicConfig:
        """The config with new retention settings (None: unchanged), checked whole."""
        changed = self
        if retention_ms is not None:
            changed = replace(changed, retention_ms=retention_ms)
        if retention_bytes is not None:
            changed = replace(changed, retention_bytes=retention_bytes)
        return changed.validated()

    def for_topic(self, name: str) -> TopicConfig:
        """``.diverged.`` archives keep the default retention of 30 days, not 7."""
        if ARCHIVE_MARKER in name and self.retention_ms == TopicConfig.retention_ms:
            return replace(self, retention_ms=ARCHIVE_RETENTION_MS)
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TopicConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InvalidArgument(
                f"config: unknown key(s) {', '.join(unknown)}; allowed: "
                f"{', '.join(cls.__dataclass_fields__)}"
            )
        return cls(**known).validated()
