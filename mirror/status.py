"""``talos mirror status``: lag, throughput and stall state of every mirrored partition.

The table is a pure function of what was read (:func:`build_status`): the
source and target log ends read now, the workers' progress znodes and the
link heartbeat. Because the source end is read here and not taken from the
worker, a dead worker shows up too: its progress znode ages while the
source grows. :class:`StatusReader` does the reading and turns every failure
(a DC that does not answer) into an error row instead of an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from mirror.paths import (
    heartbeat_path,
    offset_sync_path,
    progress_path,
    progress_root,
    workers_path,
)
from mirror.state import MirrorState, Phase, loop_reason, target_problem
from talos.client.connection import Connections
from talos.clock import SYSTEM_CLOCK, Clock
from talos.coord import paths
from talos.coord.topics import TopicMeta
from talos.coord.zk import connect, loads, zk_errors
from talos.errors import CoordinationError, InvalidArgument, TalosError
from talos.proto import talos_pb2 as pb
from talos.record.batch import parse_header
from topology import Datacenter, Link, Topology

log = logging.getLogger(__name__)

State = Literal[
    "ok", "promoted", "failback_pending", "lagging", "stalled", "error", "diverged", "gap"
]
STATES: tuple[State, ...] = (
    "ok",
    "promoted",
    "failback_pending",
    "lagging",
    "stalled",
    "error",
    "diverged",
    "gap",
)
#: What a healthy link may be in (a monitoring check passes).
HEALTHY_STATES: tuple[State, ...] = ("ok", "promoted", "failback_pending", "lagging")
_SEVERITY: dict[str, int] = {state: rank for rank, state in enumerate(STATES)}

DEFAULT_STALL_AFTER_S = 15.0
#: A partition whose oldest unreplicated message is older than this is "lagging".
DEFAULT_LAGGING_AFTER_MS = 5_000
MAX_STALL_AFTER_S = 86_400.0
#: Partitions per Fetch when reading the oldest unreplicated batch (bounds the reply size).
_FETCH_PARTITIONS = 32


# -- the znode layout in the TARGET ZooKeeper (see notes/mirror.md) --------------------------


# -- the loop and target rules (one copy, in mirror.state) -----------------------------------


def link_copies(link: Link, source_topic: str, source_mirror: MirrorState | None) -> bool:
    """Whether ``link`` mirrors this source topic at all (selected, and no loop)."""
    return link.selects(source_topic) and not loop_reason(link.source, link.target, source_mirror)


def failover_state(link: Link, target_mirror: MirrorState | None) -> State | None:
    """The named, healthy state a failover leaves the link's target topic in (None: none).

    ``promoted``: this link was promoted; its target is writable and the link
    copies nothing more. ``failback_pending``: this link is the reverse of a
    promoted one and its target (the old primary) waits, read-only, for
    ``talos mirror failback``, which makes it a plain mirror of this link.
    """
    if target_mirror is None:
        return None
    if target_mirror.link != link.name:
        return None
    if target_mirror.phase is Phase.PROMOTED:
        return "promoted"
    if target_mirror.phase is Phase.FAILBACK_PENDING:
        return "failback_pending"
    return None


def waits_for_failback(link: Link, source_mirror: MirrorState | None) -> bool:
    """Whether the source topic is the old primary of this promoted link, awaiting failback.

    The link copies nothing from it, but its status shows the topic (as promoted).
    """
    reverse = Link(link.target, link.source, link.topics)
    return failover_state(reverse, source_mirror) == "failback_pending"


def failover_detail(link: Link, state: State) -> str:
    if state == "promoted":
        return "promoted: the target is writable; this link copies nothing until a failback"
    return (
        f"failback pending: read-only until `talos mirror failback --link "
        f"{link.target}:{link.source}` truncates it and this link starts"
    )


def target_mirror_problem(link: Link, source_topic: str, target_mirror: MirrorState | None) -> str:
    """Why an existing target topic is not a writable mirror of ``link`` ("" if it is)."""
    return target_problem(link.name, source_topic, target_mirror)


# -- inputs -----------------------------------------------------------------------------------


def _field(raw: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = raw.get(key, default)
    if value is None:
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise CoordinationError(f"{key}: expected {kind.__name__}, got {value!r}")
    return value


#: How many skipped gaps a progress znode keeps (the newest; bounds the znode).
MAX_SKIPPED_GAPS = 20


@dataclass(frozen=True)
class SkippedGap:
    """Offsets ``[start, end)`` a link skipped under ``on_gap = "skip"``: the source's
    retention deleted them before the link copied them. ``at_ms``: when (wall clock)."""

    start: int
    end: int
    messages: int
    at_ms: int

    def to_dict(self) -> dict[str, int]:
        return {"from": self.start, "to": self.end, "messages": self.messages, "ms": self.at_ms}

    @classmethod
    def from_dict(cls, raw: object) -> SkippedGap:
        if not isinstance(raw, dict):
            raise CoordinationError(f"skipped_gaps: expected an object, got {raw!r}")
        return cls(
            _field(raw, "from", int, 0),
            _field(raw, "to", int, 0),
            _field(raw, "messages", int, 0),
            _field(raw, "ms", int, 0),
        )

    def describe(self) -> str:
        return f"skipped {self.start}..{self.end - 1} ({self.messages} messages)"


@dataclass(frozen=True)
class Progress:
    """A worker's progress znode for one target partition (wall-clock milliseconds)."""

    worker: str
    source_end: int
    target_end: int
    source_end_ms: int
    last_progress_ms: int
    lag_ms: int
    bytes_per_s: float
    msgs_per_s: float
    state: str
    error: str
    updated_ms: int
    #: messages the source deleted before the link copied them (state "gap")
    gap_messages: int = 0
    #: gaps the link skipped under ``on_gap = "skip"``, oldest first
    skipped_gaps: tuple[SkippedGap, ...] = ()

    @classmethod
    def from_json(cls, data: bytes, what: str = "progress") -> Progress:
        raw = loads(data, what)
        if not isinstance(raw, dict):
            raise CoordinationError(f"{what}: expected a JSON object, got {raw!r}")
        try:
            return cls(
                worker=_field(raw, "worker", str, ""),
                source_end=_field(raw, "source_end", int, 0),
                target_end=_field(raw, "target_end", int, 0),
                source_end_ms=_field(raw, "source_end_ms", int, 0),
                last_progress_ms=_field(raw, "last_progress_ms", int, 0),
                lag_ms=_field(raw, "lag_ms", int, 0),
                bytes_per_s=_field(raw, "bytes_per_s", float, 0.0),
                msgs_per_s=_field(raw, "msgs_per_s", float, 0.0),
                state=_field(raw, "state", str, "ok"),
                error=_field(raw, "error", str, ""),
                updated_ms=_field(raw, "updated_ms", int, 0),
                gap_messages=_field(raw, "gap_messages", int, 0),
                skipped_gaps=tuple(
                    SkippedGap.from_dict(g) for g in _field(raw, "skipped_gaps", list, [])
                ),
            )
        except CoordinationError as exc:
            raise CoordinationError(f"{what}: malformed ({exc})") from None


