"""What an export run reads: the decisions, free of I/O.

An export directory holds Parquet files and one manifest. The manifest lists
every data file with the offset ranges it holds per partition, and whether it
is ``committed`` (renamed to its final name) or still ``pending`` (its rename
may or may not have happened when the previous run stopped). A run first
settles pending entries by looking at which final files exist, then exports
the requested range minus what committed files already hold, so a rerun adds
only new messages and never a duplicate.

Ranges are half-open ``[start, end)`` offsets; offsets are dense in a Talos
log, so a range names every message in it.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from talos.errors import InvalidArgument, OffsetOutOfRange

MANIFEST_FORMAT = 1
MANIFEST_NAME = "_talos_export.json"
DATA_PREFIX = "part-"
DATA_SUFFIX = ".parquet"
# Hive, Spark and pyarrow.dataset skip names that start with '.' or '_'.
TEMP_PREFIX = ".inprogress-"

Range = tuple[int, int]


class FileState(enum.StrEnum):
    PENDING = "pending"
    COMMITTED = "committed"


@dataclass(frozen=True)
class ManifestFile:
    name: str
    state: FileState
    rows: int
    ranges: Mapping[int, tuple[Range, ...]]


@dataclass(frozen=True)
class Manifest:
    topic: str
    files: tuple[ManifestFile, ...] = ()

    def committed_ranges(self) -> dict[int, list[Range]]:
        """Per partition, the merged ranges that committed files hold."""
        out: dict[int, list[Range]] = {}
        for f in self.files:
            if f.state == FileState.COMMITTED:
                for partition, ranges in f.ranges.items():
                    out.setdefault(partition, []).extend(ranges)
        return {p: merge(r) for p, r in out.items()}

    def next_file_name(self) -> str:
        return data_file_name(len(self.files))

    def with_file(self, entry: ManifestFile) -> Manifest:
        kept = tuple(f for f in self.files if f.name != entry.name)
        return replace(self, files=(*kept, entry))


def data_file_name(sequence: int) -> str:
    return f"{DATA_PREFIX}{sequence:05d}{DATA_SUFFIX}"


def temp_name(final: str) -> str:
    return f"{TEMP_PREFIX}{final}"


# ---- ranges -------------------------------------------------------------------------


def merge(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, with overlapping or touching ranges joined; empty ranges dropped."""
    out: list[Range] = []
    for start, end in sorted(r for r in ranges if r[0] < r[1]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def subtract(wanted: Range, done: Iterable[Range]) -> list[Range]:
    """The parts of ``wanted`` that no range in ``done`` covers, in offset order."""
    start, end = wanted
    out: list[Range] = []
    for d_start, d_end in merge(done):
        if d_end <= start or d_start >= end:
            continue
        if d_start > start:
            out.append((start, d_start))
        start = max(start, d_end)
    if start < end:
        out.append((start, end))
    return out


# ---- the request --------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """One end of the requested range, as the user gave it (at most one of the two)."""

    offset: int | None = None
    time_ms: int | None = None


@dataclass(frozen=True)
class PartitionLog:
    """What the owner reported for one partition when the run started.

    ``from_time_offset``/``to_time_offset``: the first offset at or after the
    requested time (ListOffsets), when the bound was a time.
    """

    partition: int
    log_start: int
    log_end: int
    from_time_offset: int | None = None
    to_time_offset: int | None = None


@dataclass(frozen=True)
class PartitionPlan:
    partition: int
    requested: Range
    todo: tuple[Range, ...] = field(default_factory=tuple)

    @property
    def messages(self) -> int:
        return sum(end - start for start, end in self.todo)


class RangeCursor:
    """Which offset of one partition's ranges comes next, as messages arrive.

    Fetches can return a message twice (after a seek, a batch is fetched again)
    but never skip one (offsets are dense), so only the next wanted offset is
    taken; a jump past it is an error rather than a silent hole in the export.
    """

    def __init__(self, partition: int, ranges: Iterable[Range]) -> None:
        self.partition = partition
        self.ranges = merge(ranges)
        self.next = self.ranges[0][0] if self.ranges else 0

    @property
    def done(self) -> bool:
        return not self.ranges

    def take(self, offset: int) -> bool:
        """True if ``offset`` is the one wanted next (then the cursor moves past it)."""
        if self.done or offset < self.next:
            return False
        if offset > self.next:
            raise OffsetOutOfRange(
                f"partition {self.partition}: offset {offset} arrived while {self.next} was "
                "expected; the log has a hole (retention removed it while exporting?)"
            )
        self.next += 1
        if self.next == self.ranges[0][1]:
            self.ranges.pop(0)
            if self.ranges:
                self.next = self.ranges[0][0]
        return True


def parse_partitions(text: str | None, count: int) -> list[int]:
    """``--partitions`` as ``0,2,5-7``; None means every partition."""
    if text is None:
        return list(range(count))
    allowed = f"partition numbers between 0 and {count - 1}, e.g. '0,2,5-7'"
    chosen: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                low_text, high_text = part.split("-", 1)
                low, high = int(low_text), int(high_text)
            else:
                low = high = int(part)
        except ValueError:
            raise InvalidArgument(f"--partitions: {part!r} is not a number; {allowed}") from None
        if not 0 <= low <= high < count:
            raise InvalidArgument(f"--partitions: {part!r} is out of range; {allowed}")
        chosen.update(range(low, high + 1))
    return sorted(chosen)


def plan_partition(
    log: PartitionLog, start: Bound, stop: Bound, committed: Iterable[Range]
) -> PartitionPlan:
    """The range to export from one partition, or InvalidArgument naming the bad bound.

    Without bounds the range is the whole log as it stands now (so a run ends,
    and a rerun picks up what came after).
    """
    committed = merge(committed)
    if committed and committed[-1][1] > log.log_end:
        raise InvalidArgument(
            f"--to: the export already holds partition {log.partition} up to offset "
            f"{committed[-1][1]}, past the log end {log.log_end}: the topic was deleted and "
            "recreated or truncated; export it to a new destination"
        )
    begin = _resolve("from", start, log, log.from_time_offset, log.log_start)
    end = _resolve("to", stop, log, log.to_time_offset, log.log_end)
    if end < begin:
        if start.offset is not None and stop.offset is not None:
            raise InvalidArgument(
                f"--to-offset: {stop.offset} is below --from-offset {start.offset}"
            )
        end = begin  # a time bound that selects nothing in this partition
    return PartitionPlan(log.partition, (begin, end), tuple(subtract((begin, end), committed)))


def _resolve(
    name: str, bound: Bound, log: PartitionLog, time_offset: int | None, default: int
) -> int:
    """One bound as an offset: given, found by time, or the log's own end of that side."""
    if bound.offset is not None:
        if not log.log_start <= bound.offset <= log.log_end:
            raise InvalidArgument(
                f"--{name}-offset: {bound.offset} is outside the log; partition "
                f"{log.partition}'s log is [{log.log_start}, {log.log_end}), so it must be "
                f"between {log.log_start} and {log.log_end}"
                + (" (exclusive end)" if name == "to" else "")
            )
        return bound.offset
    if bound.time_ms is not None:
        return log.log_end if time_offset is None else time_offset
    return default


def check_bounds(start: Bound, stop: Bound) -> None:
    """Bounds that contradict each other regardless of the log."""
    for name, bound in (("from", start), ("to", stop)):
        if bound.offset is not None and bound.time_ms is not None:
            raise InvalidArgument(f"--{name}-offset and --{name}-time: give at most one")
        if bound.offset is not None and bound.offset < 0:
            raise InvalidArgument(f"--{name}-offset: must be >= 0, got {bound.offset}")
        if bound.time_ms is not None and bound.time_ms < 0:
            raise InvalidArgument(f"--{name}-time: must not be before 1970, got {bound.time_ms}")
    if start.time_ms is not None and stop.time_ms is not None and stop.time_ms < start.time_ms:
        raise InvalidArgument("--to-time: must not be before --from-time")


# ---- recovery and the manifest's bytes ------------------------------------------------


def settle(manifest: Manifest, existing: Iterable[str]) -> Manifest:
    """Resolve pending entries after a stop: renamed means committed, else it never was."""
    present = set(existing)
    files = []
    for f in manifest.files:
        if f.state == FileState.PENDING:
            if f.name not in present:
                continue
            f = replace(f, state=FileState.COMMITTED)
        files.append(f)
    return replace(manifest, files=tuple(files))


def stale_temps(names: Iterable[str]) -> list[str]:
    """Temporary files of runs that stopped before publishing them."""
    return sorted(n for n in names if n.startswith(TEMP_PREFIX))


def encode_manifest(manifest: Manifest) -> bytes:
    data = {
        "format": MANIFEST_FORMAT,
        "topic": manifest.topic,
        "files": [
            {
                "name": f.name,
                "state": f.state.value,
                "rows": f.rows,
                "ranges": {
                    str(p): [list(r) for r in ranges] for p, ranges in sorted(f.ranges.items())
                },
            }
            for f in manifest.files
        ],
    }
    return (json.dumps(data, indent=1) + "\n").encode()


def decode_manifest(raw: bytes, where: str) -> Manifest:
    """Parse a manifest; a damaged one is an error naming the file (never guessed at)."""
    try:
        data = json.loads(raw)
        if data.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {MANIFEST_FORMAT}")
        files = tuple(
            ManifestFile(
                name=str(f["name"]),
                state=FileState(f["state"]),
                rows=int(f["rows"]),
                ranges={
                    int(p): tuple((int(s), int(e)) for s, e in ranges)
                    for p, ranges in f["ranges"].items()
                },
            )
            for f in data["files"]
        )
        return Manifest(topic=str(data["topic"]), files=files)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidArgument(f"--to: the export manifest {where} is damaged: {exc}") from None
