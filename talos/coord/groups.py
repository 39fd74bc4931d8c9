"""Consumer groups: lease-based membership, a generation, and fenced offset commits.

Members are clients that talk to brokers, not to ZooKeeper, so membership is
a lease renewed by joining again (a heartbeat). The generation changes only
when the member set (or a member's topics) changes; every member computes
its share from the same member list, and a commit from an older generation
is refused, so a member that was rebalanced away cannot overwrite offsets.
"""

from __future__ import annotations

import enum
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, NotEmptyError

from talos.config import MAX_PARTITIONS, validate_group_name, validate_offset, validate_topic_name
from talos.coord import paths
from talos.coord.zk import dumps, loads, numbered_children, txn_failure, zk_errors
from talos.errors import (
    CoordinationError,
    GroupNotEmpty,
    IllegalGeneration,
    InvalidArgument,
    UnknownGroup,
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


# -- administration: what an operator sees and changes (talos group ...) ------


@dataclass(frozen=True)
class MemberLease:
    member_id: str
    topics: tuple[str, ...]
    expires_ms: int


@dataclass(frozen=True)
class GroupSummary:
    group: str
    live_members: int
    generation: int


@dataclass(frozen=True)
class GroupDescription:
    """A group as stored: its live members and every committed offset."""

    group: str
    generation: int
    members: tuple[MemberLease, ...]
    offsets: dict[Partition, int]


class ResetKind(enum.Enum):
    EARLIEST = "earliest"
    LATEST = "latest"
    OFFSET = "offset"
    DATETIME = "datetime"


@dataclass(frozen=True)
class ResetSpec:
    """Where to move a group's offsets; ``value`` is the offset or the time in epoch ms."""

    kind: ResetKind
    value: int = 0


@dataclass(frozen=True)
class PartitionBounds:
    """What the partition's owner said: its log range, and the first offset at the spec's time."""

    log_start: int
    log_end: int
    time_offset: int | None = None


@dataclass(frozen=True)
class OffsetReset:
    topic: str
    partition: int
    current: int  # -1: nothing committed
    new: int
    note: str = ""


def plan_offset_reset(
    spec: ResetSpec,
    current: Mapping[Partition, int],
    bounds: Mapping[Partition, PartitionBounds],
) -> list[OffsetReset]:
    """The offset each partition resets to, as kafka-consumer-groups decides it.

    Earliest is the log start, latest the log end; an explicit offset or the
    first offset at a time is kept inside [log start, log end], so a reset never
    points a group at data that does not exist.
    """
    plan = []
    for (topic, partition), bound in sorted(bounds.items()):
        if spec.kind is ResetKind.EARLIEST:
            wanted = bound.log_start
        elif spec.kind is ResetKind.LATEST:
            wanted = bound.log_end
        elif spec.kind is ResetKind.OFFSET:
            wanted = spec.value
        else:
            if bound.time_offset is None:
                raise InvalidArgument(f"to-datetime: no offset for the time of {topic}/{partition}")
            wanted = bound.time_offset
        new = min(max(wanted, bound.log_start), bound.log_end)
        note = ""
        if new > wanted:
            note = f"{wanted} is below the log start; using the log start"
        elif new < wanted:
            note = f"{wanted} is past the log end; using the log end"
        plan.append(OffsetReset(topic, partition, current.get((topic, partition), -1), new, note))
    return plan


def live_members(members: Mapping[str, _Member], now_ms: int) -> dict[str, _Member]:
    """Members whose lease has not run out: they may still commit."""
    return {m: info for m, info in members.items() if info.expires_ms > now_ms}


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
                alive = live_members(current, now_ms)
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

    # -- administration -------------------------------------------------------

    def list_groups(self, now_ms: int) -> list[GroupSummary]:
        with zk_errors("listing consumer groups"):
            names = sorted(self._zk.get_children(paths.GROUPS))
            states = [(name, self._read_state(name)) for name in names]
        return [
            GroupSummary(name, len(live_members(members, now_ms)), generation)
            for name, (members, generation, _version) in states
            if generation >= 0
        ]

    def _read_state(self, group: str) -> tuple[dict[str, _Member], int, int]:
        """Members, generation and the members znode version; generation -1: no such group.

        A group that only has offsets (copied by a mirror link, or reset before
        anyone joined) has no members znode: it is empty, generation 0, version -1.
        """
        members_result = self._zk.get_async(paths.group_members(group))
        generation_result = self._zk.get_async(paths.group_generation(group))
        exists_result = self._zk.exists_async(paths.group(group))
        try:
            members_data, members_stat = members_result.get()
            members, version = _parse_members(members_data), members_stat.version
        except NoNodeError:
            members, version = {}, -1
        try:
            generation = _parse_generation(generation_result.get()[0])
        except NoNodeError:
            generation = 0
        if exists_result.get() is None:
            return {}, -1, -1
        return members, generation, version

    def describe(self, group: str, now_ms: int) -> GroupDescription:
        validate_group_name(group)
        with zk_errors(f"describing group {group!r}"):
            members, generation, _version = self._read_state(group)
            if generation < 0:
                raise UnknownGroup(f"group: {group!r} does not exist")
            offsets = self._all_offsets(group)
        return GroupDescription(
            group=group,
            generation=generation,
            members=tuple(
                MemberLease(m, info.topics, info.expires_ms)
                for m, info in sorted(live_members(members, now_ms).items())
            ),
            offsets=offsets,
        )

    def _offset_paths(self, group: str) -> list[tuple[Partition, str]]:
        try:
            topics = sorted(self._zk.get_children(paths.group_offsets_root(group)))
        except NoNodeError:
            return []
        listed = numbered_children(self._zk, [(t, paths.group_offsets(group, t)) for t in topics])
        return sorted(((t, p), paths.group_offset(group, t, p)) for t, p in listed)

    def _all_offsets(self, group: str) -> dict[Partition, int]:
        keys = [key for key, _path in self._offset_paths(group)]
        return {key: offset for key, offset in self.fetch(group, keys).items() if offset >= 0}

    def _check_empty(
        self, group: str, members: Mapping[str, _Member], now_ms: int, what: str
    ) -> None:
        alive = sorted(live_members(members, now_ms))
        if alive:
            raise GroupNotEmpty(
                f"group {group!r} has {len(alive)} live member(s) ({', '.join(alive)}); "
                f"stop its consumers before you {what}"
            )

    def alter_offsets(self, group: str, offsets: Mapping[Partition, int], now_ms: int) -> None:
        """Set offsets of a group with no live member, atomically with that check.

        The transaction checks the members znode version, so a consumer that
        joins meanwhile makes it fail instead of racing the reset.
        """
        validate_group_name(group)
        checked = {
            self._check_partition(key, "offsets"): validate_offset(offset, f"offsets[{key!r}]")
            for key, offset in offsets.items()
        }
        with zk_errors(f"setting offsets of group {group!r}"):
            for _ in range(_CAS_ATTEMPTS):
                self._ensure_group(group)
                members, _generation, version = self._read_state(group)
                self._check_empty(group, members, now_ms, "reset its offsets")
                txn = self._zk.transaction()
                txn.check(paths.group_members(group), version)
                self._forget(group)
                self._add_offsets(txn, group, checked)
                failure = txn_failure(txn.commit())
                if failure is None:
                    return
                if not isinstance(failure, BadVersionError | NoNodeError | NodeExistsError):
                    raise failure
        raise CoordinationError(f"setting offsets of group {group!r}: too much contention, retry")

    def delete(self, group: str, now_ms: int) -> None:
        """Remove a group with no live member: its membership and every committed offset."""
        validate_group_name(group)
        with zk_errors(f"deleting group {group!r}"):
            for _ in range(_CAS_ATTEMPTS):
                members, generation, version = self._read_state(group)
                if generation < 0:
                    raise UnknownGroup(f"group: {group!r} does not exist")
                self._check_empty(group, members, now_ms, "delete it")
                txn = self._zk.transaction()
                if version >= 0:
                    txn.check(paths.group_members(group), version)
                for _key, path in self._offset_paths(group):
                    txn.delete(path)
                root = paths.group_offsets_root(group)
                topics = self._zk.get_children(root) if self._zk.exists(root) else []
                for topic in sorted(topics):
                    txn.delete(paths.group_offsets(group, topic))
                if topics or self._zk.exists(root):
                    txn.delete(root)
                for node in (paths.group_members(group), paths.group_generation(group)):
                    if self._zk.exists(node):
                        txn.delete(node)
                txn.delete(paths.group(group))
                failure = txn_failure(txn.commit())
                self._forget(group)
                if failure is None:
                    return
                if not isinstance(failure, BadVersionError | NoNodeError | NotEmptyError):
                    raise failure
        raise CoordinationError(f"deleting group {group!r}: too much contention, retry")
