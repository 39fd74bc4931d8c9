"""A stateless broker process: ZooKeeper for control, the log store for data.

The broker owns the partitions the controller assigns to it (taking each
over with the fencing protocol) and serves them over gRPC. Nothing it holds
in memory is needed by anyone else after it dies.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import grpc
from kazoo.client import KazooClient

from talos import metrics
from talos.clock import SYSTEM_CLOCK, Clock, ShiftedClock
from talos.config import validate_partition, validate_topic_name
from talos.coord.assignment import DEFAULT_EPSILON, DEFAULT_MAX_MOVES
from talos.coord.brokers import BrokerRegistry
from talos.coord.controller import Assignment, AssignmentWatcher, Balance, Controller
from talos.coord.groups import GroupStore
from talos.coord.partition_state import PartitionStateStore
from talos.coord.producer_ids import allocate_producer_id
from talos.coord.topics import TopicMeta, TopicStore
from talos.coord.traffic import DEFAULT_INTERVAL_S, ByteCounter, TrafficReporter
from talos.coord.zk import connect
from talos.errors import InvalidArgument, NotOwner, TalosError, UnknownTopic
from talos.heap import keep_freed_memory, release_free_heap
from talos.proto import talos_pb2 as pb
from talos.proto import talos_pb2_grpc as pb_grpc
from talos.quota.runtime import BrokerQuotas
from talos.security.interceptor import AuthInterceptor
from talos.security.store import SecurityCache
from talos.security.tls import server_tls
from talos.storage.open import open_store
from talos.storage.segment import topic_dir
from talos.storage.store import LogStore

from .executor import PartitionExecutor
from .partition import PartitionLog, retire_partition
from .producer_state import DEFAULT_EXPIRE_MS
from .service import BrokerService, topic_config_to_proto

log = logging.getLogger(__name__)

RETAKE_DELAY_S = 1.0
#: How often each served partition checks its retention (cheap: in-memory sizes and
#: timestamps until the first segment that stays).
RETENTION_CHECK_S = 1.0
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
]


@dataclass(frozen=True)
class BrokerConfig:
    broker_id: str
    cluster: str
    zookeeper: str
    data_dir: str
    listen: str = "127.0.0.1:0"
    advertised_host: str = ""
    workers: int = 0  # 0: one per core, at least 2
    max_queued_bytes: int = 256 * 1024 * 1024
    session_timeout: float = 10.0
    connect_timeout: float = 10.0
    reassign_delay_ms: int = 0
    # A file holding a wall-clock offset in ms, re-read every 0.5 s (chaos clock jumps).
    clock_offset_file: str = ""
    # Idle time after which a producer's dedup entry is forgotten (producer_state.py).
    producer_expire_ms: int = DEFAULT_EXPIRE_MS
    # Where the logs live when not in data_dir: hdfs://NAMENODE:PORT/PATH or posix:/PATH.
    store: str = ""
    metrics_listen: str = ""  # HOST:PORT for Prometheus /metrics; empty: none
    # Traffic-weighted placement (issue 13 §3): report bytes/s per partition every
    # interval; the controller keeps brokers within (1+epsilon) x the mean load,
    # moving at most max_moves_per_round partitions a round (0: no moves).
    traffic_interval_s: float = DEFAULT_INTERVAL_S
    balance_epsilon: float = DEFAULT_EPSILON
    max_moves_per_round: int = DEFAULT_MAX_MOVES
    # TLS on the gRPC endpoint (both or neither); with tls_client_ca, mutual TLS.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # Require a bearer token on every call and check topic ACLs (talos.security); needs TLS.
    auth: bool = False

    def validated(self) -> BrokerConfig:
        """InvalidArgument naming the flag, before anything starts."""
        tls = server_tls(self.tls_cert, self.tls_key, self.tls_client_ca)
        if self.auth and tls is None:
            raise InvalidArgument(
                "auth: needs --tls-cert and --tls-key; tokens must not cross the network "
                "in plaintext"
            )
        return self


#: How often every owned partition runs its upkeep (producer expiry) even when idle.
UPKEEP_INTERVAL_S = 10.0

#: How often the clock offset file is re-read.
CLOCK_OFFSET_POLL_S = 0.5


def follow_clock_offset(path: str, clock: ShiftedClock, stop: threading.Event) -> threading.Thread:
    """Keep ``clock``'s wall offset equal to the integer (ms) in ``path``, so a test can
    jump a live broker's clock; a missing or unreadable file leaves the offset as it is."""

    def apply() -> None:
        try:
            with open(path, encoding="ascii") as handle:
                text = handle.read().strip()
            clock.wall_offset_ms = int(text or 0)
        except (OSError, ValueError):
            pass

    def run() -> None:
        while not stop.wait(CLOCK_OFFSET_POLL_S):
            apply()

    apply()
    thread = threading.Thread(target=run, name="talos-clock-offset", daemon=True)
    thread.start()
    return thread


