"""The hdfs LogStore: HDFS through Hadoop's own Java client, in the broker's process.

Python HDFS clients that speak the protocol themselves have no hflush, hsync or
recoverLease, so this backend calls ``org.apache.hadoop.fs.FileSystem`` through
JPype (measured against a JVM helper process: bench/README.md, "HDFS client").
The JVM starts on the first store opened in a process, with ``-Xrs`` so the
broker's own SIGTERM/SIGINT handlers keep working.

DESIGN §4 on HDFS:

- FLUSH is ``hflush()``: the bytes reach every DataNode of the pipeline and any
  reader that opens the file afterwards sees them (its *visible length*);
- SYNC is ``hsync()``: the DataNodes also fsync;
- ``create_exclusive`` is ``create(path, overwrite=false)`` (or, with content, a
  temporary file renamed without overwrite): atomic on the NameNode;
- ``recover_lease`` (takeover step 2) is ``recoverLease()`` and a bounded wait for
  ``isFileClosed()``: the NameNode closes the previous owner's file at a length its
  DataNodes agree on, and that writer's next hflush fails even if it never looks at
  the fence marker;
- readers of an open file use the visible length (``getVisibleLength()``), which
  includes everything hflushed, not the NameNode's length of completed blocks.

Reads keep a few input streams open (:class:`_ReadStreams`): ``visible_length``
always opens the file anew (an open file's length is fixed when a stream opens),
and a read that stays below a length seen before reuses that stream, so the tail
reader's "length, then read" costs one NameNode round trip and reads of sealed
segments none.

Files have the posix backend's layout (same keys, same bytes), so tools read both.
Java exceptions are converted to :class:`StorageError` here, where they enter.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from talos.errors import InvalidArgument, StorageError, StorageRefused
from talos.storage.posix import TMP_PREFIX
from talos.storage.store import Durability, check_path, check_range

log = logging.getLogger(__name__)

# Where `make hadoop-jars` puts Hadoop's jars and our own compiled classes.
JARS_ENV = "TALOS_HADOOP_JARS"
MAKE_TARGET = "make hadoop-jars"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_JAR_DIR = REPO_ROOT / "var" / "jars" / "hadoop"
CLIENT_JARS = (
    "hadoop-client-api-",
    "hadoop-client-runtime-",
    "slf4j-api-",
    "slf4j-reload4j-",
    "reload4j-",
    "commons-logging-",
)
# Staging buffer between Python bytes and a Java byte[]: one memcpy on each side.
_STAGE = 1 << 20
DEFAULT_RECOVERY_TIMEOUT_S = 60.0
#: Input streams kept open for reads (each holds a little memory and maybe a socket).
DEFAULT_READ_STREAMS = 64


def jar_dir() -> Path:
    return Path(os.environ.get(JARS_ENV) or DEFAULT_JAR_DIR)


def classes_dir() -> Path:
    """Our own Java classes (the MiniDFSCluster launcher), beside the jars."""
    return jar_dir().parent / "hadoop-classes"


def hadoop_classpath(minicluster: bool = False) -> list[str]:
    """The jars for the client (and the MiniDFSCluster); an error names the make target."""
    directory = jar_dir()
    if not (directory / ".stamp").exists() and not os.environ.get(JARS_ENV):
        raise StorageError(f"Hadoop jars are missing from {directory}: run `{MAKE_TARGET}`")
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise StorageError(
            f"Hadoop jars are missing from {directory}: run `{MAKE_TARGET}`"
        ) from exc
    if minicluster:
        jars = [str(directory / n) for n in names if n.endswith(".jar")]
    else:
        jars = [str(directory / n) for n in names if n.startswith(CLIENT_JARS)]
    if not any(os.path.basename(j).startswith("hadoop-client-api-") for j in jars):
        raise StorageError(f"hadoop-client-api is missing from {directory}: run `{MAKE_TARGET}`")
    return jars


def java_missing() -> str | None:
    """Why no Java can run here, or None."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "java is not installed: run `make deps` (installs it from apt)"
    return None


_jvm_lock = threading.Lock()


