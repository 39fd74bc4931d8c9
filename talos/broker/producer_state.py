"""Idempotent-producer bookkeeping for one partition, its snapshots and its expiry.

A retried batch must get its original offsets and never be written twice,
even after the partition moves to another broker. Decisions (check, record,
expire) are pure; the partition log applies them.

The dedup guarantee: a retry of one of a producer's last ``REMEMBERED_BATCHES``
batches is answered with its original offset for as long as the producer has
written to the partition within ``expire_ms`` (default 7 days, Kafka's
``transactional.id.expiration.ms``), across owner moves. Longer idle, its entry
is forgotten and its next batch is taken as from a new producer.

Across owner moves the state travels in snapshots: at each roll (and at each
takeover) the owner writes the state as of the sealed segment's end next to it,
``<base>.<epoch>.producers``; the next owner loads the newest snapshot and
replays only the batches after it. Segments written before snapshots existed
fall back to replaying the last ``TAIL_BYTES`` of the log.

Snapshot layout (little-endian), CRC-checked; a bad or mismatched file loads as
None and the owner replays instead::

    magic        4 bytes  b"TPS1"
    end_offset   i64      the log offset the state is valid at (the segment's end)
    count        u32      entries
    per entry:
      producer_id   i64
      epoch         i32
      last_sequence i32
      last_seen_ms  i64   broker wall time of the producer's last batch
      recent        u8    n, then n x (base_sequence i32, base_offset i64), oldest first
    crc          u32      CRC-32C of everything before it
"""

from __future__ import annotations

import bisect
import itertools
import logging
import struct
from array import array
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from talos.errors import InvalidArgument, OutOfOrderSequence, ProducerFenced, StorageError
from talos.record.batch import BatchHeader, iter_batches
from talos.record.crc import crc32c
from talos.storage.store import LogStore

log = logging.getLogger(__name__)

# Batches remembered per producer. The client keeps one batch in flight per
# partition, so one would do; a few more cost little and absorb reorderings.
REMEMBERED_BATCHES = 5
DEFAULT_EXPIRE_MS = 7 * 24 * 3600 * 1000
# How often (broker wall time) the entries are scanned for expiry.
EXPIRE_SCAN_INTERVAL_MS = 60_000
# Replayed when no snapshot is found (logs written before snapshots existed).
TAIL_BYTES = 64 * 1024 * 1024
READ_CHUNK_BYTES = 1024 * 1024
# Segments looked at, newest first, for a snapshot (each roll and takeover writes one).
SNAPSHOT_SEARCH = 100
SNAPSHOT_SUFFIX = ".producers"

_MAGIC = b"TPS1"
_HEAD = struct.Struct("<4sqI")
_ENTRY = struct.Struct("<qiiqB")
_RECENT = struct.Struct("<iq")
_CRC = struct.Struct("<I")


class BatchIdentity(NamedTuple):
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int


class Duplicate(NamedTuple):
    base_offset: int


def _check_expire_ms(expire_ms: int) -> int:
    if isinstance(expire_ms, bool) or not isinstance(expire_ms, int) or expire_ms < 1:
        raise InvalidArgument(f"producer_expire_ms: must be an integer >= 1, got {expire_ms!r}")
    return expire_ms


# One producer's state in a fixed-size slot: epoch, last sequence, last seen (broker wall
# ms), how many recent batches, then REMEMBERED_BATCHES x (base_sequence, base_offset),
# oldest first.
_SLOT = struct.Struct("<iiqB3x" + "iq" * REMEMBERED_BATCHES)
_LAST_SEEN = struct.Struct("<q")
_LAST_SEEN_AT = 8
_SLOT_FIELDS = 4


