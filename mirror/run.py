"""The entry point of ``talos mirror run``: one worker of one link until told to stop."""

from __future__ import annotations

import os
import re
import socket
import threading

from talos.clock import SYSTEM_CLOCK, Clock
from topology.model import Topology

from .worker import LinkWorker, WorkerOptions

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def default_worker_id() -> str:
    """``<host>-<pid>``: unique on a host. Pass a stable id to take over the partitions of a
    crashed worker at once instead of after its ZooKeeper session expires."""
    host = _UNSAFE.sub("-", socket.gethostname()).strip("-.") or "host"
    return f"{host[:200]}-{os.getpid()}"


def make_worker(
    topology: Topology,
    link_name: str,
    worker_id: str | None,
    *,
    reader: str = "store",
    options: WorkerOptions | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> LinkWorker:
    """Check everything that can be checked without a network; InvalidArgument if wrong."""
    return LinkWorker(
        topology,
        topology.link(link_name),
        worker_id or default_worker_id(),
        reader=reader,
        options=options,
        clock=clock,
    )


def run_link(
    topology: Topology,
    link_name: str,
    worker_id: str | None,
    stop_event: threading.Event,
    *,
    reader: str = "store",
    options: WorkerOptions | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> None:
    """Run one worker of the link ``link_name`` ("A:B") until ``stop_event`` is set.

    Raises InvalidArgument (a TopologyError for an unknown link) before touching
    anything when the arguments are wrong, and CoordinationError when a
    ZooKeeper cannot be reached.
    """
    make_worker(topology, link_name, worker_id, reader=reader, options=options, clock=clock).run(
        stop_event
    )
