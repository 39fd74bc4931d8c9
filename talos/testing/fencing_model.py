"""Exhaustive interleaving check of the single-writer fencing protocol (DESIGN.md §4).

Why: the safety argument of §4 ("if the marker is absent at the check, the
scan starts later and sees the batch") is about orderings between brokers
that tests against real processes reach only by luck. This module models one
partition abstractly and visits every interleaving of every process's atomic
steps (breadth-first, memoising visited states, no partial-order reduction),
so the argument is checked for all of them; mutation flags break one rule
each and prove the checker can fail.

The model
---------
Shared store:

- segment files: tuples of batch ids; a flush appends one complete batch, or a
  torn one (``id + "~"``) that a scan or a reader must not count;
- fence markers ``S.fenced``: exclusive create, an existing one counts as
  created;
- the ZooKeeper partition state: version, epoch, owner and the segment list
  (id, epoch, base offset, sealed end or open); every write bumps the version.

Processes (each step below is one atomic step):

- broker A owns epoch 1 and segment A0. Per batch: buffer the write, flush
  (makes it visible; may tear, which ends A's tenure), check A's marker, ack.
  A marker present at the check stops A (``NOT_OWNER``). With rolling on, A
  rolls once: one CAS seals its segment at the known length and registers the
  next segment at the same epoch; a failed CAS means it was fenced.
- takers B then C (C starts once the epoch is at least 2): read the state,
  CAS epoch e -> e+1 against the version read (on failure read again and
  retry), create the marker on the last segment of what was read, scan it to
  its last complete batch unless ZooKeeper already holds a sealed end (reuse
  it then), record the sealed end (first one wins), register a segment at
  that end if it still owns the epoch, then write like A. So A can be a
  zombie of B, and B a zombie of C, both still running.
- readers walk the segment list from offset 0 under the read rule: a batch
  of a sealed segment below its end is committed; from an open segment, read
  the batch, then (a separate step) check the marker: absent means committed;
  present means wait until a sealed end exists (the step is not enabled
  before) and drop the batch if it lies at or past it. Sealed ends are final,
  so a reader caches the one it saw.

ZooKeeper updates other than the takeover CAS are read-check-write loops
collapsed into one atomic step ("if I still own epoch e, do X"), which is what
a CAS retried against fresh reads amounts to. The takeover's read and CAS are
separate steps because the gap between them is where the race lives. Recording
a sealed end is first-wins but not tied to owning the epoch (a taker overtaken
by the next one may still record it): more permissive than needed, still safe.
Mutation (e) turns the takeover CAS into a versionless write of the whole
state computed from the read, which is what skipping the check does to one
versioned znode.

Not modelled: HDFS lease recovery (the marker alone must keep it safe), the
producer dedup rebuild, durability levels (a flush is the point where data
becomes visible; crash loss of unsynced data is out of scope) and write errors
other than a torn flush. A crashed process is one that never steps again;
those executions are prefixes of explored ones in which it resumes late, and
a late zombie can only append past a sealed end and then stop.

Invariants, checked in every terminal state (and some on the way, with the
step that broke them):

1. every acknowledged batch sits in the final history (the sealed prefixes of
   the listed segments plus the complete batches of the last, open segment)
   at the offset it was acknowledged with;
2. offsets are dense and never reused: each segment starts where the one
   before ends, no batch occurs twice, sealed ranges hold complete batches;
3. readers see the same history: a reader's committed reads are a prefix of
   the final history, offset by offset; a reader never commits past a sealed
   end, never finds a gap, never waits forever, and in the end has read it all;
4. a fenced owner's acks lie inside the sealed end of its segment.

Bounds
------
The default :class:`ModelConfig`: two takeovers A -> B -> C, two batches per
broker, torn flushes on, A and B roll once after their first batch, one
reader. It has 121,645 states (354 terminal) and takes about 3 s on a 2-core
machine; the unit tests run it and a few smaller and sibling bounds.
One reader is enough: readers write nothing shared, so what one reader can
see does not depend on others (two readers: 1,622,689 states, 54 s, no
violation). Deeper runs made by hand, all without violations: three batches
per broker 672,970 states (no roll), 596,935 (roll after 1), 557,682 (roll
after 2); four batches with one takeover and two readers 360,841.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from talos.errors import InvalidArgument

__all__ = [
    "ExploreResult",
    "ModelConfig",
    "Violation",
    "explore",
]

TORN = "~"
"""Suffix of a batch id whose flush tore: an incomplete batch in the file."""

OPEN = -1
"""Sealed end of a segment that is still open."""

_BROKER_NAMES = ("A", "B", "C")

# Broker phases: takeover steps, then the writer loop.
_T_READ = 0
_T_CAS = 1
_T_MARK = 2
_T_SCAN = 3
_T_SEAL = 4
_T_REGISTER = 5
_W_ROLL = 6
_W_WRITE = 7
_W_FLUSH = 8
_W_CHECK = 9
_W_ACK = 10
_DONE = 11

# Reader phases.
_R_IDLE = 0
_R_CHECK = 1
_R_WAIT = 2
_R_STOPPED = 3


@dataclass(frozen=True)
class ModelConfig:
    """Bounds of the model and flags that break the protocol on purpose.

    The ``mutate_*`` flags exist to prove the checker can fail; each one
    breaks one rule of DESIGN.md §4.
    """

    batches_per_broker: int = 2
    takeovers: int = 2
    roll_after: int | None = 1
    rolling_brokers: tuple[str, ...] = ("A", "B")
    torn_writes: bool = True
    readers: int = 1
    max_violations: int = 20
    stop_after_violations: int | None = None
    # (a) check the marker before writing and flushing the batch.
    mutate_check_before_write: bool = False
    # (b) scan the fenced segment before creating its marker.
    mutate_scan_before_marker: bool = False
    # (c) rescan an already sealed segment; the last sealed end wins.
    mutate_rescan_sealed: bool = False
    # (d) readers treat unsealed data as committed without the marker check.
    mutate_reader_ignores_marker: bool = False
    # (e) the taker writes the state it read, with epoch e+1, without the version check.
    mutate_skip_epoch_cas: bool = False
    # (f) the scan counts a torn batch as complete.
    mutate_scan_keeps_torn: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.batches_per_broker <= 4:
            raise InvalidArgument(
                f"batches_per_broker must be in 1..4, got {self.batches_per_broker}"
            )
        if not 0 <= self.takeovers <= 2:
            raise InvalidArgument(f"takeovers must be in 0..2, got {self.takeovers}")
        if self.roll_after is not None and not 1 <= self.roll_after < self.batches_per_broker:
            raise InvalidArgument(
                "roll_after must be None or in 1..batches_per_broker-1 "
                f"(1..{self.batches_per_broker - 1}), got {self.roll_after}"
            )
        unknown = [name for name in self.rolling_brokers if name not in _BROKER_NAMES]
        if unknown:
            raise InvalidArgument(
                f"rolling_brokers must name brokers among {_BROKER_NAMES}, got {unknown}"
            )
        if not 0 <= self.readers <= 3:
            raise InvalidArgument(f"readers must be in 0..3, got {self.readers}")
        if self.max_violations < 0:
            raise InvalidArgument(f"max_violations must be >= 0, got {self.max_violations}")
        if self.stop_after_violations is not None and self.stop_after_violations < 1:
            raise InvalidArgument(
                f"stop_after_violations must be None or >= 1, got {self.stop_after_violations}"
            )


@dataclass(frozen=True)
class Violation:
    """A broken invariant and the steps, from the initial state, that led to it.

    ``invariant`` is one of ``1-acked-kept``, ``2-dense``, ``3-readers``,
    ``4-fenced-ack`` (numbered as in the module docstring).
    """

    invariant: str
    message: str
    trace: tuple[str, ...]

    def __str__(self) -> str:
        steps = "\n".join(f"  {i + 1:3d}. {step}" for i, step in enumerate(self.trace))
        return f"[{self.invariant}] {self.message}\n{steps}"


@dataclass(frozen=True)
class ExploreResult:
    """What :func:`explore` visited and what it found."""

    states: int
    transitions: int
    terminal_states: int
    acks: int
    """Acknowledgements checked, summed over terminal states."""
    outcomes: Mapping[str, int]
    """Terminal states per outcome, as coverage evidence. ``"A:refused:1"``:
    A acked one batch, then found its marker (other reasons: ``finished``,
    ``torn``, ``roll_fenced``, ``not_owner``). ``"A:acked-after-marker"``: A
    acked a batch whose check passed before the marker was created.
    ``"A:refused-batch-kept"`` / ``"-dropped"``: the batch A flushed but
    refused to ack is inside / past the sealed end."""
    violation_count: int
    violations: tuple[Violation, ...]
    """The first ``max_violations`` violations, each with its trace."""
    complete: bool
    """False when exploration stopped early at ``stop_after_violations``."""
    config: ModelConfig = field(repr=False)

    @property
    def ok(self) -> bool:
        return self.violation_count == 0


class _Segment(NamedTuple):
    seg_id: str
    epoch: int
    base: int
    end: int  # OPEN until sealed


class _Zk(NamedTuple):
    version: int
    epoch: int
    owner: str
    segments: tuple[_Segment, ...]


class _Ack(NamedTuple):
    offset: int
    batch: str
    seg: str
    after_marker: bool  # the marker existed at the ack (the check came before it)


class _Broker(NamedTuple):
    name: str
    phase: int
    epoch: int  # the epoch this broker owns (0 before its CAS)
    snap: _Zk | None  # state read before the takeover CAS
    target: str  # segment being fenced
    scanned: int  # end offset found by the scan
    seg: str  # open segment being written
    segno: int
    base: int  # base offset of seg (during takeover: of target)
    flushed: int  # complete batches flushed into seg
    batch: int  # batches acknowledged or attempted so far
    rolled: bool
    acks: tuple[_Ack, ...]
    reason: str  # why it stopped


class _Reader(NamedTuple):
    phase: int
    seg: str
    known_end: int
    pending: str
    reads: tuple[str, ...]  # committed batches; reads[i] is offset i


class _State(NamedTuple):
    zk: _Zk
    files: tuple[tuple[str, ...], ...]
    markers: frozenset[str]
    brokers: tuple[_Broker, ...]
    readers: tuple[_Reader, ...]


class _Problem(NamedTuple):
    invariant: str
    message: str


_Step = tuple[str, _State, _Problem | None]


_T = TypeVar("_T")


def _replace_at(items: tuple[_T, ...], i: int, item: _T) -> tuple[_T, ...]:
    return (*items[:i], item, *items[i + 1 :])


def _find(segments: tuple[_Segment, ...], seg_id: str) -> _Segment | None:
    for seg in segments:
        if seg.seg_id == seg_id:
            return seg
    return None


def _with_end(segments: tuple[_Segment, ...], seg_id: str, end: int) -> tuple[_Segment, ...]:
    return tuple(s._replace(end=end) if s.seg_id == seg_id else s for s in segments)


def _complete_prefix(data: tuple[str, ...]) -> int:
    n = 0
    for entry in data:
        if entry.endswith(TORN):
            break
        n += 1
    return n


class _Model:
    """Successor function and terminal checks for one configuration."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.names = _BROKER_NAMES[: config.takeovers + 1]
        self.segments_per_broker = 2 if config.roll_after is not None else 1
        slots = [f"{n}{k}" for n in self.names for k in range(self.segments_per_broker)]
        self.slot = {seg_id: i for i, seg_id in enumerate(slots)}
        self.n_slots = len(slots)
        if config.mutate_check_before_write:
            self.batch_order = (_W_CHECK, _W_WRITE, _W_FLUSH, _W_ACK)
        else:
            self.batch_order = (_W_WRITE, _W_FLUSH, _W_CHECK, _W_ACK)
        self.after = dict(itertools.pairwise(self.batch_order))
        if config.mutate_scan_before_marker:
            takeover = (_T_CAS, _T_SCAN, _T_MARK, _T_SEAL, _T_REGISTER)
        else:
            takeover = (_T_CAS, _T_MARK, _T_SCAN, _T_SEAL, _T_REGISTER)
        self.takeover_after = dict(itertools.pairwise(takeover))
        self.handlers: dict[int, Callable[[_State, int, _Broker], list[_Step]]] = {
            _T_READ: self._read_state,
            _T_CAS: self._cas_epoch,
            _T_MARK: self._mark,
            _T_SCAN: self._scan,
            _T_SEAL: self._seal,
            _T_REGISTER: self._register,
            _W_ROLL: self._roll,
            _W_WRITE: self._write,
            _W_FLUSH: self._flush,
            _W_CHECK: self._check,
            _W_ACK: self._ack,
        }

    # -- initial state ---------------------------------------------------

    def initial(self) -> _State:
        zk = _Zk(version=1, epoch=1, owner="A", segments=(_Segment("A0", 1, 0, OPEN),))
        brokers = []
        for i, name in enumerate(self.names):
            b = _Broker(
                name=name,
                phase=_T_READ,
                epoch=0,
                snap=None,
                target="",
                scanned=0,
                seg="",
                segno=0,
                base=0,
                flushed=0,
                batch=0,
                rolled=False,
                acks=(),
                reason="",
            )
            if i == 0:
                b = b._replace(epoch=1, seg="A0", phase=self._batch_start(b))
            brokers.append(b)
        readers = tuple(
            _Reader(phase=_R_IDLE, seg="A0", known_end=OPEN, pending="", reads=())
            for _ in range(self.config.readers)
        )
        return _State(
            zk=zk,
            files=((),) * self.n_slots,
            markers=frozenset(),
            brokers=tuple(brokers),
            readers=readers,
        )

    # -- successors ------------------------------------------------------

    def successors(self, state: _State) -> list[_Step]:
        out: list[_Step] = []
        for i, b in enumerate(state.brokers):
            handler = self.handlers.get(b.phase)
            if handler is not None:
                out.extend(handler(state, i, b))
        for j, r in enumerate(state.readers):
            out.extend(self._reader_step(state, j, r))
        return out

    @staticmethod
    def _put(
        state: _State,
        i: int,
        b: _Broker,
        zk: _Zk | None = None,
        files: tuple[tuple[str, ...], ...] | None = None,
        markers: frozenset[str] | None = None,
    ) -> _State:
        return _State(
            zk=state.zk if zk is None else zk,
            files=state.files if files is None else files,
            markers=state.markers if markers is None else markers,
            brokers=_replace_at(state.brokers, i, b),
            readers=state.readers,
        )

    def _batch_start(self, b: _Broker) -> int:
        cfg = self.config
        if b.batch >= cfg.batches_per_broker:
            return _DONE
        if (
            cfg.roll_after is not None
            and not b.rolled
            and b.batch == cfg.roll_after
            and b.name in cfg.rolling_brokers
        ):
            return _W_ROLL
        return self.batch_order[0]

    def _next_batch_phase(self, b: _Broker, phase: int) -> _Broker:
        """Move ``b`` to the step after ``phase`` in its batch order."""
        nxt = self.after.get(phase)
        if nxt is not None:
            return b._replace(phase=nxt)
        b = b._replace(batch=b.batch + 1)
        start = self._batch_start(b)
        if start == _DONE:
            return b._replace(phase=_DONE, reason="finished")
        return b._replace(phase=start)

    def _batch_id(self, b: _Broker) -> str:
        return f"{b.name.lower()}{b.batch + 1}"

    # takeover ------------------------------------------------------------

    def _read_state(self, state: _State, i: int, b: _Broker) -> list[_Step]:
        # Taker k is assigned the partition once epoch k+1 exists (B: at once,
        # C: once B's CAS landed), so the takeovers form the chain A -> B -> C.
        if state.zk.epoch < i:
            return []
        zk = state.zk
        nb = b._replace(phase=_T_CAS, snap=zk)
        label = f"{b.name}: read state v{zk.version} epoch {zk.epoch} owner {zk.owner}"
        return [(label, self._put(state, i, nb), None)]

    def _cas_epoch(self, state: _State, i: int, b: _Broker) -> list[_Step]:
        snap = b.snap
        if snap is None:  # pragma: no cover - phase invariant
            return []
        zk = state.zk
        new_epoch = snap.epoch + 1
        target = snap.segments[-1]
        if self.config.mutate_skip_epoch_cas:
            nzk = _Zk(zk.version + 1, new_epoch, b.name, snap.segments)
            label = f"{b.name}: BLIND write epoch {new_epoch} owner {b.name} from v{snap.version}"
        elif zk.version == snap.version:
            nzk = _Zk(zk.version + 1, new_epoch, b.name, zk.segments)
            label = f"{b.name}: CAS v{snap.version} epoch {snap.epoch}->{new_epoch} ok"
        else:
            nb = b._replace(phase=_T_READ, snap=None)
            label = f"{b.name}: CAS v{snap.version} failed (now v{zk.version}), retry"
            return [(label, self._put(state, i, nb), None)]
        nb = b._replace(
            phase=self.takeover_after[_T_CAS],
            epoch=new_epoch,
            snap=None,
            target=target.seg_id,
            base=target.base,
        )
        return [(label, self._put(state, i, nb, zk=nzk), None)]

    def _mark(self, state: _State, i: int, b: _Broker) -> list[_Step]:
        existed = b.target in state.markers
        nb = b._replace(phase=self.takeover_after[_T_MARK])
        what = "exists already (counts as created)" if existed else "created"
        label = f"{b.name}: marker {b.target}.fenced {what}"
        markers = state.markers | {b.target}
        return [(label, self._put(state, i, nb, markers=markers), None)]

    def _scan(self, state: _State, i: int, b: _Broker) -> list[_Step]:
        seg = _find(state.zk.segments, b.target)
        nxt = self.takeover_after[_T_SCAN]
        if seg is not None and seg.end != OPEN and not self.config.mutate_rescan_sealed:
            nb = b._replace(phase=nxt, scanned=seg.end)
            label = f"{b.name}: {b.target} sealed at {seg.end} in ZK, reuse (no scan)"
            return [(label, self._put(state, i, nb), None)]
        data = state.files[self.slot[b.target]]
        n = len(data) if self.config.mutate_scan_keeps_torn else _complete_prefix(data)
        nb = b._replace(phase=nxt, scanned=b.base + n)
        label = f"{b.name}: scan {b.target} {list(data)} -> end {b.base + n}"
        return [(label, self._put(state, i, nb), None)]

    def _seal(self, state: _State, i: int, b: _Broker) -> list[_Step]:
        zk = state.zk
        seg = _find(zk.segments, b.target)
        nxt = self.takeover_after[_T_SEAL]
        if seg is None:
            nb = b._replace(phase=nxt, base=b.scanned)
            label = f"{b.name}: {b.target} not in ZK, keep end {b.scanned}"
            return [(label, self._put(state, i, nb), None)]
        overwrite = self.config.mutate_rescan_sealed and seg.end != b.scanned
        if seg.end == OPEN or overwrite:
            nzk = zk._replace(
                version=zk.version + 1, segments=_with_end(zk.segments, b.target, b.scanned)
            )
            nb = b._replace(phase=nxt, base=b.scanned)
            label = f"{b.name}: CAS sealed end of {b.target} = {b.scanned}"
            return [(label, self._put(state, i, nb, zk=nzk), None)]
        nb = b._replace(phase=nxt, base=seg.end)
        label = f"{b.name}: {b.target} already sealed at {seg.end} (first wins), adopt it"
        return [(label, self._put(state, i, nb), None)]

    def _register(self, state: _State, i: int, b: _Broker) -> list[_Step]:
        zk = state.zk
        if zk.epoch != b.epoch or zk.owner != b.name:
            nb = b._replace(phase=_DONE, reason="not_owner")
            label = f"{b.name}: register segment refused (epoch {zk.epoch} owner {zk.owner})"
            return [(label, self._put(state, i, nb), None)]
        seg_id = f"{b.name}0"
        nzk = zk._replace(
            version=zk.version + 1,
            segments=(*zk.segments, _Segment(seg_id, b.epoch, b.base, OPEN)),
        )
        nb = b._replace(seg=seg_id, segno=0, flushed=0)
        nb = nb._replace(phase=self._batch_start(nb))
        if nb.phase == _DONE:
            nb = nb._replace(reason="finished")
        label = f"{b.name}: register {seg_id} at base {b.base}, epoch {b.epoch}"
        return [(label, self._put(state, i, nb, zk=nzk), None)]

    # writer --------------------------------------------------------------

    def _roll(self, state: _State, i: int, b: _Broker) -> list[_Step]:
        zk = state.zk
        if zk.epoch != b.epoch or zk.owner != b.name:
            nb = b._replace(phase=_DONE, reason="roll_fenced")
            label = f"{b.name}: roll CAS fails (epoch {zk.epoch} owner {zk.owner}): fenced"
            return [(label, self._put(state, i, nb), None)]
        end = b.base + b.flushed
        seg_id = f"{b.name}{b.segno + 1}"
        segments = (*_with_end(zk.segments, b.seg, end), _Segment(seg_id, b.epoch, end, OPEN))
        nzk = zk._replace(version=zk.version + 1, segments=segments)
        nb = b._replace(seg=seg_id, segno=b.segno + 1, base=end, flushed=0, rolled=True)
        nb = nb._replace(phase=self.batch_order[0])
        label = f"{b.name}: roll CAS: seal {b.seg} at {end}, register {seg_id}"
        return [(label, self._put(state, i, nb, zk=nzk), None)]

    def _write(self, state: _State, i: int, b: _Broker) -> list[_Step]:
        nb = self._next_batch_phase(b, _W_WRITE)
        label = f"{b.name}: write {self._batch_id(b)} (buffered, not yet visible)"
        return [(label, self._put(state, i, nb), None)]

    def _flush(self, state: _State, i: int, b: _Broker) -> list[_Step]:
        slot = self.slot[b.seg]
        data = state.files[slot]
        bid = self._batch_id(b)
        files = _replace_at(state.files, slot, (*data, bid))
        nb = self._next_batch_phase(b._replace(flushed=b.flushed + 1), _W_FLUSH)
        where = f"{b.seg}[{len(data)}] (offset {b.base + b.flushed})"
        steps: list[_Step] = [
            (f"{b.name}: flush {bid} -> {where}", self._put(state, i, nb, files=files), None)
        ]
        if self.config.torn_writes:
            torn = _replace_at(state.files, slot, (*data, bid + TORN))
            tb = b._replace(phase=_DONE, reason="torn")
            label = f"{b.name}: flush {bid} TORN -> {where}; write error, give up"
            steps.append((label, self._put(state, i, tb, files=torn), None))
        return steps

    def _check(self, state: _State, i: int, b: _Broker) -> list[_Step]:
        if b.seg in state.markers:
            nb = b._replace(phase=_DONE, reason="refused")
            label = f"{b.name}: check {b.seg}.fenced: present -> NOT_OWNER, stop"
            return [(label, self._put(state, i, nb), None)]
        nb = self._next_batch_phase(b, _W_CHECK)
        label = f"{b.name}: check {b.seg}.fenced: absent"
        return [(label, self._put(state, i, nb), None)]

    def _ack(self, state: _State, i: int, b: _Broker) -> list[_Step]:
        offset = b.base + b.flushed - 1
        bid = self._batch_id(b)
        ack = _Ack(offset, bid, b.seg, b.seg in state.markers)
        nb = self._next_batch_phase(b._replace(acks=(*b.acks, ack)), _W_ACK)
        problem = None
        seg = _find(state.zk.segments, b.seg)
        if seg is not None and seg.end != OPEN and offset >= seg.end:
            problem = _Problem(
                "4-fenced-ack",
                f"{b.name} acked {bid} at offset {offset}, past the sealed end {seg.end} "
                f"of {b.seg}",
            )
        label = f"{b.name}: ack {bid} at offset {offset}"
        return [(label, self._put(state, i, nb), problem)]

    # reader --------------------------------------------------------------

    def _reader_step(self, state: _State, j: int, r: _Reader) -> list[_Step]:
        if r.phase == _R_STOPPED:
            return []
        name = f"R{j + 1}"
        seg = _find(state.zk.segments, r.seg)
        if seg is None:
            return []  # its segment vanished from ZK (only under mutations)
        cursor = len(r.reads)
        data = state.files[self.slot[r.seg]]

        def put(nr: _Reader) -> _State:
            return state._replace(readers=_replace_at(state.readers, j, nr))

        def stop(invariant: str, message: str, label: str) -> list[_Step]:
            nr = r._replace(phase=_R_STOPPED)
            return [(f"{name}: {label}", put(nr), _Problem(invariant, f"{name} {message}"))]

        if r.phase == _R_CHECK:
            if r.seg in state.markers:
                label = f"{name}: check {r.seg}.fenced: present, wait for sealed end"
                return [(label, put(r._replace(phase=_R_WAIT)), None)]
            nr = r._replace(phase=_R_IDLE, pending="", reads=(*r.reads, r.pending))
            label = f"{name}: check {r.seg}.fenced: absent -> offset {cursor} = {r.pending}"
            return [(label, put(nr), None)]

        if r.phase == _R_WAIT:
            if seg.end == OPEN:
                return []  # the read rule waits for the sealed end
            if cursor < seg.end:
                nr = r._replace(
                    phase=_R_IDLE, pending="", known_end=seg.end, reads=(*r.reads, r.pending)
                )
                label = f"{name}: sealed end {seg.end} -> offset {cursor} = {r.pending}"
                return [(label, put(nr), None)]
            nr = r._replace(phase=_R_IDLE, pending="", known_end=seg.end)
            label = f"{name}: sealed end {seg.end} -> drop {r.pending} at offset {cursor}"
            return [(label, put(nr), None)]

        end = r.known_end if r.known_end != OPEN else seg.end
        if end != OPEN:
            if cursor < end:
                idx = cursor - seg.base
                if 0 <= idx < len(data) and not data[idx].endswith(TORN):
                    nr = r._replace(known_end=end, reads=(*r.reads, data[idx]))
                    label = f"{name}: read sealed {r.seg} offset {cursor} = {data[idx]}"
                    return [(label, put(nr), None)]
                got = data[idx] if 0 <= idx < len(data) else "nothing"
                return stop(
                    "2-dense",
                    f"found {got} at offset {cursor} inside {r.seg}'s sealed end {end}",
                    f"read sealed {r.seg} offset {cursor}: {got}",
                )
            if cursor > end:
                return stop(
                    "3-readers",
                    f"committed offset {cursor - 1} past {r.seg}'s sealed end {end}",
                    f"sees {r.seg} sealed at {end} after committing offset {cursor - 1}",
                )
            segments = state.zk.segments
            pos = segments.index(seg)
            if pos + 1 >= len(segments):
                return []  # wait for the next segment
            nxt = segments[pos + 1]
            if nxt.base != cursor:
                return stop(
                    "3-readers",
                    f"at offset {cursor} (end of {r.seg}) finds the next segment "
                    f"{nxt.seg_id} at base {nxt.base}",
                    f"move to {nxt.seg_id} (base {nxt.base}) at offset {cursor}",
                )
            nr = r._replace(seg=nxt.seg_id, known_end=OPEN)
            label = f"{name}: {r.seg} ends at {end}, move to {nxt.seg_id}"
            return [(label, put(nr), None)]

        idx = cursor - seg.base
        if not (0 <= idx < len(data)) or data[idx].endswith(TORN):
            return []  # nothing complete to read yet
        if self.config.mutate_reader_ignores_marker:
            nr = r._replace(reads=(*r.reads, data[idx]))
            label = f"{name}: read open {r.seg} offset {cursor} = {data[idx]} (no marker check)"
            return [(label, put(nr), None)]
        nr = r._replace(phase=_R_CHECK, pending=data[idx])
        label = f"{name}: read open {r.seg} offset {cursor} = {data[idx]}"
        return [(label, put(nr), None)]

    # terminal checks -----------------------------------------------------

    def check_terminal(self, state: _State) -> tuple[list[_Problem], list[str], int]:
        """Check the invariants; also return outcome keys and the number of acks."""
        problems: list[_Problem] = []
        outcomes = [f"{b.name}:{b.reason or 'stuck'}:{len(b.acks)}" for b in state.brokers]
        n_acks = sum(len(b.acks) for b in state.brokers)
        history, dense_problem = self.history(state)
        if dense_problem is not None:
            problems.append(dense_problem)
            return problems, outcomes, n_acks
        if len(set(history)) != len(history):
            problems.append(_Problem("2-dense", f"a batch occurs twice in {history}"))
        sealed = {s.seg_id: s.end for s in state.zk.segments}
        for b in state.brokers:
            for offset, bid, seg_id, _ in b.acks:
                if offset >= len(history) or history[offset] != bid:
                    at = history[offset] if offset < len(history) else "nothing"
                    problems.append(
                        _Problem(
                            "1-acked-kept",
                            f"{b.name} acked {bid} at offset {offset}; the final history "
                            f"{history} holds {at} there",
                        )
                    )
                end = sealed.get(seg_id)
                if end is None:
                    problems.append(
                        _Problem(
                            "4-fenced-ack",
                            f"{b.name} acked {bid} in {seg_id}, which is not in the "
                            "final segment list",
                        )
                    )
                elif end != OPEN and offset >= end:
                    problems.append(
                        _Problem(
                            "4-fenced-ack",
                            f"{b.name} acked {bid} at offset {offset}, past {seg_id}'s "
                            f"sealed end {end}",
                        )
                    )
        for j, r in enumerate(state.readers):
            name = f"R{j + 1}"
            if r.phase == _R_STOPPED:
                continue  # already reported on the step that stopped it
            if list(r.reads) != history[: len(r.reads)]:
                problems.append(
                    _Problem(
                        "3-readers",
                        f"{name} committed {list(r.reads)}, not a prefix of the final "
                        f"history {history}",
                    )
                )
            elif r.phase == _R_WAIT:
                problems.append(
                    _Problem("3-readers", f"{name} waits forever for the sealed end of {r.seg}")
                )
            elif len(r.reads) != len(history):
                problems.append(
                    _Problem(
                        "3-readers",
                        f"{name} is stuck at offset {len(r.reads)} in {r.seg}; the final "
                        f"history {history} is longer",
                    )
                )
        for b in state.brokers:
            # Coverage of the races the protocol is about (see ExploreResult.outcomes).
            if any(ack.after_marker for ack in b.acks):
                outcomes.append(f"{b.name}:acked-after-marker")
            bid = self._batch_id(b)
            if b.reason == "refused" and bid in state.files[self.slot[b.seg]]:
                fate = "kept" if bid in history else "dropped"
                outcomes.append(f"{b.name}:refused-batch-{fate}")
        return problems, outcomes, n_acks

    def history(self, state: _State) -> tuple[list[str], _Problem | None]:
        """The committed log: sealed prefixes, then the last segment if open."""
        history: list[str] = []
        segments = state.zk.segments
        for k, seg in enumerate(segments):
            if seg.base != len(history):
                return history, _Problem(
                    "2-dense",
                    f"{seg.seg_id} starts at {seg.base} but the log before it ends at "
                    f"{len(history)} ({history})",
                )
            data = state.files[self.slot[seg.seg_id]]
            if seg.end == OPEN:
                if k != len(segments) - 1:
                    return history, _Problem(
                        "2-dense", f"{seg.seg_id} is open but not the last segment"
                    )
                history.extend(data[: _complete_prefix(data)])
                continue
            n = seg.end - seg.base
            if n < 0 or n > _complete_prefix(data):
                return history, _Problem(
                    "2-dense",
                    f"{seg.seg_id} sealed at {seg.end} but holds only {list(data)} "
                    f"from base {seg.base}",
                )
            history.extend(data[:n])
        return history, None


