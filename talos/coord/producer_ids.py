"""Cluster-wide producer ids for idempotent producers.

Every set() on one znode bumps its version atomically, so the version a
writer gets back is unique and increasing across all clients: one write per
producer, no lock, and no sequential znodes piling up.
"""

from __future__ import annotations

import contextlib

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError

from talos.coord import paths
from talos.coord.zk import zk_errors


def allocate_producer_id(zk: KazooClient) -> int:
    """A new producer id (>= 1). A lost connection may skip ids, never repeat one."""
    with zk_errors("allocating a producer id"):
        while True:
            try:
                stat = zk.set(paths.PRODUCER_IDS, b"")
            except NoNodeError:
                with contextlib.suppress(NodeExistsError):
                    zk.create(paths.PRODUCER_IDS, b"")
                continue
            producer_id: int = stat.version
            return producer_id