class TopicCache:
    """Topic metadata kept current by ZooKeeper watches, so requests never wait on it."""

    def __init__(self, zk: KazooClient, topics: TopicStore, on_change: Any) -> None:
        self._zk = zk
        self._topics = topics
        self._on_change = on_change
        self._metas: dict[str, TopicMeta] = {}
        self._watched: set[str] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        self._zk.ChildrenWatch("/topics", self._on_children)

    def get(self, name: str) -> TopicMeta | None:
        return self._metas.get(name)

    def all(self) -> dict[str, TopicMeta]:
        return dict(self._metas)

    def refresh(self, name: str) -> None:
        try:
            self._metas[name] = self._topics.get(name)
        except UnknownTopic:
            self._metas.pop(name, None)
        self._on_change()

    async def refresh_async(self, name: str) -> None:
        await asyncio.to_thread(self.refresh, name)

    def _on_children(self, children: list[str]) -> None:
        with self._lock:
            for name in set(self._metas) - set(children):
                self._metas.pop(name, None)
            for name in children:
                if name not in self._watched:
                    self._watched.add(name)
                    self._watch(name)
        self._on_change()

    def _watch(self, name: str) -> None:
        def on_data(data: bytes | None, stat: Any) -> bool | None:
            if data is None:
                with self._lock:
                    self._metas.pop(name, None)
                    self._watched.discard(name)
                self._on_change()
                return False
            self.refresh(name)
            return None

        self._zk.DataWatch(f"/topics/{name}", on_data)


