"""Every error Talos raises, with a wire code and a retriable flag.

Retry policies read ``retriable``; the broker sends ``code`` on the wire and
the client turns it back into the same class with :func:`from_wire`. Foreign
exceptions (grpc, kazoo, OSError) are converted where they enter.
"""

from __future__ import annotations

import enum
from typing import ClassVar


class ErrorCode(enum.IntEnum):
    NONE = 0
    UNKNOWN = 1
    INVALID_ARGUMENT = 2
    UNKNOWN_TOPIC = 3
    TOPIC_EXISTS = 4
    NOT_OWNER = 5
    CORRUPT_BATCH = 6
    MESSAGE_TOO_LARGE = 7
    OFFSET_OUT_OF_RANGE = 8
    THROTTLED = 9
    FENCED = 10
    GAP = 11
    READ_ONLY_MIRROR = 12
    STORAGE = 13
    COORDINATION = 14
    OUT_OF_ORDER_SEQUENCE = 15
    ILLEGAL_GENERATION = 16
    UNKNOWN_MEMBER = 17
    TIMEOUT = 18
    UNAVAILABLE = 19
    PRODUCER_FENCED = 20
    MIRROR_DIVERGED = 21
    UNKNOWN_GROUP = 22
    GROUP_NOT_EMPTY = 23
    UNAUTHENTICATED = 24
    NOT_AUTHORIZED = 25
    TLS = 26


class TalosError(Exception):
    """Base of every Talos error."""

    code: ClassVar[ErrorCode] = ErrorCode.UNKNOWN
    retriable: ClassVar[bool] = False

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__name__)
        self.message = message or self.__class__.__name__


class InvalidArgument(TalosError):
    """Bad input. The message names the parameter and what is allowed."""

    code = ErrorCode.INVALID_ARGUMENT


class UnknownTopic(TalosError):
    code = ErrorCode.UNKNOWN_TOPIC


class TopicExists(TalosError):
    code = ErrorCode.TOPIC_EXISTS


class NotOwner(TalosError):
    """This broker does not own the partition; ``owner`` is who it thinks does."""

    code = ErrorCode.NOT_OWNER
    retriable = True

    def __init__(self, message: str = "", owner_id: str = "", owner_address: str = "") -> None:
        super().__init__(message)
        self.owner_id = owner_id
        self.owner_address = owner_address


class CorruptBatch(TalosError):
    """A record batch failed its CRC, or its framing is wrong or truncated."""

    code = ErrorCode.CORRUPT_BATCH


class CorruptRecords(CorruptBatch):
    """A consumer met a batch it cannot decode (client side only, never on the wire).

    The records before it were returned; ``seek(TopicPartition(topic, partition),
    next_offset)`` skips the batch, as a Kafka application seeks past a bad record.
    """

    def __init__(
        self,
        message: str = "",
        topic: str = "",
        partition: int = -1,
        offset: int = -1,
        next_offset: int = -1,
    ) -> None:
        super().__init__(message)
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.next_offset = next_offset


class MessageTooLarge(TalosError):
    code = ErrorCode.MESSAGE_TOO_LARGE


class OffsetOutOfRange(TalosError):
    code = ErrorCode.OFFSET_OUT_OF_RANGE

    def __init__(self, message: str = "", log_start: int = 0, log_end: int = 0) -> None:
        super().__init__(message)
        self.log_start = log_start
        self.log_end = log_end


class Throttled(TalosError):
    """The broker has too many bytes queued, or a quota is spent; back off and retry.

    ``retry_after_ms`` (0: not said) is when a quota will admit the request again."""

    code = ErrorCode.THROTTLED
    retriable = True

    def __init__(self, message: str = "", retry_after_ms: int = 0) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class Fenced(TalosError):
    """A newer owner fenced this writer; it must acknowledge nothing more."""

    code = ErrorCode.FENCED


class Gap(TalosError):
    """A mirror append started past the target's log end."""

    code = ErrorCode.GAP

    def __init__(self, message: str = "", log_end: int = 0) -> None:
        super().__init__(message)
        self.log_end = log_end


class ReadOnlyMirror(TalosError):
    """Ordinary producers may not write a mirror topic until it is promoted."""

    code = ErrorCode.READ_ONLY_MIRROR


