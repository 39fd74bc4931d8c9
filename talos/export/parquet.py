"""Export a topic to Parquet files (for Hive, Spark, pyarrow), resumably.

One run writes at most one data file: rows of every selected partition, in
offset order per partition, row groups of about ``row_group_bytes``, zstd.
The file is written under a temporary name that readers skip, synced, noted as
``pending`` in the manifest, renamed to its final name, and only then marked
``committed``; a run stopped at any point leaves no file that looks complete,
and the next run settles what it finds (see :mod:`talos.export.plan`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from talos.client.consumer import Consumer, Message, TopicPartition
from talos.errors import InvalidArgument, TalosError

from .destination import Destination, open_destination
from .plan import (
    Bound,
    FileState,
    Manifest,
    ManifestFile,
    PartitionLog,
    PartitionPlan,
    Range,
    RangeCursor,
    check_bounds,
    decode_manifest,
    encode_manifest,
    parse_partitions,
    plan_partition,
    settle,
    stale_temps,
    temp_name,
)

ROW_GROUP_BYTES = 64 << 20
FETCH_MAX_BYTES = 4 << 20
# partition (4) + offset (8) + timestamp (8) + list and null bookkeeping
_ROW_OVERHEAD = 24

HEADER_TYPE = pa.struct([("key", pa.string()), ("value", pa.binary())])
SCHEMA = pa.schema(
    [
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field("headers", pa.list_(HEADER_TYPE), nullable=False),
    ]
)


@dataclass(frozen=True)
class ExportResult:
    topic: str
    destination: str
    file: str | None  # None: nothing new to export
    rows: int
    ranges: dict[int, tuple[Range, ...]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "topic": self.topic,
                "destination": self.destination,
                "file": self.file,
                "rows": self.rows,
                "ranges": {str(p): [list(r) for r in rs] for p, rs in self.ranges.items()},
            }
        )


Row = tuple[int, int, int, bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...]]


def table_rows(table: pa.Table) -> list[Row]:
    """An exported table as (partition, offset, timestamp ms, key, value, headers) tuples."""
    return [
        (
            r["partition"],
            r["offset"],
            int(r["timestamp"].timestamp() * 1000),
            r["key"],
            r["value"],
            tuple((h["key"], h["value"]) for h in r["headers"]),
        )
        for r in table.to_pylist()
    ]


def row_bytes(message: Message) -> int:
    """The estimate that sizes row groups: payload bytes plus fixed columns."""
    size = _ROW_OVERHEAD + len(message.key or b"") + len(message.value or b"")
    for name, value in message.headers:
        size += len(name) + len(value or b"") + 8
    return size


class RowGroupWriter:
    """Buffers rows and writes one row group each time about ``row_group_bytes`` gather."""

    def __init__(self, writer: pq.ParquetWriter, row_group_bytes: int) -> None:
        self.writer = writer
        self.row_group_bytes = row_group_bytes
        self.rows = 0
        self._columns: tuple[list[object], ...] = ([], [], [], [], [], [])
        self._bytes = 0

    def add(self, message: Message) -> None:
        partition, offset, timestamp, key, value, headers = self._columns
        partition.append(message.partition)
        offset.append(message.offset)
        timestamp.append(message.timestamp_ms)
        key.append(message.key)
        value.append(message.value)
        headers.append([{"key": k, "value": v} for k, v in message.headers])
        self._bytes += row_bytes(message)
        if self._bytes >= self.row_group_bytes:
            self.flush()

    def flush(self) -> None:
        count = len(self._columns[0])
        if not count:
            return
        arrays = [
            pa.array(column, type=f.type) for column, f in zip(self._columns, SCHEMA, strict=True)
        ]
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=SCHEMA), row_group_size=count)
        self.rows += count
        self._columns = ([], [], [], [], [], [])
        self._bytes = 0


def write_parquet(
    destination: Destination,
    final: str,
    messages: Iterable[Message],
    metadata: dict[str, str],
    row_group_bytes: int = ROW_GROUP_BYTES,
) -> int:
    """Write ``messages`` to the temporary name of ``final``; the row count.

    On any error the temporary file is deleted, so nothing partial remains.
    """
    temp = temp_name(final)
    sink = destination.create(temp)
    try:
        schema = SCHEMA.with_metadata({f"talos.{k}": v for k, v in metadata.items()})
        with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
            rows = RowGroupWriter(writer, row_group_bytes)
            for message in messages:
                rows.add(message)
            rows.flush()
        sink.close()
    except BaseException:
        with contextlib.suppress(Exception):
            sink.close()
        with contextlib.suppress(TalosError):
            destination.delete(temp)
        raise
    return rows.rows


def read_ranges(
    consumer: Consumer,
    topic: str,
    plans: Sequence[PartitionPlan],
    on_progress: Callable[[int], None] = lambda done: None,
    poll_timeout_s: float = 1.0,
) -> Iterator[Message]:
    """Every message of the planned ranges, in offset order per partition, each once."""
    cursors = {p.partition: RangeCursor(p.partition, p.todo) for p in plans if p.todo}
    done = 0

    def assign() -> None:
        consumer.assign([TopicPartition(topic, p) for p in sorted(cursors)])

    assign()
    for partition, start in cursors.items():
        consumer.seek(TopicPartition(topic, partition), start.next)
    while cursors:
        finished = False
        for message in consumer.poll(timeout_s=poll_timeout_s):
            cursor = cursors.get(message.partition)
            if cursor is None or not cursor.take(message.offset):
                continue
            yield message
            done += 1
            if cursor.done:
                del cursors[message.partition]
                finished = True
            elif cursor.next != message.offset + 1:  # the next range starts further on
                consumer.seek(TopicPartition(topic, message.partition), cursor.next)
        on_progress(done)
        if finished and cursors:
            assign()
    on_progress(done)


def partition_logs(
    consumer: Consumer, topic: str, partitions: Sequence[int], start: Bound, stop: Bound
) -> list[PartitionLog]:
    """Each partition's log bounds (and time bounds as offsets), from its owner."""
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    logs = []
    for tp in tps:
        consumer.seek_to_beginning([tp])
        log_start = consumer.position(tp)
        consumer.seek_to_end([tp])
        log_end = consumer.position(tp)
        from_time = (
            consumer.seek_to_timestamp(tp, start.time_ms) if start.time_ms is not None else None
        )
        to_time = consumer.seek_to_timestamp(tp, stop.time_ms) if stop.time_ms is not None else None
        logs.append(PartitionLog(tp.partition, log_start, log_end, from_time, to_time))
    return logs


