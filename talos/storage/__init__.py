"""Where segments live: the LogStore protocol, its backends, segment files and indexes."""

from talos.storage.index import IndexEntry, SparseIndexBuilder, load_indexes, write_indexes
from talos.storage.posix import PosixLogStore
from talos.storage.segment import (
    ScanResult,
    fence_marker_path,
    find_position,
    find_time_position,
    parse_segment_name,
    partition_dir,
    read_batches,
    scan_segment,
    segment_name,
    segment_path,
    should_roll,
)
from talos.storage.store import AppendStream, Durability, LogStore

__all__ = [
    "AppendStream",
    "Durability",
    "IndexEntry",
    "LogStore",
    "PosixLogStore",
    "ScanResult",
    "SparseIndexBuilder",
    "fence_marker_path",
    "find_position",
    "find_time_position",
    "load_indexes",
    "parse_segment_name",
    "partition_dir",
    "read_batches",
    "scan_segment",
    "segment_name",
    "segment_path",
    "should_roll",
    "write_indexes",
]
