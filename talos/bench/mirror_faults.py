"""Fault figures of a replicator, Talos mirror worker against MirrorMaker 2 (`make bench-mirror`).

- **kill**: 20,000 keyed messages go into A in slices while the replicator is
  killed with SIGKILL 8 times, each time once it is copying again, and
  restarted. Then B is read whole: messages missing, messages duplicated, and
  whether target offset N holds source offset N in every partition.
- **failover**: a consumer group reads part of the topic in A and commits;
  once the replicator has carried the group's offsets to B (Talos: offset
  sync; MM2: checkpoints with ``sync.group.offsets.enabled``), the same group
  reads in B: messages redelivered and messages skipped.
- **stall**: SIGSTOP the replicator while A keeps receiving; seconds until
  each system's own status tooling reports it.

The checks are plain functions (:func:`check_copy`, :func:`check_failover`);
the runs are I/O around them.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from talos.errors import TalosError

from .mm2 import SOURCE_ALIAS

MESSAGES = 20_000
KILLS = 8
PARTITIONS = 4
GROUP = "failover-app"


@dataclass(frozen=True)
class CopyCheck:
    """What B holds against A after the kills."""

    source: int
    target: int
    missing: int
    duplicated: int
    offsets_kept: bool
    first_offset_mismatch: str  # "partition/offset", or "" when offsets are kept

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_copy(
    source: Mapping[int, Sequence[bytes]], target: Mapping[int, Sequence[bytes]]
) -> CopyCheck:
    """Compare per-partition value lists (index = offset) of source and target.

    missing: source values absent from the target; duplicated: target records
    beyond the first copy of each value; offsets kept: every partition of the
    target is the source's, value for value at the same offsets.
    """
    wanted = Counter(v for values in source.values() for v in values)
    held = Counter(v for values in target.values() for v in values)
    missing = sum(1 for v in wanted if v not in held)
    duplicated = sum(n - 1 for n in held.values() if n > 1)
    mismatch = ""
    for p in sorted(set(source) | set(target)):
        ours, theirs = list(source.get(p, ())), list(target.get(p, ()))
        if ours != theirs:
            at = next(
                (i for i, (x, y) in enumerate(zip(ours, theirs, strict=False)) if x != y),
                min(len(ours), len(theirs)),
            )
            mismatch = f"{p}/{at}"
            break
    return CopyCheck(
        source=sum(wanted.values()),
        target=sum(held.values()),
        missing=missing,
        duplicated=duplicated,
        offsets_kept=not mismatch,
        first_offset_mismatch=mismatch,
    )


@dataclass(frozen=True)
class FailoverCheck:
    read_in_a: int
    read_in_b: int
    redelivered: int
    skipped: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_failover(
    every: set[bytes], read_in_a: set[bytes], read_in_b: Sequence[bytes]
) -> FailoverCheck:
    """redelivered: records read in B that the group had already read (and committed) in A;
    skipped: messages read neither in A nor in B."""
    redelivered = sum(1 for v in read_in_b if v in read_in_a)
    skipped = len(every - read_in_a - set(read_in_b))
    return FailoverCheck(len(read_in_a), len(read_in_b), redelivered, skipped)


def keyed_value(i: int) -> bytes:
    return f"{i:012d}".encode() + b"x" * 88  # 100 B, the index first


# -- the two systems behind one small interface ------------------------------------------------


class System:
    """A source cluster, a target cluster and a replicator process that can be killed."""

    name = ""
    target_topic = ""

    def produce(self, start: int, count: int) -> None:
        raise NotImplementedError

    def target_total(self) -> int:
        raise NotImplementedError

    def source_total(self) -> int:
        raise NotImplementedError

    def replicator_pid(self) -> int:
        raise NotImplementedError

    def kill_and_restart(self) -> None:
        raise NotImplementedError

    def read_all(self, target: bool) -> dict[int, list[bytes]]:
        raise NotImplementedError

    def group_read_in_a(self, count: int) -> set[bytes]:
        raise NotImplementedError

    def group_offsets_in_b(self) -> dict[int, int]:
        raise NotImplementedError

    def group_read_in_b(self) -> list[bytes]:
        raise NotImplementedError

    def stall_reported(self) -> tuple[bool, str]:
        """(stall reported by the system's own tooling, what it said)."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise if the replicator died on its own."""


class TalosSystem(System):
    name = "talos"

    def __init__(self, dcs: Any, topic: str) -> None:
        from talos.client import Admin, Producer

        self.dcs = dcs
        self.topic = self.target_topic = topic
        self.producer = Producer(dcs.bootstrap("A"))
        self.a_admin = Admin(dcs.bootstrap("A"))
        self.b_admin = Admin(dcs.bootstrap("B"))
        self.worker = dcs.start_worker("A:B", worker_id="w1")

    def close(self) -> None:
        self.producer.close()
        self.a_admin.close()
        self.b_admin.close()

    def produce(self, start: int, count: int) -> None:
        for i in range(start, start + count):
            self.producer.send(self.topic, keyed_value(i), key=f"k{i}".encode())
        self.producer.flush()

    def _total(self, admin: Any) -> int:
        try:
            return sum(max(p.log_end, 0) for p in admin.describe_topic(self.topic).partitions)
        except TalosError:
            return 0

    def target_total(self) -> int:
        return self._total(self.b_admin)

    def source_total(self) -> int:
        return self._total(self.a_admin)

    def replicator_pid(self) -> int:
        return int(self.worker.pid)

    def check(self) -> None:
        code = self.worker.process.poll() if self.worker.process is not None else None
        if code is not None and code > 0:
            raise TalosError(f"mirror worker exited with {code}; see {self.worker.log_path}")

    def kill_and_restart(self) -> None:
        self.worker.kill()
        self.worker.start()

    def read_all(self, target: bool) -> dict[int, list[bytes]]:
        from talos.client import Consumer

        admin = self.b_admin if target else self.a_admin
        ends = {p.partition: p.log_end for p in admin.describe_topic(self.topic).partitions}
        out: dict[int, list[bytes]] = {p: [] for p in ends}
        with Consumer(self.dcs.bootstrap("B" if target else "A")) as consumer:
            consumer.assign([(self.topic, p) for p in ends])
            consumer.seek_to_beginning()
            deadline = time.monotonic() + 120
            while sum(len(v) for v in out.values()) < sum(ends.values()):
                if time.monotonic() > deadline:
                    raise TalosError("reading the whole topic took more than 120 s")
                for m in consumer.poll(1.0):
                    if len(out[m.partition]) != m.offset:
                        raise TalosError(f"offset gap at {m.partition}/{m.offset}")
                    out[m.partition].append(m.value or b"")
        return out

    def group_read_in_a(self, count: int) -> set[bytes]:
        from talos.client import Consumer

        seen: set[bytes] = set()
        with Consumer(
            self.dcs.bootstrap("A"),
            group_id=GROUP,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        ) as consumer:
            consumer.subscribe([self.topic])
            ends: dict[Any, int] = {}
            while len(seen) < count:
                for m in consumer.poll(1.0):
                    if len(seen) < count:
                        seen.add(m.value or b"")
                        ends[(m.topic, m.partition)] = m.offset + 1
            from talos.client.consumer import TopicPartition

            consumer.commit({TopicPartition(t, p): o for (t, p), o in ends.items()})
            self._committed = {p: o for (_t, p), o in ends.items()}
        return seen

    def group_offsets_in_b(self) -> dict[int, int]:
        from talos.client import Consumer
        from talos.client.consumer import TopicPartition

        with Consumer(self.dcs.bootstrap("B"), group_id=GROUP) as consumer:
            got = consumer.committed([TopicPartition(self.topic, p) for p in range(PARTITIONS)])
        return {tp.partition: o for tp, o in got.items() if o >= 0}

    def group_read_in_b(self) -> list[bytes]:
        from talos.client import Consumer

        total = self.target_total()
        committed = sum(self.group_offsets_in_b().values())
        out: list[bytes] = []
        with Consumer(
            self.dcs.bootstrap("B"), group_id=GROUP, auto_offset_reset="earliest"
        ) as consumer:
            consumer.subscribe([self.topic])
            deadline = time.monotonic() + 60
            idle = 0
            while time.monotonic() < deadline and idle < 5:
                msgs = consumer.poll(1.0)
                out.extend(m.value or b"" for m in msgs)
                idle = 0 if msgs else idle + 1
                if len(out) >= total - committed and not msgs:
                    break
        return out

    def stall_reported(self) -> tuple[bool, str]:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "talos",
                "mirror",
                "status",
                "--topology",
                str(self.dcs.topology_path),
                "--link",
                "A:B",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        states = ""
        try:
            doc = json.loads(done.stdout)
            states = ",".join(
                sorted({str(p.get("state")) for link in doc["links"] for p in link["partitions"]})
            )
        except (ValueError, KeyError, TypeError):
            states = done.stdout[-200:]
        return done.returncode == 1, f"exit {done.returncode} states {states}"


class Mm2System(System):
    name = "mm2"

    def __init__(self, pair: Any) -> None:
        from confluent_kafka import Producer

        from .mm2 import Ends, remote_topic

        self.pair = pair
        self.topic = pair.topic
        self.target_topic = remote_topic(pair.topic)
        self.producer = Producer({"bootstrap.servers": pair.a.bootstrap, "acks": "all"})
        self.source = Ends(pair.a.bootstrap, self.topic, PARTITIONS)
        self.target = Ends(pair.b.bootstrap, self.target_topic, PARTITIONS)
        pair.start_mm2()

    def close(self) -> None:
        self.source.close()
        self.target.close()

    def produce(self, start: int, count: int) -> None:
        for i in range(start, start + count):
            self.producer.produce(self.topic, keyed_value(i), key=f"k{i}".encode())
        if self.producer.flush(60):
            raise TalosError("Kafka did not acknowledge every message")

    def target_total(self) -> int:
        return self.target.total() or 0

    def source_total(self) -> int:
        return self.source.total() or 0

    def replicator_pid(self) -> int:
        return int(self.pair.mm2.pid)

    def check(self) -> None:
        self.pair.check_mm2()

    def kill_and_restart(self) -> None:
        self.pair.mm2.kill()
        self.pair.start_mm2()

    def read_all(self, target: bool) -> dict[int, list[bytes]]:
        from confluent_kafka import Consumer, TopicPartition

        topic = self.target_topic if target else self.topic
        boot = self.pair.b.bootstrap if target else self.pair.a.bootstrap
        consumer = Consumer({"bootstrap.servers": boot, "group.id": "talos-bench-read"})
        try:
            ends = {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(PARTITIONS)
            }
            consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
            out: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
            deadline = time.monotonic() + 120
            while sum(len(v) for v in out.values()) < sum(ends.values()):
                if time.monotonic() > deadline:
                    raise TalosError("reading the whole topic took more than 120 s")
                for m in consumer.consume(5000, 1.0):
                    if m.error() is None:
                        p, offset = int(m.partition() or 0), m.offset()
                        if len(out[p]) != offset:
                            raise TalosError(f"offset gap at {p}/{offset}")
                        out[p].append(m.value() or b"")
            return out
        finally:
            consumer.close()

    def group_read_in_a(self, count: int) -> set[bytes]:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self.pair.a.bootstrap,
                "group.id": GROUP,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        seen: set[bytes] = set()
        ends: dict[int, int] = {}
        try:
            consumer.subscribe([self.topic])
            while len(seen) < count:
                for m in consumer.consume(500, 1.0):
                    if m.error() is None and len(seen) < count:
                        seen.add(m.value() or b"")
                        ends[int(m.partition() or 0)] = int(m.offset() or 0) + 1
            consumer.commit(
                offsets=[TopicPartition(self.topic, p, o) for p, o in ends.items()],
                asynchronous=False,
            )
        finally:
            consumer.close()
        return seen

    def group_offsets_in_b(self) -> dict[int, int]:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.pair.b.bootstrap, "group.id": GROUP})
        try:
            got = consumer.committed(
                [TopicPartition(self.target_topic, p) for p in range(PARTITIONS)], timeout=10
            )
        finally:
            consumer.close()
        return {tp.partition: tp.offset for tp in got if tp.offset >= 0}

    def group_read_in_b(self) -> list[bytes]:
        from confluent_kafka import Consumer

        consumer = Consumer(
            {
                "bootstrap.servers": self.pair.b.bootstrap,
                "group.id": GROUP,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        out: list[bytes] = []
        try:
            consumer.subscribe([self.target_topic])
            deadline = time.monotonic() + 60
            idle = 0
            while time.monotonic() < deadline and idle < 5:
                msgs = [m for m in consumer.consume(1000, 1.0) if m.error() is None]
                out.extend(m.value() or b"" for m in msgs)
                idle = 0 if msgs else idle + 1
        finally:
            consumer.close()
        return out

    def stall_reported(self) -> tuple[bool, str]:
        """MM2's status surfaces: its Connect REST server and its worker group in B.

        Dedicated MM2 serves only Connect's internal REST endpoints (no
        ``/connectors/*/status``); what an operator can ask is whether the
        worker's REST server answers (``GET /``) and what Kafka's group tooling
        says about the MM2 worker group (``describe_consumer_groups``).
        """
        said = []
        reported = False
        port = self.pair.mm2.rest_port
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as reply:
                said.append(f"REST {reply.status}")
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            said.append(f"REST no answer ({type(exc).__name__})")
        state = self._worker_group_state()
        said.append(f"worker group {state}")
        reported = not state.startswith(f"{SOURCE_ALIAS}-mm2=STABLE")
        return reported, "; ".join(said)

    def _worker_group_state(self) -> str:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.pair.b.bootstrap})
        try:
            # The worker of flow A->B joins group "<source alias>-mm2" in the target cluster
            # (a Connect-protocol group: not in a consumer-group listing, but describable).
            names = [f"{SOURCE_ALIAS}-mm2"]
            desc = admin.describe_consumer_groups(names, request_timeout=5)
            states = sorted(
                f"{n}={desc[n].result(10).state.name}:{len(desc[n].result(10).members)}"
                for n in names
            )
            return ",".join(states)
        except Exception as exc:  # any admin failure is reported as such
            return f"unknown ({type(exc).__name__})"