@dataclass(frozen=True)
class Heartbeat:
    worker: str
    ms: int


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    host: str = ""
    pid: int = 0
    started_ms: int = 0


@dataclass(frozen=True)
class OffsetSyncInfo:
    last_run_ms: int
    groups: int


@dataclass(frozen=True)
class PartitionInput:
    """What was read about one target partition.

    ``source_end``/``target_end`` None: could not be read (``error`` says
    why). ``target_missing``: the target topic or partition does not exist
    yet, so its end is 0. ``oldest_unreplicated_ms`` is the first timestamp
    of the source batch at the target's end, when it could be read.
    """

    target_topic: str
    partition: int
    source_topic: str
    source_end: int | None
    target_end: int | None
    progress: Progress | None = None
    target_missing: bool = False
    oldest_unreplicated_ms: int | None = None
    error: str = ""
    target_problem: str = ""
    #: set after a failover: a named healthy state instead of a target problem
    failover: State | None = None


@dataclass(frozen=True)
class StatusInputs:
    link: str
    source: str
    target: str
    partitions: tuple[PartitionInput, ...] = ()
    heartbeat: Heartbeat | None = None
    workers: tuple[WorkerInfo, ...] = ()
    offset_sync: OffsetSyncInfo | None = None
    #: Link-level problems (a DC or ZooKeeper that did not answer).
    errors: tuple[str, ...] = ()


# -- outputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionStatus:
    topic: str
    partition: int
    source_topic: str
    source_end: int | None
    target_end: int | None
    lag_messages: int | None
    lag_ms: int | None
    #: True when lag_ms comes from source timestamps, not the worker's own report.
    lag_estimated: bool
    msgs_per_s: float | None
    bytes_per_s: float | None
    progress_age_ms: int | None
    state: State
    worker: str = ""
    detail: str = ""
    #: messages the source deleted before the link copied them (state "gap")
    gap_messages: int = 0
    #: gaps the link skipped under ``on_gap = "skip"`` (the partition went on)
    skipped_gaps: tuple[SkippedGap, ...] = ()

    @property
    def skipped_messages(self) -> int:
        return sum(gap.messages for gap in self.skipped_gaps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "source_topic": self.source_topic,
            "source_end": self.source_end,
            "target_end": self.target_end,
            "lag_messages": self.lag_messages,
            "lag_ms": self.lag_ms,
            "lag_estimated": self.lag_estimated,
            "msgs_per_s": self.msgs_per_s,
            "bytes_per_s": self.bytes_per_s,
            "progress_age_ms": self.progress_age_ms,
            "state": self.state,
            "worker": self.worker,
            "detail": self.detail,
            "gap_messages": self.gap_messages,
            "skipped_gaps": [gap.to_dict() for gap in self.skipped_gaps],
            "skipped_messages": self.skipped_messages,
        }


