"""The target side of a link: stamping provenance, chunking, MirrorAppend and its replies.

The pure parts decide; :class:`TargetClient` does the RPCs.

- :func:`split_loop`: a link X→Y never copies a batch whose effective origin
  (its origin cluster, or X when empty) is Y.
- :func:`stamp_origin`: the batch as the target stores it — the same bytes
  with origin set (an existing origin is kept) and a fresh CRC. Deterministic,
  so a resent batch compares equal by CRC.
- :func:`chunk_ranges`: whole batches per MirrorAppend call, up to a size.
- :func:`decide_reply`: what a MirrorAppend answer means for the copy loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from talos.clock import SYSTEM_CLOCK, Clock
from talos.errors import (
    CoordinationError,
    Fenced,
    Gap,
    InvalidArgument,
    MirrorDiverged,
    NotAuthorized,
    NotOwner,
    StorageError,
    TalosError,
    TalosTimeout,
    Throttled,
    Unauthenticated,
    Unavailable,
    UnknownTopic,
)
from talos.proto import talos_pb2 as pb
from talos.record.batch import BatchHeader, iter_batches, parse_header, with_origin
from talos.security.tls import ClientSecurity
from talos.wire import error_from_proto

from .reader import ReadResult

# ---- provenance --------------------------------------------------------------------------


def effective_origin(header: BatchHeader, source_dc: str) -> str:
    """Where a batch was first written: its origin cluster, or the source DC if local there."""
    return header.origin_cluster or source_dc


@dataclass(frozen=True)
class LoopSplit:
    """How the leading batches of a read divide: ``copy`` batches to send, else ``skip``
    batches that originate in the target (at most one of them is non-zero)."""

    copy: int
    skip: int


def split_loop(headers: Sequence[BatchHeader], source_dc: str, target_dc: str) -> LoopSplit:
    """The leading run of batches to copy, or, if the first batch came from the target,
    the leading run to skip. Runs stop where the kind changes, so offsets stay dense."""
    if not headers:
        return LoopSplit(0, 0)
    looped = [effective_origin(h, source_dc) == target_dc for h in headers]
    first = looped[0]
    run = next((i for i, v in enumerate(looped) if v != first), len(looped))
    return LoopSplit(0, run) if first else LoopSplit(run, 0)


def stamp_origin(batch: bytes, header: BatchHeader, source_dc: str) -> bytes:
    """``with_origin(batch, origin or source_dc, base_offset)``; unchanged if already so."""
    origin = effective_origin(header, source_dc)
    if header.origin_cluster == origin and header.origin_offset == header.base_offset:
        return batch
    return with_origin(batch, origin, header.base_offset)


def chunk_ranges(sizes: Sequence[int], max_bytes: int) -> list[range]:
    """Consecutive index ranges of at most ``max_bytes`` each; a bigger batch goes alone."""
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise InvalidArgument(f"max_bytes: must be an integer >= 1, got {max_bytes!r}")
    out: list[range] = []
    start = 0
    total = 0
    for i, size in enumerate(sizes):
        if i > start and total + size > max_bytes:
            out.append(range(start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        out.append(range(start, len(sizes)))
    return out


# ---- replies -----------------------------------------------------------------------------

ReplyAction = Literal["advance", "retry", "reset", "stop"]


@dataclass(frozen=True)
class ReplyDecision:
    """``advance``/``reset``: continue from ``position``; ``retry``: send the same chunk
    again (after refreshing the routing if ``refresh``); ``stop``: the partition is in
    error with ``message``. ``suspect`` marks retries that may hide a lasting problem;
    ``refused`` retries that are an error now (the target refused the worker's credentials:
    reported at once, retried slowly, so a granted ACL resumes the copy without a restart)."""

    action: ReplyAction
    position: int = -1
    refresh: bool = False
    suspect: bool = False
    message: str = ""
    refused: bool = False


def decide_reply(
    expected_offset: int, sent_end: int, error: TalosError | None, log_end: int
) -> ReplyDecision:
    """What to do after a MirrorAppend of offsets [expected_offset, sent_end)."""
    if error is None:
        if log_end < 0:
            return ReplyDecision("advance", sent_end)
        if log_end < sent_end:
            # The target claims less than we just sent: trust the target and re-read.
            return ReplyDecision("reset", log_end)
        return ReplyDecision("advance", log_end)
    if isinstance(error, Gap):
        end = error.log_end if error.log_end >= 0 else log_end
        if end < 0:
            return ReplyDecision("retry", refresh=True, message=error.message)
        return ReplyDecision("reset", end, message=error.message)
    if isinstance(error, MirrorDiverged):
        return ReplyDecision("stop", message=f"MIRROR_DIVERGED: {error.message}")
    if isinstance(error, Fenced):
        return ReplyDecision(
            "stop",
            message=f"FENCED: the target topic was promoted or re-linked: {error.message}",
        )
    if isinstance(error, NotOwner | Unavailable | TalosTimeout):
        return ReplyDecision("retry", refresh=True, message=error.message)
    if isinstance(error, NotAuthorized | Unauthenticated):
        message = f"{type(error).__name__}: {error.message}"
        return ReplyDecision("retry", message=message, refused=True)
    if isinstance(error, Throttled | StorageError | CoordinationError):
        return ReplyDecision("retry", message=error.message)
    if isinstance(error, UnknownTopic | InvalidArgument):
        # A broker whose topic cache has not caught up with a new or grown topic says
        # this too; keep trying, flagged so a lasting refusal shows up as an error.
        return ReplyDecision("retry", refresh=True, suspect=True, message=error.message)
    if error.retriable:
        return ReplyDecision("retry", refresh=True, message=error.message)
    return ReplyDecision("stop", message=f"{type(error).__name__}: {error.message}")


# ---- the RPCs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AppendReply:
    error: TalosError | None
    log_end: int


class TargetClient:
    """MirrorAppend and ListOffsets to the owners of target partitions (client-side routing)."""

    def __init__(
        self,
        bootstrap: str,
        *,
        request_timeout_s: float = 30.0,
        clock: Clock = SYSTEM_CLOCK,
        security: ClientSecurity | None = None,
    ) -> None:
        from talos.client.connection import Connections
        from talos.client.routing import Router

        self.connections = Connections(
            bootstrap, request_timeout=request_timeout_s, security=security
        )
        self.router = Router(self.connections, clock)

    def refresh(self, topic: str) -> None:
        self.router.mark_stale(topic)

    def _owner_call(self, topic: str, partition: int, method: str, request: Any) -> Any:
        """One RPC to the partition's owner; any failure makes the route stale."""
        try:
            address = self.router.owner_address(topic, partition)
            return self.connections.call(address, method, request)
        except TalosError:
            self.router.mark_stale(topic)
            raise

    def _checked(self, topic: str, error: pb.Error) -> None:
        found = error_from_proto(error)
        if found is not None:
            self.router.mark_stale(topic)
            raise found

    def log_end(self, topic: str, partition: int) -> int:
        """The target partition's end: where copying resumes. Raises on any error."""
        response: pb.ListOffsetsResponse = self._owner_call(
            topic,
            partition,
            "ListOffsets",
            pb.ListOffsetsRequest(topic=topic, partition=partition, timestamp_ms=-1),
        )
        self._checked(topic, response.error)
        return int(response.offset)

    def batch_at(self, topic: str, partition: int, offset: int) -> bytes | None:
        """The whole target batch holding ``offset`` (None when the target has none there)."""
        fetch = pb.FetchPartition(topic=topic, partition=partition, offset=offset, max_bytes=1)
        response: pb.FetchResponse = self._owner_call(
            topic, partition, "Fetch", pb.FetchRequest(partitions=[fetch], max_wait_ms=0)
        )
        result = response.results[0]
        self._checked(topic, result.error)
        records = bytes(result.records)
        for position, header in iter_batches(records):
            if header.base_offset <= offset < header.next_offset:
                return records[position : position + header.total_size]
        return None

    def append(
        self,
        topic: str,
        partition: int,
        expected_offset: int,
        link: str,
        mirror_epoch: int,
        records: bytes,
        skip_from: int | None = None,
    ) -> AppendReply:
        """One MirrorAppend; transport failures come back as the reply's error.

        ``skip_from`` (no records): the source no longer holds ``skip_from`` up
        to ``expected_offset``; the target restarts its log empty at
        ``expected_offset`` if it still ends at ``skip_from`` (issue 12 §2).
        """
        try:
            address = self.router.owner_address(topic, partition)
            response: pb.MirrorAppendResponse = self.connections.call(
                address,
                "MirrorAppend",
                pb.MirrorAppendRequest(
                    topic=topic,
                    partition=partition,
                    expected_offset=expected_offset,
                    link=link,
                    mirror_epoch=mirror_epoch,
                    records=records,
                    skip_from=skip_from,
                ),
            )
        except TalosError as exc:
            return AppendReply(exc, -1)
        return AppendReply(error_from_proto(response.error), int(response.log_end))

    def close(self) -> None:
        self.connections.close()


