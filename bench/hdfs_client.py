"""How the hdfs LogStore should reach Hadoop's Java client: JPype in the broker's
process, or a helper JVM behind a pipe. Both write to a real MiniDFSCluster (started
here unless ``--hdfs URI`` names one) and report the hflush round trip (p50/p99) and
append+flush throughput for 100 B and 64 KiB writes.

    python -m bench.hdfs_client [--hdfs hdfs://127.0.0.1:PORT] [--iterations 2000]

``--reads`` measures the read path instead: 64 KiB reads of a 4 MiB file as the mirror's
store reader makes them, with the store's kept input streams (``read_streams=64``) and
without (``0``: every read and every length opens the file, a NameNode round trip):
``tail`` = visible_length, then read below it; ``sealed`` = read at a known position.
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from talos.storage.hdfs import HdfsLogStore, classes_dir, hadoop_classpath
from talos.storage.store import Durability
from talos.testing.hdfs import MiniDfsCluster

SIZES = (100, 64 * 1024)


def _measure(call: Callable[[bytes], None], size: int, iterations: int) -> dict[str, float]:
    data = b"x" * size
    for _ in range(50):  # warm up: JIT, pipeline set-up
        call(data)
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        call(data)
        samples.append(time.perf_counter() - start)
    samples.sort()
    total = sum(samples)
    return {
        "p50_ms": samples[len(samples) // 2] * 1e3,
        "p99_ms": samples[int(len(samples) * 0.99)] * 1e3,
        "per_s": len(samples) / total,
        "mb_s": len(samples) * size / total / 1e6,
    }


def bench_jpype(uri: str, iterations: int) -> dict[str, Any]:
    store = HdfsLogStore(uri)
    results: dict[str, Any] = {}
    try:
        for size in SIZES:
            stream = store.open_append(f"jpype-{size}-{uuid.uuid4().hex[:6]}.log")

            def call(data: bytes, stream: Any = stream) -> None:
                stream.append(data)
                stream.flush(Durability.FLUSH)

            results[str(size)] = _measure(call, size, iterations)
            stream.close()
    finally:
        store.close()
    return results


READ_FILE_BYTES = 4 << 20
READ_BYTES = 64 * 1024


def bench_reads(uri: str, iterations: int, read_streams: int) -> dict[str, Any]:
    """The two read patterns on one 4 MiB file, through a store keeping that many streams."""
    store = HdfsLogStore(uri, read_streams=read_streams)
    path = f"reads-{uuid.uuid4().hex[:6]}.log"
    results: dict[str, Any] = {}
    try:
        stream = store.open_append(path)
        stream.append(b"r" * READ_FILE_BYTES)
        stream.flush(Durability.FLUSH)  # left open: a tail being written
        chunks = READ_FILE_BYTES // READ_BYTES
        at = [0]

        def tail(_: bytes) -> None:
            end = store.visible_length(path)
            position = at[0] * READ_BYTES % end
            at[0] += 1
            if len(store.read(path, position, min(READ_BYTES, end - position))) == 0:
                raise RuntimeError("read nothing")

        def sealed(_: bytes) -> None:
            position = at[0] % chunks * READ_BYTES
            at[0] += 1
            if len(store.read(path, position, READ_BYTES)) != READ_BYTES:
                raise RuntimeError("short read")

        results["tail"] = _measure(tail, READ_BYTES, iterations)
        results["sealed"] = _measure(sealed, READ_BYTES, iterations)
        stream.close()
        store.delete(path)
    finally:
        store.close()
    return results


def bench_helper(uri: str, iterations: int) -> dict[str, Any]:
    classpath = ":".join([str(classes_dir()), *hadoop_classpath()])
    results: dict[str, Any] = {}
    for size in SIZES:
        path = f"{uri}/helper-{size}-{uuid.uuid4().hex[:6]}.log"
        proc = subprocess.Popen(
            ["java", "-Xmx256m", "-cp", classpath, "io.talos.hadoop.HflushHelper", uri, path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
        )
        assert proc.stdin is not None and proc.stdout is not None
        pipe_in, pipe_out = proc.stdin, proc.stdout

        def call(data: bytes, pipe_in: Any = pipe_in, pipe_out: Any = pipe_out) -> None:
            pipe_in.write(struct.pack(">bi", 1, len(data)) + data)
            if pipe_out.read(1) != b"\0":
                raise RuntimeError("helper JVM died")

        results[str(size)] = _measure(call, size, iterations)
        pipe_in.close()
        proc.wait(timeout=30)
        pipe_out.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hdfs", default="", help="hdfs://HOST:PORT of a running HDFS")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternate the designs this many times"
    )
    parser.add_argument(
        "--reads", action="store_true", help="the read path: kept input streams or none"
    )
    args = parser.parse_args(argv)
    cluster = None
    if not args.hdfs:
        cluster = MiniDfsCluster(datanodes=3, quick_start=False)
        print("starting a MiniDFSCluster (1 NameNode, 3 DataNodes) ...", file=sys.stderr)
        cluster.start()
    uri = args.hdfs or (cluster.uri if cluster else "")
    root = f"{uri}/bench-client-{uuid.uuid4().hex[:8]}"
    try:
        # Alternating rounds: the first runs also warm up the DataNodes' JIT.
        report: dict[str, Any] = {}
        for r in range(1, args.rounds + 1):
            if args.reads:
                report[f"kept#{r}"] = bench_reads(root, args.iterations, 64)
                report[f"reopen#{r}"] = bench_reads(root, args.iterations, 0)
                continue
            report[f"jpype#{r}"] = bench_jpype(root, args.iterations)
            report[f"helper#{r}"] = bench_helper(root, args.iterations)
    finally:
        if cluster is not None:
            cluster.stop()
    print(f"{'design':9} {'size':>6} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>9} {'MB/s':>7}")
    for design, rows in report.items():
        for size, row in rows.items():
            print(
                f"{design:9} {size:>6} {row['p50_ms']:8.3f} {row['p99_ms']:8.3f} "
                f"{row['per_s']:9.0f} {row['mb_s']:7.1f}"
            )
    print(json.dumps(report), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
