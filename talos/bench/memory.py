"""``talos bench memory``: broker memory under many small batches, then after a week idle.

Issue 12 §4: one broker, 100 partitions, 2,000,000 small batches from many
idempotent producer ids, then a week of idle simulated by jumping the broker's
wall clock (its ``--clock-offset-file``) so that producer entries expire. The
broker's RSS is reported at the start, at the peak of the load, after it, and
after the expiry. A retry of an early batch is sent before and after the jump:
before, it is answered as a duplicate (the entry is there); after, it is
appended as a new producer's batch (the entry expired). Figures, never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import grpc

from talos.client import Admin
from talos.config import TopicConfig
from talos.errors import InvalidArgument
from talos.proto import talos_pb2 as pb
from talos.proto import talos_pb2_grpc as pb_grpc
from talos.record import BatchBuilder
from talos.testing.zookeeper import ZooKeeperServer, free_port

from .runner import rss_mb

WEEK_MS = 7 * 24 * 3600 * 1000
TOPIC = "memory-bench"


@dataclass(frozen=True)
class MemoryFigures:
    batches: int
    partitions: int
    producer_ids: int
    value_bytes: int
    load_seconds: float
    rss_mb_start: float
    rss_mb_peak: float
    rss_mb_after_load: float
    rss_mb_after_expiry: float
    retry_before_jump: str  # "duplicate" when the entry was still there
    retry_after_jump: str  # "appended" when the entry had expired


def _batches(
    start: int, stop: int, partitions: int, producer_ids: int, value: bytes
) -> Iterator[tuple[int, bytes]]:
    """(partition, batch) for batch numbers start..stop-1: producer i writes partition
    i % partitions, its k-th batch with sequence k."""
    for n in range(start, stop):
        pid = n % producer_ids
        builder = BatchBuilder(
            producer_id=pid + 1, producer_epoch=0, base_sequence=n // producer_ids
        )
        builder.append(value, timestamp_ms=1_700_000_000_000)
        yield pid % partitions, builder.build()


def _produce(stub: pb_grpc.BrokerStub, items: list[tuple[int, bytes]]) -> int:
    request = pb.ProduceRequest()
    for partition, records in items:
        request.batches.add(topic=TOPIC, partition=partition, records=records)
    response = stub.Produce(request, timeout=120)
    return sum(1 for r in response.results if r.error.code != 0)


def _retry(
    stub: pb_grpc.BrokerStub, address: str, batches: int, partitions: int, producer_ids: int,
    value: bytes,
) -> str:  # fmt: skip
    """Send producer 1's last batch again; how the broker took it."""
    last = (batches - 1) // producer_ids * producer_ids
    ((partition, records),) = list(_batches(last, last + 1, partitions, producer_ids, value))
    with Admin(address) as admin:
        end = admin.describe_topic(TOPIC).partitions[partition].log_end
    request = pb.ProduceRequest()
    request.batches.add(topic=TOPIC, partition=partition, records=records)
    result = stub.Produce(request, timeout=60).results[0]
    if result.error.code:
        return f"error {result.error.message}"
    return "duplicate" if result.base_offset < end else "appended"


def run_memory_bench(
    batches: int,
    partitions: int,
    producer_ids: int,
    value_bytes: int,
    per_request: int,
    settle_s: float,
    progress: bool,
) -> MemoryFigures:
    if producer_ids < partitions or batches < producer_ids:
        raise InvalidArgument(
            f"producer_ids: must be at least --partitions and at most --batches, got {producer_ids}"
        )
    value = b"v" * value_bytes
    with tempfile.TemporaryDirectory(prefix="talos-membench-") as workdir:
        clock_file = os.path.join(workdir, "clock-offset")
        with open(clock_file, "w") as f:
            f.write("0")
        with ZooKeeperServer(data_dir=os.path.join(workdir, "zk")) as zk:
            port = free_port()
            address = f"127.0.0.1:{port}"
            args = [
                sys.executable, "-m", "talos", "broker", "--zookeeper", zk.address,
                "--cluster", "membench", "--id", "b1", "--listen", address,
                "--data-dir", os.path.join(workdir, "store"),
                "--clock-offset-file", clock_file,
            ]  # fmt: skip
            with open(os.path.join(workdir, "broker.log"), "w") as broker_log:
                broker = subprocess.Popen(args, stdout=broker_log, stderr=subprocess.STDOUT)
            try:
                return _measure(
                    broker, address, clock_file, batches, partitions, producer_ids, value,
                    per_request, settle_s, progress,
                )  # fmt: skip
            finally:
                broker.terminate()
                try:
                    broker.wait(30)
                except subprocess.TimeoutExpired:
                    broker.kill()
                    broker.wait()


