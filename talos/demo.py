"""``make demo``: a real cluster on this machine, driven by the real CLI.

Starts ZooKeeper and three brokers, creates a topic, produces with
``talos produce``, consumes with ``talos consume``, kills a broker with
SIGKILL, shows that every message is still there, and stops everything.
Then two datacenters with a mirror link A→B: messages produced in A are
read in B at the same offsets, and ``talos mirror status`` shows the link.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

from talos.client import Admin
from talos.errors import TalosError
from talos.storage.hdfs import HdfsLogStore
from talos.testing.cluster import LocalCluster
from talos.testing.hdfs import MiniDfsCluster
from talos.testing.multidc import MultiDC, mirror_available

DEMO_DIR = os.path.join("var", "demo")


def talos(*args: str, stdin: str | None = None, bootstrap: str | None, label: str = "") -> str:
    command = [sys.executable, "-m", "talos", *args]
    if bootstrap is not None:
        command += ["--bootstrap", bootstrap]
    shown = " ".join(["talos", *args]) + (f"   # {label}" if label else "")
    print(f"\n$ {shown}" + (" <<< (lines)" if stdin else ""), flush=True)
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120)
    if result.stdout:
        print(result.stdout.rstrip(), flush=True)
    if result.stderr:
        print(result.stderr.rstrip(), flush=True)
    if result.returncode != 0:
        raise SystemExit(f"demo: `{shown}` failed with exit code {result.returncode}")
    return result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="make demo / make demo-hdfs")
    parser.add_argument("--store", choices=("posix", "hdfs"), default="posix")
    args = parser.parse_args(argv)
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    if args.store == "hdfs":
        return hdfs_demo()
    print("== starting a local Talos cluster: ZooKeeper + 3 brokers (posix log store)")
    started = time.monotonic()
    single_dc_demo(LocalCluster(brokers=3, data_dir=DEMO_DIR, session_timeout=4.0))
    print(f"single-DC part done in {time.monotonic() - started:.1f}s")
    mirror_demo()
    print(f"\ndemo finished in {time.monotonic() - started:.1f}s: everything stopped")
    return 0


def hdfs_demo() -> int:
    """The single-DC story with the logs on HDFS (a MiniDFSCluster started here)."""
    started = time.monotonic()
    print("== starting HDFS: a MiniDFSCluster (1 NameNode, 3 DataNodes, one JVM)")
    with MiniDfsCluster(datanodes=3, data_dir=os.path.join(DEMO_DIR, "hdfs")) as dfs:
        root = dfs.url("/talos")
        print(f"HDFS at {root}; NameNode web UI at http://{dfs.http_address}/")
        print("== starting ZooKeeper + 3 brokers with --store " + root)
        cluster = LocalCluster(brokers=3, data_dir=DEMO_DIR, session_timeout=4.0, store=root)
        single_dc_demo(cluster)
        store = HdfsLogStore(root)
        try:
            print("\n== the topic's files on HDFS (the posix store's layout):")
            for path in _walk(store, f"{cluster.cluster}/demo"):
                print(f"  {root}/{path}  ({store.visible_length(path)} bytes)")
        finally:
            store.close()
    print(f"\nHDFS demo finished in {time.monotonic() - started:.1f}s: everything stopped")
    return 0


def _walk(store: HdfsLogStore, path: str) -> Iterator[str]:
    for name in store.list_dir(path):
        child = f"{path}/{name}"
        if store.list_dir(child):
            yield from _walk(store, child)
        else:
            yield child


def single_dc_demo(cluster: LocalCluster) -> None:
    """Produce, consume, SIGKILL the owner of a partition, and read everything back."""
    started = time.monotonic()
    with cluster:
        print(f"ZooKeeper at {cluster.zookeeper.address}; brokers at {cluster.bootstrap}")
        print(f"cluster up in {time.monotonic() - started:.1f}s")
        bootstrap = cluster.bootstrap
        talos("topic", "create", "demo", "--partitions", "3", "--wait", bootstrap=bootstrap)
        talos("topic", "describe", "demo", bootstrap=bootstrap)
        lines = "\n".join(f"user-{i % 5}:hello talos #{i}" for i in range(1, 13)) + "\n"
        talos("produce", "demo", "--key-separator", ":", stdin=lines, bootstrap=bootstrap)
        out = talos(
            "consume",
            "demo",
            "--from-beginning",
            "--max-messages",
            "12",
            "--timeout",
            "30",
            "--print-offsets",
            bootstrap=bootstrap,
        )
        if len(out.splitlines()) != 12:
            raise SystemExit("demo: expected 12 messages back")

        with Admin(bootstrap) as admin:
            owners = {p.owner_id for p in admin.describe_topic("demo").partitions if p.log_end > 0}
        victim = next(b for b in cluster.brokers if b.broker_id in owners)
        print(f"\n== killing broker {victim.broker_id} (pid {victim.pid}) with SIGKILL;")
        print("   its partitions move once its ZooKeeper session (4 s) expires")
        victim.kill()
        survivors = ",".join(b.address for b in cluster.brokers if b is not victim)
        with Admin(survivors) as admin:
            deadline = time.monotonic() + 60
            while any(
                p.owner_id == victim.broker_id or p.log_end < 0
                for p in admin.describe_topic("demo").partitions
            ):
                if time.monotonic() > deadline:
                    raise SystemExit("demo: partitions did not move off the killed broker")
                time.sleep(0.2)
        talos("topic", "describe", "demo", bootstrap=survivors)
        talos(
            "produce",
            "demo",
            "--key-separator",
            ":",
            stdin="user-0:after the crash\n",
            bootstrap=survivors,
        )
        out = talos(
            "consume",
            "demo",
            "--from-beginning",
            "--max-messages",
            "13",
            "--timeout",
            "60",
            "--print-offsets",
            bootstrap=survivors,
        )
        if len(out.splitlines()) != 13:
            raise SystemExit("demo: expected all 13 messages after the broker was killed")
        print("\n== all 13 acknowledged messages survived the crash; stopping the cluster")


def _log_ends(bootstrap: str, topic: str) -> list[int]:
    with Admin(bootstrap) as admin:
        return [p.log_end for p in admin.describe_topic(topic).partitions]


def mirror_demo() -> None:
    """Two DCs, a mirror link A→B: produce in A, read the same offsets in B, show the status."""
    reason = mirror_available()
    if reason is not None:
        print(f"\n== skipping the two-datacenter part: {reason}")
        return
    print("\n== two datacenters A and B (each: ZooKeeper + 1 broker + its own log store)")
    print("   and a mirror worker process for the link A->B")
    with MultiDC(os.path.join(DEMO_DIR, "two-dc"), brokers=1, session_timeout=4.0) as dcs:
        a, b = dcs.bootstrap("A"), dcs.bootstrap("B")
        print(f"DC A brokers at {a}; DC B brokers at {b}")
        print(f"topology file: {dcs.topology_path}")
        talos("topic", "create", "orders", "--partitions", "2", "--wait", bootstrap=a, label="in A")
        lines = "\n".join(f"customer-{i % 3}:order #{i}" for i in range(1, 11)) + "\n"
        talos("produce", "orders", "--key-separator", ":", stdin=lines, bootstrap=a, label="in A")
        source_ends = _log_ends(a, "orders")
        deadline = time.monotonic() + 30
        while True:
            try:
                if _log_ends(b, "orders") == source_ends:
                    break
            except TalosError:
                pass  # the mirror has not created the topic in B yet
            if time.monotonic() > deadline:
                raise SystemExit(f"demo: the mirror did not copy orders to B; see {DEMO_DIR}")
            time.sleep(0.2)
        print(f"\n== the mirror copied every message to B (log ends {source_ends} in both)")
        consume = ["consume", "orders", "--from-beginning", "--max-messages", "10"]
        consume += ["--timeout", "30", "--print-offsets"]
        in_a = talos(*consume, bootstrap=a, label="in A")
        in_b = talos(*consume, bootstrap=b, label="in B: same messages, same offsets")
        if sorted(in_a.splitlines()) != sorted(in_b.splitlines()) or not in_b.strip():
            raise SystemExit("demo: B does not hold A's messages at A's offsets")
        topology = str(dcs.topology_path)
        talos("mirror", "status", "--topology", topology, bootstrap=None)
        print("\n== stopping both datacenters and the mirror worker")


if __name__ == "__main__":
    sys.exit(main())