def export_parquet(
    bootstrap: str,
    topic: str,
    to: str,
    *,
    partitions: str | None = None,
    start: Bound | None = None,
    stop: Bound | None = None,
    row_group_bytes: int = ROW_GROUP_BYTES,
    on_plan: Callable[[int], None] = lambda total: None,
    on_progress: Callable[[int], None] = lambda done: None,
) -> ExportResult:
    """Export what is new in the requested range of ``topic`` to the directory ``to``."""
    start, stop = start or Bound(), stop or Bound()
    check_bounds(start, stop)
    if row_group_bytes < 1:
        raise InvalidArgument(f"row_group_bytes: must be >= 1, got {row_group_bytes}")
    destination = open_destination(to)
    try:
        raw = destination.read_manifest()
        manifest = Manifest(topic) if raw is None else decode_manifest(raw, f"in {to}")
        if manifest.topic != topic:
            raise InvalidArgument(
                f"--to: {to} holds an export of topic {manifest.topic!r}, not {topic!r}; "
                "give each topic its own directory"
            )
        consumer = Consumer(
            bootstrap, auto_offset_reset="none", enable_auto_commit=False,
            fetch_max_bytes=FETCH_MAX_BYTES,
        )  # fmt: skip
        try:
            count = consumer.router.route(topic).partitions
            chosen = parse_partitions(partitions, count)
            logs = partition_logs(consumer, topic, chosen, start, stop)
            names = destination.names()
            settled = settle(manifest, names)
            committed = settled.committed_ranges()
            plans = [
                plan_partition(log, start, stop, committed.get(log.partition, ())) for log in logs
            ]
            total = sum(p.messages for p in plans)
            destination.check_writable()
            for stale in stale_temps(names):
                destination.delete(stale)
            if settled != manifest:
                destination.write_manifest(encode_manifest(settled))
            manifest = settled
            if total == 0:
                return ExportResult(topic, to, None, 0)
            on_plan(total)
            final = manifest.next_file_name()
            ranges = {p.partition: p.todo for p in plans if p.todo}
            metadata = {
                "topic": topic,
                "ranges": json.dumps({str(p): [list(r) for r in rs] for p, rs in ranges.items()}),
            }
            rows = write_parquet(
                destination,
                final,
                read_ranges(consumer, topic, plans, on_progress),
                metadata,
                row_group_bytes,
            )
        finally:
            consumer.close()
        entry = ManifestFile(final, FileState.PENDING, rows, ranges)
        destination.write_manifest(encode_manifest(manifest.with_file(entry)))
        destination.publish(temp_name(final), final)
        committed_entry = ManifestFile(final, FileState.COMMITTED, rows, ranges)
        destination.write_manifest(encode_manifest(manifest.with_file(committed_entry)))
        return ExportResult(topic, to, final, rows, ranges)
    finally:
        destination.close()