def _measure(
    broker: subprocess.Popen[bytes],
    address: str,
    clock_file: str,
    batches: int,
    partitions: int,
    producer_ids: int,
    value: bytes,
    per_request: int,
    settle_s: float,
    progress: bool,
) -> MemoryFigures:
    with Admin(address) as admin:
        admin.create_topic(TOPIC, partitions, TopicConfig(durability="flush"))
        admin.wait_until_ready(TOPIC, timeout_s=120)
    time.sleep(settle_s)
    start_rss = rss_mb(broker.pid)
    peak = [start_rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            peak[0] = max(peak[0], rss_mb(broker.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    channel = grpc.insecure_channel(
        address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    )
    stub = pb_grpc.BrokerStub(channel)
    began = time.monotonic()
    errors = 0
    done = 0
    try:
        with ThreadPoolExecutor(4) as pool:
            chunks = range(0, batches, per_request)
            futures = []
            for first in chunks:
                items = list(
                    _batches(
                        first, min(first + per_request, batches), partitions, producer_ids, value
                    )
                )
                futures.append(pool.submit(_produce, stub, items))
                if len(futures) >= 8:
                    errors += futures.pop(0).result()
                    done += per_request
                    if progress and done % (per_request * 100) == 0:
                        print(f"  {done:,}/{batches:,} batches", file=sys.stderr, flush=True)
            for future in futures:
                errors += future.result()
        load_s = time.monotonic() - began
        if errors:
            raise InvalidArgument(
                f"memory bench: {errors} batches were refused; see the broker log"
            )
        time.sleep(settle_s)
        after_load = rss_mb(broker.pid)
        retry_before = _retry(stub, address, batches, partitions, producer_ids, value)
        with open(clock_file, "w") as f:
            f.write(str(WEEK_MS + 120_000))  # a week and two minutes later
        # the clock file is re-read every 0.5 s, idle partitions are ticked every 10 s
        time.sleep(max(settle_s, 25.0))
        after_expiry = rss_mb(broker.pid)
        retry_after = _retry(stub, address, batches, partitions, producer_ids, value)
    finally:
        stop.set()
        sampler.join()
        channel.close()
    return MemoryFigures(
        batches=batches,
        partitions=partitions,
        producer_ids=producer_ids,
        value_bytes=len(value),
        load_seconds=round(load_s, 1),
        rss_mb_start=round(start_rss, 1),
        rss_mb_peak=round(peak[0], 1),
        rss_mb_after_load=round(after_load, 1),
        rss_mb_after_expiry=round(after_expiry, 1),
        retry_before_jump=retry_before,
        retry_after_jump=retry_after,
    )


def add_memory_parser(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = bench_sub.add_parser(
        "memory",
        help="broker RSS under many small idempotent batches, then after a week idle",
        description=__doc__,
    )
    p.add_argument("--batches", type=int, default=2_000_000)
    p.add_argument("--partitions", type=int, default=100)
    p.add_argument("--producer-ids", type=int, default=100_000)
    p.add_argument("--value-bytes", type=int, default=20)
    p.add_argument("--per-request", type=int, default=2000, help="batches per Produce call")
    p.add_argument("--settle", type=float, default=5.0, help="seconds to wait before measuring")
    p.add_argument("--json", default=None, help="write the figures as JSON to this path")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_memory)


def cmd_memory(args: argparse.Namespace) -> int:
    for name in ("batches", "partitions", "producer_ids", "value_bytes", "per_request"):
        if getattr(args, name) < 1:
            raise InvalidArgument(f"--{name.replace('_', '-')}: must be at least 1")
    figures = run_memory_bench(
        args.batches,
        args.partitions,
        args.producer_ids,
        args.value_bytes,
        args.per_request,
        args.settle,
        not args.no_progress,
    )
    print(
        f"talos bench memory: {figures.batches:,} batches of {figures.value_bytes} B from "
        f"{figures.producer_ids:,} producer ids over {figures.partitions} partitions "
        f"in {figures.load_seconds} s (flush)\n"
        f"  broker RSS MB: start {figures.rss_mb_start}, peak {figures.rss_mb_peak}, "
        f"after load {figures.rss_mb_after_load}, after a week idle "
        f"{figures.rss_mb_after_expiry}\n"
        f"  retry of producer 1's last batch: before the jump {figures.retry_before_jump}, "
        f"after it {figures.retry_after_jump}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(asdict(figures), f, indent=2)
    return 0