def explore(config: ModelConfig | None = None) -> ExploreResult:
    """Visit every reachable state of the model and check the invariants.

    Breadth-first with a visited map (state -> the step that first reached
    it), so each violation comes with a shortest trace to the state or step
    that broke the invariant. A state with no enabled step is terminal and
    gets the full check.
    """
    config = config or ModelConfig()
    model = _Model(config)
    init = model.initial()
    # state -> (predecessor, label of the step from it); the root maps to None.
    parent: dict[_State, tuple[_State, str] | None] = {init: None}
    violations: list[Violation] = []
    violation_count = 0
    transitions = 0
    terminal = 0
    acks = 0
    outcomes: Counter[str] = Counter()
    complete = True

    def trace_to(state: _State) -> list[str]:
        steps: list[str] = []
        link = parent[state]
        while link is not None:
            state, label = link
            steps.append(label)
            link = parent[state]
        steps.reverse()
        return steps

    def report(problem: _Problem, trace: list[str]) -> bool:
        """Record a violation; True when the search should stop."""
        nonlocal violation_count
        violation_count += 1
        if len(violations) < config.max_violations:
            violations.append(Violation(problem.invariant, problem.message, tuple(trace)))
        limit = config.stop_after_violations
        return limit is not None and violation_count >= limit

    queue: deque[_State] = deque([init])
    try:
        while queue:
            state = queue.popleft()
            steps = model.successors(state)
            if not steps:
                terminal += 1
                problems, keys, n_acks = model.check_terminal(state)
                acks += n_acks
                outcomes.update(keys)
                for found in problems:
                    if report(found, trace_to(state)):
                        raise _StopSearch
                continue
            for label, nxt, problem in steps:
                transitions += 1
                if problem is not None and report(problem, [*trace_to(state), label]):
                    raise _StopSearch
                if nxt not in parent:
                    parent[nxt] = (state, label)
                    queue.append(nxt)
    except _StopSearch:
        complete = False

    return ExploreResult(
        states=len(parent),
        transitions=transitions,
        terminal_states=terminal,
        acks=acks,
        outcomes=dict(outcomes),
        violation_count=violation_count,
        violations=tuple(violations),
        complete=complete,
        config=config,
    )


class _StopSearch(Exception):
    """Internal: the violation budget is used up."""