class ProducerStates:
    """Producer id -> its last sequence and recent batches, for one partition.

    Kept as a sorted array of ids and a parallel bytearray of fixed-size slots: no
    Python object per producer, so a broker with a million producer entries holds
    about 100 MB less than with objects, and expiry gives the memory back (two large
    buffers are replaced, instead of small objects freed all over the heap).
    """

    def __init__(self, expire_ms: int = DEFAULT_EXPIRE_MS) -> None:
        self.expire_ms = _check_expire_ms(expire_ms)
        self._ids = array("q")
        self._slots = bytearray()
        self._next_scan_ms: int | None = None

    def __len__(self) -> int:
        return len(self._ids)

    def _find(self, producer_id: int) -> int:
        """The index of the producer's slot, or -1 - (where it would go)."""
        ids = self._ids
        i = bisect.bisect_left(ids, producer_id)
        if i < len(ids) and ids[i] == producer_id:
            return i
        return -1 - i

    def check(self, batch: BatchIdentity) -> Duplicate | None:
        """None: append it. Duplicate: already stored at that offset. Raises when invalid."""
        if batch.producer_id < 0:
            return None
        i = self._find(batch.producer_id)
        if i < 0:
            return None
        slot = _SLOT.unpack_from(self._slots, i * _SLOT.size)
        epoch, last_sequence, _, count = slot[:_SLOT_FIELDS]
        if batch.producer_epoch < epoch:
            raise ProducerFenced(
                f"producer {batch.producer_id} epoch {batch.producer_epoch} is older than "
                f"epoch {epoch}"
            )
        if batch.producer_epoch > epoch:
            if batch.base_sequence != 0:
                raise OutOfOrderSequence(
                    f"producer {batch.producer_id}: a new epoch must start at sequence 0, "
                    f"got {batch.base_sequence}"
                )
            return None
        for j in range(_SLOT_FIELDS, _SLOT_FIELDS + 2 * count, 2):
            if slot[j] == batch.base_sequence:
                return Duplicate(slot[j + 1])
        if batch.base_sequence != last_sequence + 1:
            raise OutOfOrderSequence(
                f"producer {batch.producer_id}: expected sequence {last_sequence + 1}, "
                f"got {batch.base_sequence}"
            )
        return None

    def record(self, batch: BatchIdentity, base_offset: int, now_ms: int) -> None:
        """Remember a batch that was written at base_offset, at broker wall time now_ms."""
        if batch.producer_id < 0 or batch.base_sequence < 0:
            return
        i = self._find(batch.producer_id)
        recent: tuple[int, ...] = ()
        last_seen = now_ms
        if i < 0:
            i = -1 - i
            self._ids.insert(i, batch.producer_id)
            at = i * _SLOT.size
            self._slots[at:at] = bytes(_SLOT.size)
        else:
            slot = _SLOT.unpack_from(self._slots, i * _SLOT.size)
            if batch.producer_epoch <= slot[0]:  # a new epoch starts afresh
                last_seen = max(slot[2], now_ms)
                recent = slot[_SLOT_FIELDS : _SLOT_FIELDS + 2 * slot[3]]
        recent = (*recent[-2 * (REMEMBERED_BATCHES - 1) :], batch.base_sequence, base_offset)
        self._store(i, batch.producer_epoch, batch.base_sequence + batch.record_count - 1,
                    last_seen, recent)  # fmt: skip

    def _store(
        self, i: int, epoch: int, last_sequence: int, last_seen: int, recent: Sequence[int]
    ) -> None:
        padding = (0,) * (2 * REMEMBERED_BATCHES - len(recent))
        _SLOT.pack_into(
            self._slots, i * _SLOT.size, epoch, last_sequence, last_seen, len(recent) // 2,
            *recent, *padding,
        )  # fmt: skip

    def expire(self, now_ms: int) -> int:
        """Forget producers idle for ``expire_ms`` or more; how many were forgotten."""
        cutoff = now_ms - self.expire_ms
        slots, size = self._slots, _SLOT.size
        keep = [
            i
            for i in range(len(self._ids))
            if _LAST_SEEN.unpack_from(slots, i * size + _LAST_SEEN_AT)[0] > cutoff
        ]
        forgotten = len(self._ids) - len(keep)
        if forgotten:
            view = memoryview(slots)
            self._ids = array("q", [self._ids[i] for i in keep])
            self._slots = bytearray(b"".join(view[i * size : (i + 1) * size] for i in keep))
            view.release()
        return forgotten

    def expire_due(self, now_ms: int) -> int:
        """:meth:`expire` at most once per scan interval of wall time (cheap to call often);
        a wall clock that went back counts as due."""
        due = self._next_scan_ms
        if due is not None and due - EXPIRE_SCAN_INTERVAL_MS <= now_ms < due:
            return 0
        self._next_scan_ms = now_ms + EXPIRE_SCAN_INTERVAL_MS
        return self.expire(now_ms)

    # ---- snapshots ------------------------------------------------------------------------

    def encode(self, end_offset: int) -> bytes:
        out = bytearray(_HEAD.pack(_MAGIC, end_offset, len(self._ids)))
        for i, pid in enumerate(self._ids):
            slot = _SLOT.unpack_from(self._slots, i * _SLOT.size)
            count = slot[3]
            out += _ENTRY.pack(pid, slot[0], slot[1], slot[2], count)
            for j in range(_SLOT_FIELDS, _SLOT_FIELDS + 2 * count, 2):
                out += _RECENT.pack(slot[j], slot[j + 1])
        out += _CRC.pack(crc32c(out))
        return bytes(out)

    @classmethod
    def decode(
        cls, data: bytes, end_offset: int, expire_ms: int = DEFAULT_EXPIRE_MS
    ) -> ProducerStates | None:
        """The states in a snapshot taken at ``end_offset``; None if it is not one."""
        if len(data) < _HEAD.size + _CRC.size:
            return None
        body = memoryview(data)[: -_CRC.size]
        if _CRC.unpack_from(data, len(body))[0] != crc32c(body):
            return None
        magic, at_offset, count = _HEAD.unpack_from(body)
        if magic != _MAGIC or at_offset != end_offset:
            return None
        states = cls(expire_ms)
        pos = _HEAD.size
        entries: list[tuple[int, int, int, int, list[int]]] = []
        try:
            for _ in range(count):
                pid, epoch, last_sequence, last_seen, n = _ENTRY.unpack_from(body, pos)
                pos += _ENTRY.size
                recent: list[int] = []
                for _ in range(n):
                    recent += _RECENT.unpack_from(body, pos)
                    pos += _RECENT.size
                entries.append((pid, epoch, last_sequence, last_seen, recent))
        except struct.error:
            return None
        if pos != len(body):
            return None
        entries.sort()
        if any(a[0] >= b[0] for a, b in itertools.pairwise(entries)):
            return None  # an id twice
        states._ids = array("q", [e[0] for e in entries])
        states._slots = bytearray(len(entries) * _SLOT.size)
        for i, (_, epoch, last_sequence, last_seen, recent) in enumerate(entries):
            recent = recent[-2 * REMEMBERED_BATCHES :]
            states._store(i, epoch, last_sequence, last_seen, recent)
        return states


