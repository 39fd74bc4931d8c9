"""Open a log store from where it lives: ``hdfs://NAMENODE[:PORT]/PATH``, ``posix:/PATH``
or a plain directory path (posix, the default)."""

from __future__ import annotations

from talos.errors import InvalidArgument
from talos.storage.posix import PosixLogStore
from talos.storage.store import LogStore


def open_store(location: object, param: str = "store") -> LogStore:
    """The one place a store URI becomes a store: broker, mirror reader, tools."""
    if not isinstance(location, str) or not location:
        raise InvalidArgument(
            f"{param}: must be hdfs://NAMENODE:PORT/PATH, posix:/PATH or a directory, "
            f"got {location!r}"
        )
    if location.startswith("hdfs://"):
        from talos.storage.hdfs import HdfsLogStore  # starts a JVM: only when asked

        return HdfsLogStore(location)
    if location.startswith("posix:"):
        return PosixLogStore(location[len("posix:") :])
    if "://" in location:
        raise InvalidArgument(
            f"{param}: unsupported store {location!r}; expected hdfs://NAMENODE:PORT/PATH, "
            "posix:/PATH or a directory"
        )
    return PosixLogStore(location)
