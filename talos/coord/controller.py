"""The controller: one elected broker that keeps ``/assignment`` in line with reality.

Election uses kazoo's Election recipe on ``/controller``. While leading, the
controller watches brokers and topics, runs :func:`plan_assignment` and
writes the result with a CAS on the ``/assignment`` znode version. Each
write is a transaction that also checks the controller's own election znode,
so a controller that lost its session (and with it the election) can never
overwrite its successor's assignment.

With a :class:`Balance`, the controller weighs partitions by the bytes/s the
brokers report (coord/traffic.py): new and orphaned partitions are placed by
load at once, and every ``interval_s`` a balancing round moves at most
``max_moves`` partitions (each costs a takeover). After any change of owners
the next round waits two intervals, so the new owners have measured before
the loads are judged again, and no round runs while a live broker has not
reported lately (its partitions' traffic is unknown, not zero).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import BadVersionError, KazooException, NodeExistsError, NoNodeError
from kazoo.recipe.election import Election

from talos import metrics
from talos.clock import SYSTEM_CLOCK, Clock
from talos.coord import paths
from talos.coord.assignment import (
    DEFAULT_EPSILON,
    DEFAULT_MAX_MOVES,
    plan_assignment,
    validate_epsilon,
    validate_max_moves,
)
from talos.coord.brokers import validate_broker_id
from talos.coord.traffic import (
    DEFAULT_INTERVAL_S,
    TrafficFigure,
    merge_traffic,
    read_broker_traffic,
    unreported,
    validate_interval,
)
from talos.coord.zk import dumps, loads, txn_failure, zk_errors
from talos.errors import CoordinationError, InvalidArgument, TalosError

log = logging.getLogger(__name__)

Partition = tuple[str, int]

#: How often a leader re-plans while a broker is missing or a rebalance is incomplete.
TICK_S = 0.5
#: Re-plan this often regardless, in case a watch event was missed.
IDLE_RECHECK_S = 10.0
#: Partitions moved between live brokers per plan; joining brokers fill gradually.
MAX_MOVES_PER_ROUND = 32


#: Reports older than this many intervals are ignored (a stalled broker's figures).
REPORT_MAX_AGE_INTERVALS = 3


@dataclass(frozen=True)
class Balance:
    """Traffic-weighted balancing: no broker above (1+epsilon) x the mean bytes/s,
    a round every ``interval_s`` seconds, at most ``max_moves`` moves a round (0: the
    traffic only guides where new and orphaned partitions go)."""

    epsilon: float = DEFAULT_EPSILON
    interval_s: float = DEFAULT_INTERVAL_S
    max_moves: int = DEFAULT_MAX_MOVES

    def __post_init__(self) -> None:
        validate_epsilon(self.epsilon, "balance_epsilon")
        validate_interval(self.interval_s, "traffic_interval_s")
        validate_max_moves(self.max_moves, "max_moves_per_round")


@dataclass(frozen=True)
class Assignment:
    version: int
    owners: dict[Partition, str]


@dataclass(frozen=True)
class _Stored:
    assignment: Assignment
    missing_since: dict[str, int]
    znode_version: int  # -1: /assignment does not exist yet


def _parse(data: bytes | None, znode_version: int) -> _Stored:
    raw: Any = loads(data, "assignment")
    try:
        owners = {
            paths.parse_partition_key(key): str(owner) for key, owner in raw["owners"].items()
        }
        missing = {str(b): int(t) for b, t in raw.get("missing_since", {}).items()}
        return _Stored(Assignment(int(raw["version"]), owners), missing, znode_version)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CoordinationError(f"assignment: malformed ({exc!r})") from None


def _serialize(version: int, owners: dict[Partition, str], missing: dict[str, int]) -> bytes:
    return dumps(
        {
            "version": version,
            "owners": {paths.partition_key(t, p): b for (t, p), b in sorted(owners.items())},
            "missing_since": missing,
        }
    )


def _read(zk: KazooClient) -> _Stored:
    try:
        data, stat = zk.get(paths.ASSIGNMENT)
    except NoNodeError:
        return _Stored(Assignment(-1, {}), {}, -1)
    return _parse(data, stat.version)


def read_assignment(zk: KazooClient) -> Assignment:
    """The current assignment; version -1 and no owners before the first one."""
    with zk_errors("reading the assignment"):
        return _read(zk).assignment


def current_controller(zk: KazooClient) -> str | None:
    """The broker id of the elected controller, if any."""
    with zk_errors("reading the controller"):
        contenders: list[str] = Election(zk, paths.CONTROLLER).contenders()
    return contenders[0] if contenders else None


class AssignmentWatcher:
    """Calls ``callback`` with the assignment now and after every change."""

    def __init__(self, zk: KazooClient, callback: Callable[[Assignment], None]) -> None:
        self._callback = callback
        self._stopped = threading.Event()
        with zk_errors("watching the assignment"):
            zk.DataWatch(paths.ASSIGNMENT, self._on_change)

    def _on_change(self, data: bytes | None, stat: Any, event: Any = None) -> bool | None:
        if self._stopped.is_set():
            return False
        try:
            if data is None or stat is None:
                assignment = Assignment(-1, {})
            else:
                assignment = _parse(data, stat.version).assignment
            self._callback(assignment)
        except Exception:
            log.exception("assignment watch callback failed")
        return None

    def stop(self) -> None:
        """No more callbacks (kazoo drops the watch at its next event)."""
        self._stopped.set()


class Controller:
    """Elected with kazoo's Election on /controller; while leader, keeps /assignment in line
    with live brokers and topics."""

    def __init__(
        self,
        zk: KazooClient,
        broker_id: str,
        *,
        reassign_delay_ms: int = 0,
        clock: Clock = SYSTEM_CLOCK,
        max_moves_per_round: int = MAX_MOVES_PER_ROUND,
        balance: Balance | None = None,
    ) -> None:
        validate_broker_id(broker_id)
        if (
            isinstance(reassign_delay_ms, bool)
            or not isinstance(reassign_delay_ms, int)
            or reassign_delay_ms < 0
        ):
            raise InvalidArgument(
                f"reassign_delay_ms: must be an integer >= 0, got {reassign_delay_ms!r}"
            )
        if (
            isinstance(max_moves_per_round, bool)
            or not isinstance(max_moves_per_round, int)
            or max_moves_per_round < 1
        ):
            raise InvalidArgument(
                f"max_moves_per_round: must be an integer >= 1, got {max_moves_per_round!r}"
            )
        self._zk = zk
        self._broker_id = broker_id
        self._delay_ms = reassign_delay_ms
        self._clock = clock
        self._max_moves = max_moves_per_round
        self._balance = balance
        self._next_round = 0.0  # monotonic time of the next balancing round
        self._known: dict[Partition, TrafficFigure] = {}  # latest bytes/s per partition
        self._silent: list[str] = []  # live brokers without a fresh report, last looked
        #: Balancing rounds run and partitions they moved, since this process started.
        self.rounds = 0
        self.moves = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._election: Election | None = None
        self._thread: threading.Thread | None = None
        self._leading = False
        self._term = 0
        self._session_lost = False
        # What the leader knows, fed by watches (guarded by _lock).
        self._brokers: list[str] = []
        self._topic_partitions: dict[str, int] = {}
        self._watched_topics: set[str] = set()

    @property
    def is_leader(self) -> bool:
        return self._leading

    def start(self) -> None:
        """Contend for leadership in a daemon thread."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name=f"talos-controller-{self._broker_id}", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Leave the election (resigning if leader) and wait for the thread."""
        with self._lock:
            self._stop.set()
            election, thread = self._election, self._thread
        if election is not None:
            election.cancel()
        self._wake.set()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("controller %s did not stop within %ss", self._broker_id, timeout)

    # -- election -------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if self._stop.is_set():
                    return
                election = self._zk.Election(paths.CONTROLLER, self._broker_id)
                self._election = election
            try:
                election.run(self._lead)
            except (KazooException, TalosError) as exc:
                log.info("controller %s: election interrupted: %s", self._broker_id, exc)
            except Exception:
                log.exception("controller %s failed", self._broker_id)
            # Lost the session, the client was closed, or we are stopping:
            # pause briefly, then contend again.
            self._stop.wait(TICK_S)

    def _on_state(self, state: str) -> None:
        if state == KazooState.LOST:
            with self._lock:
                self._session_lost = True
            self._wake.set()

    def _lead(self) -> None:
        election = self._election
        node = election.lock.node if election is not None else None
        if node is None or self._stop.is_set():
            return
        lock_path = f"{paths.CONTROLLER}/{node}"
        with self._lock:
            self._term += 1
            term = self._term
            self._session_lost = False
            self._brokers, self._topic_partitions, self._watched_topics = [], {}, set()
            self._known = {}
            if self._balance is not None:  # let every broker report once first
                self._next_round = self._clock.monotonic() + self._balance.interval_s
        self._zk.add_listener(self._on_state)
        self._leading = True
        log.info("broker %s is now the controller", self._broker_id)
        try:
            with zk_errors("controller watches"):
                self._zk.ChildrenWatch(paths.BROKERS, self._broker_watch(term))
                self._zk.ChildrenWatch(paths.TOPICS, self._topics_watch(term))
            self._wake.set()
            delay = 0.0
            while True:
                self._wake.wait(delay)
                self._wake.clear()
                with self._lock:
                    if self._stop.is_set() or self._session_lost or self._term != term:
                        return
                try:
                    delay = TICK_S if self._reconcile(term, lock_path) else IDLE_RECHECK_S
                    if self._balance is not None:
                        delay = min(delay, max(self._next_round - self._clock.monotonic(), 0.0))
                except _LostLeadership:
                    return
                except TalosError as exc:
                    log.warning("controller %s: %s; retrying", self._broker_id, exc)
                    delay = TICK_S
        finally:
            self._leading = False
            with self._lock:
                self._term += 1  # stops this term's watches at their next event
            self._zk.remove_listener(self._on_state)
            log.info("broker %s is no longer the controller", self._broker_id)

    # -- watches (kazoo's event thread; they only record and wake) -------------

    def _broker_watch(self, term: int) -> Callable[[list[str]], bool | None]:
        def on_brokers(children: list[str]) -> bool | None:
            with self._lock:
                if self._term != term:
                    return False
                self._brokers = sorted(children)
            self._wake.set()
            return None

        return on_brokers

    def _topics_watch(self, term: int) -> Callable[[list[str]], bool | None]:
        def on_topics(children: list[str]) -> bool | None:
            with self._lock:
                if self._term != term:
                    return False
                gone = set(self._topic_partitions) - set(children)
                for name in gone:
                    del self._topic_partitions[name]
            self._wake.set()  # the leader loop starts data watches for new topics
            return None

        return on_topics

    def _topic_watch(self, term: int, name: str) -> Callable[..., bool | None]:
        def on_topic(data: bytes | None, stat: Any, event: Any = None) -> bool | None:
            with self._lock:
                if self._term != term:
                    return False
                if data is None:
                    self._topic_partitions.pop(name, None)
                    self._watched_topics.discard(name)
                    self._wake.set()
                    return False
                try:
                    count = int(loads(data, f"topic {name}")["partitions"])
                except (TalosError, KeyError, TypeError, ValueError):
                    log.warning("controller: topic %s has malformed metadata", name)
                    return None
                self._topic_partitions[name] = count
            self._wake.set()
            return None

        return on_topic

    # -- the loop body ----------------------------------------------------------

    def _reconcile(self, term: int, lock_path: str) -> bool:
        """Plan and write once; True if it should run again soon (time must pass)."""
        with zk_errors("controller reconciling the assignment"):
            topics = self._zk.get_children(paths.TOPICS)
            with self._lock:
                new = [t for t in topics if t not in self._watched_topics]
                self._watched_topics.update(new)
            for name in new:
                # Reports the current partition count synchronously, then changes.
                self._zk.DataWatch(paths.topic(name), self._topic_watch(term, name))
            with self._lock:
                brokers = list(self._brokers)
                partitions = [
                    (topic, p)
                    for topic, count in sorted(self._topic_partitions.items())
                    if topic in topics
                    for p in range(count)
                ]
            stored = _read(self._zk)
            now_ms = self._clock.wall_ms()
            balance, due = self._balance, False
            if balance is None:
                traffic, max_moves, epsilon = None, self._max_moves, DEFAULT_EPSILON
            else:
                max_age_ms = int(REPORT_MAX_AGE_INTERVALS * balance.interval_s * 1000)
                reports = read_broker_traffic(self._zk)
                self._known = merge_traffic(self._known, reports, now_ms, max_age_ms)
                traffic = {p: figure.bytes_per_s for p, figure in self._known.items()}
                due = self._clock.monotonic() >= self._next_round
                silent = unreported(brokers, reports, now_ms, max_age_ms)
                if due and silent:
                    # Judging loads without a broker's figures would take its partitions
                    # for idle and move toward it: wait for its report instead.
                    if silent != self._silent:
                        log.info("controller %s: balancing waits for %s", self._broker_id, silent)
                    due = False
                    self._next_round = self._clock.monotonic() + min(TICK_S, balance.interval_s)
                self._silent = silent
                max_moves, epsilon = (balance.max_moves if due else 0), balance.epsilon
            plan = plan_assignment(
                partitions,
                brokers,
                stored.assignment.owners,
                stored.missing_since,
                now_ms,
                self._delay_ms,
                max_moves=max_moves,
                traffic=traffic,
                epsilon=epsilon,
            )
            written = not plan.changed or self._write(
                stored, plan.owners, plan.missing_since, lock_path
            )
            if balance is not None and due and written:
                self.rounds += 1
                self.moves += len(plan.moves)
                metrics.balance_moved(len(plan.moves))
                for move in plan.moves:
                    log.info(
                        "controller %s: balancing round %d moves %s/%d from %s to %s (%.0f B/s)",
                        self._broker_id,
                        self.rounds,
                        *move.partition,
                        move.source,
                        move.target,
                        move.weight,
                    )
                self._next_round = self._clock.monotonic() + balance.interval_s
            if balance is not None and written and plan.owners != stored.assignment.owners:
                # New owners (moved, new or orphaned partitions) measure for a while before
                # their figures say anything: judge the loads two intervals from now.
                settle = self._clock.monotonic() + 2 * balance.interval_s
                self._next_round = max(self._next_round, settle)
        return bool(plan.missing_since) or not plan.settled

    def _write(
        self,
        stored: _Stored,
        owners: dict[Partition, str],
        missing: dict[str, int],
        lock_path: str,
    ) -> bool:
        """True if written; False if someone else wrote first (plan again)."""
        data = _serialize(stored.assignment.version + 1, owners, missing)
        txn = self._zk.transaction()
        txn.check(lock_path, 0)  # still the elected controller
        if stored.znode_version < 0:
            txn.create(paths.ASSIGNMENT, data)
        else:
            txn.set_data(paths.ASSIGNMENT, data, version=stored.znode_version)
        results = txn.commit()
        failure = txn_failure(results)
        if failure is None:
            log.info(
                "controller %s wrote assignment version %d (%d partitions, %d missing brokers)",
                self._broker_id,
                stored.assignment.version + 1,
                len(owners),
                len(missing),
            )
            return True
        if isinstance(results[0], NoNodeError):
            raise _LostLeadership()
        if isinstance(failure, BadVersionError | NodeExistsError):
            self._wake.set()  # someone else wrote meanwhile: re-read and plan again
            return False
        raise failure


class _LostLeadership(Exception):
    """Our election znode is gone: another controller may be in charge."""