# ---- divergence: does the target still hold the source's history? -----------------------


def continuity_problem(
    target_end: int,
    target_last: bytes | None,
    source: ReadResult,
    source_dc: str,
    target_dc: str,
) -> str:
    """Why the target's copy is not the source's history at ``target_end`` ("" = it is).

    ``target_last`` is the target's batch holding ``target_end - 1``; ``source``
    a read of the source from ``target_end - 1``. The source batch ending at
    the target's end must be the target's last batch: same offsets, and the
    same CRC once both carry their origin (a batch without one was first
    written where it is stored: after a failback the target holds originals
    of which the source holds copies). A source that was deleted and
    recreated, or cut back below the target's end, fails this.
    """
    if target_end <= 0 or target_last is None:
        return ""
    mine = parse_header(target_last)
    if not source.headers or source.headers[0].base_offset > target_end - 1:
        end = source.source_end
        return f"the source ends at {end if end >= 0 else '?'}, below the target's end {target_end}"
    theirs = source.headers[0]
    if (theirs.base_offset, theirs.next_offset) != (mine.base_offset, mine.next_offset):
        return (
            f"at offset {target_end - 1} the source holds batch {theirs.base_offset}.."
            f"{theirs.next_offset - 1} but the target holds {mine.base_offset}.."
            f"{mine.next_offset - 1}"
        )
    stamped = stamp_origin(source.batch(0), theirs, source_dc)
    own = stamp_origin(target_last, mine, target_dc)
    if parse_header(stamped).crc != parse_header(own).crc:
        return (
            f"the batch {mine.base_offset}..{mine.next_offset - 1} differs between source and "
            "target (CRC)"
        )
    return ""
