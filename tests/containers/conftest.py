"""Fixtures for the container tests: a Docker engine (or a skip saying there is none),
the Talos image built from docker/Dockerfile, and a network for one test's containers.

Run them where an engine answers: `make test-containers` (see docker/README.md).
DOCKER_HOST selects a remote engine, as for the docker CLI.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def engine_problem() -> str | None:
    """None if a Docker engine answers ``GET /_ping``, else why not.

    Asked over a plain socket: the docker library leaks its socket when the
    engine is missing, which pytest's warnings-as-errors turns into a failure.
    Engines behind TLS or SSH are left to the docker library.
    """
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            try:
                sock.connect(host[len("unix://") :])
            except OSError:
                sock.close()
                raise
        elif host.startswith("tcp://") and not os.environ.get("DOCKER_TLS_VERIFY"):
            address = host[len("tcp://") :].rstrip("/")
            name, _, port = address.rpartition(":")
            sock = socket.create_connection((name, int(port)), timeout=5)
        else:
            return None
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status = sock.recv(256).split(b"\r\n", 1)[0].decode(errors="replace")
    except (OSError, ValueError) as exc:
        return f"no Docker engine answers at {host} ({exc})"
    if " 200" not in status:
        return f"the Docker engine at {host} answered {status!r} to /_ping"
    return None


@pytest.fixture(scope="session")
def docker_engine() -> None:
    problem = engine_problem()
    if problem is not None:
        pytest.skip(f"needs a Docker engine: {problem}")


@pytest.fixture(scope="session")
def talos_image(docker_engine: None) -> Iterator[str]:
    """The image of docker/Dockerfile, built once per session and removed after it."""
    from testcontainers.core.image import DockerImage

    tag = f"talos-test:{uuid.uuid4().hex[:8]}"
    image = DockerImage(path=ROOT, dockerfile_path="docker/Dockerfile", tag=tag, clean_up=True)
    image.build()
    try:
        yield tag
    finally:
        image.remove()


@pytest.fixture
def network(docker_engine: None) -> Iterator[object]:
    from testcontainers.core.network import Network

    with Network() as net:
        yield net
