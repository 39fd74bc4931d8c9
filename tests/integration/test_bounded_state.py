"""Issue 12 §4 against a real broker: the open segment keeps a sparse index, and reads
from any offset in it still return the batch that holds that offset."""

from __future__ import annotations

import random

import pytest

from talos.client import Admin
from talos.errors import ErrorCode
from talos.record import Record, decode_all, encode_batch
from talos.testing.cluster import LocalCluster
from tests.integration.test_bad_input import owner_address, raw_fetch, raw_produce

pytestmark = pytest.mark.integration


def test_reads_from_any_offset_of_the_open_segment(cluster: LocalCluster) -> None:
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic("sparse", 1)
        admin.wait_until_ready("sparse")
    owner = owner_address(cluster.bootstrap, "sparse", 0)
    offset = 0
    starts = []
    rng = random.Random(7)
    for i in range(300):  # about 60 KB of batches of 1-3 records: many index intervals
        values = [b"%d-%d" % (i, j) + b"x" * rng.randrange(20, 80) for j in range(i % 3 + 1)]
        result = raw_produce(owner, "sparse", 0, encode_batch([Record(v) for v in values]))
        assert result.error.code == ErrorCode.NONE and result.base_offset == offset
        starts.append((offset, values))
        offset += len(values)
    for wanted in [*rng.sample(range(offset), 60), 0, offset - 1]:
        result = raw_fetch(owner, "sparse", 0, wanted)
        assert result.error.code == ErrorCode.NONE, result
        records = decode_all(result.records)
        holder = max(s for s, _ in starts if s <= wanted)
        assert records[0].offset == holder, (wanted, records[0].offset)
        assert [r.value for r in records[: len(dict(starts)[holder])]] == dict(starts)[holder]
