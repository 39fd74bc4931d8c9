"""Topics in ZooKeeper: one znode per topic plus one partition-state znode per partition.

A topic and all its partitions appear in one transaction, so nobody sees a
topic whose partitions are missing.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, NotEmptyError

from mirror.state import MirrorState, parse_mirror
from talos.config import (
    MAX_PARTITIONS,
    TopicConfig,
    validate_partition_count,
    validate_topic_name,
)
from talos.coord import paths
from talos.coord.partition_state import PartitionState
from talos.coord.zk import dumps, loads, txn_failure, zk_errors
from talos.errors import CoordinationError, InvalidArgument, TopicExists, UnknownTopic

log = logging.getLogger(__name__)

_CAS_ATTEMPTS = 20


def new_incarnation() -> str:
    """A fresh topic incarnation id: unique per creation, never reused (KIP-516's topic id)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class TopicMeta:
    name: str
    partitions: int
    config: TopicConfig
    created_ms: int
    mirror: MirrorState | None = None
    #: Unique per creation of this name; in segment paths and every partition-state CAS.
    #: Always set on metadata read from ZooKeeper; "" only on values built in memory.
    incarnation: str = ""

    def to_json(self) -> bytes:
        return dumps(
            {
                "incarnation": self.incarnation,
                "name": self.name,
                "partitions": self.partitions,
                "config": self.config.to_dict(),
                "created_ms": self.created_ms,
                "mirror": self.mirror.to_dict() if self.mirror is not None else None,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> TopicMeta:
        raw = loads(data, "topic")
        try:
            name = str(raw["name"])
            return cls(
                name=name,
                partitions=int(raw["partitions"]),
                config=TopicConfig.from_dict(raw["config"]),
                created_ms=int(raw["created_ms"]),
                mirror=parse_mirror(raw.get("mirror"), name),
                incarnation=paths.validate_name(raw["incarnation"], "incarnation"),
            )
        except (KeyError, TypeError, ValueError, InvalidArgument) as exc:
            raise CoordinationError(
                f"topic: malformed metadata ({exc!r}); a topic created before incarnations "
                "must be recreated"
            ) from None


def _check_mirror(mirror: object) -> MirrorState | None:
    if mirror is not None and not isinstance(mirror, MirrorState):
        raise InvalidArgument(f"mirror: must be a MirrorState or None, got {type(mirror).__name__}")
    return mirror


class TopicStore:
    def __init__(self, zk: KazooClient) -> None:
        self._zk = zk

    def create(
        self,
        name: str,
        partitions: int,
        config: TopicConfig,
        now_ms: int,
        *,
        mirror: MirrorState | None = None,
    ) -> TopicMeta:
        """Create the topic with ``partitions`` empty partitions; TopicExists if present."""
        validate_topic_name(name)
        validate_partition_count(partitions)
        if not isinstance(config, TopicConfig):
            raise InvalidArgument(f"config: must be a TopicConfig, got {type(config).__name__}")
        config = config.validated().for_topic(name)
        if isinstance(now_ms, bool) or not isinstance(now_ms, int) or now_ms < 0:
            raise InvalidArgument(f"now_ms: must be an integer >= 0, got {now_ms!r}")
        meta = TopicMeta(name, partitions, config, now_ms, _check_mirror(mirror), new_incarnation())

        empty = PartitionState(incarnation=meta.incarnation).to_json()
        txn = self._zk.transaction()
        txn.create(paths.topic(name), meta.to_json())
        txn.create(paths.incarnations(name), b"")
        txn.create(paths.incarnation(name, meta.incarnation), b"")
        txn.create(paths.partitions(name), b"")
        for partition in range(partitions):
            txn.create(paths.partition(name, partition), empty)
        with zk_errors(f"creating topic {name!r}"):
            failure = txn_failure(txn.commit())
            if isinstance(failure, NodeExistsError):
                raise TopicExists(f"topic {name!r} already exists")
            if failure is not None:
                raise failure
        return meta

    def _read(self, name: str) -> tuple[TopicMeta, int]:
        validate_topic_name(name)
        with zk_errors(f"reading topic {name!r}"):
            try:
                data, stat = self._zk.get(paths.topic(name))
            except NoNodeError:
                raise UnknownTopic(f"topic {name!r} does not exist") from None
        return TopicMeta.from_json(data), stat.version

    def get(self, name: str) -> TopicMeta:
        return self._read(name)[0]

    def list(self) -> list[str]:
        with zk_errors("listing topics"):
            return sorted(self._zk.get_children(paths.TOPICS))

    def delete(self, name: str, incarnation: str | None = None) -> None:
        """Remove the topic, everything under it and every group's committed offsets
        for it, in one transaction (never half gone; a recreated topic's consumers do
        not resume at stale offsets). With ``incarnation``, only that incarnation:
        UnknownTopic if the name now belongs to another one."""
        validate_topic_name(name)
        with zk_errors(f"deleting topic {name!r}"):
            for _ in range(_CAS_ATTEMPTS):
                try:
                    meta, version = self._read(name)
                    subtree = self._subtree(paths.topic(name))
                except NoNodeError:
                    raise UnknownTopic(f"topic {name!r} does not exist") from None
                if incarnation is not None and meta.incarnation != incarnation:
                    raise UnknownTopic(
                        f"topic {name!r} incarnation {incarnation} does not exist any more "
                        f"(the name now belongs to incarnation {meta.incarnation})"
                    )
                txn = self._zk.transaction()
                for path in reversed(subtree):  # children before parents
                    txn.delete(path, version=version if path == paths.topic(name) else -1)
                for path in reversed(self._group_offsets(name)):
                    txn.delete(path)
                failure = txn_failure(txn.commit())
                if failure is None:
                    return
                if not isinstance(failure, NotEmptyError | NoNodeError | BadVersionError):
                    raise failure
                # Something was added or removed meanwhile: list again.
        raise CoordinationError(f"deleting topic {name!r}: too much contention, retry")

    def _group_offsets(self, topic: str) -> builtins.list[str]:
        """Every group's offsets znodes for ``topic``, parents before children."""
        try:
            groups = self._zk.get_children(paths.GROUPS)
        except NoNodeError:
            return []
        found: builtins.list[str] = []
        for group in groups:
            try:
                found.extend(self._subtree(paths.group_offsets(group, topic)))
            except NoNodeError:
                continue
        return found

    def _subtree(self, root: str) -> builtins.list[str]:
        """``root`` and every znode below it, parents before children."""
        found = [root]
        level = [root]
        while level:
            pending = [(path, self._zk.get_children_async(path)) for path in level]
            level = []
            for path, result in pending:
                try:
                    children = result.get()
                except NoNodeError:
                    if path == root:
                        raise
                    continue
                level.extend(f"{path}/{child}" for child in children)
            found.extend(level)
        return found

    def add_partitions(self, name: str, new_count: int, *, param: str = "new_count") -> TopicMeta:
        """Grow the topic to ``new_count`` partitions (partitions never shrink).

        ``param`` is the parameter name errors mention, so a caller can report
        the name its own user passed (e.g. ``partitions``).
        """
        validate_topic_name(name)
        if isinstance(new_count, bool) or not isinstance(new_count, int):
            raise InvalidArgument(f"{param}: must be an integer, got {new_count!r}")
        for _ in range(_CAS_ATTEMPTS):
            meta, version = self._read(name)
            if not meta.partitions < new_count <= MAX_PARTITIONS:
                raise InvalidArgument(
                    f"{param}: must be greater than the current {meta.partitions} and at most "
                    f"{MAX_PARTITIONS}, got {new_count}"
                )
            grown = dataclasses.replace(meta, partitions=new_count)
            if self._commit_update(name, grown, version, range(meta.partitions, new_count)):
                return grown
        raise CoordinationError(f"adding partitions to {name!r}: too much contention, retry")

    def alter_retention(
        self, name: str, retention_ms: int | None = None, retention_bytes: int | None = None
    ) -> TopicMeta:
        """Change the topic's retention (None: unchanged); bad values change nothing."""
        for _ in range(_CAS_ATTEMPTS):
            meta, version = self._read(name)
            config = meta.config.with_retention(retention_ms, retention_bytes)
            updated = dataclasses.replace(meta, config=config)
            if self._commit_update(name, updated, version, range(0)):
                return updated
        raise CoordinationError(f"altering the config of {name!r}: too much contention, retry")

    def set_mirror(self, name: str, mirror: MirrorState | None) -> TopicMeta:
        """Replace the topic's mirror settings (None: an ordinary, writable topic)."""
        value = _check_mirror(mirror)
        return self.update_mirror(name, lambda _current: value)

    def update_mirror(
        self, name: str, transition: Callable[[MirrorState | None], MirrorState | None]
    ) -> TopicMeta:
        """Apply a mirror transition to the current value, by compare-and-set."""
        for _ in range(_CAS_ATTEMPTS):
            meta, version = self._read(name)
            value = _check_mirror(transition(meta.mirror))
            if value == meta.mirror:
                return meta
            updated = dataclasses.replace(meta, mirror=value)
            if self._commit_update(name, updated, version, range(0)):
                return updated
        raise CoordinationError(f"updating mirror of {name!r}: too much contention, retry")

    def _commit_update(
        self, name: str, meta: TopicMeta, version: int, new_partitions: range
    ) -> bool:
        """CAS the topic znode (and create partitions); False if it changed meanwhile."""
        txn = self._zk.transaction()
        txn.set_data(paths.topic(name), meta.to_json(), version=version)
        empty = PartitionState(incarnation=meta.incarnation).to_json()
        for partition in new_partitions:
            txn.create(paths.partition(name, partition), empty)
        with zk_errors(f"updating topic {name!r}"):
            failure = txn_failure(txn.commit())
            if failure is None:
                return True
            if isinstance(failure, BadVersionError):
                return False
            if isinstance(failure, NoNodeError):
                raise UnknownTopic(f"topic {name!r} does not exist")
            raise failure

    def watch(self, callback: Callable[[builtins.list[str]], None]) -> None:
        """Call ``callback`` with the sorted topic names now and whenever they change."""

        def on_children(children: builtins.list[str]) -> None:
            try:
                callback(sorted(children))
            except Exception:
                log.exception("topic watch callback failed")

        with zk_errors("watching topics"):
            self._zk.ChildrenWatch(paths.TOPICS, on_children)
