"""``make demo``: a real cluster on this machine, driven by the real CLI.

Starts ZooKeeper and three brokers, creates a topic, produces with
``talos produce``, consumes with ``talos consume``, kills a broker with
SIGKILL, shows that every message is still there, and stops everything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

from talos.client import Admin
from talos.testing.cluster import LocalCluster

DEMO_DIR = os.path.join("var", "demo")


def talos(*args: str, stdin: str | None = None, bootstrap: str) -> str:
    command = [sys.executable, "-m", "talos", *args, "--bootstrap", bootstrap]
    shown = " ".join(["talos", *args])
    print(f"\n$ {shown}" + (" <<< (lines)" if stdin else ""), flush=True)
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120)
    if result.stdout:
        print(result.stdout.rstrip(), flush=True)
    if result.stderr:
        print(result.stderr.rstrip(), flush=True)
    if result.returncode != 0:
        raise SystemExit(f"demo: `{shown}` failed with exit code {result.returncode}")
    return result.stdout


def main() -> int:
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    print("== starting a local Talos cluster: ZooKeeper + 3 brokers (posix log store)")
    started = time.monotonic()
    with LocalCluster(brokers=3, data_dir=DEMO_DIR, session_timeout=4.0) as cluster:
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
    print("demo finished: everything stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
