"""The LogStore protocol: what the fencing protocol (DESIGN §4) needs from a store.

A backend qualifies only if it gives all three of:

- exclusive create: of two racing creators of a path, exactly one wins;
- linearizable metadata: once a create, rename or delete returns, every later
  call from any host sees it;
- flushed data is visible: bytes appended and flushed before a check are seen
  by any reader that starts after that check.

Local disks, strongly consistent shared POSIX filesystems and HDFS (after
hflush) give that. Stores that do not (NFS with attribute caching, S3-like
object stores, eventually consistent blob stores) must be refused: on them a
fenced zombie could acknowledge data that the new owner's scan never sees.

Paths are '/'-separated keys relative to the store root.
"""

from __future__ import annotations

import enum
from typing import Protocol

from talos.errors import InvalidArgument


class Durability(enum.StrEnum):
    """How far a flush goes before the writer may acknowledge."""

    FLUSH = "flush"  # visible to readers on any host
    SYNC = "sync"  # and on stable storage (fsync / hsync)


class AppendStream(Protocol):
    """The single writer's handle on one segment file."""

    path: str
    position: int  # bytes in the file: its length when opened plus what was appended

    def append(self, data: bytes | bytearray | memoryview) -> None: ...

    def flush(self, durability: Durability) -> None: ...

    def close(self) -> None: ...


class LogStore(Protocol):
    name: str

    def open_append(self, path: str, create: bool = True) -> AppendStream:
        """create=True: the file must not exist yet; create=False: append to an existing one."""
        ...

    def visible_length(self, path: str) -> int: ...

    def read(self, path: str, position: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``position``; fewer at the end of the file."""
        ...

    def create_exclusive(self, path: str, data: bytes = b"") -> bool:
        """True if this call created the file, False if it already existed."""
        ...

    def exists(self, path: str) -> bool: ...

    def list_dir(self, path: str) -> list[str]:
        """Sorted names in a directory; [] if it does not exist."""
        ...

    def write_file(self, path: str, data: bytes) -> None:
        """Replace a whole small file atomically: readers see the old or the new content."""
        ...

    def rename(self, src: str, dst: str) -> None: ...

    def delete(self, path: str) -> None: ...

    def delete_tree(self, path: str) -> None: ...

    def check_writable(self) -> None:
        """Raise StorageError naming the root if it cannot be written."""
        ...

    def recover_lease(self, path: str, timeout_s: float) -> None:
        """Make sure no earlier writer can append to ``path`` any more (takeover step 2).

        HDFS: recoverLease() and a bounded wait until the NameNode closed the file;
        raises StorageError if it is still open after ``timeout_s``. Posix has no
        leases: nothing to do, the fence marker is the whole fence. A missing file is
        fine.
        """
        ...

    def close(self) -> None: ...


def check_path(path: object, param: str = "path", allow_root: bool = False) -> str:
    """Validate a store key, so no caller can escape the root."""
    if not isinstance(path, str):
        raise InvalidArgument(f"{param}: must be a string, got {type(path).__name__}")
    if path == "" and allow_root:
        return path
    if not path:
        raise InvalidArgument(f"{param}: must be a non-empty relative path")
    if path.startswith("/"):
        raise InvalidArgument(f"{param}: must be relative to the store root, got {path!r}")
    if "\x00" in path or "\\" in path:
        raise InvalidArgument(f"{param}: may not contain NUL or backslash, got {path!r}")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise InvalidArgument(
                f"{param}: components may not be empty, '.' or '..', got {path!r}"
            )
    return path


def check_range(value: object, param: str) -> int:
    """A non-negative byte position or length."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{param}: must be a non-negative integer, got {value!r}")
    return value
