"""Consumer group offset sync: copy committed offsets from the source to the target DC.

Mirror topics keep source offsets, so a group's committed offset means the
same message on both sides and is copied as is, with two limits: it only
moves forward (a consumer already running in the target is never sent
back), and never past the target's log end (a consumer that fails over
never skips messages the mirror has not copied yet). Each write is a
compare-and-set on the offset znode, so a concurrent commit in the target is
never overwritten by a smaller value.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from mirror.paths import offset_sync_path
from mirror.status import link_copies, target_mirror_problem
from talos.clock import SYSTEM_CLOCK, Clock
from talos.coord import paths
from talos.coord.topics import TopicMeta
from talos.coord.zk import dumps, zk_errors
from talos.errors import CoordinationError, InvalidArgument, TalosError
from topology import Link

log = logging.getLogger(__name__)

#: (group, topic, partition)
GroupPartition = tuple[str, str, int]
TargetEndFn = Callable[[str, int], int | None]

_CAS_ATTEMPTS = 20


@dataclass(frozen=True)
class OffsetUpdate:
    """Set ``group``'s offset of target ``topic``/``partition`` from ``previous`` to ``offset``."""

    group: str
    topic: str
    partition: int
    offset: int
    previous: int
    source_offset: int

    @property
    def clamped(self) -> bool:
        """The source was further than the target's end, so the end was used."""
        return self.offset < self.source_offset


def plan_offset_sync(
    link: Link,
    source_offsets: Mapping[GroupPartition, int],
    target_offsets: Mapping[GroupPartition, int],
    target_ends: Mapping[tuple[str, int], int | None],
    copied_topics: Set[str],
) -> list[OffsetUpdate]:
    """The offset writes that bring the target's groups up to the source's.

    ``source_offsets`` are keyed by source topic; ``target_offsets`` and
    ``target_ends`` by target topic (-1 or absent: no committed offset; None
    or absent end: unknown, so nothing is written there). Only topics in
    ``copied_topics`` (the source topics the link mirrors) are considered.
    Running it on its own output changes nothing (idempotent).
    """
    updates = []
    for (group, source_topic, partition), source_offset in sorted(source_offsets.items()):
        if source_offset < 0 or source_topic not in copied_topics:
            continue
        if not link.selects(source_topic):
            continue
        topic = link.target_topic(source_topic)
        end = target_ends.get((topic, partition))
        if end is None or end < 0:
            continue
        offset = min(source_offset, end)
        previous = target_offsets.get((group, topic, partition), -1)
        if offset > previous:
            updates.append(OffsetUpdate(group, topic, partition, offset, previous, source_offset))
    return updates


@dataclass(frozen=True)
class SyncReport:
    """What one round did.

    ``groups``: groups with offsets on the topics the link copies;
    ``written``: the planned updates actually stored (a concurrent commit in
    the target may have made some moot); ``unknown_end``: partitions left
    alone because the target end is unknown or the target topic is not a
    writable mirror of this link.
    """

    started_ms: int
    duration_s: float
    groups: int
    offsets_seen: int
    planned: tuple[OffsetUpdate, ...] = ()
    written: tuple[OffsetUpdate, ...] = ()
    unknown_end: int = 0
    errors: tuple[str, ...] = field(default_factory=tuple)


def _parse_offset(data: bytes) -> int | None:
    try:
        return int(data.decode())
    except (ValueError, UnicodeDecodeError):
        return None


