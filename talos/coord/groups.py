"""Consumer groups: lease-based membership, a generation, and fenced offset commits.

Members are clients that talk to brokers, not to ZooKeeper, so membership is
a lease renewed by joining again (a heartbeat). The generation changes only
when the member set (or a member's topics) changes; every member computes
its share from the same member list, and a commit from an older generation
is refused, so a member that was rebalanced away cannot overwrite offsets.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from talos.config import MAX_PARTITIONS, validate_group_name, validate_offset, validate_topic_name
from talos.coord import paths
from talos.coord.zk import dumps, loads, txn_failure, zk_errors
from talos.errors import (
    CoordinationError,
    IllegalGeneration,
    InvalidArgument,
    UnknownMember,
)

_CAS_ATTEMPTS = 50
MAX_SESSION_TIMEOUT_MS = 3_600_000

Partition = tuple[str, int]


@dataclass(frozen=True)
class GroupView:
    """What a member learns from joining: its id, the generation, everyone's topics."""

    member_id: str
    generation: int
    members: dict[str, list[str]]


@dataclass(frozen=True)
class _Member:
    topics: tuple[str, ...]
    expires_ms: int


def _parse_members(data: bytes) -> dict[str, _Member]:
    raw: Any = loads(data, "group members")
    try:
        return {
            member: _Member(tuple(str(t) for t in info["topics"]), int(info["expires_ms"]))
            for member, info in raw["members"].items()
        }
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CoordinationError(f"group members: malformed ({exc!r})") from None


def _dump_members(members: Mapping[str, _Member]) -> bytes:
    return dumps(
        {
            "members": {
                member: {"topics": list(info.topics), "expires_ms": info.expires_ms}
                for member, info in sorted(members.items())
            }
        }
    )


def _parse_generation(data: bytes) -> int:
    try:
        return int(data.decode())
    except (ValueError, UnicodeDecodeError):
        raise CoordinationError(f"group generation: not a number: {data!r}") from None


def _shape(members: Mapping[str, _Member]) -> dict[str, tuple[str, ...]]:
    return {member: info.topics for member, info in members.items()}


