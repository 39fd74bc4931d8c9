"""The nemesis: a seeded schedule of faults, and the code that injects and heals them.

The schedule is a pure function of the seed (``make_schedule``), so a run is
reproducible as far as timing allows. Faults run one after another, each
healed before the next, with a quiet gap between them and a longer quiet
period now and then. Every start and end is recorded as a ``nemesis`` event.

Corruption, precisely (see chaos/README.md):

- ``corrupt-tail``: SIGKILL the owner of a partition, then append to each open
  segment it owned one *synthetic* batch stamped as the next offset, whose
  value nobody sent, either with one bit flipped inside the CRC-covered bytes
  (``bitflip``) or cut short (``truncate``, a torn write). No acknowledged
  byte is touched. The takeover scan must stop before it; it must never be
  read (a read of it is a ``phantom``).
- ``corrupt-sealed``: in the sacrificial topic ``sealed`` (filled before the
  faults, never written again) flip one bit inside one batch's CRC-covered
  bytes (``flip-records``), flip one bit of its base offset, which the CRC does
  not cover (``flip-offset``), or truncate a sealed segment inside a batch
  (``truncate``). Every value of the hit segment is recorded as ``destroyed``
  (a fetch returns several batches and may fail as a whole): readers may get
  an error or skip them, but must never get other bytes or other offsets.

HDFS faults (store ``hdfs`` only; the MiniDFSCluster's control channel):

- ``kill-datanode``: shut one of the three DataNodes down while the brokers write;
  their pipelines break and recover on the other two. Heal: start it again.
- ``restart-namenode``: stop the NameNode for 2-6 s (creates, rolls, lease and
  length queries fail; hflush on an open pipeline goes on), then start it again on
  the same port. Heal: start it.
- ``pause-lease``: SIGSTOP the owner of a partition, wait until another broker
  has taken the partition over (its epoch moved in ZooKeeper: the new owner is now
  writing the marker and recovering the lease of the open segment), then SIGCONT
  the old owner 0-1.5 s later, while the lease recovery may still run. Its pending
  hflush or marker check must fail: nothing it acknowledges after that may be lost.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talos.client import Admin
from talos.config import TopicConfig
from talos.coord.partition_state import PartitionStateStore
from talos.coord.topics import TopicStore
from talos.coord.zk import connect
from talos.errors import InvalidArgument, TalosError, TopicExists, UnknownTopic
from talos.record.batch import Record, decode_records, encode_batch, iter_batches
from talos.storage.segment import segment_path
from talos.testing.proxy import TcpProxy

from .harness import Broker, DataCenter, Harness, Node
from .history import HistoryWriter
from .netns import ROOT_IP, WAN_IP

log = logging.getLogger(__name__)

FAULT_KINDS = (
    "kill",
    "pause",
    "zk-expire",
    "partition",
    "wan",
    "corrupt-tail",
    "corrupt-sealed",
    "clock",
)
#: Faults between datacenters; only with two datacenters and a mirror.
MIRROR_FAULT_KINDS = ("wan-dc", "kill-mirror")
ALL_FAULT_KINDS = FAULT_KINDS + MIRROR_FAULT_KINDS
#: Delete and recreate a topic during the run (issue 11 §1); only in the scenarios that
#: name it, which also produce to RECREATE_TOPIC (see "Topics deleted and recreated").
INCARNATION_FAULT_KINDS = ("recreate",)
RECREATE_TOPIC = "reborn"
RECREATE_PARTITIONS = 3
RECREATE_VARIANTS = ("plain", "paused-owner")
#: Faults of the HDFS under a datacenter (store "hdfs" only).
HDFS_FAULT_KINDS = ("kill-datanode", "restart-namenode", "pause-lease")
#: How long pause-lease waits for the takeover before it resumes the owner anyway.
PAUSE_LEASE_FACTOR = 4.0
PAUSE_FACTORS = (0.5, 1.5, 3.0)
#: Offset in a batch of the base offset field (8 bytes), and where the CRC coverage starts.
BASE_OFFSET_AT, CRC_COVERED_FROM = 1, 17


@dataclass(frozen=True)
class Fault:
    at: float  # seconds from the start of the nemesis
    kind: str
    duration: float
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        params = " ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"t+{self.at:5.1f}s {self.kind} for {self.duration:.1f}s {params}".rstrip()


def make_schedule(
    seed: int,
    duration: float,
    kinds: Sequence[str],
    session_timeout: float,
    partitions: int,
) -> list[Fault]:
    """Faults for ``duration`` seconds: every kind early on (shuffled), then random ones.

    The first round is always scheduled, even past ``duration``, so a short run
    still covers its kinds.

    Pure: the same arguments give the same schedule.
    """
    known = (*ALL_FAULT_KINDS, *INCARNATION_FAULT_KINDS, *HDFS_FAULT_KINDS)
    unknown = sorted(set(kinds) - set(known))
    if unknown or not kinds:
        raise InvalidArgument(f"kinds: must be a non-empty subset of {known}, got {unknown}")
    if duration <= 0 or session_timeout <= 0 or partitions < 1:
        raise InvalidArgument("duration, session_timeout and partitions must be positive")
    rng = random.Random(seed)
    # every kind early on; pauses once per factor (0.5x, 1.5x, 3x the session timeout)
    first = [k for k in kinds for _ in range(len(PAUSE_FACTORS) if k == "pause" else 1)]
    first += ["recreate"] * (len(RECREATE_VARIANTS) - 1) * ("recreate" in kinds)
    rng.shuffle(first)
    pauses = list(PAUSE_FACTORS)
    rng.shuffle(pauses)
    variants = list(RECREATE_VARIANTS) if "recreate" in kinds else []  # once each, early
    rng.shuffle(variants)
    faults: list[Fault] = []
    now = rng.uniform(2.0, 4.0)
    count = 0
    while True:
        kind = first[count] if count < len(first) else rng.choice(list(kinds))
        factor = pauses.pop() if kind == "pause" and pauses else rng.choice(PAUSE_FACTORS)
        variant = variants.pop() if kind == "recreate" and variants else None
        fault = _fault(rng, kind, now, session_timeout, partitions, factor, variant)
        if fault.at + fault.duration > duration and count >= len(first):
            break
        faults.append(fault)
        count += 1
        now = fault.at + fault.duration + rng.uniform(1.0, 3.0)
        if kind in ("kill", "corrupt-tail", "pause-lease", "restart-namenode"):
            # leave the failover alone, so its unavailability is measured on its own
            now = max(now, fault.at + session_timeout + 5.0 + rng.uniform(0.0, 1.0))
        if count % 4 == 0:
            now += rng.uniform(4.0, 7.0)  # a quiet period
        if now >= duration and count >= len(first):
            break
    return faults


def _fault(
    rng: random.Random,
    kind: str,
    at: float,
    session_timeout: float,
    partitions: int,
    pause_factor: float,
    variant: str | None = None,
) -> Fault:
    if kind in HDFS_FAULT_KINDS:
        return _hdfs_fault(rng, kind, at, session_timeout, partitions)
    partition = rng.randrange(partitions)
    if kind == "kill":
        return Fault(at, kind, rng.uniform(3.0, 6.0), {"partition": partition})
    if kind == "pause":
        return Fault(
            at,
            kind,
            round(pause_factor * session_timeout, 2),
            {"partition": partition, "factor": pause_factor},
        )
    if kind == "zk-expire":
        return Fault(at, kind, round(1.5 * session_timeout + 1.0, 2), {"partition": partition})
    if kind == "partition":
        mode = rng.choice(["isolate", "from-clients", "from-zookeeper"])
        return Fault(
            at,
            kind,
            rng.uniform(2.0, 2.5 * session_timeout),
            {
                "partition": partition,
                "mode": mode,
            },
        )
    if kind == "wan":
        mode = rng.choice(["latency", "bandwidth", "reset"])
        params: dict[str, Any] = {"partition": partition, "mode": mode}
        if mode == "latency":
            params["latency_ms"] = rng.choice([50, 150, 400])
        elif mode == "bandwidth":
            params["bytes_s"] = rng.choice([20_000, 100_000])
        return Fault(at, kind, rng.uniform(3.0, 8.0), params)
    if kind == "corrupt-tail":
        return Fault(
            at,
            kind,
            rng.uniform(3.0, 6.0),
            {"partition": partition, "variant": rng.choice(["bitflip", "truncate"])},
        )
    if kind == "corrupt-sealed":
        variant = rng.choice(["flip-records", "flip-offset", "truncate"])
        return Fault(at, kind, 0.5, {"variant": variant, "pick": rng.randrange(1 << 30)})
    if kind == "wan-dc":
        mode = rng.choice(["latency", "bandwidth", "reset", "partition"])
        params = {"mode": mode}
        if mode == "latency":
            params["latency_ms"] = rng.choice([50, 150, 400])
        elif mode == "bandwidth":
            params["bytes_s"] = rng.choice([5_000, 50_000])
        duration = rng.uniform(3.0, 8.0) if mode != "partition" else 1.5 * session_timeout + 1
        return Fault(at, kind, round(duration, 2), params)
    if kind == "kill-mirror":
        return Fault(at, kind, rng.uniform(2.0, 5.0))
    if kind == "clock":
        jump_s = rng.choice([-3600, -30, 30, 3600, 86_400])
        return Fault(at, kind, rng.uniform(3.0, 8.0), {"partition": partition, "jump_s": jump_s})
    if kind == "recreate":
        return _recreate_fault(rng, at, session_timeout, variant)
    raise InvalidArgument(f"kind: unknown fault {kind!r}")


def _recreate_fault(
    rng: random.Random, at: float, session_timeout: float, variant: str | None
) -> Fault:
    """``plain``: delete and recreate RECREATE_TOPIC. ``paused-owner``: the same through
    the other brokers while the owner of one of its partitions is SIGSTOPped for less
    than a session (it keeps its session and, on SIGCONT, its old in-memory log: the
    reproduction of issue 11 §1). The duration is the pause, or a quiet second."""
    variant = variant or rng.choice(RECREATE_VARIANTS)
    duration = round(0.5 * session_timeout, 2) if variant == "paused-owner" else 1.0
    return Fault(
        at,
        "recreate",
        duration,
        {"variant": variant, "partition": rng.randrange(RECREATE_PARTITIONS)},
    )


def _hdfs_fault(
    rng: random.Random, kind: str, at: float, session_timeout: float, partitions: int
) -> Fault:
    if kind == "kill-datanode":
        return Fault(at, kind, rng.uniform(3.0, 8.0), {"datanode": rng.randrange(3)})
    if kind == "restart-namenode":
        return Fault(at, kind, rng.uniform(2.0, 6.0))
    if kind == "pause-lease":
        return Fault(
            at,
            kind,
            round(PAUSE_LEASE_FACTOR * session_timeout, 2),
            {"partition": rng.randrange(partitions)},
        )
    raise InvalidArgument(f"kind: unknown HDFS fault {kind!r}")


def overrun(planned_end: float, now: float) -> float:
    """How far a fault ended after its planned end (a slow heal: a NameNode or DataNode
    that takes seconds to come back). The rest of the schedule moves by that much, so
    the quiet gaps after a kill stay as planned and its failover is measured alone."""
    return max(0.0, now - planned_end)


# ---- corruption, as functions of bytes ------------------------------------------------------


def torn_tail(variant: str, next_offset: int, tag: str, rng: random.Random) -> bytes:
    """A synthetic batch that would continue the log at ``next_offset``, made invalid."""
    batch = bytearray(
        encode_batch(
            [Record(value=f"X:{tag}".encode(), timestamp_ms=int(time.time() * 1000))],
            base_offset=next_offset,
        )
    )
    if variant == "bitflip":
        at = rng.randrange(CRC_COVERED_FROM, len(batch))
        batch[at] ^= 1 << rng.randrange(8)
        return bytes(batch)
    if variant == "truncate":
        return bytes(batch[: rng.randrange(1, len(batch))])
    raise InvalidArgument(f"variant: must be 'bitflip' or 'truncate', got {variant!r}")


@dataclass(frozen=True)
class SealedDamage:
    """What corrupt_sealed did: the byte changes and the values it destroyed."""

    position: int  # where in the segment file
    truncate_to: int | None
    flip_at: int | None
    flip_mask: int
    destroyed: list[str]


def plan_sealed_damage(data: bytes, variant: str, pick: int) -> SealedDamage | None:
    """Where to hit a sealed segment's bytes; None if it holds no batch."""
    batches = list(iter_batches(data))
    if not batches:
        return None
    index = pick % len(batches)
    position, header = batches[index]
    # The whole segment counts as destroyed: a reader's fetch returns several batches at
    # once and may fail as a whole when one of them is bad.
    values = [
        (r.value or b"").decode("utf-8", "replace")
        for pos, _ in batches
        for r in decode_records(data, pos)
    ]
    if variant == "truncate":
        cut = position + 1 + pick % (header.total_size - 1)
        return SealedDamage(position, cut, None, 0, values)
    if variant == "flip-records":
        at = position + CRC_COVERED_FROM + pick % (header.total_size - CRC_COVERED_FROM)
    elif variant == "flip-offset":
        at = position + BASE_OFFSET_AT + pick % 8
    else:
        raise InvalidArgument(f"variant: unknown sealed corruption {variant!r}")
    return SealedDamage(position, None, at, 1 << (pick % 8), values)