@dataclass(frozen=True)
class Totals:
    partitions: int
    lag_messages: int
    max_lag_ms: int | None
    msgs_per_s: float
    bytes_per_s: float
    states: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "partitions": self.partitions,
            "lag_messages": self.lag_messages,
            "max_lag_ms": self.max_lag_ms,
            "msgs_per_s": self.msgs_per_s,
            "bytes_per_s": self.bytes_per_s,
            "states": dict(self.states),
        }


@dataclass(frozen=True)
class LinkStatus:
    link: str
    source: str
    target: str
    now_ms: int
    partitions: tuple[PartitionStatus, ...]
    totals: Totals
    heartbeat_age_ms: int | None
    heartbeat_worker: str
    workers: tuple[WorkerInfo, ...]
    offset_sync: OffsetSyncInfo | None
    errors: tuple[str, ...]
    stall_after_ms: int

    @property
    def state(self) -> State:
        """The worst partition state; "error" when the link itself had a problem."""
        if self.errors:
            return "error"
        worst: State = "ok"
        for row in self.partitions:
            if _SEVERITY[row.state] > _SEVERITY[worst]:
                worst = row.state
        return worst

    @property
    def healthy(self) -> bool:
        """What a monitoring check asks: nothing stalled and nothing in error."""
        return self.state in HEALTHY_STATES

    def to_dict(self) -> dict[str, Any]:
        return {
            "link": self.link,
            "source": self.source,
            "target": self.target,
            "now_ms": self.now_ms,
            "state": self.state,
            "healthy": self.healthy,
            "stall_after_ms": self.stall_after_ms,
            "heartbeat_age_ms": self.heartbeat_age_ms,
            "heartbeat_worker": self.heartbeat_worker,
            "workers": [
                {"id": w.id, "host": w.host, "pid": w.pid, "started_ms": w.started_ms}
                for w in self.workers
            ],
            "offset_sync": None
            if self.offset_sync is None
            else {
                "last_run_ms": self.offset_sync.last_run_ms,
                "groups": self.offset_sync.groups,
            },
            "errors": list(self.errors),
            "partitions": [row.to_dict() for row in self.partitions],
            "totals": self.totals.to_dict(),
        }


# -- the pure computation ---------------------------------------------------------------------


