"""Produce, consume and mirror through the Talos image, started by testcontainers.

Two DCs, each a ZooKeeper container and a broker container of the image built
from docker/Dockerfile, on one Docker network; a mirror worker container runs the
link A -> B; one-shot CLI containers create the topic, produce and consume. The
brokers must turn healthy through the image's own healthcheck (`talos health`).
Skipped, with the reason, where no Docker engine answers.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ZOOKEEPER_IMAGE = "zookeeper:3.8"
TOPOLOGY = b"""
[dc.A]
zookeeper = "zk-a:2181"
cluster = "dc-a"
store = "posix:/var/lib/talos/data/a"
brokers = ["broker-a:9092"]

[dc.B]
zookeeper = "zk-b:2181"
cluster = "dc-b"
store = "posix:/var/lib/talos/data/b"
brokers = ["broker-b:9092"]

[[link]]
source = "A"
target = "B"
topics = ["*"]
"""
MESSAGES = [f"key{i % 5}:value-{i}" for i in range(40)]


class Containers:
    """Starts containers on one network and stops every one of them at the end."""

    def __init__(self, image: str, network: Any) -> None:
        self.image = image
        self.network = network
        self.started: list[Any] = []

    def start(self, image: str, alias: str | None, command: str | list[str], **kw: Any) -> Any:
        from testcontainers.core.container import DockerContainer

        files = kw.pop("files", {})
        env = kw.pop("env", {})
        container = DockerContainer(image).with_network(self.network).with_command(command)
        if alias:
            container = container.with_network_aliases(alias)
        for key, value in env.items():
            container = container.with_env(key, value)
        for path, data in files.items():
            container = container.with_copy_into_container(data, path)
        if kw:
            container = container.with_kwargs(**kw)
        container.start()
        self.started.append(container)
        return container

    def run(self, command: str | list[str], timeout: float = 120, **kw: Any) -> tuple[int, str]:
        """A one-shot talos container: its exit code and its stdout (stderr on failure)."""
        container = self.start(self.image, None, command, **kw)
        status = container.get_wrapped_container().wait(timeout=timeout)["StatusCode"]
        stdout, stderr = container.get_logs()
        return status, stdout.decode() if status == 0 else stdout.decode() + stderr.decode()

    def stop_all(self) -> None:
        for container in reversed(self.started):
            try:
                container.stop()
            except Exception as exc:  # keep stopping the others
                print(f"stopping {container}: {exc}")


def wait_healthy(container: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    status = "none"
    while time.monotonic() < deadline:
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        status = wrapped.attrs["State"].get("Health", {}).get("Status", "none")
        if status == "healthy":
            return
        if wrapped.status == "exited":
            break
        time.sleep(1)
    stdout, stderr = container.get_logs()
    raise AssertionError(f"not healthy ({status}):\n{stdout.decode()}{stderr.decode()}")


def consume(containers: Containers, dc: str, count: int) -> list[str]:
    status, out = containers.run(
        [
            "consume", "orders", "--from-beginning", "--print-offsets",
            "--max-messages", str(count), "--timeout", "30",
        ],
        env={"TALOS_BOOTSTRAP": f"broker-{dc}:9092"},
    )  # fmt: skip
    assert status == 0, out
    return sorted(line for line in out.splitlines() if line.startswith("p"))


def test_produce_consume_and_mirror_round_trip(talos_image: str, network: Any) -> None:
    from testcontainers.core.waiting_utils import wait_for_logs

    containers = Containers(talos_image, network)
    try:
        brokers = []
        for dc in ("a", "b"):
            zk = containers.start(ZOOKEEPER_IMAGE, f"zk-{dc}", [])
            wait_for_logs(zk, "binding to port", timeout=120)
            command = [
                "broker", f"--zookeeper=zk-{dc}:2181", f"--cluster=dc-{dc}", f"--id={dc}1",
                "--listen=0.0.0.0:9092", f"--advertised-host=broker-{dc}",
                f"--data-dir=/var/lib/talos/data/{dc}",
            ]  # fmt: skip
            env = {"TALOS_BROKER_ID": f"{dc}1"}
            brokers.append(containers.start(talos_image, f"broker-{dc}", command, env=env))
        for broker in brokers:
            wait_healthy(broker)

        bootstrap_a = {"TALOS_BOOTSTRAP": "broker-a:9092"}
        status, out = containers.run(
            ["topic", "create", "orders", "--partitions", "2", "--wait"], env=bootstrap_a
        )
        assert status == 0, out
        containers.start(
            talos_image,
            "mirror-ab",
            ["mirror", "run", "--topology=/etc/talos/topology.toml", "--link=A:B",
             "--worker-id=w1", "--reader=fetch"],
            files={"/etc/talos/topology.toml": TOPOLOGY},
        )  # fmt: skip
        script = (
            "printf '%s\\n' " + " ".join(MESSAGES) + " | talos produce orders --key-separator :"
        )
        status, out = containers.run(script, env=bootstrap_a, entrypoint=["sh", "-c"])
        assert status == 0, out

        in_a = consume(containers, "a", len(MESSAGES))
        expected = sorted(m.split(":", 1)[1] for m in MESSAGES)
        assert sorted(line.split("\t")[2] for line in in_a) == expected

        deadline = time.monotonic() + 120
        in_b: list[str] = []
        while time.monotonic() < deadline and in_b != in_a:
            try:
                in_b = consume(containers, "b", len(MESSAGES))
            except AssertionError:  # the mirror topic does not exist yet
                time.sleep(2)
        assert in_b == in_a  # the same message at the same offset in B
    finally:
        containers.stop_all()