# ---- the executor ---------------------------------------------------------------------------


class Nemesis:
    """Injects the faults of a schedule into the datacenters of a harness."""

    def __init__(
        self,
        harness: Harness,
        history: HistoryWriter,
        log_path: Path,
        topic: str,
        sealed_topic: str,
        seed: int,
    ) -> None:
        self.harness = harness
        self.history = history
        self.log_path = log_path
        self.topic = topic
        self.sealed_topic = sealed_topic
        self.rng = random.Random(seed ^ 0x5EED)
        self.injected: dict[str, int] = {}
        self.stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors: list[str] = []
        self._killed: list[Broker] = []
        self._killed_nodes: list[Node] = []
        self._paused: list[Broker] = []
        self._clock_files: list[Path] = []
        self._tail_counter = 0
        self._hdfs_down: list[tuple[DataCenter, str]] = []  # (dc, "datanode"|"namenode")

    @property
    def errors(self) -> list[str]:
        return list(self._errors)

    def note(self, text: str) -> None:
        with self.log_path.open("a", encoding="utf-8") as out:
            out.write(f"{time.strftime('%H:%M:%S')} {text}\n")

    def run_in_background(self, schedule: Sequence[Fault]) -> None:
        self._thread = threading.Thread(target=self._run, args=(schedule,), name="nemesis")
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def _run(self, schedule: Sequence[Fault]) -> None:
        start = time.monotonic()
        for fault in schedule:
            if self.stop.wait(max(0.0, start + fault.at - time.monotonic())):
                break
            self.note(f"start {fault.describe()}")
            try:
                self.inject(fault)
            except (TalosError, OSError) as exc:  # a fault that could not be injected
                self._errors.append(f"{fault.describe()}: {exc}")
                self.note(f"  could not inject: {exc}")
                self.heal()
                continue
            self.injected[fault.kind] = self.injected.get(fault.kind, 0) + 1
            self.stop.wait(fault.duration)
            self.heal()
            self.history.write("nemesis", kind=fault.kind, phase="end", **self._common(fault))
            self.note(f"end   {fault.kind}")
            start += overrun(start + fault.at + fault.duration, time.monotonic())
        self.heal()

    def _common(self, fault: Fault) -> dict[str, Any]:
        return {"params": fault.params, "duration": fault.duration}

    # ---- targets --------------------------------------------------------------------------

    def _dc(self) -> DataCenter:
        return self.harness.dcs[0]

    def _owner(self, dc: DataCenter, partition: int) -> tuple[Broker, dict[int, str]]:
        owners = self.harness.owners(dc, self.topic)
        owner = owners.get(partition, "")
        live = [b for b in dc.brokers if b.node.alive()]
        broker = next((b for b in live if b.broker_id == owner), None)
        return broker or self.rng.choice(live), owners

    # ---- inject and heal ------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        dc = self._dc()
        kind, params = fault.kind, fault.params
        common = self._common(fault)
        if kind in INCARNATION_FAULT_KINDS:
            self._recreate(dc, fault)
            return
        if kind == "corrupt-sealed":
            damage = self._corrupt_sealed(dc, str(params["variant"]), int(params["pick"]))
            self.history.write(
                "nemesis",
                kind=kind,
                phase="start",
                dc=dc.name,
                topic=self.sealed_topic,
                destroyed=damage,
                **common,
            )
            return
        if kind in MIRROR_FAULT_KINDS:
            self._inject_between_dcs(fault)
            return
        if kind in HDFS_FAULT_KINDS:
            self._inject_hdfs(dc, fault)
            return
        broker, owners = self._owner(dc, int(params.get("partition", 0)))
        node = broker.node
        owned = [
            [dc.name, self.topic, p] for p, o in sorted(owners.items()) if o == broker.broker_id
        ]
        self.harness.impaired.add(f"{dc.name}/{broker.broker_id}")
        start = {"node": node.name, **common}
        if kind in ("kill", "corrupt-tail"):
            node.kill()
            self._killed.append(broker)
            # the kill is what unavailability is measured from
            self.history.write("nemesis", kind="kill", phase="start", partitions=owned, **start)
            if kind == "corrupt-tail":
                appended = self._corrupt_tail(dc, broker, str(params["variant"]))
                self.history.write("nemesis", kind=kind, phase="start", appended=appended, **start)
            return
        self.history.write("nemesis", kind=kind, phase="start", partitions=owned, **start)
        net = self.harness.network
        zk_host = dc.zk.host if dc.zk is not None else None
        if kind == "pause":
            node.pause()
            self._paused.append(broker)
        elif kind == "zk-expire" and zk_host is not None:
            net.cut(node.host, zk_host.ip, zk_host)
        elif kind == "partition":
            mode = params["mode"]
            if mode in ("isolate", "from-zookeeper") and zk_host is not None:
                net.cut(node.host, zk_host.ip, zk_host)
            if mode in ("isolate", "from-clients"):
                net.blackhole(node.host, ROOT_IP)
        elif kind == "wan":
            mode = params["mode"]
            if mode == "latency":
                broker.proxy.set_latency(float(params["latency_ms"]))
            elif mode == "bandwidth":
                broker.proxy.set_bandwidth(int(params["bytes_s"]))
            else:
                threading.Thread(
                    target=self._resets, args=(broker.proxy, fault.duration), daemon=True
                ).start()
        elif kind == "clock":
            broker.clock_file.write_text(f"{int(params['jump_s']) * 1000}\n")
            self._clock_files.append(broker.clock_file)

    def _inject_between_dcs(self, fault: Fault) -> None:
        mirror = self.harness.mirror
        if mirror is None:
            raise TalosError(f"{fault.kind}: no mirror is running")
        params = fault.params
        self.history.write(
            "nemesis", kind=fault.kind, phase="start", node=mirror.name, **self._common(fault)
        )
        if fault.kind == "kill-mirror":
            mirror.kill()
            self._killed_nodes.append(mirror)
            return
        proxies = list(self.harness.wan_proxies.values())
        mode = params["mode"]
        if mode == "partition":
            self.harness.network.blackhole(mirror.host, WAN_IP)
        for proxy in proxies:
            if mode == "latency":
                proxy.set_latency(float(params["latency_ms"]))
            elif mode == "bandwidth":
                proxy.set_bandwidth(int(params["bytes_s"]))
            elif mode == "reset":
                threading.Thread(
                    target=self._resets, args=(proxy, fault.duration), daemon=True
                ).start()

    def _resets(self, proxy: TcpProxy, duration: float) -> None:
        end = time.monotonic() + duration
        while time.monotonic() < end and not self.stop.is_set():
            with contextlib.suppress(RuntimeError, TalosError):
                proxy.reset_connections()
            self.stop.wait(self.rng.uniform(0.3, 1.5))

    def heal(self) -> None:
        """Undo every fault: routes, pauses, proxies, clocks; restart killed brokers."""
        self._heal_hdfs()
        self.harness.network.heal()
        for broker in self._paused:
            broker.node.resume()
        self._paused.clear()
        for dc in self.harness.dcs:
            for broker in dc.brokers:
                with contextlib.suppress(RuntimeError, TalosError):
                    broker.proxy.set_latency(0)
                    broker.proxy.set_bandwidth(None)
        for proxy in self.harness.wan_proxies.values():
            with contextlib.suppress(RuntimeError, TalosError):
                proxy.set_latency(0)
                proxy.set_bandwidth(None)
        for node in self._killed_nodes:
            if not node.alive():
                node.start()
        self._killed_nodes.clear()
        for path in self._clock_files:
            path.write_text("0\n")
        self._clock_files.clear()
        for broker in self._killed:
            if not broker.node.alive():
                broker.node.start()
        self._killed.clear()
        self.harness.impaired.clear()

    # ---- HDFS ---------------------------------------------------------------------------

    def _inject_hdfs(self, dc: DataCenter, fault: Fault) -> None:
        if dc.dfs is None:
            raise TalosError(f"{fault.kind}: {dc.name} has no HDFS (store posix)")
        common = self._common(fault)
        if fault.kind == "kill-datanode":
            name = dc.dfs.stop_datanode(int(fault.params["datanode"]))
            self._hdfs_down.append((dc, "datanode"))
            self.note(f"  stopped DataNode {name}")
            self.history.write(
                "nemesis", kind=fault.kind, phase="start", node=f"{dc.name}-dn-{name}", **common
            )
        elif fault.kind == "restart-namenode":
            dc.dfs.stop_namenode()
            self._hdfs_down.append((dc, "namenode"))
            self.history.write(
                "nemesis", kind=fault.kind, phase="start", node=f"{dc.name}-nn", **common
            )
        else:
            self._pause_during_lease_recovery(dc, fault)

    def _pause_during_lease_recovery(self, dc: DataCenter, fault: Fault) -> None:
        """SIGSTOP the owner; a watcher resumes it once the partition's epoch moved."""
        partition = int(fault.params["partition"])
        broker, owners = self._owner(dc, partition)
        zk, states = self._states(dc)
        try:
            epoch = states.get(self.topic, partition).epoch
        except TalosError:
            zk.stop()
            zk.close()
            raise
        owned = [
            [dc.name, self.topic, p] for p, o in sorted(owners.items()) if o == broker.broker_id
        ]
        self.harness.impaired.add(f"{dc.name}/{broker.broker_id}")
        self.history.write(
            "nemesis",
            kind=fault.kind,
            phase="start",
            node=broker.node.name,
            partitions=owned,
            **self._common(fault),
        )
        broker.node.pause()
        self._paused.append(broker)
        delay = self.rng.uniform(0.0, 1.5)
        threading.Thread(
            target=self._resume_after_takeover,
            args=(zk, states, broker, partition, epoch, delay, fault.duration - 1.0),
            name="pause-lease",
            daemon=True,
        ).start()

    def _resume_after_takeover(
        self,
        zk: Any,
        states: PartitionStateStore,
        broker: Broker,
        partition: int,
        epoch: int,
        delay: float,
        timeout: float,
    ) -> None:
        deadline = time.monotonic() + timeout
        moved: int | None = None
        try:
            while moved is None and time.monotonic() < deadline and not self.stop.is_set():
                with contextlib.suppress(TalosError):
                    now = states.get(self.topic, partition).epoch
                    if now > epoch:
                        moved = now
                        break
                self.stop.wait(0.1)
        finally:
            zk.stop()
            zk.close()
        if moved is None:
            self.note(f"  {broker.node.name}: partition {partition} not taken over in time")
            return  # resumed by heal at the end of the fault
        self.stop.wait(delay)
        if broker.node.paused:
            broker.node.resume()
            self.note(
                f"  {broker.node.name} resumed {delay:.1f}s after partition {partition} "
                f"moved to epoch {moved} (lease recovery of its open segment under way)"
            )

    def _heal_hdfs(self) -> None:
        for dc, what in self._hdfs_down:
            if dc.dfs is None:
                continue
            try:
                if what == "datanode":
                    dc.dfs.restart_datanodes()
                else:
                    dc.dfs.start_namenode()
            except TalosError as exc:
                self._errors.append(f"heal {dc.name} {what}: {exc}")
                self.note(f"  could not bring the {what} back: {exc}")
        self._hdfs_down.clear()

    # ---- corruption on disk ---------------------------------------------------------------

    def _states(self, dc: DataCenter) -> tuple[Any, PartitionStateStore]:
        zk = connect(dc.zk_address, dc.name, connect_timeout=10.0, session_timeout=10.0)
        return zk, PartitionStateStore(zk)

    def _corrupt_tail(self, dc: DataCenter, broker: Broker, variant: str) -> list[str]:
        """Append an invalid batch to every open segment the dead broker owned."""
        zk, states = self._states(dc)
        appended: list[str] = []
        try:
            partitions = self.harness.owners(dc, self.topic)
            for partition in sorted(partitions):
                state = states.get(self.topic, partition)
                segment = state.open_segment
                if state.owner != broker.broker_id or segment is None:
                    continue
                rel = segment_path(
                    dc.name,
                    self.topic,
                    partition,
                    segment.base_offset,
                    segment.epoch,
                    incarnation=state.incarnation,
                )
                path = dc.store_dir / rel
                if not path.exists():
                    continue
                data = path.read_bytes()
                next_offset = segment.base_offset
                for _, header in iter_batches(data):
                    next_offset = header.next_offset
                self._tail_counter += 1
                junk = torn_tail(variant, next_offset, f"tail-{self._tail_counter}", self.rng)
                with path.open("ab") as out:
                    out.write(junk)
                appended.append(f"{rel}+{len(junk)}B@{next_offset}")
        finally:
            zk.stop()
            zk.close()
        self.note(f"  appended {variant} junk: {appended}")
        return appended

    def _corrupt_sealed(self, dc: DataCenter, variant: str, pick: int) -> list[str]:
        zk, states = self._states(dc)
        try:
            state = states.get(self.sealed_topic, 0)
        finally:
            zk.stop()
            zk.close()
        sealed = [s for s in state.segments if s.end_offset is not None and (s.size or 0) > 0]
        if not sealed:
            raise TalosError(f"{self.sealed_topic}: no sealed segment to corrupt")
        segment = sealed[pick % len(sealed)]
        rel = segment_path(
            dc.name,
            self.sealed_topic,
            0,
            segment.base_offset,
            segment.epoch,
            incarnation=state.incarnation,
        )
        path = dc.store_dir / rel
        data = path.read_bytes()[: segment.size]
        damage = plan_sealed_damage(data, variant, pick // 7)
        if damage is None:
            raise TalosError(f"{rel}: no batch to corrupt")
        if damage.truncate_to is not None:
            with path.open("r+b") as out:
                out.truncate(damage.truncate_to)
        elif damage.flip_at is not None:
            with path.open("r+b") as out:
                out.seek(damage.flip_at)
                byte = out.read(1)[0]
                out.seek(damage.flip_at)
                out.write(bytes([byte ^ damage.flip_mask]))
        self.note(f"  {variant} in {rel} at {damage.flip_at or damage.truncate_to}: {damage}")
        return damage.destroyed

    # ---- topics deleted and recreated (issue 11 §1) -------------------------------------

    def _recreate(self, dc: DataCenter, fault: Fault) -> None:
        """Delete RECREATE_TOPIC and create it again (a new incarnation), recording when
        the delete began and when the new incarnation existed (the checker's boundaries).

        ``paused-owner``: the owner of one partition is paused first (resumed by
        ``heal``) and the admin calls go through the other brokers.
        """
        topic = RECREATE_TOPIC
        admin_brokers = [b for b in dc.brokers if b.node.alive()]
        node = ""
        if fault.params.get("variant") == "paused-owner":
            owners = self.harness.owners(dc, topic)
            owner = owners.get(int(fault.params.get("partition", 0)), "")
            victim = next((b for b in admin_brokers if b.broker_id == owner), None)
            if victim is not None and len(admin_brokers) > 1:
                victim.node.pause()
                self._paused.append(victim)
                self.harness.impaired.add(f"{dc.name}/{victim.broker_id}")
                admin_brokers = [b for b in admin_brokers if b is not victim]
                node = victim.node.name
        self.history.write(
            "nemesis",
            kind="recreate",
            phase="start",
            dc=dc.name,
            topic=topic,
            node=node,
            **self._common(fault),
        )
        bootstrap = ",".join(b.address for b in admin_brokers)
        with Admin(bootstrap, request_timeout_s=10.0) as admin:
            with contextlib.suppress(UnknownTopic):  # a retried delete that had landed
                admin.delete_topic(topic)
            for _ in range(20):
                try:
                    admin.create_topic(topic, RECREATE_PARTITIONS, recreate_config())
                    break
                except TopicExists:  # the delete is still being finished
                    time.sleep(0.25)
        zk, _states = self._states(dc)
        try:
            incarnation = TopicStore(zk).get(topic).incarnation
        finally:
            zk.stop()
            zk.close()
        self.history.write(
            "nemesis",
            kind="recreate",
            phase="recreated",
            dc=dc.name,
            topic=topic,
            incarnation=incarnation,
        )
        self.note(f"  recreated {topic} as incarnation {incarnation} (paused: {node or '-'})")


def recreate_config() -> TopicConfig:
    """RECREATE_TOPIC's settings, at creation and at every recreate."""
    return TopicConfig(durability="sync", segment_bytes=16 * 1024)