def _jvm() -> Any:
    """Start the JVM in this process once, with Hadoop's client on the classpath."""
    import jpype
    import jpype.config

    with _jvm_lock:
        if jpype.isJVMStarted():
            return jpype
        reason = java_missing()
        if reason is not None:
            raise StorageError(f"hdfs store: {reason}")
        classpath = hadoop_classpath()
        conf_dir = os.environ.get("HADOOP_CONF_DIR")
        if conf_dir:
            classpath.insert(0, conf_dir)
        try:
            jvm_path = jpype.getDefaultJVMPath()
        except jpype.JVMNotFoundException as exc:
            raise StorageError(
                f"hdfs store: no JVM library found ({exc}): run `make deps`"
            ) from exc
        # Leave the JVM in place at interpreter exit: destroying it while Hadoop's
        # client threads still run can crash the exiting process (seen as a
        # segfault after a whole pytest session); the OS frees it anyway.
        jpype.config.destroy_jvm = False
        jpype.startJVM(
            "-Xrs",  # leave SIGTERM/SIGINT/SIGHUP to Python
            "-Xmx512m",
            "-Djava.net.preferIPv4Stack=true",
            jvmpath=jvm_path,
            classpath=classpath,
            convertStrings=False,
            interrupt=False,
        )
        _configure_java_logging(jpype)
        return jpype


def jvm_started() -> bool:
    """Whether this process runs a JVM (without importing JPype when it does not)."""
    import sys

    jpype = sys.modules.get("jpype")
    return jpype is not None and bool(jpype.isJVMStarted())


def _configure_java_logging(jpype: Any) -> None:
    """Hadoop logs WARN and above to stderr (stdout belongs to the program); the rest,
    and the warning that no native library is used, is noise for a broker."""
    logger_class = jpype.JClass("org.apache.log4j.Logger")
    level = jpype.JClass("org.apache.log4j.Level")
    root = logger_class.getRootLogger()
    if not root.getAllAppenders().hasMoreElements():
        layout = jpype.JClass("org.apache.log4j.PatternLayout")("%d{ISO8601} %p %c{1}: %m%n")
        appender = jpype.JClass("org.apache.log4j.ConsoleAppender")(layout, "System.err")
        root.addAppender(appender)
    root.setLevel(level.WARN)
    logger_class.getLogger("org.apache.hadoop.util.NativeCodeLoader").setLevel(level.ERROR)
    # At interpreter exit JPype stops the JVM, which interrupts Hadoop's shutdown hook.
    logger_class.getLogger("org.apache.hadoop.util.ShutdownHookManager").setLevel(level.OFF)


def _java_class_name(exc: BaseException) -> str:
    """The Java class of a JPype exception; a RemoteException names the server's class."""
    try:
        name = str(exc.getClass().getName())  # type: ignore[attr-defined]
        if name == "org.apache.hadoop.ipc.RemoteException":
            return str(exc.getClassName())  # type: ignore[attr-defined]
        return name
    except AttributeError:
        return type(exc).__name__


def _java_causes(exc: BaseException) -> Iterator[tuple[str, str]]:
    """(class name, message) of a Java exception and its causes."""
    current: Any = exc
    for _ in range(8):
        if current is None:
            return
        name = _java_class_name(current)
        try:
            message = str(current.getMessage() or "")
        except AttributeError:
            message = str(current)
        yield name, message.splitlines()[0] if message else ""
        try:
            cause = current.getCause()
        except AttributeError:
            return
        if cause is None or cause == current:
            return
        current = cause


# Java class (its last dotted name) -> (Talos class, what it means). Retriable ones
# are StorageError; the others StorageRefused.
_REFUSED = {
    "FileAlreadyExistsException": "already exists",
    "AlreadyBeingCreatedException": "already exists, open by another writer",
    "FileNotFoundException": "no such file or directory",
    "AccessControlException": "permission denied",
    "LeaseExpiredException": "lease lost: another client recovered this file",
    "ParentNotDirectoryException": "a parent is a file, not a directory",
    "PathIsNotEmptyDirectoryException": "directory not empty",
    "InvalidPathException": "invalid path",
}
_RETRIABLE = {
    "RecoveryInProgressException": "lease recovery in progress",
    "SafeModeException": "NameNode is in safe mode",
    "ConnectException": "connection refused",
    "NoRouteToHostException": "no route to host",
    "UnknownHostException": "unknown host",
    "SocketTimeoutException": "timed out",
    "StandbyException": "NameNode is standby",
    "RetriableException": "NameNode asks to retry",
    "NotReplicatedYetException": "block not replicated yet",
}