# -- the runs ------------------------------------------------------------------------------------


def _wait(pred: Callable[[], bool], system: System, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        system.check()
        if time.monotonic() > deadline:
            raise TalosError(f"{system.name}: timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def _grew(system: System, before: int) -> Callable[[], bool]:
    return lambda: system.target_total() > before


def run_kill(system: System, seed: int = 16, timeout: float = 600.0) -> dict[str, Any]:
    """Produce MESSAGES in KILLS + 1 slices; SIGKILL the replicator once it copies each slice."""
    rng = random.Random(seed)
    per = MESSAGES // (KILLS + 1)
    sent = 0
    started = time.monotonic()
    restarts_s: list[float] = []
    for _ in range(KILLS):
        before = system.target_total()
        system.produce(sent, per)
        sent += per
        # once it is copying again, at a random moment of the slice
        _wait(_grew(system, before), system, timeout, "the copy to resume")
        time.sleep(rng.uniform(0.0, 0.3))
        t = time.monotonic()
        system.kill_and_restart()
        restarts_s.append(time.monotonic() - t)
    system.produce(sent, MESSAGES - sent)
    # Caught up: every distinct message is in B (B may hold more: duplicates).
    _wait(lambda: system.target_total() >= system.source_total(), system, timeout, "B to catch up")
    time.sleep(3.0)  # anything still in flight lands
    source = system.read_all(target=False)
    target = system.read_all(target=True)
    figures: dict[str, Any] = {"kills": KILLS, "messages": MESSAGES}
    figures.update(check_copy(source, target).to_dict())
    figures["seconds"] = round(time.monotonic() - started, 1)
    return figures


def run_failover(system: System, timeout: float = 120.0) -> dict[str, Any]:
    """A group reads half the topic in A and commits; after the offsets reach B it reads there."""
    every = {v for values in system.read_all(target=False).values() for v in values}
    read_in_a = system.group_read_in_a(len(every) // 2)
    committed_at = time.monotonic()
    # The replicator carries the group's offsets to B: wait until they stop changing.
    last: dict[int, int] = {}
    stable_since = time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = system.group_offsets_in_b()
        if now != last:
            last, stable_since = now, time.monotonic()
        elif now and time.monotonic() - stable_since > 5:
            break
        time.sleep(0.5)
    synced_s = round(stable_since - committed_at, 1) if last else None
    read_in_b = system.group_read_in_b()
    figures = check_failover(every, read_in_a, read_in_b).to_dict()
    figures["offsets_in_b_after_s"] = synced_s
    figures["offsets_in_b"] = sum(last.values())
    return figures


def run_stall(system: System, rate: float = 500.0, limit_s: float = 120.0) -> dict[str, Any]:
    """SIGSTOP the replicator while A receives ``rate`` msg/s; poll its status tooling."""
    stop = threading.Event()
    base = 10**9

    def load() -> None:
        i = 0
        while not stop.is_set():
            system.produce(base + i, int(rate / 10))
            i += int(rate / 10)
            time.sleep(0.1)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        _wait(
            lambda: (
                system.target_total() > 0 and system.target_total() >= system.source_total() - rate
            ),
            system,
            300,
            "the copy to run",
        )
        healthy, said_before = system.stall_reported()
        pid = system.replicator_pid()
        os.killpg(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        polls: list[tuple[float, bool, str]] = []
        try:
            while time.monotonic() - stopped < limit_s:
                reported, said = system.stall_reported()
                polls.append((round(time.monotonic() - stopped, 1), reported, said))
                if reported:
                    break
                time.sleep(1.0)
        finally:
            os.killpg(pid, signal.SIGCONT)
    finally:
        stop.set()
        loader.join(30)
    # A probe that already "reports" while the replicator runs detects nothing.
    reported_at = None if healthy else next((t for t, r, _ in polls if r), None)
    return {
        "before": said_before,
        "stall_reported_before_stop": healthy,
        "detected_s": reported_at,
        "limit_s": limit_s,
        "last_said": polls[-1][2] if polls else "",
        "polls": len(polls),
    }


@contextmanager
def talos_system() -> Iterator[TalosSystem]:
    from talos.client import Admin
    from talos.testing.multidc import MultiDC

    with tempfile.TemporaryDirectory(prefix="talos-bench-faults-") as tmp:
        dcs = MultiDC(tmp, brokers=1, start_mirror=False)
        system: TalosSystem | None = None
        try:
            dcs.start()
            with Admin(dcs.bootstrap("A")) as admin:
                admin.create_topic("faults", PARTITIONS)
                admin.wait_until_ready("faults", timeout_s=60)
            system = TalosSystem(dcs, "faults")
            yield system
        finally:
            if system is not None:
                system.close()
            dcs.stop()


@contextmanager
def mm2_system() -> Iterator[Mm2System]:
    from .mm2 import mm2_pair

    with mm2_pair(PARTITIONS, topic="faults") as pair:
        system = Mm2System(pair)
        try:
            yield system
        finally:
            system.close()


def run_faults(parts: Sequence[str], systems: Sequence[str]) -> dict[str, Any]:
    """kill (+ failover on the same data) and stall, for each of ``systems`` (talos, mm2)."""
    out: dict[str, Any] = {}
    makers: dict[str, Callable[[], Any]] = {"talos": talos_system, "mm2": mm2_system}
    for name in systems:
        make = makers[name]
        figures: dict[str, Any] = {}
        if "kill" in parts:
            with make() as system:
                figures["kill"] = run_kill(system)
                figures["failover"] = run_failover(system)
        if "stall" in parts:
            with make() as system:
                figures["stall"] = run_stall(system)
        out[name] = figures
    return out