class MirrorDiverged(TalosError):
    """A mirror append overlaps stored batches that differ: the logs diverged."""

    code = ErrorCode.MIRROR_DIVERGED


class StorageError(TalosError):
    """The log store failed an operation (disk full, permission, I/O error)."""

    code = ErrorCode.STORAGE
    retriable = True


class StorageRefused(StorageError):
    """The store refused an operation for a reason a retry will not change
    (permission denied, the file exists or is missing, the lease went to another writer).
    Same wire code as StorageError."""

    retriable = False


class CoordinationError(TalosError):
    """ZooKeeper could not be reached or refused an operation."""

    code = ErrorCode.COORDINATION
    retriable = True


class OutOfOrderSequence(TalosError):
    code = ErrorCode.OUT_OF_ORDER_SEQUENCE


class ProducerFenced(TalosError):
    """A newer instance of this producer id (a higher epoch) exists."""

    code = ErrorCode.PRODUCER_FENCED


class IllegalGeneration(TalosError):
    """A consumer group member used a generation that is no longer current."""

    code = ErrorCode.ILLEGAL_GENERATION


class UnknownMember(TalosError):
    code = ErrorCode.UNKNOWN_MEMBER


class UnknownGroup(TalosError):
    """No consumer group of that name exists (nothing committed, nobody joined)."""

    code = ErrorCode.UNKNOWN_GROUP


class GroupNotEmpty(TalosError):
    """The group has live members; offsets can be reset and groups deleted only when empty."""

    code = ErrorCode.GROUP_NOT_EMPTY


class TalosTimeout(TalosError):
    code = ErrorCode.TIMEOUT
    retriable = True


class Unavailable(TalosError):
    """A broker could not be reached."""

    code = ErrorCode.UNAVAILABLE
    retriable = True


class Unauthenticated(TalosError):
    """The broker requires a bearer token and got none, or one it does not know."""

    code = ErrorCode.UNAUTHENTICATED


class NotAuthorized(TalosError):
    """The caller's tenant has no ACL for this operation on this topic."""

    code = ErrorCode.NOT_AUTHORIZED


class TlsError(TalosError):
    """A TLS problem between client and broker: plaintext against TLS, an untrusted
    certificate, a missing client certificate. Retrying does not change it."""

    code = ErrorCode.TLS


_BY_CODE: dict[ErrorCode, type[TalosError]] = {
    cls.code: cls
    for cls in (
        TalosError,
        InvalidArgument,
        UnknownTopic,
        TopicExists,
        NotOwner,
        CorruptBatch,
        MessageTooLarge,
        OffsetOutOfRange,
        Throttled,
        Fenced,
        Gap,
        ReadOnlyMirror,
        MirrorDiverged,
        StorageError,
        CoordinationError,
        OutOfOrderSequence,
        ProducerFenced,
        IllegalGeneration,
        UnknownMember,
        UnknownGroup,
        GroupNotEmpty,
        TalosTimeout,
        Unavailable,
        Unauthenticated,
        NotAuthorized,
        TlsError,
    )
}


def class_for_code(code: int) -> type[TalosError]:
    try:
        return _BY_CODE[ErrorCode(code)]
    except ValueError:
        return TalosError


def from_wire(
    code: int,
    message: str,
    owner_id: str = "",
    owner_address: str = "",
    log_end: int = 0,
    log_start: int = 0,
    retry_after_ms: int = 0,
) -> TalosError:
    """Rebuild the error a broker sent, with the fields its class carries."""
    cls = class_for_code(code)
    if cls is NotOwner:
        return NotOwner(message, owner_id=owner_id, owner_address=owner_address)
    if cls is Gap:
        return Gap(message, log_end=log_end)
    if cls is OffsetOutOfRange:
        return OffsetOutOfRange(message, log_start=log_start, log_end=log_end)
    if cls is Throttled:
        return Throttled(message, retry_after_ms=retry_after_ms)
    return cls(message)


def from_os_error(exc: OSError, what: str) -> StorageError:
    """Convert an OSError at the storage boundary, keeping what was being done."""
    return StorageError(f"{what}: {exc.strerror or exc} (errno {exc.errno})")