def java_exception_names(exc: BaseException) -> set[str]:
    """Short class names of a Java exception and its causes."""
    return {name.rsplit(".", 1)[-1] for name, _ in _java_causes(exc)}


_EXISTS = {"FileAlreadyExistsException", "AlreadyBeingCreatedException"}


def convert_java_error(exc: BaseException, what: str) -> StorageError:
    """One Hadoop exception (with its causes) as a Talos error saying what was being done."""
    causes = list(_java_causes(exc))
    for name, message in causes:
        short = name.rsplit(".", 1)[-1]
        if short in _REFUSED:
            return StorageRefused(f"{what}: {_REFUSED[short]} ({short}: {message})")
        if short in _RETRIABLE:
            return StorageError(f"{what}: {_RETRIABLE[short]} ({short}: {message})")
    name, message = causes[0] if causes else (type(exc).__name__, str(exc))
    text = " ".join(m for _, m in causes)
    if "datanode" in text.lower() or "pipeline" in text.lower():
        return StorageError(f"{what}: DataNode write pipeline failed ({name}: {message})")
    return StorageError(f"{what}: {name}: {message}")


def parse_hdfs_uri(uri: object, param: str = "store") -> tuple[str, str]:
    """``hdfs://HOST[:PORT]/PATH`` -> (filesystem URI, root path)."""
    if not isinstance(uri, str):
        raise InvalidArgument(f"{param}: must be an hdfs:// URI string, got {uri!r}")
    parts = urlsplit(uri)
    if parts.scheme != "hdfs":
        raise InvalidArgument(f"{param}: must start with hdfs://, got {uri!r}")
    if not parts.netloc:
        raise InvalidArgument(f"{param}: needs the NameNode, hdfs://HOST:PORT/PATH, got {uri!r}")
    try:
        _ = parts.port
    except ValueError as exc:
        raise InvalidArgument(f"{param}: bad NameNode port in {uri!r}") from exc
    root = parts.path.rstrip("/") or "/"
    if parts.query or parts.fragment:
        raise InvalidArgument(f"{param}: no query or fragment allowed, got {uri!r}")
    for part in root.split("/")[1:]:
        if part in (".", ".."):
            raise InvalidArgument(f"{param}: path may not contain '.' or '..', got {uri!r}")
    return f"hdfs://{parts.netloc}", root


class _Staging:
    """A Java byte[] filled from Python bytes through a direct buffer (two memcpys);
    JPype's own bytes -> byte[] conversion copies element by element."""

    def __init__(self, jpype: Any) -> None:
        self.py = bytearray(_STAGE)
        self._direct = jpype.nio.convertToDirectBuffer(self.py)
        self.java = jpype.JArray(jpype.JByte)(_STAGE)

    def chunks(self, data: bytes | bytearray | memoryview) -> Iterator[int]:
        """Load each chunk of data into ``java``; yields its length."""
        view = memoryview(data).cast("B")
        for start in range(0, len(view), _STAGE):
            piece = view[start : start + _STAGE]
            n = len(piece)
            self.py[:n] = piece
            self._direct.clear()
            self._direct.get(self.java, 0, n)
            yield n


