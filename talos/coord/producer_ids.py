"""Cluster-wide producer ids for idempotent producers: 64-bit, never repeated.

One znode holds the last id handed out (8 bytes, big-endian); a new id is that
plus one, written by compare-and-set on the znode's version. The id itself is
the stored value, not the version: a version is a 32-bit counter that wraps
after 2^31 writes, and a wrapped id would merge two producers' dedup state.

A znode left by the older scheme (empty data, the version was the id) goes on
from its version, so no id given out before is given out again.
"""

from __future__ import annotations

import contextlib
import struct

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from talos.coord import paths
from talos.coord.zk import zk_errors
from talos.errors import CoordinationError

_ID = struct.Struct(">q")
MAX_PRODUCER_ID = 2**63 - 1


def next_producer_id(data: bytes, version: int) -> int:
    """The id after the one stored in ``data`` (an old, empty znode: after its version)."""
    if not data:
        last = version
    elif len(data) == _ID.size:
        (last,) = _ID.unpack(data)
    else:
        raise CoordinationError(
            f"{paths.PRODUCER_IDS}: holds {len(data)} bytes, expected {_ID.size} (the last id)"
        )
    if not 0 <= last < MAX_PRODUCER_ID:
        raise CoordinationError(f"{paths.PRODUCER_IDS}: last producer id {last} is out of range")
    return last + 1


def allocate_producer_id(zk: KazooClient) -> int:
    """A new producer id (>= 1). A lost connection may skip ids, never repeat one."""
    with zk_errors("allocating a producer id"):
        while True:
            try:
                data, stat = zk.get(paths.PRODUCER_IDS)
            except NoNodeError:
                with contextlib.suppress(NodeExistsError):
                    zk.create(paths.PRODUCER_IDS, _ID.pack(0))
                continue
            producer_id = next_producer_id(data, stat.version)
            try:
                zk.set(paths.PRODUCER_IDS, _ID.pack(producer_id), version=stat.version)
            except BadVersionError:
                continue  # another broker took one first
            return producer_id