def _check_int(value: object, param: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(
            f"{param}: must be an integer between {low} and {high}, got {value!r}"
        )
    return value


def _check_member_id(member_id: object) -> str:
    if member_id == "":
        return ""
    return paths.validate_name(member_id, "member_id")


class GroupStore:
    def __init__(self, zk: KazooClient) -> None:
        self._zk = zk
        # Offset znodes known to exist, so a steady-state commit is one
        # transaction of set_data instead of a listing first.
        self._known_offsets: set[str] = set()
        self._known_lock = threading.Lock()

    # -- membership ---------------------------------------------------------

    def join(
        self,
        group: str,
        member_id: str,
        topics: Sequence[str],
        session_timeout_ms: int,
        now_ms: int,
    ) -> GroupView:
        """Join, or renew the lease (heartbeat). ``member_id`` "" gets a new id.

        A member whose lease ran out and who joins again is simply re-added
        (with a new generation), so a slow member rejoins instead of failing.
        """
        validate_group_name(group)
        member_id = _check_member_id(member_id) or uuid.uuid4().hex
        if isinstance(topics, str) or not isinstance(topics, Sequence):
            raise InvalidArgument(f"topics: must be a list of topic names, got {topics!r}")
        wanted = tuple(sorted({validate_topic_name(t, "topics") for t in topics}))
        _check_int(session_timeout_ms, "session_timeout_ms", 1, MAX_SESSION_TIMEOUT_MS)
        _check_int(now_ms, "now_ms", 0, 2**63 - 1)
        lease = _Member(wanted, now_ms + session_timeout_ms)

        def add(alive: dict[str, _Member]) -> dict[str, _Member]:
            return {**alive, member_id: lease}

        generation, members = self._update(group, now_ms, add)
        return GroupView(
            member_id=member_id,
            generation=generation,
            members={m: list(info.topics) for m, info in sorted(members.items())},
        )

    def leave(self, group: str, member_id: str, now_ms: int) -> None:
        """Remove the member at once (no waiting for its lease); unknown ids are ignored."""
        validate_group_name(group)
        paths.validate_name(member_id, "member_id")
        _check_int(now_ms, "now_ms", 0, 2**63 - 1)

        def remove(alive: dict[str, _Member]) -> dict[str, _Member]:
            return {m: info for m, info in alive.items() if m != member_id}

        self._update(group, now_ms, remove)

    def _ensure_group(self, group: str) -> None:
        self._zk.ensure_path(paths.group(group))
        txn = self._zk.transaction()
        txn.create(paths.group_members(group), _dump_members({}))
        txn.create(paths.group_generation(group), b"0")
        failure = txn_failure(txn.commit())
        if failure is not None and not isinstance(failure, NodeExistsError):
            raise failure

    def _update(
        self,
        group: str,
        now_ms: int,
        change: Callable[[dict[str, _Member]], dict[str, _Member]],
    ) -> tuple[int, dict[str, _Member]]:
        """Apply ``change`` to the unexpired members with CAS; bump the generation if needed."""
        members_path = paths.group_members(group)
        generation_path = paths.group_generation(group)
        with zk_errors(f"updating members of group {group!r}"):
            for _ in range(_CAS_ATTEMPTS):
                members_result = self._zk.get_async(members_path)
                generation_result = self._zk.get_async(generation_path)
                try:
                    members_data, members_stat = members_result.get()
                    generation_data, generation_stat = generation_result.get()
                except NoNodeError:
                    self._ensure_group(group)
                    continue
                current = _parse_members(members_data)
                generation = _parse_generation(generation_data)
                alive = {m: info for m, info in current.items() if info.expires_ms > now_ms}
                updated = change(alive)
                if updated == current:
                    return generation, updated
                reshaped = _shape(updated) != _shape(current)
                txn = self._zk.transaction()
                txn.set_data(members_path, _dump_members(updated), version=members_stat.version)
                if reshaped:
                    generation += 1
                    txn.set_data(
                        generation_path, str(generation).encode(), version=generation_stat.version
                    )
                failure = txn_failure(txn.commit())
                if failure is None:
                    return generation, updated
                if not isinstance(failure, BadVersionError | NoNodeError):
                    raise failure
        raise CoordinationError(f"updating members of group {group!r}: too much contention, retry")

    # -- offsets ------------------------------------------------------------

    def commit(
        self,
        group: str,
        member_id: str,
        generation: int,
        offsets: Mapping[Partition, int],
    ) -> None:
        """Store offsets atomically; fenced by the generation unless standalone.

        ``generation`` -1 with ``member_id`` "" is a standalone commit (manual
        assignment, no group membership) and is not fenced.
        """
        validate_group_name(group)
        _check_int(generation, "generation", -1, 2**31 - 1)
        member_id = _check_member_id(member_id)
        if (generation == -1) != (member_id == ""):
            raise InvalidArgument(
                "generation/member_id: use generation -1 with member_id '' for a standalone "
                f"commit, or a generation >= 0 with a member id; got {generation}, {member_id!r}"
            )
        if not isinstance(offsets, Mapping):
            raise InvalidArgument(
                f"offsets: must map (topic, partition) to offset, got {offsets!r}"
            )
        checked: dict[Partition, int] = {}
        for key, offset in offsets.items():
            topic, partition = self._check_partition(key, "offsets")
            checked[(topic, partition)] = validate_offset(offset, f"offsets[{key!r}]")

        with zk_errors(f"committing offsets of group {group!r}"):
            for _ in range(_CAS_ATTEMPTS):
                txn = self._zk.transaction()
                if generation >= 0:
                    fence_version = self._fence(group, member_id, generation)
                    txn.check(paths.group_generation(group), fence_version)
                self._add_offsets(txn, group, checked)
                failure = txn_failure(txn.commit())
                if failure is None:
                    with self._known_lock:
                        self._known_offsets.update(
                            paths.group_offset(group, t, p) for t, p in checked
                        )
                    return
                if isinstance(failure, NoNodeError | NodeExistsError):
                    self._forget(group)
                elif not isinstance(failure, BadVersionError):
                    raise failure
                # BadVersion: the generation moved; the next _fence reports it.
        raise CoordinationError(
            f"committing offsets of group {group!r}: too much contention, retry"
        )

    def _fence(self, group: str, member_id: str, generation: int) -> int:
        """Check the member and generation; the generation znode version to CHECK against."""
        members_result = self._zk.get_async(paths.group_members(group))
        generation_result = self._zk.get_async(paths.group_generation(group))
        try:
            members_data, _ = members_result.get()
            generation_data, generation_stat = generation_result.get()
        except NoNodeError:
            raise UnknownMember(f"group {group!r} has no member {member_id!r}") from None
        if member_id not in _parse_members(members_data):
            raise UnknownMember(f"group {group!r} has no member {member_id!r}")
        current = _parse_generation(generation_data)
        if current != generation:
            raise IllegalGeneration(
                f"group {group!r}: generation {generation} is not current (now {current}); "
                "rejoin the group"
            )
        version: int = generation_stat.version
        return version

    def _add_offsets(self, txn: Any, group: str, offsets: Mapping[Partition, int]) -> None:
        with self._known_lock:
            known = set(self._known_offsets)
        missing_dirs = {
            topic
            for topic, partition in offsets
            if paths.group_offset(group, topic, partition) not in known
        }
        for topic in sorted(missing_dirs):
            directory = paths.group_offsets(group, topic)
            self._zk.ensure_path(directory)
            known.update(f"{directory}/{child}" for child in self._zk.get_children(directory))
        for (topic, partition), offset in sorted(offsets.items()):
            path = paths.group_offset(group, topic, partition)
            if path in known:
                txn.set_data(path, str(offset).encode())
            else:
                txn.create(path, str(offset).encode())

    def _forget(self, group: str) -> None:
        prefix = paths.group(group) + "/"
        with self._known_lock:
            self._known_offsets = {p for p in self._known_offsets if not p.startswith(prefix)}

    def fetch(self, group: str, partitions: Sequence[Partition]) -> dict[Partition, int]:
        """Committed offsets; -1 for a partition with none."""
        validate_group_name(group)
        if isinstance(partitions, str) or not isinstance(partitions, Sequence):
            raise InvalidArgument(
                f"partitions: must be a list of (topic, partition), got {partitions!r}"
            )
        keys = [self._check_partition(key, "partitions") for key in partitions]
        with zk_errors(f"fetching offsets of group {group!r}"):
            pending = [
                (key, self._zk.get_async(paths.group_offset(group, key[0], key[1]))) for key in keys
            ]
            found: dict[Partition, int] = {}
            for key, result in pending:
                try:
                    data, _stat = result.get()
                except NoNodeError:
                    found[key] = -1
                    continue
                try:
                    found[key] = int(data.decode())
                except (ValueError, UnicodeDecodeError):
                    raise CoordinationError(
                        f"group {group!r}: offset of {key[0]}/{key[1]} is not a number: {data!r}"
                    ) from None
        return found

    @staticmethod
    def _check_partition(key: object, param: str) -> Partition:
        if not isinstance(key, tuple) or len(key) != 2:
            raise InvalidArgument(f"{param}: keys must be (topic, partition) tuples, got {key!r}")
        topic = validate_topic_name(key[0], f"{param} topic")
        partition = _check_int(key[1], f"{param} partition", 0, MAX_PARTITIONS - 1)
        return topic, partition
