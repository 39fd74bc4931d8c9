"""The posix LogStore: a directory on a local disk or a shared POSIX filesystem.

Qualifies (see :mod:`talos.storage.store`) on a local disk, and on a shared
filesystem only if it is strongly consistent across hosts: O_EXCL create and
rename are atomic cluster-wide and a write(2) on one host is seen by a read(2)
started later on any other. NFS with attribute caching (the default
``actimeo``) or an S3-backed FUSE mount does not qualify and must not be used.
Hard links are needed too: create_exclusive publishes a complete file with link(2).

FLUSH does nothing past write(2): the page cache already serves the bytes to
every local reader. SYNC adds fdatasync(2). Every new directory entry is made
durable by an fsync of its directory, so a synced segment survives a crash
together with its name.

Segments are preallocated ahead of the writer with fallocate(FALLOC_FL_KEEP_SIZE)
(Linux), so an fdatasync after an append need not allocate blocks as well. KEEP_SIZE
leaves the file size alone: every reader, scan and ``visible_length`` sees exactly
the bytes written, never preallocated zeros. The blocks past the end are given back
when the stream is closed (ftruncate to the current size changes no byte); a writer
that dies keeps them until its segment is deleted.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import sys
import uuid
from collections.abc import Callable

from talos.errors import InvalidArgument, StorageError, from_os_error
from talos.storage.store import Durability, check_path, check_range

# Temporary files for atomic writes; list_dir hides them.
TMP_PREFIX = ".talos-tmp-"
_READ_CHUNK = 16 << 20
#: Preallocation ahead of the writer starts here and doubles with each extension, up to
#: PREALLOCATE_MAX: a small segment reserves little, a busy one calls fallocate rarely.
PREALLOCATE_MIN = 64 * 1024
PREALLOCATE_MAX = 8 * 1024 * 1024
_FALLOC_FL_KEEP_SIZE = 1


def _load_fallocate() -> Callable[[int, int, int], bool] | None:
    """fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, length) from libc; None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fallocate = libc.fallocate
    except (OSError, AttributeError):
        return None
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fallocate.restype = ctypes.c_int

    def keep_size(fd: int, offset: int, length: int) -> bool:
        return bool(fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length) == 0)

    return keep_size


_fallocate_keep_size = _load_fallocate()