def _check_ms(value: object, param: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidArgument(f"{param}: must be an integer >= {low} (milliseconds), got {value!r}")
    return value


def _worse(a: State, b: State) -> State:
    return a if _SEVERITY[a] >= _SEVERITY[b] else b


def _stall_reference(
    inp: PartitionInput, target_end: int, now_ms: int, newest_worker_start: int | None
) -> int | None:
    """Since when the partition has been waiting without progress (None: unknown).

    The latest of: the worker's last advance; the znode's own time when the
    target moved since it was written; the source read time when the worker
    had copied all it saw (the new data arrived after); and the oldest
    unreplicated message's timestamp. Without a lower bound here a partition
    that was idle for an hour would look stalled the instant a message arrives.
    """
    candidates: list[int] = []
    progress = inp.progress
    if progress is not None:
        candidates.append(progress.last_progress_ms)
        if target_end > progress.target_end:
            candidates.append(progress.updated_ms)
        if target_end >= progress.source_end:
            candidates.append(progress.source_end_ms)
        if progress.lag_ms > 0 and progress.target_end == target_end:
            candidates.append(progress.updated_ms - progress.lag_ms)
    if inp.oldest_unreplicated_ms is not None:
        candidates.append(min(inp.oldest_unreplicated_ms, now_ms))
    if not candidates and newest_worker_start is not None:
        candidates.append(newest_worker_start)
    return max(candidates) if candidates else None


def partition_status(
    inp: PartitionInput,
    now_ms: int,
    stall_after_ms: int,
    lagging_after_ms: int = DEFAULT_LAGGING_AFTER_MS,
    newest_worker_start: int | None = None,
    heartbeat_age_ms: int | None = None,
) -> PartitionStatus:
    """One row of the table; see :func:`build_status`."""
    progress = inp.progress
    fresh = progress is not None and now_ms - progress.updated_ms <= stall_after_ms
    notes: list[str] = []

    source_end = inp.source_end
    if source_end is None and fresh and progress is not None:
        source_end = progress.source_end
        notes.append("source end as last reported by the worker")
    target_end = inp.target_end
    if target_end is None and inp.target_missing:
        target_end = 0
    if target_end is None and fresh and progress is not None:
        target_end = progress.target_end
        notes.append("target end as last reported by the worker")
    if inp.target_missing:
        notes.append("target partition does not exist yet")

    progress_age = None if progress is None else max(0, now_ms - progress.last_progress_ms)
    msgs_per_s: float | None = None
    bytes_per_s: float | None = None
    if progress is not None:
        # A worker that stopped reporting copies nothing, whatever it last said.
        msgs_per_s = progress.msgs_per_s if fresh else 0.0
        bytes_per_s = progress.bytes_per_s if fresh else 0.0

    skipped_gaps = progress.skipped_gaps if progress is not None else ()
    skipped = skipped_detail(skipped_gaps)

    def row(
        state: State,
        lag: int | None,
        lag_ms: int | None,
        estimated: bool,
        detail: Iterable[str],
    ) -> PartitionStatus:
        return PartitionStatus(
            topic=inp.target_topic,
            partition=inp.partition,
            source_topic=inp.source_topic,
            source_end=source_end,
            target_end=target_end,
            lag_messages=lag,
            lag_ms=lag_ms,
            lag_estimated=estimated,
            msgs_per_s=msgs_per_s,
            bytes_per_s=bytes_per_s,
            progress_age_ms=progress_age,
            state=state,
            worker=progress.worker if progress is not None else "",
            detail="; ".join(d for d in [*detail, skipped] if d),
            gap_messages=progress.gap_messages if progress is not None else 0,
            skipped_gaps=skipped_gaps,
        )

    if inp.failover is not None:
        return row(inp.failover, None, None, False, [inp.target_problem, inp.error])
    if inp.target_problem:
        return row("error", None, None, False, [inp.target_problem, inp.error])
    if source_end is None or target_end is None:
        unknown = "source end unknown" if source_end is None else "target end unknown"
        return row("error", None, None, False, [inp.error or unknown, *notes])

    lag = max(0, source_end - target_end)
    lag_ms: int | None
    estimated = False
    if lag == 0:
        lag_ms = 0
    elif fresh and progress is not None and progress.lag_ms > 0:
        lag_ms = progress.lag_ms
    elif inp.oldest_unreplicated_ms is not None:
        lag_ms = max(0, now_ms - inp.oldest_unreplicated_ms)
        estimated = True
    else:
        lag_ms = None

    state: State = "ok"
    if lag > 0:
        since = _stall_reference(inp, target_end, now_ms, newest_worker_start)
        if since is None or now_ms - since > stall_after_ms:
            state = "stalled"
            if since is None:
                notes.append("no progress reported for this partition")
            else:
                notes.append(f"no progress for {_seconds(now_ms - since)}")
        elif lag_ms is None or lag_ms > lagging_after_ms:
            state = "lagging"
        if heartbeat_age_ms is None or heartbeat_age_ms > stall_after_ms:
            notes.append("no live mirror worker")
    if progress is not None and progress.state in ("diverged", "gap"):
        # Final until an operator acts, however old the znode: the worker stopped appending.
        state = "diverged" if progress.state == "diverged" else "gap"
        notes.insert(0, f"worker: {progress.error or progress.state}")
    elif fresh and progress is not None:
        if progress.state == "error":
            state = "error"
            notes.insert(0, f"worker: {progress.error or 'error'}")
        elif progress.state == "stalled" and lag > 0:
            state = _worse(state, "stalled")
            if progress.error:
                notes.insert(0, f"worker: {progress.error}")
    if inp.error:
        notes.append(inp.error)
    return row(state, lag, lag_ms, estimated, notes)


def skipped_detail(gaps: Sequence[SkippedGap]) -> str:
    """The status note for gaps skipped under ``on_gap = "skip"`` ("" when none)."""
    if not gaps:
        return ""
    total = sum(gap.messages for gap in gaps)
    newest = gaps[-1]
    more = f", {len(gaps) - 1} earlier" if len(gaps) > 1 else ""
    return (
        f"on_gap = skip: {total} messages lost to source retention "
        f"(last: {newest.describe()} at {_utc(newest.at_ms)}{more})"
    )


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def build_status(
    inputs: StatusInputs,
    now_ms: int,
    stall_after_ms: int,
    lagging_after_ms: int = DEFAULT_LAGGING_AFTER_MS,
) -> LinkStatus:
    """The status table of one link from what was read, at wall time ``now_ms``.

    A partition is "stalled" when the source is ahead of the target and the
    target has not advanced for ``stall_after_ms`` since the data it waits
    for appeared; "lagging" when it is behind by more than
    ``lagging_after_ms`` (or by an unknown time); "error" when an end could
    not be read or the worker reports an error.
    """
    _check_ms(now_ms, "now_ms", 0)
    _check_ms(stall_after_ms, "stall_after_ms", 1)
    _check_ms(lagging_after_ms, "lagging_after_ms", 0)
    heartbeat_age = None if inputs.heartbeat is None else max(0, now_ms - inputs.heartbeat.ms)
    starts = [w.started_ms for w in inputs.workers if w.started_ms > 0]
    newest_start = max(starts) if starts else None
    rows = [
        partition_status(p, now_ms, stall_after_ms, lagging_after_ms, newest_start, heartbeat_age)
        for p in sorted(inputs.partitions, key=lambda p: (p.target_topic, p.partition))
    ]
    if inputs.errors and not rows:
        rows.append(
            PartitionStatus(
                topic="*",
                partition=-1,
                source_topic="*",
                source_end=None,
                target_end=None,
                lag_messages=None,
                lag_ms=None,
                lag_estimated=False,
                msgs_per_s=None,
                bytes_per_s=None,
                progress_age_ms=None,
                state="error",
                detail="no partition could be listed (see the link errors)",
            )
        )
    states: dict[str, int] = {s: sum(1 for r in rows if r.state == s) for s in STATES}
    known_lag = [r.lag_ms for r in rows if r.lag_ms is not None]
    totals = Totals(
        partitions=sum(1 for r in rows if r.partition >= 0),
        lag_messages=sum(r.lag_messages or 0 for r in rows),
        max_lag_ms=max(known_lag) if known_lag else None,
        msgs_per_s=sum(r.msgs_per_s or 0.0 for r in rows),
        bytes_per_s=sum(r.bytes_per_s or 0.0 for r in rows),
        states=states,
    )
    return LinkStatus(
        link=inputs.link,
        source=inputs.source,
        target=inputs.target,
        now_ms=now_ms,
        partitions=tuple(rows),
        totals=totals,
        heartbeat_age_ms=heartbeat_age,
        heartbeat_worker=inputs.heartbeat.worker if inputs.heartbeat is not None else "",
        workers=inputs.workers,
        offset_sync=inputs.offset_sync,
        errors=inputs.errors,
        stall_after_ms=stall_after_ms,
    )


def exit_code(statuses: Sequence[LinkStatus]) -> int:
    """1 when any partition is stalled, in error, diverged or has a gap, else 0."""
    return 0 if all(s.healthy for s in statuses) else 1


# -- rendering --------------------------------------------------------------------------------


def _seconds(ms: int) -> str:
    if ms < 10_000:
        return f"{ms / 1000:.1f}s"
    if ms < 3_600_000:
        return f"{ms // 1000}s"
    return f"{ms / 3_600_000:.1f}h"


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _bytes_rate(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}B"


def _opt(value: int | None) -> str:
    return "-" if value is None else str(value)


def _lag_seconds(row: PartitionStatus) -> str:
    if row.lag_ms is None:
        return "?"
    return ("~" if row.lag_estimated else "") + _seconds(row.lag_ms)


_COLUMNS = (
    ("TOPIC", "<"),
    ("PART", ">"),
    ("SOURCE END", ">"),
    ("TARGET END", ">"),
    ("LAG MSGS", ">"),
    ("LAG", ">"),
    ("MSG/S", ">"),
    ("BYTES/S", ">"),
    ("PROGRESS AGO", ">"),
    ("STATE", "<"),
    ("DETAIL", "<"),
)


def render_table(status: LinkStatus) -> str:
    """The human-readable table of one link, totals at the bottom."""
    now = status.now_ms
    if status.heartbeat_age_ms is None:
        beat = "no worker heartbeat"
    else:
        beat = f"heartbeat {_seconds(status.heartbeat_age_ms)} ago"
        if status.heartbeat_worker:
            beat += f" ({status.heartbeat_worker})"
    sync = "offset sync: never ran"
    if status.offset_sync is not None:
        ago = _seconds(max(0, now - status.offset_sync.last_run_ms))
        sync = f"offset sync: {status.offset_sync.groups} group(s), {ago} ago"
    lines = [
        f"link {status.link} ({status.source} -> {status.target}): {status.state.upper()}; "
        f"{len(status.workers)} worker(s) registered, {beat}; {sync}"
    ]
    lines.extend(f"  error: {error}" for error in status.errors)
    rows = [
        [
            r.topic,
            "-" if r.partition < 0 else str(r.partition),
            _opt(r.source_end),
            _opt(r.target_end),
            _opt(r.lag_messages),
            "-" if r.lag_messages is None else _lag_seconds(r),
            _rate(r.msgs_per_s),
            _bytes_rate(r.bytes_per_s),
            "-" if r.progress_age_ms is None else _seconds(r.progress_age_ms),
            r.state,
            r.detail,
        ]
        for r in status.partitions
    ]
    t = status.totals
    counts = ", ".join(f"{n} {state}" for state, n in t.states.items() if n)
    total = [
        "TOTAL",
        str(t.partitions),
        "",
        "",
        str(t.lag_messages),
        "-" if t.max_lag_ms is None else f"max {_seconds(t.max_lag_ms)}",
        _rate(t.msgs_per_s),
        _bytes_rate(t.bytes_per_s),
        "",
        status.state,
        counts,
    ]
    table = [[name for name, _ in _COLUMNS], *rows, total]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]

    def fmt(cells: Sequence[str]) -> str:
        columns = zip(cells, _COLUMNS, widths, strict=True)
        out = [f"{cell:{align}{width}}" for cell, (_, align), width in columns]
        return "  ".join(out).rstrip()

    lines.append(fmt(table[0]))
    lines.extend(fmt(cells) for cells in rows)
    lines.append("-" * len(fmt(table[0])))
    lines.append(fmt(total))
    return "\n".join(lines)


