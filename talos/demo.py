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
        lines = "\n".join(f"hello talos #{i}" for i in range(1, 13)) + "\n"
        talos("produce", "demo", stdin=lines, bootstrap=bootstrap)
        out = talos(
            "consume",
            "demo",
            "--from-beginning",
            "--max-messages",
            "12",
            "--timeout",
            "30",
            bootstrap=bootstrap,
        )
        got = sorted(out.split("\n"))
        if len([line for line in got if line]) != 12:
            raise SystemExit("demo: expected 12 messages back")

        victim = cluster.brokers[0]
        print(f"\n== killing broker {victim.broker_id} (pid {victim.pid}) with SIGKILL")
        victim.kill()
        talos("produce", "demo", stdin="after the crash\n", bootstrap=cluster.bootstrap)
        talos("topic", "describe", "demo", bootstrap=bootstrap)
        out = talos(
            "consume",
            "demo",
            "--from-beginning",
            "--max-messages",
            "13",
            "--timeout",
            "60",
            bootstrap=bootstrap,
        )
        if len([line for line in out.split("\n") if line]) != 13:
            raise SystemExit("demo: expected all 13 messages after the broker was killed")
        print("\n== all 13 acknowledged messages survived the crash; stopping the cluster")
    print("demo finished: everything stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
