"""Idempotent-producer bookkeeping for one partition.

A retried batch must get its original offsets and never be written twice,
even after the partition moves to another broker: the new owner rebuilds
this state from the log tail. Decisions here are pure; the partition log
applies them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from talos.errors import OutOfOrderSequence, ProducerFenced

# Batches remembered per producer. The client keeps one batch in flight per
# partition, so one would do; a few more cost nothing and absorb reorderings.
REMEMBERED_BATCHES = 5


class BatchIdentity(NamedTuple):
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int


@dataclass
class ProducerEntry:
    epoch: int
    last_sequence: int
    # (base_sequence, base_offset) of recent batches, oldest first
    recent: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=REMEMBERED_BATCHES))


class Duplicate(NamedTuple):
    base_offset: int


class ProducerStates:
    """Producer id -> its last sequence and recent batches, for one partition."""

    def __init__(self) -> None:
        self._entries: dict[int, ProducerEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, batch: BatchIdentity) -> Duplicate | None:
        """None: append it. Duplicate: already stored at that offset. Raises when invalid."""
        if batch.producer_id < 0:
            return None
        entry = self._entries.get(batch.producer_id)
        if entry is None:
            return None
        if batch.producer_epoch < entry.epoch:
            raise ProducerFenced(
                f"producer {batch.producer_id} epoch {batch.producer_epoch} is older than "
                f"epoch {entry.epoch}"
            )
        if batch.producer_epoch > entry.epoch:
            if batch.base_sequence != 0:
                raise OutOfOrderSequence(
                    f"producer {batch.producer_id}: a new epoch must start at sequence 0, "
                    f"got {batch.base_sequence}"
                )
            return None
        for base_sequence, base_offset in entry.recent:
            if base_sequence == batch.base_sequence:
                return Duplicate(base_offset)
        if batch.base_sequence != entry.last_sequence + 1:
            raise OutOfOrderSequence(
                f"producer {batch.producer_id}: expected sequence {entry.last_sequence + 1}, "
                f"got {batch.base_sequence}"
            )
        return None

    def record(self, batch: BatchIdentity, base_offset: int) -> None:
        """Remember a batch that was written at base_offset."""
        if batch.producer_id < 0 or batch.base_sequence < 0:
            return
        entry = self._entries.get(batch.producer_id)
        if entry is None or batch.producer_epoch > entry.epoch:
            entry = ProducerEntry(epoch=batch.producer_epoch, last_sequence=-1)
            self._entries[batch.producer_id] = entry
        entry.last_sequence = batch.base_sequence + batch.record_count - 1
        entry.recent.append((batch.base_sequence, base_offset))