# ---- files: snapshots and the rebuild at takeover (I/O) --------------------------------------


class SealedLike(Protocol):
    @property
    def path(self) -> str: ...

    @property
    def end_offset(self) -> int: ...

    @property
    def size(self) -> int: ...


def snapshot_path(segment_path: str) -> str:
    if not isinstance(segment_path, str) or not segment_path.endswith(".log"):
        raise InvalidArgument(f"segment_path: must end with '.log', got {segment_path!r}")
    return segment_path[: -len(".log")] + SNAPSHOT_SUFFIX


def write_snapshot(
    store: LogStore, segment_path: str, states: ProducerStates, end_offset: int
) -> None:
    """Best effort: a missing snapshot only means the next owner replays more."""
    try:
        store.write_file(snapshot_path(segment_path), states.encode(end_offset))
    except StorageError as exc:
        log.warning("could not write the producer snapshot of %s: %s", segment_path, exc)


def read_snapshot(
    store: LogStore, segment: SealedLike, expire_ms: int = DEFAULT_EXPIRE_MS
) -> ProducerStates | None:
    path = snapshot_path(segment.path)
    try:
        if not store.exists(path):
            return None
        data = store.read(path, 0, store.visible_length(path))
    except StorageError as exc:
        log.warning("could not read %s: %s", path, exc)
        return None
    return ProducerStates.decode(data, segment.end_offset, expire_ms)


def _replay(store: LogStore, segment: SealedLike, states: ProducerStates, now_ms: int) -> None:
    """Record every batch of a sealed segment, oldest first."""
    position = 0
    while position < segment.size:
        want = min(READ_CHUNK_BYTES, segment.size - position)
        chunk = store.read(segment.path, position, want)
        consumed = _record_batches(chunk, states, now_ms)
        if consumed == 0:
            if len(chunk) < want or want == segment.size - position:
                return
            # one batch larger than the chunk: read it whole
            chunk = store.read(segment.path, position, segment.size - position)
            consumed = _record_batches(chunk, states, now_ms)
            if consumed == 0:
                return
        position += consumed


def _record_batches(chunk: bytes, states: ProducerStates, now_ms: int) -> int:
    consumed = 0
    for batch_pos, header in iter_batches(chunk):
        states.record(identity(header), header.base_offset, now_ms)
        consumed = batch_pos + header.total_size
    return consumed


def rebuild(
    store: LogStore,
    sealed: Sequence[SealedLike],
    now_ms: int,
    expire_ms: int = DEFAULT_EXPIRE_MS,
    tail_bytes: int = TAIL_BYTES,
) -> ProducerStates:
    """The producer states as of the end of ``sealed`` (oldest first), for a new owner.

    The newest snapshot among the last ``SNAPSHOT_SEARCH`` segments (normally the one
    before the previous owner's open segment, or that one itself), plus a replay of the
    segments after it; without one, a replay of the last ``tail_bytes`` of segments.
    Replayed producers count as seen now (the log holds no broker time), which only
    keeps them longer. The newest segment then gets its own snapshot, so the next
    owner replays nothing.
    """
    states: ProducerStates | None = None
    start = len(sealed)
    for index in range(len(sealed) - 1, max(-1, len(sealed) - 1 - SNAPSHOT_SEARCH), -1):
        states = read_snapshot(store, sealed[index], expire_ms)
        if states is not None:
            start = index + 1
            break
    if states is None:
        states = ProducerStates(expire_ms)
        walked = 0
        while start > 0 and walked < tail_bytes:
            start -= 1
            walked += sealed[start].size
    for segment in sealed[start:]:
        _replay(store, segment, states, now_ms)
    states.expire(now_ms)
    if sealed and start < len(sealed):
        write_snapshot(store, sealed[-1].path, states, sealed[-1].end_offset)
    return states


def identity(header: BatchHeader) -> BatchIdentity:
    """The batch's producer identity; a mirrored batch's ids belong to another cluster's
    id space, so they are not tracked here (they would clash with ours after promotion)."""
    producer_id = header.producer_id if not header.origin_cluster else -1
    return BatchIdentity(
        producer_id, header.producer_epoch, header.base_sequence, header.record_count
    )