# -- reading the inputs -----------------------------------------------------------------------


@dataclass
class _DcView:
    """What one DC's brokers said: partition counts, owners and log ends."""

    partitions: dict[str, int] = field(default_factory=dict)
    owners: dict[tuple[str, int], str] = field(default_factory=dict)
    brokers: dict[str, str] = field(default_factory=dict)
    ends: dict[tuple[str, int], int] = field(default_factory=dict)
    unknown_topics: set[str] = field(default_factory=set)
    error: str = ""


@dataclass
class _TargetZk:
    progress: dict[tuple[str, int], Progress] = field(default_factory=dict)
    heartbeat: Heartbeat | None = None
    workers: list[WorkerInfo] = field(default_factory=list)
    offset_sync: OffsetSyncInfo | None = None
    #: Existing target topics this link could write (mirror or not).
    metas: dict[str, TopicMeta] = field(default_factory=dict)
    #: The topic listing succeeded, so a topic absent from ``metas`` is missing.
    listed: bool = False
    problems: list[str] = field(default_factory=list)

    def missing(self, target_view: _DcView, topic: str, partition: int) -> bool:
        """Whether the target has no such partition yet (its end is then 0)."""
        meta = self.metas.get(topic)
        if meta is not None:
            return partition >= meta.partitions
        if self.listed or topic in target_view.unknown_topics:
            return True
        count = target_view.partitions.get(topic)
        return count is not None and partition >= count


