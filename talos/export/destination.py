"""Where an export lands: a directory in a LogStore (local path, or HDFS).

Everything goes through the LogStore protocol (open_append, rename,
write_file, list_dir), so a local directory and an ``hdfs://`` URI take the
same code path: the posix store for the one, the HDFS store for the other.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from talos.errors import InvalidArgument, StorageError
from talos.storage.posix import PosixLogStore
from talos.storage.store import AppendStream, Durability, LogStore

from .plan import MANIFEST_NAME

if TYPE_CHECKING:
    from typing_extensions import Buffer

WRITE_BUFFER_BYTES = 8 << 20


@dataclass
class Destination:
    """An export directory: the root of ``store``."""

    store: LogStore
    description: str  # what the user typed, for messages

    def read_manifest(self) -> bytes | None:
        if not self.store.exists(MANIFEST_NAME):
            return None
        size = self.store.visible_length(MANIFEST_NAME)
        return self.store.read(MANIFEST_NAME, 0, size)

    def write_manifest(self, data: bytes) -> None:
        self.store.write_file(MANIFEST_NAME, data)

    def names(self) -> list[str]:
        return self.store.list_dir("")

    def check_writable(self) -> None:
        try:
            self.store.check_writable()
        except StorageError as exc:
            raise StorageError(f"--to: cannot write to {self.description}: {exc}") from None

    def create(self, name: str) -> io.BufferedWriter:
        """A new file, buffered so that pyarrow's many small writes become few appends."""
        self.store.delete(name)
        return io.BufferedWriter(_Sink(self.store.open_append(name)), WRITE_BUFFER_BYTES)

    def publish(self, temp: str, final: str) -> None:
        self.store.rename(temp, final)

    def delete(self, name: str) -> None:
        self.store.delete(name)

    def close(self) -> None:
        self.store.close()


class _Sink(io.RawIOBase):
    """A writable file object over an AppendStream; close() syncs it first."""

    def __init__(self, stream: AppendStream) -> None:
        self._stream = stream

    def writable(self) -> bool:
        return True

    def write(self, data: Buffer) -> int:
        view = memoryview(data)
        self._stream.append(view)
        return view.nbytes

    def tell(self) -> int:
        return self._stream.position

    def close(self) -> None:
        if not self.closed:
            try:
                self._stream.flush(Durability.SYNC)
            finally:
                self._stream.close()
                super().close()


def open_destination(target: str) -> Destination:
    """A local directory path or an ``hdfs://namenode[:port]/path`` URI."""
    if not target:
        raise InvalidArgument("--to: must be a directory path or an hdfs:// URI, got ''")
    if target.startswith("hdfs://"):
        return Destination(_open_hdfs(target), target)
    if "://" in target:
        scheme = target.split("://", 1)[0]
        raise InvalidArgument(
            f"--to: scheme {scheme}:// is not supported; give a local directory path "
            "or an hdfs://namenode[:port]/path URI"
        )
    return Destination(PosixLogStore(os.path.abspath(target)), target)


def _open_hdfs(uri: str) -> LogStore:
    """The HDFS LogStore (talos.storage.hdfs), opened from the URI."""
    from talos.storage.open import open_store

    return open_store(uri, "--to")
