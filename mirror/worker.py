"""The link worker: one process copying a link's partitions from the source DC to the target.

- Registers as ``/mirror/<link>/workers/<id>`` (ephemeral) in the TARGET
  ZooKeeper and watches that set; copies the partitions that
  :func:`mirror.placement.owned_partitions` gives it.
- Watches the source's topics; creates each selected topic's mirror on the
  target (same partitions and config, with the ``mirror`` dict) or grows it
  when the source grew — target first, then copy.
- One thread per owned partition: position = the target's log end, read
  source batches from there, stamp origin, MirrorAppend them in chunks under
  the link's bandwidth quota. The checkpoint is the target's log end itself,
  so a worker killed at any instant resumes with no loss and no duplicate.
- Progress znodes (at most once a second per partition, and on every state
  change) and the link heartbeat, as ``notes/mirror.md`` lays them out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, KazooException, NodeExistsError, NoNodeError

from talos.clock import SYSTEM_CLOCK, Clock
from talos.coord import paths
from talos.coord.topics import TopicMeta, TopicStore
from talos.coord.zk import connect, dumps, loads, zk_errors
from talos.errors import (
    CorruptBatch,
    Gap,
    InvalidArgument,
    OffsetOutOfRange,
    TalosError,
    TopicExists,
    UnknownTopic,
)
from talos.metrics import MirrorCollector, MirrorView
from talos.storage.open import open_store
from topology.model import Datacenter, GapPolicy, Link, Topology

from .appender import (
    TargetClient,
    chunk_ranges,
    continuity_problem,
    decide_reply,
    split_loop,
    stamp_origin,
)
from .offset_sync import OffsetSync
from .paths import (
    control_path,
    heartbeat_path,
    progress_path,
    worker_path,
    workers_path,
)
from .placement import (
    Partition,
    TopicPlan,
    check_link,
    link_partitions,
    mirror_descriptor,
    owned_partitions,
    plan_topic,
)
from .quota import TokenBucket
from .reader import FetchReader, ReadResult, SourceReader, StoreReader
from .status import MAX_SKIPPED_GAPS, SkippedGap
from .status import Progress as StatusProgress

log = logging.getLogger(__name__)

READERS = ("store", "fetch")

# ---- the ZooKeeper layout (TARGET cluster chroot; see notes/mirror.md) -------------------


# ---- options -----------------------------------------------------------------------------


#: How often a partition retries appends the target refused (no token, no ACL): slowly.
REFUSED_RETRY_S = 2.0


@dataclass(frozen=True)
class WorkerOptions:
    read_bytes: int = 4 * 1024 * 1024  # per source read
    append_bytes: int = 2 * 1024 * 1024  # per MirrorAppend call
    idle_poll_s: float = 0.05  # wait after a read that found nothing new
    progress_interval_s: float = 1.0
    heartbeat_interval_s: float = 1.0
    rescan_interval_s: float = 2.0  # re-list source topics even without a watch event
    stall_after_s: float = 15.0
    lagging_after_s: float = 5.0
    suspect_after_s: float = 15.0  # a refusal that lasts this long is reported as an error
    session_timeout_s: float = 10.0
    connect_timeout_s: float = 10.0
    request_timeout_s: float = 10.0  # per RPC; a hung call after a network cut ends
    log_interval_s: float = 10.0

    def validated(self) -> WorkerOptions:
        for name in ("read_bytes", "append_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidArgument(f"{name}: must be an integer, got {value!r}")
            if not 1024 <= value <= 64 * 1024 * 1024:
                raise InvalidArgument(f"{name}: must be from 1024 to 67108864, got {value}")
        for f in dataclasses.fields(self):
            if f.name in ("read_bytes", "append_bytes"):
                continue
            value = getattr(self, f.name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0 < value <= 3600
            ):
                raise InvalidArgument(f"{f.name}: must be > 0 and at most 3600, got {value!r}")
        return self


# ---- progress: pure state decision + the bookkeeping of one partition --------------------


def source_gap(position: int, log_start: int) -> bool:
    """Did the source delete offsets from ``position`` on before the link copied them?"""
    return log_start > position


GapAction = Literal["start", "skip", "stop"]


def gap_action(target_end: int, on_gap: GapPolicy) -> GapAction:
    """What a partition does when the source's log starts past what the link copied.

    ``start``: the first copy (the target holds nothing yet): the target starts
    at the source's log start, so offsets stay equal; nothing the link had to
    copy was lost, the source deleted it before the link began. Otherwise the
    link's ``on_gap`` decides: ``stop`` (the default; state ``gap`` until an
    operator acts) or ``skip`` (the target restarts at the source's log start
    and the gap is recorded in the progress znode).
    """
    if target_end == 0:
        return "start"
    return "skip" if on_gap == "skip" else "stop"


def partition_state(
    *,
    error: str,
    diverged: bool = False,
    gap: bool = False,
    source_end: int,
    target_end: int,
    now_ms: int,
    last_progress_ms: int,
    lag_ms: int,
    stall_after_s: float,
    lagging_after_s: float,
) -> str:
    """ok | lagging | stalled | error | diverged | gap, from what the worker knows now."""
    if diverged:
        return "diverged"
    if gap:
        return "gap"
    if error:
        return "error"
    behind = source_end > target_end >= 0
    if behind and now_ms - last_progress_ms >= stall_after_s * 1000:
        return "stalled"
    if behind and lag_ms >= lagging_after_s * 1000:
        return "lagging"
    return "ok"


class Progress:
    """What one partition reports; the caller writes :meth:`snapshot` when :meth:`due`."""

    def __init__(self, worker_id: str, clock: Clock, options: WorkerOptions) -> None:
        self.worker_id = worker_id
        self.clock = clock
        self.options = options
        self.source_end = -1
        self.source_end_ms = 0
        self.target_end = -1
        self.last_progress_ms = clock.wall_ms()
        self.oldest_ts: int | None = None  # first timestamp of the oldest unreplicated batch
        self.error = ""
        #: set once the target's copy is found not to be the source's history
        self.diverged = False
        #: [from, to): offsets the source deleted before the link copied them
        self.gap: tuple[int, int] | None = None
        #: gaps skipped under ``on_gap = "skip"`` (the newest MAX_SKIPPED_GAPS), kept
        #: across worker restarts through the progress znode
        self.skipped: tuple[SkippedGap, ...] = ()
        self._bytes = 0
        self._msgs = 0
        self._window = clock.monotonic()
        self._written_at = -math.inf
        self._written_state: tuple[str, str] | None = None
        self._written_lag = 0
        self.bytes_total = 0
        self.msgs_total = 0

    def saw_source(self, end: int, oldest_ts: int | None) -> None:
        if end >= 0:
            self.source_end = end
            self.source_end_ms = self.clock.wall_ms()
        self.oldest_ts = oldest_ts

    def set_target(self, end: int) -> None:
        self.target_end = end

    def appended(self, new_end: int, nbytes: int, nmsgs: int) -> None:
        if new_end > self.target_end:
            self.last_progress_ms = self.clock.wall_ms()
        self.target_end = max(self.target_end, new_end)
        self.source_end = max(self.source_end, new_end)
        self._bytes += nbytes
        self._msgs += nmsgs
        self.bytes_total += nbytes
        self.msgs_total += nmsgs

    def skipped_gap(self, start: int, end: int) -> SkippedGap:
        """Record that the link skipped ``[start, end)`` (the source deleted it)."""
        gap = SkippedGap(start, end, end - start, self.clock.wall_ms())
        self.skipped = (*self.skipped, gap)[-MAX_SKIPPED_GAPS:]
        return gap

    def lag_ms(self, now_ms: int) -> int:
        if self.oldest_ts is None or self.source_end <= self.target_end:
            return 0
        return max(0, now_ms - self.oldest_ts)

    def state(self, now_ms: int) -> str:
        return partition_state(
            error=self.error,
            diverged=self.diverged,
            gap=self.gap is not None,
            source_end=self.source_end,
            target_end=self.target_end,
            now_ms=now_ms,
            last_progress_ms=self.last_progress_ms,
            lag_ms=self.lag_ms(now_ms),
            stall_after_s=self.options.stall_after_s,
            lagging_after_s=self.options.lagging_after_s,
        )

    def due(self) -> bool:
        """Every ``progress_interval_s``; at once on a state change, and when the partition
        caught up after reporting a lag (status tools trust a fresh znode's lag)."""
        now = self.clock.monotonic()
        now_ms = self.clock.wall_ms()
        if (self.state(now_ms), self.error) != self._written_state:
            return True
        if self._written_lag > 0 and self.lag_ms(now_ms) == 0:
            return True
        return now - self._written_at >= self.options.progress_interval_s

    def snapshot(self) -> dict[str, Any]:
        """The progress znode's JSON; resets the rate window."""
        now = self.clock.monotonic()
        now_ms = self.clock.wall_ms()
        elapsed = max(now - self._window, 1e-3)
        state = self.state(now_ms)
        lag_ms = self.lag_ms(now_ms)
        data: dict[str, Any] = {
            "worker": self.worker_id,
            "source_end": self.source_end,
            "target_end": self.target_end,
            "source_end_ms": self.source_end_ms,
            "last_progress_ms": self.last_progress_ms,
            "lag_ms": lag_ms,
            "bytes_per_s": round(self._bytes / elapsed, 1),
            "msgs_per_s": round(self._msgs / elapsed, 1),
            "state": state,
            "error": self.error,
            "updated_ms": now_ms,
            "gap_messages": 0 if self.gap is None else self.gap[1] - self.gap[0],
            "skipped_gaps": [gap.to_dict() for gap in self.skipped],
        }
        self._bytes = self._msgs = 0
        self._window = now
        self._written_at = now
        self._written_state = (state, self.error)
        self._written_lag = lag_ms
        return data


# ---- shared by the partition tasks of one worker -----------------------------------------


@dataclass
class LinkContext:
    link: Link
    worker_id: str
    reader: SourceReader
    target: TargetClient
    target_zk: KazooClient
    quota: TokenBucket
    options: WorkerOptions
    clock: Clock


@dataclass(frozen=True)
class Chunk:
    start: int
    end: int
    data: bytes
    messages: int
    first_timestamp: int


def build_chunks(result: ReadResult, count: int, source_dc: str, max_bytes: int) -> list[Chunk]:
    """The first ``count`` batches of a read, origin-stamped, in MirrorAppend-sized chunks."""
    headers = result.headers[:count]
    stamped = [stamp_origin(result.batch(i), headers[i], source_dc) for i in range(count)]
    chunks = []
    for span in chunk_ranges([len(b) for b in stamped], max_bytes):
        first, last = headers[span.start], headers[span.stop - 1]
        chunks.append(
            Chunk(
                start=first.base_offset,
                end=last.next_offset,
                data=b"".join(stamped[span.start : span.stop]),
                messages=sum(h.record_count for h in headers[span.start : span.stop]),
                first_timestamp=first.first_timestamp,
            )
        )
    return chunks


class _Backoff:
    def __init__(self, first: float = 0.05, cap: float = 0.5) -> None:
        self.first = first
        self.cap = cap
        self.current = first

    def next(self) -> float:
        value = self.current
        self.current = min(self.cap, self.current * 2)
        return value

    def reset(self) -> None:
        self.current = self.first


def write_json(zk: KazooClient, path: str, data: Mapping[str, Any]) -> None:
    """Set a persistent JSON znode, creating it (and its parents) when missing."""
    payload = dumps(dict(data))
    with zk_errors(f"writing {path}"):
        try:
            zk.set(path, payload)
        except NoNodeError:
            try:
                zk.create(path, payload, makepath=True)
            except NodeExistsError:
                zk.set(path, payload)


def plan_signature(plan: TopicPlan) -> tuple[str, str, int, str, str]:
    """A partition task runs while its topic's plan keeps this; a change restarts it."""
    return (plan.target_topic, plan.action, plan.epoch, plan.reason, plan.diverged)


class PartitionTask:
    """Copies one partition on its own thread until stopped."""

    def __init__(self, ctx: LinkContext, plan: TopicPlan, partition: int) -> None:
        self.ctx = ctx
        self.plan = plan
        self.partition = partition
        self.key: Partition = (plan.source_topic, partition)
        self.signature = plan_signature(plan)
        self.progress = Progress(ctx.worker_id, ctx.clock, ctx.options)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._main,
            name=f"mirror-{plan.source_topic}-{partition}",
            daemon=True,
        )
        self._path = progress_path(ctx.link.name, plan.target_topic, partition)
        #: a skip sent without an answer: (action, position, log_start)
        self._unresolved_skip: tuple[GapAction, int, int] | None = None
        self._label = f"{plan.source_topic}/{partition} -> {plan.target_topic}/{partition}"

    # ---- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _main(self) -> None:
        try:
            self._resume_progress()
            if self.plan.action == "error":
                self._fail(self.plan.reason)
                self._report_until_stopped()
            else:
                self._copy()
        except Exception as exc:  # a bug must not kill the worker silently
            log.exception("%s: copy loop failed", self._label)
            self._fail(f"internal error: {exc!r}")
            self._report_until_stopped()

    # ---- progress -------------------------------------------------------------------

    def _resume_progress(self) -> None:
        """Keep last_progress_ms across worker restarts, so restarts do not hide a stall."""
        try:
            with zk_errors(f"reading {self._path}"):
                data, _ = self.ctx.target_zk.get(self._path)
            old = loads(data, self._path)
            if isinstance(old, dict) and isinstance(old.get("last_progress_ms"), int):
                self.progress.last_progress_ms = old["last_progress_ms"]
                self.progress.target_end = int(old.get("target_end", -1))
            self.progress.skipped = StatusProgress.from_json(data, self._path).skipped_gaps
        except (NoNodeError, TalosError, TypeError, ValueError):
            pass

    def _report(self, force: bool = False) -> None:
        if not (force or self.progress.due()):
            return
        try:
            write_json(self.ctx.target_zk, self._path, self.progress.snapshot())
        except TalosError as exc:
            log.warning("%s: could not write progress: %s", self._label, exc)

    def _fail(self, message: str) -> None:
        if message != self.progress.error:
            log.error("%s: %s", self._label, message)
        self.progress.error = message
        self._report(force=True)

    def _clear_error(self) -> None:
        if self.progress.error:
            log.info("%s: recovered", self._label)
            self.progress.error = ""
            self._report(force=True)

    def _report_until_stopped(self) -> None:
        while not self._stop.wait(self.ctx.options.progress_interval_s):
            self._report()

    # ---- the copy loop ----------------------------------------------------------------

    def _copy(self) -> None:
        ctx = self.ctx
        link = ctx.link
        options = ctx.options
        source_topic, target_topic, p = (
            self.plan.source_topic,
            self.plan.target_topic,
            self.partition,
        )
        target_end: int | None = None
        position = 0  # next source offset to read; > target_end only after skipping loops
        pending: list[Chunk] = []
        backoff = _Backoff()
        suspect_since: float | None = None
        log.info("%s: starting (mirror epoch %d)", self._label, self.plan.epoch)
        while not self._stop.is_set():
            self._report()
            try:
                if target_end is None or ctx.reader.changed(source_topic, p):
                    target_end = position = ctx.target.log_end(target_topic, p)
                    self.progress.set_target(target_end)
                    self._settle_skip(target_end)
                    problem = self.plan.diverged or self._continuity(target_end)
                    if problem:
                        self._diverge(problem)
                        return
                    log.info("%s: resuming at target end %d", self._label, target_end)
                    pending = []
                if not pending:
                    result = ctx.reader.read(source_topic, p, position, options.read_bytes)
                    oldest = result.headers[0].first_timestamp if result.headers else None
                    self.progress.saw_source(result.source_end, oldest)
                    if not result.headers:
                        self._clear_read_error()
                        self._stop.wait(options.idle_poll_s)
                        continue
                    first = result.headers[0].base_offset
                    if first > position:
                        raise OffsetOutOfRange(
                            f"offset: the source has no data at {position}; its next batch "
                            f"starts at {first}, and a mirror may not skip offsets"
                        )
                    split = split_loop(result.headers, link.source, link.target)
                    if split.skip:
                        position = result.headers[split.skip - 1].next_offset
                        log.info(
                            "%s: skipped offsets up to %d: they originate in %s",
                            self._label,
                            position,
                            link.target,
                        )
                        continue
                    if position != target_end:
                        self._fail(
                            f"source offsets {target_end}..{position - 1} originate in "
                            f"{link.target} but later batches do not; copying them would "
                            "leave a hole in the mirror"
                        )
                        self._report_until_stopped()
                        return
                    pending = build_chunks(result, split.copy, link.source, options.append_bytes)
                chunk = pending[0]
                if not ctx.quota.take(len(chunk.data), self._stop):
                    break
                reply = ctx.target.append(
                    target_topic, p, chunk.start, link.name, self.plan.epoch, chunk.data
                )
            except OffsetOutOfRange as exc:
                if target_end is not None and source_gap(position, exc.log_start):
                    action = gap_action(target_end, link.on_gap)
                    if action == "stop":
                        self._gap(position, exc.log_start)
                        return
                    pending = []
                    if self._skip(action, target_end, position, exc.log_start):
                        target_end = position = exc.log_start
                        self.progress.set_target(target_end)
                        backoff.reset()
                    else:
                        target_end = None
                        self._stop.wait(backoff.next())
                    continue
                if self._on_error(exc):
                    target_end = None
                    pending = []
                self._stop.wait(backoff.next())
                continue
            except TalosError as exc:
                if self._on_error(exc):
                    target_end = None
                    pending = []
                self._stop.wait(backoff.next())
                continue
            decision = decide_reply(chunk.start, chunk.end, reply.error, reply.log_end)
            if decision.action == "advance":
                pending.pop(0)
                self.progress.appended(decision.position, len(chunk.data), chunk.messages)
                target_end = position = decision.position
                if pending and pending[0].start != position:
                    pending = []  # someone else wrote further: re-read from the new end
                if pending:
                    self.progress.oldest_ts = pending[0].first_timestamp
                backoff.reset()
                suspect_since = None
                self._clear_error()
            elif decision.action == "reset":
                log.info(
                    "%s: %s; continuing from %d",
                    self._label,
                    decision.message or "target end moved",
                    decision.position,
                )
                pending = []
                target_end = position = decision.position
                self.progress.set_target(target_end)
            elif decision.action == "retry":
                if decision.refresh:
                    ctx.target.refresh(target_topic)
                if decision.suspect:
                    now = ctx.clock.monotonic()
                    suspect_since = suspect_since if suspect_since is not None else now
                    if now - suspect_since >= options.suspect_after_s:
                        self._fail(f"the target keeps refusing appends: {decision.message}")
                if decision.refused:
                    self._fail(decision.message)
                    self._stop.wait(REFUSED_RETRY_S)
                    continue
                log.debug("%s: retrying: %s", self._label, decision.message)
                self._stop.wait(backoff.next())
            else:
                self._fail(decision.message)
                self._report_until_stopped()
                return
        self._report(force=True)

    def _continuity(self, target_end: int) -> str:
        """Checked on every start and whenever the source's partition state changes."""
        if target_end <= 0:
            return ""
        ctx = self.ctx
        try:
            last = ctx.target.batch_at(self.plan.target_topic, self.partition, target_end - 1)
        except OffsetOutOfRange:
            return ""  # the target starts at its end (a copy started past the source's start)
        if last is None:
            return ""
        try:
            source = ctx.reader.read(
                self.plan.source_topic, self.partition, target_end - 1, ctx.options.read_bytes
            )
        except OffsetOutOfRange as exc:
            if exc.log_start >= target_end:
                # The source's retention removed the batch to compare (not a rewrite:
                # a recreated source has another incarnation, plan.diverged); the
                # copy loop meets the gap at the target's end.
                return ""
            source = ReadResult(source_end=exc.log_end)
        return continuity_problem(target_end, last, source, ctx.link.source, ctx.link.target)

    def _gap(self, position: int, log_start: int) -> None:
        """The source deleted ``[position, log_start)`` before this link copied it, and
        the link's ``on_gap`` is ``stop``: the partition stops as ``gap`` (the link
        never skips offsets silently) until an operator acts."""
        self.progress.gap = (position, log_start)
        self._fail(
            f"gap at offset {position}: the source deleted offsets {position}..{log_start - 1} "
            f"({log_start - position} messages) before the link copied them (on_gap = stop; "
            f'on_gap = "skip" resumes at the source\'s log start)'
        )
        self._report_until_stopped()

    def _skip(self, action: GapAction, target_end: int, position: int, log_start: int) -> bool:
        """Restart the target empty at the source's ``log_start`` (offsets stay equal).

        A log is dense from its start, so the target cannot hold a hole: its
        log start moves to ``log_start`` and its own copy below goes, as
        retention removes segments (broker: ``PartitionLog._mirror_skip``). A
        skipped gap (``action == "skip"``) is recorded in the progress znode;
        the first copy of a source that starts above 0 (``start``) lost nothing.
        False: the target did not move (its end changed, or it is unreachable).
        """
        ctx = self.ctx
        reply = ctx.target.append(
            self.plan.target_topic,
            self.partition,
            log_start,
            ctx.link.name,
            self.plan.epoch,
            b"",
            skip_from=target_end,
        )
        if reply.error is not None:
            log.info("%s: could not move the target to %d: %s", self._label, log_start, reply.error)
            if not isinstance(reply.error, Gap):  # no answer: it may have landed
                self._unresolved_skip = (action, position, log_start)
            return False
        self._skipped(action, position, log_start)
        return True

    def _settle_skip(self, target_end: int) -> None:
        """A skip whose answer was lost landed if the target now ends at its start."""
        unresolved, self._unresolved_skip = self._unresolved_skip, None
        if unresolved is not None and target_end == unresolved[2]:
            self._skipped(*unresolved)

    def _skipped(self, action: GapAction, position: int, log_start: int) -> None:
        if action == "start":
            log.info(
                "%s: first copy: the source starts at %d, so the target does too",
                self._label,
                log_start,
            )
            return
        gap = self.progress.skipped_gap(position, log_start)
        self.progress.gap = None
        log.warning(
            "%s: skipped a gap (on_gap = skip): the source deleted offsets %d..%d (%d messages) "
            "before the link copied them; the target now starts at %d",
            self._label,
            gap.start,
            gap.end - 1,
            gap.messages,
            log_start,
        )
        self._report(force=True)

    def _diverge(self, problem: str) -> None:
        """Stop this partition for good: nothing more is appended until a resync."""
        self.progress.diverged = True
        self._fail(
            f"diverged at offset {self.progress.target_end}: {problem}; the target no longer "
            f"holds the source's history (talos mirror resync --link {self.ctx.link.name} "
            f"--topic {self.plan.source_topic})"
        )
        self._report_until_stopped()

    def _on_error(self, exc: TalosError) -> bool:
        """Handle a read or log-end failure; True means: find the target end again."""
        if isinstance(exc, UnknownTopic):
            log.info("%s: %s (waiting for the topic)", self._label, exc)
            return True
        if isinstance(exc, OffsetOutOfRange | CorruptBatch):
            self._fail(f"{type(exc).__name__}: {exc.message}")
            self._stop.wait(5.0)
            return True
        if exc.retriable:
            log.debug("%s: %s", self._label, exc)
            return True
        self._fail(f"{type(exc).__name__}: {exc.message}")
        self._stop.wait(5.0)
        return True

    def _clear_read_error(self) -> None:
        if self.progress.error.startswith(("OffsetOutOfRange", "CorruptBatch")):
            self._clear_error()


