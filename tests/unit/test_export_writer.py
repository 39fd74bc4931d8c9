"""The Parquet writer on a real directory: columns, row-group sizing, nothing partial."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from talos.client.consumer import Message
from talos.export.destination import open_destination
from talos.export.parquet import SCHEMA, Row, row_bytes, table_rows, write_parquet
from talos.export.plan import temp_name


def messages(count: int, partition: int = 0, size: int = 100) -> list[Message]:
    return [
        Message(
            "t",
            partition,
            offset,
            None if offset % 3 == 0 else f"k{offset}".encode(),
            None if offset % 5 == 0 else bytes([offset % 251]) * size,
            (("h", b"v"), ("n", None)) if offset % 2 else (),
            1_700_000_000_000 + offset,
        )
        for offset in range(count)
    ]


def rows_of(path: Path) -> list[Row]:
    return table_rows(pq.read_table(path))


def test_rows_read_back_equal_the_messages_with_zstd_and_metadata(tmp_path: Path) -> None:
    sent = messages(50)
    destination = open_destination(str(tmp_path / "out"))
    rows = write_parquet(destination, "part-00000.parquet", iter(sent), {"topic": "t"})
    destination.publish(temp_name("part-00000.parquet"), "part-00000.parquet")
    path = tmp_path / "out" / "part-00000.parquet"
    assert rows == 50
    assert rows_of(path) == [
        (m.partition, m.offset, m.timestamp_ms, m.key, m.value, m.headers) for m in sent
    ]
    parquet = pq.ParquetFile(path)
    assert parquet.schema_arrow.remove_metadata() == SCHEMA
    assert parquet.schema_arrow.metadata[b"talos.topic"] == b"t"
    assert parquet.metadata.row_group(0).column(4).compression == "ZSTD"


def test_row_groups_close_once_their_size_is_reached(tmp_path: Path) -> None:
    sent = messages(200, size=1000)
    limit = 20_000
    destination = open_destination(str(tmp_path))
    write_parquet(destination, "f.parquet", iter(sent), {}, row_group_bytes=limit)
    meta = pq.ParquetFile(tmp_path / temp_name("f.parquet")).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sum(sizes) == 200 and len(sizes) > 5
    offset = 0
    for count in sizes[:-1]:  # each closes with the row that reached the limit
        group = sent[offset : offset + count]
        assert sum(row_bytes(m) for m in group) >= limit
        assert sum(row_bytes(m) for m in group[:-1]) < limit
        offset += count


def test_a_failure_while_writing_leaves_no_file(tmp_path: Path) -> None:
    def broken() -> Iterator[Message]:
        yield from messages(30)
        raise RuntimeError("source failed")

    destination = open_destination(str(tmp_path))
    with pytest.raises(RuntimeError, match="source failed"):
        write_parquet(destination, "f.parquet", broken(), {}, row_group_bytes=500)
    assert list(tmp_path.iterdir()) == []