class _ReadStreams:
    """Open input streams by path, each with the visible length it had when opened.

    Bytes below a visible length never change (segments only grow, and lease
    recovery keeps everything hflushed), so a read inside that length can reuse the
    stream instead of asking the NameNode again. Bounded, least recently used first
    out; dropped when this store deletes, renames or rewrites the path. A stream
    closed under a reader makes that read fail; the store retries it on a fresh one.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._streams: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str, end: int) -> tuple[Any, int] | None:
        """A stream whose known length covers ``end``, or None."""
        with self._lock:
            entry = self._streams.get(path)
            if entry is None or entry[1] < end:
                return None
            self._streams.move_to_end(path)
            return entry

    def put(self, path: str, stream: Any, length: int) -> bool:
        """Keep ``stream`` for ``path``; False when the caller must close it itself."""
        if self.capacity <= 0:
            return False
        with self._lock:
            old = self._streams.pop(path, None)
            self._streams[path] = (stream, length)
            dropped = [old[0]] if old is not None else []
            while len(self._streams) > self.capacity:
                dropped.append(self._streams.popitem(last=False)[1][0])
        _close_all(dropped)
        return True

    def drop(self, path: str, prefix: bool = False) -> None:
        with self._lock:
            if prefix:
                keys = [k for k in self._streams if k == path or k.startswith(path + "/")]
            else:
                keys = [path] if path in self._streams else []
            dropped = [self._streams.pop(k)[0] for k in keys]
        _close_all(dropped)

    def drop_stream(self, path: str, stream: Any) -> None:
        """Forget ``stream`` if it is still the one kept for ``path`` (it failed)."""
        with self._lock:
            entry = self._streams.get(path)
            if entry is None or entry[0] is not stream:
                return
            del self._streams[path]
        _close_all([stream])

    def clear(self) -> None:
        with self._lock:
            dropped = [stream for stream, _ in self._streams.values()]
            self._streams.clear()
        _close_all(dropped)


def _close_all(streams: list[Any]) -> None:
    for stream in streams:
        with contextlib.suppress(Exception):
            stream.close()


class HdfsAppendStream:
    """The single writer's handle on one segment file (an HdfsDataOutputStream).

    After a failed append or flush the stream refuses everything, as posix does: the
    pipeline may hold a torn batch, and a lease recovery may already be cutting it.
    """

    def __init__(self, store: HdfsLogStore, path: str, out: Any, position: int) -> None:
        self.path = path
        self.position = position
        self._store = store
        self._out: Any = out
        self._staging = _Staging(store.jpype)
        self._failed: str | None = None

    def _require(self, op: str) -> Any:
        if self._failed is not None:
            raise StorageError(
                f"hdfs {op} {self._store.url(self.path)}: stream unusable after "
                f"{self._failed} failed"
            )
        if self._out is None:
            raise StorageError(f"hdfs {op} {self._store.url(self.path)}: stream is closed")
        return self._out

    def _fail(self, op: str, exc: BaseException) -> StorageError:
        self._failed = op
        out, self._out = self._out, None
        if out is not None:
            with contextlib.suppress(Exception):
                out.close()
        return convert_java_error(exc, f"hdfs {op} {self._store.url(self.path)}")

    def append(self, data: bytes | bytearray | memoryview) -> None:
        out = self._require("append")
        try:
            for n in self._staging.chunks(data):
                out.write(self._staging.java, 0, n)
                self.position += n
        except self._store.jpype.JException as exc:
            raise self._fail("append", exc) from None

    def flush(self, durability: Durability) -> None:
        out = self._require("flush")
        if durability not in (Durability.FLUSH, Durability.SYNC):
            raise InvalidArgument(f"durability: must be 'flush' or 'sync', got {durability!r}")
        op = "hsync" if durability == Durability.SYNC else "hflush"
        try:
            if durability == Durability.SYNC:
                out.hsync()
            else:
                out.hflush()
        except self._store.jpype.JException as exc:
            raise self._fail(op, exc) from None

    def close(self) -> None:
        out, self._out = self._out, None
        if out is None:
            return
        try:
            out.close()
        except self._store.jpype.JException as exc:
            raise convert_java_error(exc, f"hdfs close {self._store.url(self.path)}") from None


class HdfsLogStore:
    """A root directory on HDFS. Each instance has its own DFSClient (its own lease
    holder), so two instances in one process behave as two brokers."""

    name = "hdfs"

    def __init__(
        self,
        uri: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        read_streams: int = DEFAULT_READ_STREAMS,
    ) -> None:
        if isinstance(read_streams, bool) or not isinstance(read_streams, int) or read_streams < 0:
            raise InvalidArgument(
                f"read_streams: must be a whole number >= 0 (0: no reuse), got {read_streams!r}"
            )
        self.fs_uri, self.root = parse_hdfs_uri(uri)
        self._reads = _ReadStreams(read_streams)
        self.uri = self.fs_uri + (self.root if self.root != "/" else "")
        self._clock = clock
        self._sleep = sleep
        self.jpype = _jvm()
        j = self.jpype
        self._Path = j.JClass("org.apache.hadoop.fs.Path")
        self._rename_opts = j.JClass("org.apache.hadoop.fs.Options$Rename")
        conf = j.JClass("org.apache.hadoop.conf.Configuration")()
        conf_dir = os.environ.get("HADOOP_CONF_DIR")
        if conf_dir:
            for site in ("core-site.xml", "hdfs-site.xml"):
                if os.path.exists(os.path.join(conf_dir, site)):
                    conf.addResource(self._Path(os.path.join(conf_dir, site)))
        # Fail fast on an unreachable NameNode (the default retries for ~45 s), and keep
        # writing when a DataNode dies and no spare exists (a small cluster).
        conf.setIfUnset("ipc.client.connect.max.retries", "2")
        conf.setIfUnset("ipc.client.connect.retry.interval", "300")
        conf.setIfUnset("ipc.client.connect.timeout", "5000")
        conf.setIfUnset("dfs.client.block.write.replace-datanode-on-failure.best-effort", "true")
        conf.setBoolean("fs.hdfs.impl.disable.cache", True)
        what = f"hdfs connect {self.uri}"
        try:
            uri_class = j.JClass("java.net.URI")
            self._fs = j.JClass("org.apache.hadoop.fs.FileSystem").newInstance(
                uri_class(self.fs_uri), conf
            )
        except j.JException as exc:
            raise convert_java_error(exc, what) from None
        if str(self._fs.getClass().getSimpleName()) != "DistributedFileSystem":
            raise InvalidArgument(f"store: {uri!r} is not served by HDFS")

    def __repr__(self) -> str:
        return f"HdfsLogStore({self.uri!r})"

    def url(self, path: str) -> str:
        """The full hdfs:// URL of a store key, for messages."""
        return f"{self.fs_uri}{self._abs(path, allow_root=True)}"

    def _abs(self, path: str, param: str = "path", allow_root: bool = False) -> str:
        check_path(path, param, allow_root=allow_root)
        if not path:
            return self.root
        return f"{self.root.rstrip('/')}/{path}"

    def _jpath(self, path: str, param: str = "path", allow_root: bool = False) -> Any:
        return self._Path(self._abs(path, param, allow_root))

    @contextlib.contextmanager
    def _converted(self, what: str) -> Iterator[None]:
        try:
            yield
        except self.jpype.JException as exc:
            raise convert_java_error(exc, what) from None

    # -- writing -----------------------------------------------------------------

    def open_append(self, path: str, create: bool = True) -> HdfsAppendStream:
        jpath = self._jpath(path)
        mode = "create" if create else "existing"
        self._reads.drop(path)
        with self._converted(f"hdfs open_append ({mode}) {self.url(path)}"):
            if create:
                out = self._fs.create(jpath, False)
                return HdfsAppendStream(self, path, out, 0)
            out = self._fs.append(jpath)
            return HdfsAppendStream(self, path, out, int(out.getPos()))

    def create_exclusive(self, path: str, data: bytes = b"") -> bool:
        jpath = self._jpath(path)
        what = f"hdfs create_exclusive {self.url(path)}"
        try:
            if not data:
                self._fs.create(jpath, False).close()
                return True
            # Content goes into a temporary file that a no-overwrite rename publishes:
            # no reader sees a half-written marker.
            tmp = self._write_tmp(path, data)
            try:
                self._fs.rename(tmp, jpath, self._rename_opts.NONE)
            finally:
                with contextlib.suppress(self.jpype.JException):
                    self._fs.delete(tmp, False)
            return True
        except self.jpype.JException as exc:
            # A racer that created the file but has not closed it yet holds its lease.
            if java_exception_names(exc) & _EXISTS:
                return False
            raise convert_java_error(exc, what) from None

    def write_file(self, path: str, data: bytes) -> None:
        jpath = self._jpath(path)
        self._reads.drop(path)
        with self._converted(f"hdfs write_file {self.url(path)}"):
            tmp = self._write_tmp(path, data)
            try:
                self._fs.rename(tmp, jpath, self._rename_opts.OVERWRITE)
            except self.jpype.JException:
                with contextlib.suppress(self.jpype.JException):
                    self._fs.delete(tmp, False)
                raise

    def _write_tmp(self, path: str, data: bytes) -> Any:
        """A complete, hsynced file beside ``path``; returns its Java Path."""
        parent = self._jpath(path).getParent()
        tmp = self._Path(parent, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        out = self._fs.create(tmp, False)
        try:
            staging = _Staging(self.jpype)
            for n in staging.chunks(data):
                out.write(staging.java, 0, n)
            out.hsync()
        finally:
            out.close()
        return tmp

    def rename(self, src: str, dst: str) -> None:
        jsrc = self._jpath(src, "src")
        jdst = self._jpath(dst, "dst")
        self._reads.drop(src)
        self._reads.drop(dst)
        with self._converted(f"hdfs rename {self.url(src)} -> {self.url(dst)}"):
            self._fs.mkdirs(jdst.getParent())
            self._fs.rename(jsrc, jdst, self._rename_opts.OVERWRITE)

    def delete(self, path: str) -> None:
        jpath = self._jpath(path)
        self._reads.drop(path)
        with self._converted(f"hdfs delete {self.url(path)}"):
            self._fs.delete(jpath, False)

    def delete_tree(self, path: str) -> None:
        jpath = self._jpath(path)
        self._reads.drop(path, prefix=True)
        with self._converted(f"hdfs delete_tree {self.url(path)}"):
            self._fs.delete(jpath, True)

    # -- reading -----------------------------------------------------------------

    @contextlib.contextmanager
    def _open_read(self, path: str, jpath: Any, keep: bool = True) -> Iterator[tuple[Any, int]]:
        """A new input stream and the visible length it sees, kept for later reads (or
        closed after use when it is not kept)."""
        stream = self._fs.open(jpath)
        try:
            length = int(stream.getVisibleLength())
        except BaseException:
            stream.close()
            raise
        kept = keep and self._reads.put(path, stream, length)
        try:
            yield stream, length
        finally:
            if not kept:
                stream.close()

    def visible_length(self, path: str) -> int:
        jpath = self._jpath(path)
        with (
            self._converted(f"hdfs visible_length {self.url(path)}"),
            self._open_read(path, jpath) as (_, length),
        ):
            return length

    def read(self, path: str, position: int, length: int) -> bytes:
        jpath = self._jpath(path)
        check_range(position, "position")
        check_range(length, "length")
        kept = self._reads.get(path, position + length)
        if kept is not None:
            try:
                return self._read_from(kept[0], kept[1], position, length)
            except self.jpype.JException:
                # closed under us, or the file went away: a fresh stream decides
                self._reads.drop_stream(path, kept[0])
        try:
            with self._open_read(path, jpath) as (stream, visible):
                return self._read_from(stream, visible, position, length)
        except self.jpype.JException:
            # Another reader of this path may have replaced (and closed) the stream just
            # kept; a stream of our own decides, and its error is the answer.
            pass
        with (
            self._converted(f"hdfs read {self.url(path)}"),
            self._open_read(path, jpath, keep=False) as (stream, visible),
        ):
            return self._read_from(stream, visible, position, length)

    def _read_from(self, stream: Any, visible: int, position: int, length: int) -> bytes:
        end = min(position + length, visible)
        if end <= position:
            return b""
        parts: list[bytes] = []
        pos = position
        while pos < end:
            n = min(end - pos, _STAGE)
            buf = self.jpype.JArray(self.jpype.JByte)(n)
            stream.readFully(pos, buf, 0, n)
            parts.append(bytes(memoryview(buf)))
            pos += n
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def exists(self, path: str) -> bool:
        jpath = self._jpath(path)
        with self._converted(f"hdfs exists {self.url(path)}"):
            return bool(self._fs.exists(jpath))

    def list_dir(self, path: str) -> list[str]:
        jpath = self._jpath(path, allow_root=True)
        with self._converted(f"hdfs list_dir {self.url(path)}"):
            try:
                if not self._fs.getFileStatus(jpath).isDirectory():
                    return []
                statuses = self._fs.listStatus(jpath)
            except self.jpype.JClass("java.io.FileNotFoundException"):
                return []
            names = [str(s.getPath().getName()) for s in statuses]
        return sorted(n for n in names if not n.startswith(TMP_PREFIX))

    # -- fencing -----------------------------------------------------------------

    def recover_lease(self, path: str, timeout_s: float = DEFAULT_RECOVERY_TIMEOUT_S) -> None:
        """Close the file against its last writer (takeover step 2, DESIGN §4).

        ``recoverLease()`` asks the NameNode to revoke the writer's lease and to have
        a DataNode settle the last block at a length the replicas share; the file is
        closed when ``isFileClosed()`` says so. Until then a scan could read less than
        what the old writer had acknowledged. A missing file has nothing to recover.
        """
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float):
            raise InvalidArgument(f"timeout_s: must be a positive number, got {timeout_s!r}")
        if timeout_s <= 0:
            raise InvalidArgument(f"timeout_s: must be a positive number, got {timeout_s!r}")
        jpath = self._jpath(path)
        what = f"hdfs recover_lease {self.url(path)}"
        start = self._clock()
        deadline = start + timeout_s
        attempts = 0
        next_log = start + 5.0
        while True:
            attempts += 1
            try:
                if self._fs.recoverLease(jpath) or self._fs.isFileClosed(jpath):
                    if attempts > 1:
                        log.info(
                            "%s: closed after %.1fs (%d attempts)",
                            what,
                            self._clock() - start,
                            attempts,
                        )
                    return
            except self.jpype.JException as exc:
                if "FileNotFoundException" in java_exception_names(exc):
                    return
                error = convert_java_error(exc, what)
                if not error.retriable:
                    raise error from None
                log.debug("%s: %s", what, error.message)
            now = self._clock()
            if now >= deadline:
                raise StorageError(
                    f"{what}: file still open after {timeout_s:.1f}s of lease recovery "
                    f"({attempts} attempts); the NameNode or DataNodes may be unavailable"
                )
            if now >= next_log:
                log.warning("%s: waiting for the file to close (%.0fs)", what, now - start)
                next_log = now + 5.0
            self._sleep(min(0.2 * attempts, 1.0, max(deadline - now, 0.0)))

    def is_closed(self, path: str) -> bool:
        """No writer holds the file open (isFileClosed)."""
        jpath = self._jpath(path)
        with self._converted(f"hdfs is_closed {self.url(path)}"):
            return bool(self._fs.isFileClosed(jpath))

    # -- the store -----------------------------------------------------------------

    def check_writable(self) -> None:
        probe = self._Path(self.root, f"{TMP_PREFIX}probe-{uuid.uuid4().hex}")
        try:
            root = self._Path(self.root)
            if self._fs.exists(root) and not self._fs.getFileStatus(root).isDirectory():
                raise StorageRefused(
                    f"hdfs log store root {self.uri} is not writable: it is a file"
                )
            self._fs.mkdirs(root)
            self._fs.create(probe, False).close()
            self._fs.delete(probe, False)
        except self.jpype.JException as exc:
            raise convert_java_error(
                exc, f"hdfs log store root {self.uri} is not writable"
            ) from None

    def close(self) -> None:
        self._reads.clear()
        with contextlib.suppress(self.jpype.JException):
            self._fs.close()


__all__ = [
    "MAKE_TARGET",
    "HdfsAppendStream",
    "HdfsLogStore",
    "convert_java_error",
    "hadoop_classpath",
    "parse_hdfs_uri",
]