# ---- the worker --------------------------------------------------------------------------


def _pid_alive(pid: object) -> bool:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_reader(
    kind: str, source: Datacenter, zk: KazooClient, options: WorkerOptions, clock: Clock
) -> SourceReader:
    if kind == "fetch":
        return FetchReader(
            source.bootstrap,
            request_timeout_s=options.request_timeout_s,
            clock=clock,
            security=source.client_security(),
        )
    if kind != "store":
        raise InvalidArgument(f"reader: must be one of {', '.join(READERS)}, got {kind!r}")
    # posix:/PATH (mounted here) or hdfs://NAMENODE/PATH (tail-read through HDFS).
    return StoreReader(open_store(source.store.uri), zk, source.cluster, clock)


class LinkWorker:
    """Runs one worker of ``link`` until ``stop`` is set."""

    def __init__(
        self,
        topology: Topology,
        link: Link,
        worker_id: str,
        *,
        reader: str = "store",
        options: WorkerOptions | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        check_link(link)
        paths.validate_name(worker_id, "worker_id")
        if reader not in READERS:
            raise InvalidArgument(f"reader: must be one of {', '.join(READERS)}, got {reader!r}")
        self.topology = topology
        self.link = link
        self.worker_id = worker_id
        self.reader_kind = reader
        self.options = (options or WorkerOptions()).validated()
        self.clock = clock
        self.source = topology.dc(link.source)
        self.target = topology.dc(link.target)
        self._wake = threading.Event()
        self._workers: list[str] = []
        self._tasks: dict[Partition, PartitionTask] = {}
        self._retiring: list[PartitionTask] = []
        self._watched_topics: set[str] = set()
        self._plans: dict[str, TopicPlan] = {}
        self._stop = threading.Event()
        self._offset_sync: OffsetSync | None = None
        self._stopped_by_control = False

    # ---- main loop --------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        options = self.options
        log.info(
            "mirror worker %s for link %s (%s -> %s), reader %s",
            self.worker_id,
            self.link.name,
            self.source.name,
            self.target.name,
            self.reader_kind,
        )
        self._stop = stop
        self.source_zk = connect(
            self.source.zookeeper,
            self.source.cluster,
            connect_timeout=options.connect_timeout_s,
            session_timeout=options.session_timeout_s,
        )
        target_zk: KazooClient | None = None
        ctx: LinkContext | None = None
        try:
            target_zk = connect(
                self.target.zookeeper,
                self.target.cluster,
                connect_timeout=options.connect_timeout_s,
                session_timeout=options.session_timeout_s,
            )
            self.target_zk = target_zk
            ctx = LinkContext(
                link=self.link,
                worker_id=self.worker_id,
                reader=make_reader(
                    self.reader_kind, self.source, self.source_zk, options, self.clock
                ),
                target=TargetClient(
                    self.target.bootstrap,
                    request_timeout_s=options.request_timeout_s,
                    clock=self.clock,
                    security=self.target.client_security(),
                ),
                target_zk=target_zk,
                quota=TokenBucket(self.link.bandwidth_bytes_s, clock=self.clock),
                options=options,
                clock=self.clock,
            )
            self.ctx = ctx
            self.source_topics = TopicStore(self.source_zk)
            self.target_topics = TopicStore(target_zk)
            self._register()
            self._watch()
            self._offset_sync = OffsetSync(
                self.source_zk, target_zk, self.link, ctx.target.log_end, self.clock
            )
            self._offset_sync.start()
            self._loop(stop)
        finally:
            if self._offset_sync is not None:
                self._offset_sync.stop()
            self._shutdown(ctx)

    def _loop(self, stop: threading.Event) -> None:
        options = self.options
        next_heartbeat = next_scan = next_log = self.clock.monotonic()
        while not stop.is_set():
            now = self.clock.monotonic()
            if now >= next_heartbeat:
                self._heartbeat()
                next_heartbeat = now + options.heartbeat_interval_s
            if self._wake.is_set() or now >= next_scan:
                self._wake.clear()
                try:
                    self._reconcile()
                except TalosError as exc:
                    log.warning("link %s: could not reconcile topics: %s", self.link.name, exc)
                next_scan = now + options.rescan_interval_s
            if now >= next_log:
                self._log_summary()
                next_log = now + options.log_interval_s
            self._reap()
            wait = max(0.0, min(next_heartbeat, next_scan) - self.clock.monotonic())
            self._wake.wait(min(wait, 0.5))
            if stop.is_set():
                break

    # ---- registration and watches ----------------------------------------------------

    def _registration(self) -> bytes:
        return dumps(
            {
                "id": self.worker_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started_ms": self.clock.wall_ms(),
            }
        )

    def _register(self) -> None:
        """Create our ephemeral znode; replace one left by a dead process of the same id."""
        path = worker_path(self.link.name, self.worker_id)
        zk = self.target_zk
        warned = False
        while not self._stop.is_set():
            with zk_errors(f"registering worker {self.worker_id}"):
                try:
                    zk.create(path, self._registration(), ephemeral=True, makepath=True)
                    log.info("registered as %s", path)
                    return
                except NodeExistsError:
                    pass
                try:
                    data, stat = zk.get(path)
                except NoNodeError:
                    continue
                if stat.ephemeralOwner == zk.client_id[0]:
                    return
                try:
                    old = loads(data, path)
                except TalosError:
                    old = {}
                if (
                    isinstance(old, dict)
                    and old.get("host") == socket.gethostname()
                    and not _pid_alive(old.get("pid"))
                ):
                    log.info("replacing the registration of a dead worker (pid %s)", old.get("pid"))
                    with contextlib.suppress(NoNodeError, BadVersionError):
                        zk.delete(path, version=stat.version)
                    continue
            if not warned:
                log.warning(
                    "worker id %s is registered by a live process (%s); waiting for it to go",
                    self.worker_id,
                    old,
                )
                warned = True
            self._stop.wait(1.0)

    def _check_registration(self) -> None:
        path = worker_path(self.link.name, self.worker_id)
        with zk_errors(f"checking registration {path}"):
            stat = self.target_zk.exists(path)
        if stat is None or stat.ephemeralOwner != self.target_zk.client_id[0]:
            log.warning("registration %s lost (session expired?); registering again", path)
            self._register()

    def _watch(self) -> None:
        zk = self.target_zk
        with zk_errors("watching mirror workers"):
            zk.ensure_path(workers_path(self.link.name))

            def on_workers(children: list[str]) -> None:
                self._workers = sorted(children)
                self._wake.set()

            zk.ChildrenWatch(workers_path(self.link.name), on_workers)
        self.source_topics.watch(lambda _names: self._wake.set())

    def _watch_topic(self, name: str) -> None:
        """Wake up when a source topic's metadata changes (it grew)."""
        if name in self._watched_topics:
            return
        self._watched_topics.add(name)

        def on_change(data: bytes | None, stat: Any, event: Any = None) -> bool | None:
            if name not in self._watched_topics or self._stop.is_set():
                return False
            self._wake.set()
            if data is None:
                self._watched_topics.discard(name)
                return False
            return None

        with zk_errors(f"watching source topic {name!r}"):
            self.source_zk.DataWatch(paths.topic(name), on_change)

    def _heartbeat(self) -> None:
        try:
            self._check_registration()
            write_json(
                self.target_zk,
                heartbeat_path(self.link.name),
                {"worker": self.worker_id, "ms": self.clock.wall_ms()},
            )
        except TalosError as exc:
            log.warning("link %s: heartbeat failed: %s", self.link.name, exc)

    # ---- topics and partitions --------------------------------------------------------

    def _target_meta(self, name: str) -> TopicMeta | None:
        try:
            return self.target_topics.get(name)
        except UnknownTopic:
            return None

    def _plan(self, source: TopicMeta) -> TopicPlan:
        """Plan one source topic and carry out creation or growth on the target."""
        target_name = self.link.target_topic(source.name)
        plan = plan_topic(self.link, source, self._target_meta(target_name))
        for _ in range(5):
            if plan.action == "create":
                try:
                    self.target_topics.create(
                        plan.target_topic,
                        plan.partitions,
                        source.config,
                        self.clock.wall_ms(),
                        mirror=mirror_descriptor(
                            self.link, source.name, source.incarnation or None
                        ),
                    )
                    log.info(
                        "created mirror topic %s/%s (%d partitions)",
                        self.target.name,
                        plan.target_topic,
                        plan.partitions,
                    )
                except TopicExists:
                    pass
            elif plan.action == "grow":
                try:
                    self.target_topics.add_partitions(plan.target_topic, plan.partitions)
                    log.info(
                        "grew mirror topic %s/%s to %d partitions",
                        self.target.name,
                        plan.target_topic,
                        plan.partitions,
                    )
                except InvalidArgument:
                    pass  # another worker grew it first
            else:
                return plan
            plan = plan_topic(self.link, source, self._target_meta(target_name))
        return plan

    def _link_stopped(self) -> bool:
        """True while ``/mirror/<link>/control`` says stopped (set by ``mirror promote``)."""
        try:
            data, _ = self.target_zk.get(control_path(self.link.name))
        except NoNodeError:
            return False
        except KazooException as exc:
            log.warning("link %s: cannot read the control znode: %s", self.link.name, exc)
            return False
        try:
            stopped = bool(json.loads(data or b"{}").get("state") == "stopped")
        except ValueError:
            return False
        if stopped != self._stopped_by_control:
            log.warning("link %s: control says %s", self.link.name, "stopped" if stopped else "run")
            self._stopped_by_control = stopped
        return stopped

    def _reconcile(self) -> None:
        if self._link_stopped():  # idle: copy nothing until the control says run again
            self._sync_tasks(set(), {})
            return
        plans: dict[str, TopicPlan] = {}
        for name in self.source_topics.list():
            if not self.link.selects(name):
                continue
            try:
                source = self.source_topics.get(name)
            except UnknownTopic:
                continue
            self._watch_topic(name)
            plan = self._plan(source)
            previous = self._plans.get(name)
            if previous is None or (previous.action, previous.reason) != (plan.action, plan.reason):
                if plan.action == "skip":
                    log.info("link %s: not copying %s: %s", self.link.name, name, plan.reason)
                elif plan.action == "error":
                    log.error("link %s: %s: %s", self.link.name, name, plan.reason)
            plans[name] = plan
        for gone in set(self._watched_topics) - set(plans):
            self._watched_topics.discard(gone)
        self._plans = plans
        owned = owned_partitions(link_partitions(plans.values()), self._workers, self.worker_id)
        self._sync_tasks(owned, plans)

    def _sync_tasks(self, owned: set[Partition], plans: Mapping[str, TopicPlan]) -> None:
        for key, task in list(self._tasks.items()):
            plan = plans.get(key[0])
            wanted = plan is not None and key in owned and task.signature == plan_signature(plan)
            if not wanted:
                task.stop()
                self._retiring.append(task)
                del self._tasks[key]
        self._reap()
        busy = {task.key for task in self._retiring}
        for key in sorted(owned):
            if key in self._tasks or key in busy:
                continue
            task = PartitionTask(self.ctx, plans[key[0]], key[1])
            self._tasks[key] = task
            task.start()

    def _reap(self) -> None:
        still = []
        for task in self._retiring:
            if task.alive():
                still.append(task)
            elif task.key not in self._tasks:
                self.ctx.reader.forget(*task.key)
        if len(still) != len(self._retiring):
            self._wake.set()  # a partition may be waiting for its old task to finish
        self._retiring = still

    def _log_summary(self) -> None:
        if not self._tasks:
            log.info(
                "link %s: no partitions owned (workers: %s)",
                self.link.name,
                ", ".join(self._workers) or "-",
            )
            return
        states: dict[str, int] = {}
        now_ms = self.clock.wall_ms()
        copied = msgs = 0
        for task in self._tasks.values():
            state = task.progress.state(now_ms)
            states[state] = states.get(state, 0) + 1
            copied += task.progress.bytes_total
            msgs += task.progress.msgs_total
        summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        log.info(
            "link %s: %d partitions (%s); copied %.1f MB, %d messages since start",
            self.link.name,
            len(self._tasks),
            summary,
            copied / 1e6,
            msgs,
        )

    # ---- shutdown ---------------------------------------------------------------------

    def _shutdown(self, ctx: LinkContext | None) -> None:
        tasks = [*self._tasks.values(), *self._retiring]
        for task in tasks:
            task.stop()
        for task in tasks:
            task.join(timeout=self.options.request_timeout_s)
        self._tasks.clear()
        self._retiring.clear()
        if ctx is not None:
            ctx.reader.close()
            ctx.target.close()
        for client in (getattr(self, "target_zk", None), getattr(self, "source_zk", None)):
            if client is None:
                continue
            try:
                client.stop()
                client.close()
            except Exception:  # best effort on the way out
                log.debug("closing a ZooKeeper client failed", exc_info=True)
        log.info("mirror worker %s stopped", self.worker_id)

    # ---- metrics (read by the /metrics thread when scraped) ----------------------------

    def metrics_collector(self) -> MirrorCollector:
        return MirrorCollector(
            self.link.name, self._metrics_views, self._zookeeper_states, self.clock.wall_ms
        )

    def _metrics_views(self) -> list[MirrorView]:
        now_ms = self.clock.wall_ms()
        return [
            MirrorView(
                topic=task.plan.target_topic,
                partition=task.partition,
                source_end=task.progress.source_end,
                target_end=task.progress.target_end,
                lag_ms=task.progress.lag_ms(now_ms),
                last_progress_ms=task.progress.last_progress_ms,
                bytes_total=task.progress.bytes_total,
                messages_total=task.progress.msgs_total,
            )
            for task in list(self._tasks.values())
        ]

    def _zookeeper_states(self) -> dict[str, str]:
        clients = {
            "source": getattr(self, "source_zk", None),
            "target": getattr(self, "target_zk", None),
        }
        return {name: str(zk.state) for name, zk in clients.items() if zk is not None}