class OffsetSync:
    """Runs the sync for one link, from inside the mirror worker process.

    ``target_end_fn(target_topic, partition)`` returns the target's log end
    or None when unknown (then that partition is left alone this round).
    """

    def __init__(
        self,
        source_zk: KazooClient,
        target_zk: KazooClient,
        link: Link,
        target_end_fn: TargetEndFn,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not isinstance(link, Link):
            raise InvalidArgument(f"link: must be a topology Link, got {type(link).__name__}")
        if not callable(target_end_fn):
            raise InvalidArgument("target_end_fn: must be callable (topic, partition) -> end")
        self.source_zk = source_zk
        self.target_zk = target_zk
        self.link = link
        self.target_end_fn = target_end_fn
        self.clock = clock
        self.interval_s = link.offset_sync_interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_report: SyncReport | None = None

    # -- one round --

    def run_once(self) -> SyncReport:
        """Read both sides, plan, write with CAS, record the run; CoordinationError on failure."""
        started = self.clock.monotonic()
        started_ms = self.clock.wall_ms()
        source_offsets = self._read_source_offsets()
        source_topics = {topic for _, topic, _ in source_offsets}
        copied = self._copied_topics(source_topics)
        wanted = {
            (self.link.target_topic(t), p)
            for _, t, p in source_offsets
            if t in copied and self.link.selects(t)
        }
        writable = self._writable_targets({t for t, _ in wanted})
        target_ends: dict[tuple[str, int], int | None] = {}
        errors: list[str] = []
        for topic, partition in sorted(wanted):
            if topic not in writable:
                continue
            try:
                target_ends[(topic, partition)] = self.target_end_fn(topic, partition)
            except TalosError as exc:
                target_ends[(topic, partition)] = None
                errors.append(f"log end of {topic}/{partition}: {exc}")
        target_offsets = self._read_target_offsets(
            {
                (g, self.link.target_topic(t), p)
                for g, t, p in source_offsets
                if t in copied and self.link.selects(t)
            }
        )
        plan = plan_offset_sync(self.link, source_offsets, target_offsets, target_ends, copied)
        written = [update for update in plan if self._apply(update)]
        groups = {g for g, t, _ in source_offsets if t in copied}
        self._record(started_ms, len(groups))
        report = SyncReport(
            started_ms=started_ms,
            duration_s=self.clock.monotonic() - started,
            groups=len(groups),
            offsets_seen=sum(1 for _, t, _ in source_offsets if t in copied),
            planned=tuple(plan),
            written=tuple(written),
            unknown_end=sum(1 for key in wanted if target_ends.get(key) is None),
            errors=tuple(errors),
        )
        self.last_report = report
        if written:
            log.info(
                "link %s: synced %d group offset(s) of %d group(s)",
                self.link.name,
                len(written),
                len(groups),
            )
        return report

    def _read_source_offsets(self) -> dict[GroupPartition, int]:
        zk = self.source_zk
        found: dict[GroupPartition, int] = {}
        with zk_errors(f"link {self.link.name}: reading group offsets in the source"):
            try:
                groups = zk.get_children(paths.GROUPS)
            except NoNodeError:
                return found
            topic_lists = [
                (g, zk.get_children_async(f"{paths.group(g)}/offsets")) for g in sorted(groups)
            ]
            partition_lists = []
            for group, result in topic_lists:
                try:
                    topics = result.get()
                except NoNodeError:
                    continue
                for topic in topics:
                    if self.link.selects(topic):
                        listing = zk.get_children_async(paths.group_offsets(group, topic))
                        partition_lists.append((group, topic, listing))
            values = []
            for group, topic, listing in partition_lists:
                try:
                    children = listing.get()
                except NoNodeError:
                    continue
                for child in children:
                    if child.isdigit():
                        path = paths.group_offset(group, topic, int(child))
                        values.append(((group, topic, int(child)), zk.get_async(path)))
            for key, result in values:
                try:
                    data, _ = result.get()
                except NoNodeError:
                    continue
                offset = _parse_offset(data)
                if offset is not None:
                    found[key] = offset
        return found

    def _copied_topics(self, source_topics: Set[str]) -> set[str]:
        """The source topics the link mirrors (loop rule applied to their metadata)."""
        metas = self._metas(self.source_zk, source_topics, "source")
        return {t for t, meta in metas.items() if link_copies(self.link, t, meta.mirror)}

    def _writable_targets(self, target_topics: Set[str]) -> set[str]:
        """Target topics that are unpromoted mirrors of this link (others own their offsets)."""
        metas = self._metas(self.target_zk, target_topics, "target")
        return {
            t
            for t, meta in metas.items()
            if not target_mirror_problem(self.link, self._source_topic(t), meta.mirror)
        }

    def _source_topic(self, target_topic: str) -> str:
        return self.link.source_topic(target_topic) or target_topic

    def _metas(self, zk: KazooClient, topics: Set[str], side: str) -> dict[str, TopicMeta]:
        metas: dict[str, TopicMeta] = {}
        with zk_errors(f"link {self.link.name}: reading {side} topics"):
            pending = [(t, zk.get_async(paths.topic(t))) for t in sorted(topics)]
            for topic, result in pending:
                try:
                    data, _ = result.get()
                except NoNodeError:
                    continue
                metas[topic] = TopicMeta.from_json(data)
        return metas

    def _read_target_offsets(self, keys: Set[GroupPartition]) -> dict[GroupPartition, int]:
        found: dict[GroupPartition, int] = {}
        with zk_errors(f"link {self.link.name}: reading group offsets in the target"):
            pending = [
                (key, self.target_zk.get_async(paths.group_offset(*key))) for key in sorted(keys)
            ]
            for key, result in pending:
                try:
                    data, _ = result.get()
                except NoNodeError:
                    continue
                offset = _parse_offset(data)
                found[key] = -1 if offset is None else offset
        return found

    def _apply(self, update: OffsetUpdate) -> bool:
        """CAS the offset forward to ``update.offset``; False if it is already there or past."""
        zk = self.target_zk
        path = paths.group_offset(update.group, update.topic, update.partition)
        value = str(update.offset).encode()
        with zk_errors(f"link {self.link.name}: writing offset of group {update.group!r}"):
            for _ in range(_CAS_ATTEMPTS):
                try:
                    data, stat = zk.get(path)
                except NoNodeError:
                    zk.ensure_path(paths.group_offsets(update.group, update.topic))
                    try:
                        zk.create(path, value)
                        return True
                    except NodeExistsError:
                        continue  # someone committed meanwhile: compare with theirs
                current = _parse_offset(data)
                if current is not None and current >= update.offset:
                    return False
                try:
                    zk.set(path, value, version=stat.version)
                    return True
                except BadVersionError:
                    continue
                except NoNodeError:
                    continue
        raise CoordinationError(
            f"link {self.link.name}: offset of group {update.group!r} on "
            f"{update.topic}/{update.partition} keeps changing; retry next round"
        )

    def _record(self, started_ms: int, groups: int) -> None:
        path = offset_sync_path(self.link.name)
        data = dumps({"last_run_ms": started_ms, "groups": groups})
        with zk_errors(f"link {self.link.name}: recording the offset sync run"):
            try:
                self.target_zk.set(path, data)
            except NoNodeError:
                self.target_zk.ensure_path(path.rsplit("/", 1)[0])
                try:
                    self.target_zk.create(path, data)
                except NodeExistsError:
                    self.target_zk.set(path, data)

    # -- the loop --

    def run(self, stop: threading.Event | None = None) -> None:
        """Run a round every ``link.offset_sync_interval_s`` until ``stop`` is set.

        A failed round is logged and retried at the next interval: ZooKeeper
        outages must not end the worker.
        """
        stop = stop or self._stop
        while not stop.is_set():
            try:
                self.run_once()
            except TalosError as exc:
                log.warning("link %s: offset sync failed: %s", self.link.name, exc)
            stop.wait(self.interval_s)

    def start(self) -> threading.Thread:
        """Run :meth:`run` in a daemon thread; :meth:`stop` ends it."""
        if self._thread is not None and self._thread.is_alive():
            return self._thread
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.run, name=f"offset-sync-{self.link.name}", daemon=True
        )
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        self._thread = None