def _get_json(zk: KazooClient, path: str) -> Any:
    try:
        data, _ = zk.get(path)
    except NoNodeError:
        return None
    return loads(data, path)


class StatusReader:
    """Reads the inputs of :func:`build_status`; keeps connections across ``--watch`` rounds.

    Every request is bounded by ``timeout_s``; a DC that does not answer
    becomes an error message in the inputs.
    """

    def __init__(
        self, topology: Topology, clock: Clock = SYSTEM_CLOCK, timeout_s: float = 3.0
    ) -> None:
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float):
            raise InvalidArgument(f"timeout_s: must be a number of seconds, got {timeout_s!r}")
        if not 0 < timeout_s <= 300:
            raise InvalidArgument(f"timeout_s: must be > 0 and at most 300, got {timeout_s}")
        self.topology = topology
        self.clock = clock
        self.timeout_s = float(timeout_s)
        self._zks: dict[str, KazooClient] = {}
        self._connections: dict[str, Connections] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mirror-status")

    # -- connections --

    def zk(self, dc: Datacenter) -> KazooClient:
        client = self._zks.get(dc.name)
        if client is not None and client.connected:
            return client
        if client is not None:
            _close_zk(client)
            del self._zks[dc.name]
        client = connect(
            dc.zookeeper,
            dc.cluster,
            connect_timeout=self.timeout_s,
            session_timeout=max(10.0, self.timeout_s),
        )
        self._zks[dc.name] = client
        return client

    def connections(self, dc: Datacenter) -> Connections:
        conns = self._connections.get(dc.name)
        if conns is None:
            conns = Connections(
                list(dc.brokers), request_timeout=self.timeout_s, security=dc.client_security()
            )
            self._connections[dc.name] = conns
        return conns

    def close(self) -> None:
        for client in self._zks.values():
            _close_zk(client)
        self._zks.clear()
        for conns in self._connections.values():
            conns.close()
        self._connections.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> StatusReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading --

    def read(self, link: Link) -> StatusInputs:
        source = self.topology.dc(link.source)
        target = self.topology.dc(link.target)
        errors: list[str] = []

        source_metas, source_zk_error = self._source_topics(source, link)
        target_zk, target_zk_error = self._target_zk(target, link)
        if target_zk_error:
            errors.append(target_zk_error)

        # Both ends are read at the same time, so the lag is not skewed by the
        # time one read takes (a cross-DC round trip or two).
        if source_metas is not None:
            source_names: list[str] | None = sorted(source_metas)
            target_names = sorted({link.target_topic(t) for t in source_metas})
        else:
            source_names = None  # all topics: the source ZooKeeper did not list them
            target_names = sorted({*target_zk.metas, *(t for t, _ in target_zk.progress)})
        reading = self._pool.submit(self._log_ends, target, target_names)
        source_view = self._log_ends(source, source_names)
        target_view = reading.result()

        if source_metas is None:
            # The source ZooKeeper did not answer: list topics through its brokers
            # (without the loop check, which needs the topic metadata).
            if source_view.error:
                errors.append(f"source DC {source.name}: {source_zk_error}")
            source_partitions = {t: n for t, n in source_view.partitions.items() if link.selects(t)}
        else:
            source_partitions = {t: m.partitions for t, m in source_metas.items()}

        keys: dict[tuple[str, int], str] = {}  # (target topic, p) -> source topic
        for source_topic, count in source_partitions.items():
            for p in range(count):
                keys[(link.target_topic(source_topic), p)] = source_topic
        if not source_partitions and (source_metas is None or source_view.error):
            # Nothing listed from the source: show what the workers reported.
            for target_topic, p in target_zk.progress:
                source_topic = link.source_topic(target_topic) or target_topic
                keys[(target_topic, p)] = source_topic

        oldest = self._oldest_unreplicated(source, source_view, keys, target_view, target_zk)

        partitions = []
        for (target_topic, p), source_topic in sorted(keys.items()):
            source_end = source_view.ends.get((source_topic, p))
            problems: list[str] = []
            if source_end is None:
                problems.append(
                    f"source DC {source.name}: {source_view.error}"
                    if source_view.error
                    else f"source {source_topic}/{p} has no serving owner"
                )
            meta = target_zk.metas.get(target_topic)
            problem = (
                target_mirror_problem(link, source_topic, meta.mirror) if meta is not None else ""
            )
            after_failover = failover_state(link, meta.mirror) if meta is not None else None
            if after_failover is not None:
                problem = failover_detail(link, after_failover)
            target_missing = target_zk.missing(target_view, target_topic, p)
            target_end = None if target_missing else target_view.ends.get((target_topic, p))
            if target_end is None and not target_missing:
                problems.append(
                    f"target DC {target.name}: {target_view.error}"
                    if target_view.error
                    else f"target {target_topic}/{p} has no serving owner"
                )
            partitions.append(
                PartitionInput(
                    target_topic=target_topic,
                    partition=p,
                    source_topic=source_topic,
                    source_end=source_end,
                    target_end=target_end,
                    progress=target_zk.progress.get((target_topic, p)),
                    target_missing=target_missing,
                    oldest_unreplicated_ms=oldest.get((source_topic, p)),
                    error="; ".join(problems),
                    target_problem=problem,
                    failover=after_failover,
                )
            )
        errors.extend(target_zk.problems)
        if source_metas is None and not source_view.error and source_zk_error:
            errors.append(f"source DC {source.name}: {source_zk_error}")
        return StatusInputs(
            link=link.name,
            source=link.source,
            target=link.target,
            partitions=tuple(partitions),
            heartbeat=target_zk.heartbeat,
            workers=tuple(target_zk.workers),
            offset_sync=target_zk.offset_sync,
            errors=tuple(errors),
        )

    def _source_topics(
        self, source: Datacenter, link: Link
    ) -> tuple[dict[str, TopicMeta] | None, str]:
        """The source topics the link copies, from the source ZooKeeper (None: unreachable)."""
        try:
            zk = self.zk(source)
            with zk_errors(f"listing topics of DC {source.name}"):
                names = [t for t in zk.get_children(paths.TOPICS) if link.selects(t)]
                pending = [(name, zk.get_async(paths.topic(name))) for name in names]
                metas: dict[str, TopicMeta] = {}
                for name, result in pending:
                    try:
                        data, _ = result.get()
                    except NoNodeError:
                        continue  # deleted meanwhile
                    meta = TopicMeta.from_json(data)
                    if link_copies(link, name, meta.mirror) or waits_for_failback(
                        link, meta.mirror
                    ):
                        metas[name] = meta
            return metas, ""
        except TalosError as exc:
            return None, str(exc)

    def _target_zk(self, target: Datacenter, link: Link) -> tuple[_TargetZk, str]:
        out = _TargetZk()
        try:
            zk = self.zk(target)
            with zk_errors(f"reading mirror progress of link {link.name} in DC {target.name}"):
                self._read_progress(zk, link, out)
                raw_beat = _get_json(zk, heartbeat_path(link.name))
                if isinstance(raw_beat, dict):
                    out.heartbeat = Heartbeat(
                        worker=str(raw_beat.get("worker", "")), ms=int(raw_beat.get("ms", 0))
                    )
                out.workers = self._read_workers(zk, link)
                raw_sync = _get_json(zk, offset_sync_path(link.name))
                if isinstance(raw_sync, dict):
                    out.offset_sync = OffsetSyncInfo(
                        last_run_ms=int(raw_sync.get("last_run_ms", 0)),
                        groups=int(raw_sync.get("groups", 0)),
                    )
                names = set(zk.get_children(paths.TOPICS))
                wanted = [t for t in names if link.source_topic(t) is not None]
                pending = [(t, zk.get_async(paths.topic(t))) for t in wanted]
                for name, result in pending:
                    try:
                        data, _ = result.get()
                    except NoNodeError:
                        continue
                    out.metas[name] = TopicMeta.from_json(data)
                out.listed = True
            return out, ""
        except (TalosError, ValueError, TypeError) as exc:
            return out, f"target DC {target.name}: {exc}"

    def _read_progress(self, zk: KazooClient, link: Link, out: _TargetZk) -> None:
        root = progress_root(link.name)
        try:
            topics = zk.get_children(root)
        except NoNodeError:
            return
        listings = [(t, zk.get_children_async(f"{root}/{t}")) for t in topics]
        pending = []
        for topic, listing in listings:
            try:
                children = listing.get()
            except NoNodeError:
                continue
            for child in children:
                if child.isdigit():
                    path = progress_path(link.name, topic, int(child))
                    pending.append(((topic, int(child)), path, zk.get_async(path)))
        for key, path, result in pending:
            try:
                data, _ = result.get()
            except NoNodeError:
                continue
            try:
                out.progress[key] = Progress.from_json(data, path)
            except CoordinationError as exc:
                out.problems.append(str(exc))

    @staticmethod
    def _read_workers(zk: KazooClient, link: Link) -> list[WorkerInfo]:
        root = workers_path(link.name)
        try:
            ids = zk.get_children(root)
        except NoNodeError:
            return []
        pending = [(worker_id, zk.get_async(f"{root}/{worker_id}")) for worker_id in ids]
        workers = []
        for worker_id, result in sorted(pending):
            try:
                data, _ = result.get()
            except NoNodeError:
                continue
            try:
                raw = loads(data, f"{root}/{worker_id}")
            except CoordinationError:
                raw = {}
            raw = raw if isinstance(raw, dict) else {}
            try:
                workers.append(
                    WorkerInfo(
                        id=str(raw.get("id", worker_id)),
                        host=str(raw.get("host", "")),
                        pid=int(raw.get("pid", 0)),
                        started_ms=int(raw.get("started_ms", 0)),
                    )
                )
            except (TypeError, ValueError):
                workers.append(WorkerInfo(id=worker_id))
        return workers

    def _log_ends(self, dc: Datacenter, topics: list[str] | None) -> _DcView:
        """Log ends from each owner broker (only an owner knows its partition's end).

        ``topics`` None: every topic; empty: nothing to read.
        """
        view = _DcView()
        if topics is not None and not topics:
            return view
        conns = self.connections(dc)
        request = pb.MetadataRequest(topics=topics or [])
        try:
            first: pb.MetadataResponse = conns.call_any("Metadata", request, timeout=self.timeout_s)
        except TalosError as exc:
            view.error = f"no broker answered ({', '.join(dc.brokers)}): {exc}"
            return view
        view.brokers = {b.id: b.address for b in first.brokers}
        for info in first.topics:
            if info.error.code:
                view.unknown_topics.add(info.name)
                continue
            view.partitions[info.name] = len(info.partitions)
            for p in info.partitions:
                view.owners[(info.name, p.partition)] = p.owner_id
        failed = []
        for owner in sorted({o for o in view.owners.values() if o}):
            address = view.brokers.get(owner)
            if not address:
                continue
            try:
                response: pb.MetadataResponse = conns.call(
                    address, "Metadata", request, timeout=self.timeout_s
                )
            except TalosError:
                failed.append(f"{owner} at {address}")
                continue
            for info in response.topics:
                for p in info.partitions:
                    key = (info.name, p.partition)
                    if p.log_end >= 0 and view.owners.get(key) == owner:
                        view.ends[key] = p.log_end
        if failed:
            log.debug("brokers of %s did not answer: %s", dc.name, failed)
        return view

    def _oldest_unreplicated(
        self,
        source: Datacenter,
        source_view: _DcView,
        keys: Mapping[tuple[str, int], str],
        target_view: _DcView,
        target_zk: _TargetZk,
    ) -> dict[tuple[str, int], int]:
        """First timestamp of the source batch at each lagging partition's target end.

        One Fetch per source owner; any failure just leaves the estimate out.
        """
        wanted: dict[str, list[tuple[str, int, int]]] = {}
        for (target_topic, p), source_topic in keys.items():
            source_end = source_view.ends.get((source_topic, p))
            target_end = target_view.ends.get((target_topic, p))
            if target_zk.missing(target_view, target_topic, p):
                target_end = 0
            if source_end is None or target_end is None or source_end <= target_end:
                continue
            address = source_view.brokers.get(source_view.owners.get((source_topic, p), ""))
            if address:
                wanted.setdefault(address, []).append((source_topic, p, target_end))
        conns = self.connections(source)
        found: dict[tuple[str, int], int] = {}
        requests = [
            (address, parts[i : i + _FETCH_PARTITIONS])
            for address, parts in wanted.items()
            for i in range(0, len(parts), _FETCH_PARTITIONS)
        ]
        for address, parts in requests:
            # max_bytes 1: the broker returns just the (whole) first batch.
            request = pb.FetchRequest(
                partitions=[
                    pb.FetchPartition(topic=t, partition=p, offset=offset, max_bytes=1)
                    for t, p, offset in parts
                ],
                max_wait_ms=0,
            )
            try:
                response: pb.FetchResponse = conns.call(
                    address, "Fetch", request, timeout=self.timeout_s
                )
            except TalosError:
                continue
            for result in response.results:
                if result.error.code or not result.records:
                    continue
                try:
                    found[(result.topic, result.partition)] = parse_header(
                        result.records
                    ).first_timestamp
                except TalosError:
                    continue
        return found


def _close_zk(client: KazooClient) -> None:
    try:
        client.stop()
        client.close()
    except Exception:  # closing a dead session must not fail the status command
        log.debug("closing a ZooKeeper client failed", exc_info=True)


def read_status(
    topology: Topology,
    links: Sequence[Link],
    reader: StatusReader,
    stall_after_ms: int,
    lagging_after_ms: int = DEFAULT_LAGGING_AFTER_MS,
) -> list[LinkStatus]:
    """Read and compute the status of each link (never raises for an unreachable DC)."""
    out = []
    for link in links:
        inputs = reader.read(link)
        out.append(build_status(inputs, reader.clock.wall_ms(), stall_after_ms, lagging_after_ms))
    return out
