"""The history checker: pure functions from recorded events to anomalies.

No I/O and no clock: the same history always gives the same report, so a
failing run can be re-checked and the checker is tested with hand-made
histories (tests/unit/test_chaos_checker.py).

A *log* is one topic in one datacenter, keyed ``(dc, topic)``. The kinds:

- ``lost-write``: acknowledged at (p, o); some reader read p beyond o; nobody
  ever read the value.
- ``unseen``: acknowledged, but absent from the final drain of its log.
- ``duplicate``: one value read at two different (partition, offset).
- ``inconsistent-offset``: one (partition, offset) read with two values.
- ``non-monotonic``: within one reader session a partition's offsets went back
  or repeated.
- ``poll-skip``: within one reader session an offset was jumped over (offsets
  are dense), or the first read was not at the position the session started at.
- ``aborted-read``: a value whose send failed *definitely* was read.
- ``phantom``: a value read that nobody sent (corrupt bytes delivered).
- ``fenced-ack``: an acknowledgement the final log contradicts: two values
  acknowledged at one offset, a value read at another offset than its ack,
  or the drained log holding something else (or nothing) at the acked offset.
- ``mirror-mismatch``: a mirror target holds, at some offset, a value other
  than its source holds there, or an offset past the source's end.
- ``corrupt-read``: a reader got a CRC or framing error (CorruptBatch) on data
  nobody destroyed on purpose: corruption reached the acknowledged log.
- ``divergence``: per datacenter and partition, a copy whose final log is not
  equal to the source's final log (first differing offset and both lengths).
- ``old-incarnation``: the final log of a topic the nemesis deleted and
  recreated serves a value acknowledged by a deleted incarnation.

A topic the nemesis deleted and recreated (``nemesis`` events of kind
``recreate``: ``start`` when the delete begins, ``recreated`` once the new
incarnation exists) has several incarnations; acknowledged writes of a deleted
one are legitimately gone. Relative to the last recreate, a value is *current*
when its send began after the new incarnation existed (nothing else can store
it: the old one is fenced before it is deleted); it is checked as always
(present at its acknowledged offset). It is *gone* when its ack came before
the delete began: it must not be served by the final log. Anything between is
*unknown* (acknowledged by either): missing is fine, but if the final log
holds it, it must be at the acknowledged offset. A recreated topic has no live
reader: an offset is reused across incarnations, so only the final drain reads it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

Event = Mapping[str, Any]
LogKey = tuple[str, str]  # (dc, topic)

ANOMALY_KINDS = (
    "lost-write",
    "unseen",
    "duplicate",
    "inconsistent-offset",
    "non-monotonic",
    "poll-skip",
    "aborted-read",
    "phantom",
    "fenced-ack",
    "corrupt-read",
    "mirror-mismatch",
    "divergence",
    "old-incarnation",
)

#: How many anomalies of one kind are listed in full; the counts are always exact.
MAX_LISTED_PER_KIND = 50


@dataclass(frozen=True)
class Anomaly:
    kind: str
    dc: str
    topic: str
    partition: int | None = None
    offset: int | None = None
    value: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckResult:
    anomalies: list[Anomaly] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(ANOMALY_KINDS, 0)
        for anomaly in self.anomalies:
            counts[anomaly.kind] = counts.get(anomaly.kind, 0) + 1
        return counts

    @property
    def ok(self) -> bool:
        return not self.anomalies

    def to_dict(self) -> dict[str, Any]:
        listed: dict[str, int] = defaultdict(int)
        shown = []
        for anomaly in self.anomalies:
            listed[anomaly.kind] += 1
            if listed[anomaly.kind] <= MAX_LISTED_PER_KIND:
                shown.append(anomaly.to_dict())
        return {"ok": self.ok, "counts": self.counts, "stats": self.stats, "anomalies": shown}

    def summary(self) -> str:
        """A few lines for a person: the verdict, the counts, the first few anomalies."""
        counts = {k: v for k, v in self.counts.items() if v}
        stats = ", ".join(f"{k}={v}" for k, v in sorted(self.stats.items()))
        if not counts:
            return f"OK: no anomalies ({stats})"
        lines = [
            "FAIL: " + ", ".join(f"{k}={v}" for k, v in counts.items()),
            f"({stats})",
        ]
        for anomaly in self.anomalies[:10]:
            where = f"{anomaly.dc}/{anomaly.topic}"
            if anomaly.partition is not None:
                where += f"/{anomaly.partition}"
            if anomaly.offset is not None:
                where += f"@{anomaly.offset}"
            value = f" value={anomaly.value}" if anomaly.value is not None else ""
            lines.append(f"  {anomaly.kind}: {where}{value} {anomaly.detail}".rstrip())
        return "\n".join(lines)


@dataclass
class _Log:
    """Everything the history says about one (dc, topic)."""

    sent: dict[str, int | None] = field(default_factory=dict)  # value -> partition asked for
    acks: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    definite_failures: set[str] = field(default_factory=set)
    # (partition, offset) -> values read there (live and drain)
    at: dict[tuple[int, int], set[str]] = field(default_factory=lambda: defaultdict(set))
    # value -> (partition, offset) it was read at
    where: dict[str, set[tuple[int, int]]] = field(default_factory=lambda: defaultdict(set))
    max_read: dict[int, int] = field(default_factory=dict)  # partition -> highest offset read
    drain: dict[tuple[int, int], str] = field(default_factory=dict)
    drain_end: dict[int, int] = field(default_factory=dict)
    drained: bool = False
    # values the nemesis destroyed on purpose (corrupted acknowledged data): they
    # may be missing, but never misplaced or altered
    destroyed: set[str] = field(default_factory=set)
    # a topic the nemesis deleted and recreated: (delete began, new incarnation existed)
    recreates: list[tuple[float, float | None]] = field(default_factory=list)
    sent_t: dict[str, float] = field(default_factory=dict)  # value -> when its send began
    ack_t: dict[str, float] = field(default_factory=dict)  # value -> its first ack


def _int(event: Event, name: str) -> int:
    return int(event[name])


def _collect(
    events: Iterable[Event],
) -> tuple[dict[LogKey, _Log], list[Event], list[Event], list[Event]]:
    logs: dict[LogKey, _Log] = defaultdict(_Log)
    reads: list[Event] = []
    mirrors: list[Event] = []
    errors: list[Event] = []
    for event in events:
        kind = event.get("type")
        if kind == "mirror":
            mirrors.append(event)
            continue
        if kind == "nemesis":
            if event.get("kind") == "recreate":
                if "dc" in event and "topic" in event:  # the start and recreated phases
                    _note_recreate(logs[(str(event["dc"]), str(event["topic"]))], event)
                continue
            if event.get("destroyed"):
                destroyed = logs[(str(event["dc"]), str(event["topic"]))].destroyed
                destroyed.update(str(v) for v in event["destroyed"])
            continue
        if kind == "read-error":
            if not event.get("expected") and event.get("error") == "CorruptBatch":
                errors.append(event)
            continue
        if kind not in ("send", "ack", "fail", "read", "drain", "drain-end", "assign"):
            continue
        log = logs[(str(event["dc"]), str(event["topic"]))]
        if kind == "send":
            partition = event.get("partition")
            log.sent[str(event["value"])] = None if partition is None else int(partition)
            log.sent_t.setdefault(str(event["value"]), float(event.get("t", 0.0)))
        elif kind == "ack":
            log.acks[str(event["value"])].append((_int(event, "partition"), _int(event, "offset")))
            log.ack_t.setdefault(str(event["value"]), float(event.get("t", 0.0)))
        elif kind == "fail":
            if event.get("definite"):
                log.definite_failures.add(str(event["value"]))
        elif kind == "drain-end":
            log.drained = True
            log.drain_end[_int(event, "partition")] = _int(event, "log_end")
        elif kind in ("read", "drain", "assign"):
            if kind != "assign":
                partition, offset = _int(event, "partition"), _int(event, "offset")
                value = str(event["value"])
                log.at[(partition, offset)].add(value)
                log.where[value].add((partition, offset))
                log.max_read[partition] = max(log.max_read.get(partition, -1), offset)
                if kind == "drain":
                    log.drained = True
                    log.drain[(partition, offset)] = value
            if kind != "drain":
                reads.append(event)
    return logs, reads, mirrors, errors


def _sources(mirrors: Sequence[Event]) -> dict[LogKey, LogKey]:
    """target log -> the source log it copies."""
    return {
        (str(m["target_dc"]), str(m["target_topic"])): (str(m["source_dc"]), str(m["source_topic"]))
        for m in mirrors
    }


def _root(key: LogKey, sources: Mapping[LogKey, LogKey]) -> LogKey:
    """The log where a value was produced (follows mirror chains, cycle-safe)."""
    seen = {key}
    while key in sources and sources[key] not in seen:
        key = sources[key]
        seen.add(key)
    return key


def check(events: Iterable[Event]) -> CheckResult:
    """Every anomaly in the history, and counts of what it holds."""
    events = list(events)
    logs, reads, mirrors, errors = _collect(events)
    sources = _sources(mirrors)
    result = CheckResult()
    out = result.anomalies
    for error in errors:
        partition, offset = error.get("partition"), error.get("offset")
        out.append(
            Anomaly(
                "corrupt-read",
                str(error["dc"]),
                str(error["topic"]),
                None if partition is None else int(partition),
                None if offset is None else int(offset),
                None,
                str(error.get("detail", "")),
            )
        )

    for key in sorted(logs):
        log = logs[key]
        origin = logs.get(_root(key, sources), log)
        is_copy = key in sources
        dc, topic = key
        _check_reads(dc, topic, log, origin, out)
        if not is_copy:
            if log.recreates:
                _check_incarnations(dc, topic, log, out)
            _check_acks(dc, topic, log, out)
    _check_sessions(reads, out)
    for target, source in sorted(sources.items()):
        _check_mirror(target, source, logs, out)

    result.stats = {
        "sends": sum(len(log.sent) for log in logs.values()),
        "acked": sum(len(log.acks) for log in logs.values()),
        "definite_failures": sum(len(log.definite_failures) for log in logs.values()),
        "reads": sum(1 for e in events if e.get("type") == "read"),
        "drained": sum(len(log.drain) for log in logs.values()),
        # reads that hit data the nemesis destroyed on purpose and got an error, as they must
        "expected_read_errors": sum(
            1 for e in events if e.get("type") == "read-error" and e.get("expected")
        ),
        "recreates": sum(
            1 for e in events if e.get("kind") == "recreate" and e.get("phase") == "recreated"
        ),
    }
    return result


# ---- topics deleted and recreated during the run (issue 11 §1) ------------------------


def _note_recreate(log: _Log, event: Event) -> None:
    t = float(event.get("t", 0.0))
    if event.get("phase") == "start":
        log.recreates.append((t, None))
    elif event.get("phase") == "recreated" and log.recreates:
        log.recreates[-1] = (log.recreates[-1][0], t)


def incarnation_of(
    sent_t: float | None, ack_t: float, recreates: Sequence[tuple[float, float | None]]
) -> str:
    """ "current", "gone" or "unknown": whose acknowledged write this is (module docstring)."""
    deleted_at, created_at = recreates[-1]
    if created_at is not None and sent_t is not None and sent_t >= created_at:
        return "current"
    if ack_t < deleted_at:
        return "gone"
    return "unknown"


def _check_incarnations(dc: str, topic: str, log: _Log, out: list[Anomaly]) -> None:
    """Take the acks of deleted incarnations out of ``log.acks`` (the usual checks then
    see only the current incarnation's) and check them on their own terms."""
    for value in sorted(log.acks):
        fate = incarnation_of(log.sent_t.get(value), log.ack_t[value], log.recreates)
        if fate == "current":
            continue
        acks = log.acks.pop(value)
        drained_at = sorted(place for place in log.where.get(value, ()) if place in log.drain)
        if not drained_at:
            continue
        partition, offset = drained_at[0]
        if fate == "gone":
            out.append(
                Anomaly(
                    "old-incarnation",
                    dc,
                    topic,
                    partition,
                    offset,
                    value,
                    f"acknowledged at {acks[0]} before the topic was deleted, still served",
                )
            )
        elif set(drained_at) - set(acks):
            out.append(
                Anomaly(
                    "fenced-ack",
                    dc,
                    topic,
                    partition,
                    offset,
                    value,
                    f"acknowledged at {sorted(set(acks))} but the final log holds it at "
                    f"{drained_at}",
                )
            )


def _check_reads(dc: str, topic: str, log: _Log, origin: _Log, out: list[Anomaly]) -> None:
    for (partition, offset), values in sorted(log.at.items()):
        if len(values) > 1:
            out.append(
                Anomaly(
                    "inconsistent-offset",
                    dc,
                    topic,
                    partition,
                    offset,
                    None,
                    f"values read: {sorted(values)}",
                )
            )
    for value, places in sorted(log.where.items()):
        if len(places) > 1:
            out.append(
                Anomaly("duplicate", dc, topic, None, None, value, f"read at {sorted(places)}")
            )
        partition, offset = min(places)
        if value not in origin.sent:
            out.append(
                Anomaly("phantom", dc, topic, partition, offset, value, "never sent by anyone")
            )
        elif value in origin.definite_failures:
            out.append(
                Anomaly(
                    "aborted-read", dc, topic, partition, offset, value, "its send failed for sure"
                )
            )


def _check_acks(dc: str, topic: str, log: _Log, out: list[Anomaly]) -> None:
    by_offset: dict[tuple[int, int], set[str]] = defaultdict(set)
    for value, acks in log.acks.items():
        for place in acks:
            by_offset[place].add(value)
    for (partition, offset), values in sorted(by_offset.items()):
        if len(values) > 1:
            out.append(
                Anomaly(
                    "fenced-ack",
                    dc,
                    topic,
                    partition,
                    offset,
                    None,
                    f"{len(values)} values acknowledged at one offset: {sorted(values)}",
                )
            )
    for value in sorted(log.acks):
        acks = log.acks[value]
        places = set(acks)
        if len(places) > 1:
            out.append(
                Anomaly(
                    "fenced-ack", dc, topic, None, None, value, f"acknowledged at {sorted(places)}"
                )
            )
        partition, offset = acks[0]
        seen_at = log.where.get(value, set())
        if seen_at - places:
            out.append(
                Anomaly(
                    "fenced-ack",
                    dc,
                    topic,
                    partition,
                    offset,
                    value,
                    f"acknowledged at offset {offset} but read at {sorted(seen_at - places)}",
                )
            )
        if value in log.destroyed:
            continue  # may be missing; a misplaced copy was reported above
        if not seen_at and log.max_read.get(partition, -1) > offset:
            out.append(
                Anomaly(
                    "lost-write",
                    dc,
                    topic,
                    partition,
                    offset,
                    value,
                    f"never read although offset {log.max_read[partition]} was",
                )
            )
        if log.drained:
            drained_value = log.drain.get((partition, offset))
            if not _drained(log, value):
                out.append(
                    Anomaly("unseen", dc, topic, partition, offset, value, "not in the final drain")
                )
            if drained_value is not None and drained_value != value:
                out.append(
                    Anomaly(
                        "fenced-ack",
                        dc,
                        topic,
                        partition,
                        offset,
                        value,
                        f"the final log holds {drained_value} at the acknowledged offset",
                    )
                )
            elif drained_value is None and offset >= log.drain_end.get(partition, 0):
                out.append(
                    Anomaly(
                        "fenced-ack",
                        dc,
                        topic,
                        partition,
                        offset,
                        value,
                        f"the final log of partition {partition} ends at "
                        f"{log.drain_end.get(partition, 0)}",
                    )
                )


def _drained(log: _Log, value: str) -> bool:
    return any(place in log.drain for place in log.where.get(value, ()))


def _check_sessions(reads: Sequence[Event], out: list[Anomaly]) -> None:
    """Per reader session and partition, offsets must go up one by one."""
    sessions: dict[tuple[str, str, str, Any, int], list[Event]] = defaultdict(list)
    for event in reads:
        key = (
            str(event["dc"]),
            str(event["topic"]),
            str(event.get("proc", "")),
            event.get("session", 0),
            _int(event, "partition"),
        )
        sessions[key].append(event)
    for (dc, topic, proc, session, partition), items in sorted(
        sessions.items(), key=lambda kv: tuple(str(x) for x in kv[0])
    ):
        items.sort(key=lambda e: (int(e.get("n", 0)), float(e.get("t", 0.0))))
        previous: int | None = None
        for event in items:
            offset = _int(event, "offset")
            if event["type"] == "assign":
                previous = offset - 1
                continue
            if previous is not None:
                if offset <= previous:
                    out.append(
                        Anomaly(
                            "non-monotonic",
                            dc,
                            topic,
                            partition,
                            offset,
                            str(event.get("value")),
                            f"reader {proc} session {session} read {offset} after {previous}",
                        )
                    )
                elif offset > previous + 1:
                    out.append(
                        Anomaly(
                            "poll-skip",
                            dc,
                            topic,
                            partition,
                            offset,
                            str(event.get("value")),
                            f"reader {proc} session {session} jumped from {previous} to {offset}",
                        )
                    )
            previous = offset if previous is None else max(previous, offset)


def _check_mirror(
    target: LogKey, source: LogKey, logs: Mapping[LogKey, _Log], out: list[Anomaly]
) -> None:
    tlog, slog = logs.get(target), logs.get(source)
    if tlog is None or slog is None or not slog.drained:
        return
    dc, topic = target
    # Offset for offset: what the target ever served must be what the source holds.
    for (partition, offset), values in sorted(tlog.at.items()):
        expected = slog.drain.get((partition, offset))
        if expected is None and offset >= slog.drain_end.get(partition, 0):
            out.append(
                Anomaly(
                    "mirror-mismatch",
                    dc,
                    topic,
                    partition,
                    offset,
                    None,
                    f"past the source {source[0]}/{source[1]} end "
                    f"{slog.drain_end.get(partition, 0)}",
                )
            )
        elif expected is not None and values != {expected}:
            out.append(
                Anomaly(
                    "mirror-mismatch",
                    dc,
                    topic,
                    partition,
                    offset,
                    None,
                    f"target has {sorted(values)}, source {source[0]} has {expected}",
                )
            )
    if not tlog.drained:
        return
    for partition in sorted(set(slog.drain_end) | set(tlog.drain_end)):
        source_end = slog.drain_end.get(partition, 0)
        target_end = tlog.drain_end.get(partition, 0)
        first = _first_difference(slog, tlog, partition, max(source_end, target_end))
        if first is not None or source_end != target_end:
            at = first if first is not None else min(source_end, target_end)
            out.append(
                Anomaly(
                    "divergence",
                    dc,
                    topic,
                    partition,
                    at,
                    None,
                    f"{dc} differs from source {source[0]} from offset {at} "
                    f"(lengths {target_end} vs {source_end})",
                )
            )


def _first_difference(a: _Log, b: _Log, partition: int, end: int) -> int | None:
    for offset in range(end):
        if a.drain.get((partition, offset)) != b.drain.get((partition, offset)):
            return offset
    return None


# ---- availability ------------------------------------------------------------------


@dataclass(frozen=True)
class Unavailability:
    killed_at: float  # wall seconds
    node: str
    dc: str
    topic: str
    partition: int
    seconds: float  # inf: never acknowledged again within the history
    # another fault started before the partition was back: the sample measures both
    confounded: bool = False


def kill_unavailability(events: Iterable[Event]) -> list[float]:
    """Seconds from each SIGKILL until the first ack on each partition the victim owned.

    Only acks of values *sent* after the kill count, so a reply already in
    flight when the broker died does not make it look available. A partition
    that never came back within the history counts as infinite. Samples where
    another fault started before the partition was back are left out (they
    measure two faults); :func:`kill_unavailability_samples` has them all.
    """
    return [s.seconds for s in kill_unavailability_samples(events) if not s.confounded]


def kill_unavailability_samples(events: Iterable[Event]) -> list[Unavailability]:
    """The samples behind :func:`kill_unavailability`, with what was killed and where."""
    events = list(events)
    sent_at: dict[str, float] = {}
    acks: dict[tuple[str, str, int], list[tuple[float, str]]] = defaultdict(list)
    kills: list[tuple[float, str, list[tuple[str, str, int]]]] = []
    fault_starts: list[float] = []
    for event in events:
        kind = event.get("type")
        if kind == "send":
            sent_at[str(event["value"])] = float(event["t"])
        elif kind == "ack":
            key = (str(event["dc"]), str(event["topic"]), _int(event, "partition"))
            acks[key].append((float(event["t"]), str(event["value"])))
        elif kind == "nemesis" and event.get("phase") == "start":
            if event.get("kind") == "kill":
                owned = [(str(d), str(t), int(p)) for d, t, p in event.get("partitions", [])]
                kills.append((float(event["t"]), str(event.get("node", "")), owned))
            fault_starts.append(float(event["t"]))
    out: list[Unavailability] = []
    for killed_at, node, owned in kills:
        # the next fault; a corrupt-tail is recorded right after its own kill
        later = [t for t in fault_starts if t > killed_at + 1.0]
        next_fault = min(later, default=math.inf)
        for key in owned:
            times = [
                t for t, value in acks.get(key, []) if sent_at.get(value, -math.inf) >= killed_at
            ]
            back = min(times, default=math.inf)
            out.append(
                Unavailability(
                    killed_at,
                    node,
                    key[0],
                    key[1],
                    key[2],
                    back - killed_at,
                    confounded=next_fault < back,
                )
            )
    return out


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]