def preallocation(position: int, allocated: int, incoming: int) -> int:
    """Where the reserved space should end before ``incoming`` bytes are appended at
    ``position`` when it ends at ``allocated``: unchanged while they fit, else the
    end of the data plus one step (the size written so far, within the bounds)."""
    need = position + incoming
    if need <= allocated:
        return allocated
    step = min(max(position, PREALLOCATE_MIN), PREALLOCATE_MAX)
    return need + step


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(directory: str) -> None:
    """mkdir -p, fsyncing the parent of every directory it creates."""
    missing: list[str] = []
    current = directory
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for path in reversed(missing):
        try:
            os.mkdir(path)
        except FileExistsError:
            if not os.path.isdir(path):
                raise
            continue
        _fsync_dir(os.path.dirname(path))


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> int:
    """os.write until everything is written; returns the byte count."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        done += os.write(fd, view[done:])
    return done


class PosixAppendStream:
    """An O_APPEND descriptor for the segment's single writer.

    After a failed append or flush the stream refuses everything: a short write
    may have left a torn batch in the file, and anything appended after it would
    lie past the valid prefix that a takeover scan keeps (DESIGN §4).
    """

    def __init__(self, path: str, abs_path: str, fd: int, position: int) -> None:
        self.path = path
        self.position = position
        self._abs_path = abs_path
        self._fd: int | None = fd
        self._failed: str | None = None
        self._allocated = position  # the file's blocks are reserved up to here
        self._preallocate = _fallocate_keep_size

    def _require_fd(self, op: str) -> int:
        if self._failed is not None:
            raise StorageError(
                f"posix {op} {self._abs_path}: stream unusable after {self._failed} failed"
            )
        if self._fd is None:
            raise StorageError(f"posix {op} {self._abs_path}: stream is closed")
        return self._fd

    def _fail(self, op: str, exc: OSError) -> StorageError:
        self._failed = op
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        return from_os_error(exc, f"posix {op} {self._abs_path}")

    def _reserve(self, fd: int, incoming: int) -> None:
        """Preallocate past the end (KEEP_SIZE); a filesystem without it just skips it."""
        target = preallocation(self.position, self._allocated, incoming)
        if target == self._allocated or self._preallocate is None:
            return
        if self._preallocate(fd, self._allocated, target - self._allocated):
            self._allocated = target
        else:  # EOPNOTSUPP (tmpfs before 5.x, some FUSE mounts) or ENOSPC: write as before
            self._preallocate = None

    def append(self, data: bytes | bytearray | memoryview) -> None:
        fd = self._require_fd("append")
        try:
            if self._preallocate is not None:
                self._reserve(fd, memoryview(data).nbytes)
            self.position += _write_all(fd, data)
        except OSError as exc:
            raise self._fail("append", exc) from exc

    def flush(self, durability: Durability) -> None:
        fd = self._require_fd("flush")
        if durability == Durability.SYNC:
            try:
                os.fdatasync(fd)
            except OSError as exc:
                raise self._fail("fdatasync", exc) from exc
        elif durability != Durability.FLUSH:
            raise InvalidArgument(f"durability: must be 'flush' or 'sync', got {durability!r}")

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._allocated > self.position:
                # Gives the preallocated blocks back; the size it sets is the size it has.
                with contextlib.suppress(OSError):  # only space is at stake
                    os.ftruncate(fd, os.fstat(fd).st_size)
            os.close(fd)
        except OSError as exc:
            raise from_os_error(exc, f"posix close {self._abs_path}") from exc


class PosixLogStore:
    name = "posix"

    def __init__(self, root: str) -> None:
        if not isinstance(root, str) or not root:
            raise InvalidArgument(f"root: must be a non-empty directory path, got {root!r}")
        self.root = os.path.abspath(root)

    def __repr__(self) -> str:
        return f"PosixLogStore({self.root!r})"

    def _abs(self, path: str, param: str = "path", allow_root: bool = False) -> str:
        check_path(path, param, allow_root=allow_root)
        return os.path.join(self.root, *path.split("/")) if path else self.root

    def open_append(self, path: str, create: bool = True) -> PosixAppendStream:
        abs_path = self._abs(path)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
        try:
            if create:
                directory = os.path.dirname(abs_path)
                _make_dirs(directory)
                fd = os.open(abs_path, flags | os.O_CREAT | os.O_EXCL, 0o644)
                try:
                    _fsync_dir(directory)
                except OSError:
                    os.close(fd)
                    raise
                return PosixAppendStream(path, abs_path, fd, 0)
            fd = os.open(abs_path, flags)
            try:
                size = os.fstat(fd).st_size
            except OSError:
                os.close(fd)
                raise
            return PosixAppendStream(path, abs_path, fd, size)
        except OSError as exc:
            mode = "create" if create else "existing"
            raise from_os_error(exc, f"posix open_append ({mode}) {abs_path}") from exc

    def visible_length(self, path: str) -> int:
        abs_path = self._abs(path)
        try:
            return os.stat(abs_path).st_size
        except OSError as exc:
            raise from_os_error(exc, f"posix stat {abs_path}") from exc

    def read(self, path: str, position: int, length: int) -> bytes:
        abs_path = self._abs(path)
        check_range(position, "position")
        check_range(length, "length")
        try:
            fd = os.open(abs_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                # Clamp to the size so a generous length does not allocate a huge buffer.
                end = min(position + length, os.fstat(fd).st_size)
                parts: list[bytes] = []
                pos = position
                while pos < end:
                    chunk = os.pread(fd, min(end - pos, _READ_CHUNK), pos)
                    if not chunk:
                        break
                    parts.append(chunk)
                    pos += len(chunk)
            finally:
                os.close(fd)
        except OSError as exc:
            raise from_os_error(exc, f"posix read {abs_path}") from exc
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def create_exclusive(self, path: str, data: bytes = b"") -> bool:
        # The content goes into a temporary file first and link(2) publishes it: link
        # fails with EEXIST like O_EXCL, and no reader ever sees a half-written file.
        abs_path = self._abs(path)
        directory = os.path.dirname(abs_path)
        tmp = os.path.join(directory, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        try:
            _make_dirs(directory)
            self._write_tmp(tmp, data)
            try:
                os.link(tmp, abs_path)
            except FileExistsError:
                return False
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            _fsync_dir(directory)
            return True
        except OSError as exc:
            raise from_os_error(exc, f"posix create_exclusive {abs_path}") from exc

    def exists(self, path: str) -> bool:
        abs_path = self._abs(path)
        try:
            os.stat(abs_path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise from_os_error(exc, f"posix stat {abs_path}") from exc
        return True

    def list_dir(self, path: str) -> list[str]:
        abs_path = self._abs(path, allow_root=True)
        try:
            names = os.listdir(abs_path)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise from_os_error(exc, f"posix list_dir {abs_path}") from exc
        return sorted(n for n in names if not n.startswith(TMP_PREFIX))

    def write_file(self, path: str, data: bytes) -> None:
        abs_path = self._abs(path)
        directory = os.path.dirname(abs_path)
        tmp = os.path.join(directory, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        try:
            _make_dirs(directory)
            self._write_tmp(tmp, data)
            try:
                os.replace(tmp, abs_path)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            _fsync_dir(directory)
        except OSError as exc:
            raise from_os_error(exc, f"posix write_file {abs_path}") from exc

    def rename(self, src: str, dst: str) -> None:
        abs_src = self._abs(src, "src")
        abs_dst = self._abs(dst, "dst")
        try:
            _make_dirs(os.path.dirname(abs_dst))
            os.replace(abs_src, abs_dst)
            _fsync_dir(os.path.dirname(abs_dst))
            if os.path.dirname(abs_src) != os.path.dirname(abs_dst):
                _fsync_dir(os.path.dirname(abs_src))
        except OSError as exc:
            raise from_os_error(exc, f"posix rename {abs_src} -> {abs_dst}") from exc

    def delete(self, path: str) -> None:
        abs_path = self._abs(path)
        try:
            os.unlink(abs_path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise from_os_error(exc, f"posix delete {abs_path}") from exc

    def delete_tree(self, path: str) -> None:
        abs_path = self._abs(path)
        try:
            shutil.rmtree(abs_path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise from_os_error(exc, f"posix delete_tree {abs_path}") from exc

    def check_writable(self) -> None:
        probe = os.path.join(self.root, f"{TMP_PREFIX}probe-{uuid.uuid4().hex}")
        try:
            _make_dirs(self.root)
            self._write_tmp(probe, b"probe")
            os.unlink(probe)
        except OSError as exc:
            raise StorageError(
                f"posix log store root {self.root} is not writable: "
                f"{exc.strerror or exc} (errno {exc.errno})"
            ) from exc

    def recover_lease(self, path: str, timeout_s: float) -> None:
        """No leases on posix: the fence marker alone stops the previous writer."""
        self._abs(path)

    def close(self) -> None:
        """Nothing to release: streams own their descriptors."""

    @staticmethod
    def _write_tmp(tmp: str, data: bytes) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)


__all__ = ["TMP_PREFIX", "PosixAppendStream", "PosixLogStore"]