class Broker:
    def __init__(self, config: BrokerConfig, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config.validated()
        self.clock = clock
        self.broker_id = config.broker_id
        self.address = ""
        self.metrics_address = ""
        self.logs: dict[tuple[str, int], PartitionLog] = {}
        self.assignment = Assignment(version=-1, owners={})
        self.live_brokers: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: grpc.aio.Server | None = None
        self._stopped = asyncio.Event()
        self.store: LogStore = open_store(config.store or config.data_dir)
        self.quotas = BrokerQuotas(self)

    # ---- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.store.check_writable)
        self.zk = await asyncio.to_thread(
            connect,
            self.config.zookeeper,
            self.config.cluster,
            connect_timeout=self.config.connect_timeout,
            session_timeout=self.config.session_timeout,
        )
        self.topics = TopicStore(self.zk)
        self.states = PartitionStateStore(self.zk)
        self.groups = GroupStore(self.zk)
        self.registry = BrokerRegistry(self.zk)
        workers = self.config.workers or max(2, os.cpu_count() or 2)
        self.executor = PartitionExecutor(workers, self.config.max_queued_bytes)

        interceptors = []
        if self.config.auth:
            self.security = SecurityCache(self.zk)
            await asyncio.to_thread(self.security.start)
            interceptors.append(AuthInterceptor(self.security))
        self._server = grpc.aio.server(options=GRPC_OPTIONS, interceptors=interceptors)
        pb_grpc.add_BrokerServicer_to_server(BrokerService(self), self._server)
        tls = server_tls(self.config.tls_cert, self.config.tls_key, self.config.tls_client_ca)
        if tls is None:
            port = self._server.add_insecure_port(self.config.listen)
        else:
            port = self._server.add_secure_port(self.config.listen, tls.credentials())
        host = self.config.listen.rsplit(":", 1)[0]
        self.address = f"{self.config.advertised_host or host}:{port}"
        await self._server.start()

        self.topic_cache = TopicCache(self.zk, self.topics, self._schedule_reconcile)
        await asyncio.to_thread(self.topic_cache.start)
        self.registry.watch(self._on_brokers)
        AssignmentWatcher(self.zk, self._on_assignment)
        await self.quotas.start()
        await asyncio.to_thread(self.registry.register, self.broker_id, self.address)
        self.traffic = TrafficReporter(
            self.zk,
            self.broker_id,
            self._traffic_counters,
            interval_s=self.config.traffic_interval_s,
            clock=self.clock,
        )
        self.traffic.start()
        self.controller = Controller(
            self.zk,
            self.broker_id,
            reassign_delay_ms=self.config.reassign_delay_ms,
            clock=self.clock,
            balance=Balance(
                self.config.balance_epsilon,
                self.config.traffic_interval_s,
                self.config.max_moves_per_round,
            ),
        )
        self.controller.start()
        self._loop.call_later(RETENTION_CHECK_S, self._retention_tick)
        self._upkeep = asyncio.ensure_future(self._upkeep_loop())
        if self.config.metrics_listen:
            collector = metrics.BrokerCollector(
                self._partition_views, lambda: str(self.zk.state), self._traffic_view
            )
            self.metrics_address = metrics.serve(self.config.metrics_listen, collector)
            log.info(
                "broker %s: metrics on http://%s/metrics", self.broker_id, self.metrics_address
            )
        log.info("broker %s serving on %s", self.broker_id, self.address)

    async def _upkeep_loop(self) -> None:
        """Wake idle partitions now and then: their producer entries must expire too.
        Then hand freed heap back to the OS, so memory freed by expiry leaves the RSS."""
        while True:
            await asyncio.sleep(UPKEEP_INTERVAL_S)
            for plog in list(self.logs.values()):
                plog.tick()
            await asyncio.to_thread(release_free_heap)

    async def serve_until_stopped(self) -> None:
        await self._stopped.wait()

    def request_stop(self) -> None:
        self._stopped.set()

    async def stop(self) -> None:
        self.quotas.stop()
        upkeep = getattr(self, "_upkeep", None)
        if upkeep is not None:
            upkeep.cancel()
        controller = getattr(self, "controller", None)
        if controller is not None:
            await asyncio.to_thread(controller.stop)
        traffic = getattr(self, "traffic", None)
        if traffic is not None:
            await asyncio.to_thread(traffic.stop)
        if self._server is not None:
            await self._server.stop(grace=1.0)
        for plog in list(self.logs.values()):
            plog.release()
        executor = getattr(self, "executor", None)
        if executor is not None:
            await asyncio.to_thread(executor.stop)
        zk = getattr(self, "zk", None)
        if zk is not None:
            await asyncio.to_thread(_close_zk, zk)
        self.store.close()

    # ---- watches (kazoo threads) -> reconcile on the loop --------------------

    def _schedule_reconcile(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._reconcile)

    def _on_assignment(self, assignment: Assignment) -> None:
        def apply() -> None:
            if assignment.version >= self.assignment.version:
                self.assignment = assignment
            self._reconcile()

        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(apply)

    def _on_brokers(self, live: dict[str, str]) -> None:
        self.live_brokers = dict(live)

    def _reconcile(self) -> None:
        """Take the partitions assigned to us; release the others."""
        if self._stopped.is_set() or self._loop is None:
            return
        topics = self.topic_cache.all()
        mine = {
            key
            for key, owner in self.assignment.owners.items()
            if owner == self.broker_id and key[0] in topics and key[1] < topics[key[0]].partitions
        }
        for key in [
            k
            for k in self.logs
            if k not in mine or self.logs[k].incarnation != topics[k[0]].incarnation
        ]:
            # Not ours any more, or a log of a deleted incarnation of the topic: drop it.
            plog = self.logs.pop(key)
            plog.release()
        for key, plog in self.logs.items():
            plog.config = topics[key[0]].config  # an altered retention applies at once
        for key in mine - set(self.logs):
            meta = topics[key[0]]
            plog = PartitionLog(
                cluster=self.config.cluster,
                topic=key[0],
                incarnation=meta.incarnation,
                partition=key[1],
                config=meta.config,
                broker_id=self.broker_id,
                store=self.store,
                states=self.states,
                executor=self.executor,
                loop=self._loop,
                clock=self.clock,
                on_lost=self._on_lost,
                producer_expire_ms=self.config.producer_expire_ms,
            )
            self.logs[key] = plog
            plog.start()

    def _retention_tick(self) -> None:
        if self._stopped.is_set() or self._loop is None or self._loop.is_closed():
            return
        for plog in list(self.logs.values()):
            plog.enforce_retention()
        self._loop.call_later(RETENTION_CHECK_S, self._retention_tick)

    def _on_lost(self, plog: PartitionLog, why: str) -> None:
        if self.logs.get(plog.key) is plog:
            del self.logs[plog.key]
            if self._loop is not None and plog.status != "released":
                # Still assigned to us? Take it over afresh (a new epoch) after a pause,
                # with the topic re-read: it may have been deleted and recreated.
                self._loop.call_later(RETAKE_DELAY_S, self._retake, plog.topic)

    def _retake(self, topic: str) -> None:
        if self._loop is None or self._stopped.is_set():
            return
        task = self._loop.create_task(self.topic_cache.refresh_async(topic))
        task.add_done_callback(lambda _: self._reconcile())

    # ---- helpers for the service --------------------------------------------

    def _traffic_counters(self) -> dict[tuple[str, int], ByteCounter]:
        """The byte counters of the partitions served now (called from the reporter's thread)."""
        return {
            key: plog.traffic for key, plog in list(self.logs.items()) if plog.status == "serving"
        }

    def _traffic_view(self) -> dict[tuple[str, int], tuple[float, float]]:
        last = self.traffic.last
        if last is None:
            return {}
        return {key: (rate.produce, rate.fetch) for key, rate in last.partitions.items()}

    def _partition_views(self) -> list[metrics.PartitionView]:
        return [
            metrics.PartitionView(topic, partition, plog.log_start, plog.log_end)
            for (topic, partition), plog in sorted(self.logs.items())
            if plog.status == "serving"
        ]

    def owned_log(self, topic: str, partition: int, serving: bool = False) -> PartitionLog:
        validate_topic_name(topic)
        meta = self.topic_cache.get(topic)
        if meta is None:
            raise UnknownTopic(f"topic: {topic!r} does not exist")
        validate_partition(partition, meta.partitions)
        plog = self.logs.get((topic, partition))
        if plog is None or plog.status not in ("new", "serving"):
            raise NotOwner(f"broker {self.broker_id} does not own {topic}/{partition}")
        if plog.incarnation != meta.incarnation:  # retriable: the new incarnation is taken next
            raise NotOwner(
                f"broker {self.broker_id} still holds incarnation {plog.incarnation} of "
                f"{topic}/{partition}; the topic is now incarnation {meta.incarnation}"
            )
        if serving and plog.status != "serving":
            raise NotOwner(f"broker {self.broker_id} is still taking over {topic}/{partition}")
        return plog

    def hint(self, exc: TalosError, target: Any) -> TalosError:
        """Add the owner we know to a NOT_OWNER answer (client-side addressing)."""
        if isinstance(exc, NotOwner) and not exc.owner_id:
            owner = self.assignment.owners.get((target.topic, target.partition), "")
            exc.owner_id = owner
            exc.owner_address = self.live_brokers.get(owner, "")
        return exc

    def metadata(self, wanted: list[str]) -> pb.MetadataResponse:
        response = pb.MetadataResponse(
            assignment_version=self.assignment.version, cluster=self.config.cluster
        )
        for broker_id, address in sorted(self.live_brokers.items()):
            response.brokers.add(id=broker_id, address=address)
        topics = self.topic_cache.all()
        for name in wanted or sorted(topics):
            info = response.topics.add(name=name)
            meta = topics.get(name)
            if meta is None:
                info.error.code = UnknownTopic.code
                info.error.message = f"topic: {name!r} does not exist"
                continue
            info.config.CopyFrom(topic_config_to_proto(meta.config))
            for partition in range(meta.partitions):
                owner = self.assignment.owners.get((name, partition), "")
                plog = self.logs.get((name, partition))
                info.partitions.add(
                    partition=partition,
                    owner_id=owner,
                    epoch=plog.epoch if plog else 0,
                    log_start=plog.log_start if plog else 0,
                    log_end=plog.log_end if plog and plog.status == "serving" else -1,
                )
        return response

    def allocate_producer_id(self) -> int:
        return allocate_producer_id(self.zk)

    def delete_topic(self, name: str) -> None:
        """Fence every partition (its owner acknowledges nothing more), remove the topic
        and its group offsets from ZooKeeper, then its incarnation's files."""
        meta = self.topics.get(name)
        for partition in range(meta.partitions):
            retire_partition(
                self.states, self.store, self.config.cluster, name, meta.incarnation, partition
            )
        self.topics.delete(name, meta.incarnation)
        self.store.delete_tree(topic_dir(self.config.cluster, name, meta.incarnation))


def _close_zk(zk: KazooClient) -> None:
    try:
        zk.stop()
        zk.close()
    except Exception:  # closing a dead session must not fail shutdown
        log.debug("closing ZooKeeper client failed", exc_info=True)


def freeze_startup_heap() -> None:
    """Keep what start-up loaded (gRPC, protobuf, kazoo, modules) out of full collections.

    A full collection of the cyclic GC walks every tracked object; with the
    start-up heap in it, it stalls every request in flight for 10-80 ms (the
    longest pauses of a 5K msg/s latency run). Frozen objects are never
    collected, which costs nothing here: they live as long as the process.
    """
    gc.freeze()


async def run_broker(config: BrokerConfig, ready: Any = None) -> None:
    """Run until SIGTERM/SIGINT; ``ready(address)`` is called once serving."""
    import signal

    clock: Clock = SYSTEM_CLOCK
    stop_clock = threading.Event()
    if config.clock_offset_file:
        shifted = ShiftedClock()
        follow_clock_offset(config.clock_offset_file, shifted, stop_clock)
        clock = shifted
    keep_freed_memory()  # see talos/heap.py: fresh pages are dear on a VM
    broker = Broker(config, clock)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, broker.request_stop)
    try:
        await broker.start()
        freeze_startup_heap()
        if ready is not None:
            ready(broker.address)
        await broker.serve_until_stopped()
    finally:
        stop_clock.set()
        await broker.stop()
