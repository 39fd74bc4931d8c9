"""Connecting to ZooKeeper and turning kazoo's exceptions into Talos errors.

Each cluster lives under its own chroot ``/talos/<cluster>``, so several
clusters (or tests) can share one ensemble without seeing each other.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import (
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    NoNodeError,
    OperationTimeoutError,
    RolledBackError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry

from talos.coord import paths
from talos.errors import CoordinationError, InvalidArgument, TalosError

K = TypeVar("K")

log = logging.getLogger(__name__)

MAX_TIMEOUT_S = 3600.0


def _check_timeout(value: object, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{param}: must be a number of seconds, got {value!r}")
    if not 0 < value <= MAX_TIMEOUT_S:
        raise InvalidArgument(f"{param}: must be > 0 and at most {MAX_TIMEOUT_S}, got {value}")
    return float(value)


def _discard(client: KazooClient) -> None:
    """Stop a client that never connected, off the caller's thread.

    kazoo's stop() can wait for a connect attempt stuck on an unresponsive
    host for a whole session timeout; the caller must not.
    """

    def run() -> None:
        try:
            client.stop()
            client.close()
        except Exception:  # best effort: the client is garbage either way
            log.debug("stopping an unconnected ZooKeeper client failed", exc_info=True)

    threading.Thread(target=run, name="talos-zk-discard", daemon=True).start()


def _start(hosts: str, timeout: float, session_timeout: float, what: str) -> KazooClient:
    try:
        client = KazooClient(
            hosts=hosts,
            timeout=session_timeout,
            # Reconnect forever with a short backoff: a broker outlives ZooKeeper
            # outages. start_async + wait below bounds how long connect() waits.
            connection_retry=KazooRetry(max_tries=-1, delay=0.1, backoff=2, max_delay=2.0),
            # Used by kazoo recipes (watches, lock release); bounded so that
            # nothing retries forever behind our back.
            command_retry=KazooRetry(max_tries=5, delay=0.1, backoff=2, max_delay=1.0),
        )
    except (ValueError, KazooException) as exc:
        raise InvalidArgument(
            f"hosts: {hosts!r} is not a ZooKeeper connect string: {exc}"
        ) from None
    connected = client.start_async().wait(max(timeout, 0.0))
    if connected and client.connected:
        return client
    _discard(client)
    raise CoordinationError(what)


def connect(
    hosts: str,
    cluster: str,
    *,
    connect_timeout: float = 10.0,
    session_timeout: float = 10.0,
) -> KazooClient:
    """A started client chrooted at ``/talos/<cluster>``, with the base paths in place.

    Raises CoordinationError when ZooKeeper does not answer within
    ``connect_timeout`` seconds (the call never takes much longer).
    """
    if not isinstance(hosts, str) or not hosts.strip() or "/" in hosts:
        raise InvalidArgument(
            f"hosts: must be 'host:port[,host:port...]' without a chroot, got {hosts!r}"
        )
    root = paths.chroot(cluster)
    connect_timeout = _check_timeout(connect_timeout, "connect_timeout")
    session_timeout = _check_timeout(session_timeout, "session_timeout")
    unreachable = f"ZooKeeper at {hosts} unreachable after {connect_timeout}s"
    deadline = time.monotonic() + connect_timeout

    # The chroot must exist before a chrooted client can use it, so an
    # unchrooted client creates it first.
    admin = _start(hosts, connect_timeout, session_timeout, unreachable)
    try:
        with zk_errors(f"creating {root} in ZooKeeper at {hosts}"):
            for base in paths.BASE_PATHS:
                admin.ensure_path(root + base)
    finally:
        _close(admin)

    client = _start(hosts + root, deadline - time.monotonic(), session_timeout, unreachable)
    return client


def _close(client: KazooClient) -> None:
    try:
        client.stop()
        client.close()
    except Exception:
        log.debug("closing a ZooKeeper client failed", exc_info=True)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosedError):
        return "the ZooKeeper client is closed"
    if isinstance(exc, SessionExpiredError):
        return "the ZooKeeper session expired"
    if isinstance(exc, ConnectionLoss):
        return "lost the connection to ZooKeeper"
    if isinstance(exc, OperationTimeoutError | KazooTimeoutError):
        return "ZooKeeper did not answer in time"
    if isinstance(exc, NoNodeError):
        return "a znode it needs does not exist"
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


@contextmanager
def zk_errors(what: str) -> Iterator[None]:
    """Convert kazoo exceptions escaping the block into CoordinationError("<what>: ...")."""
    try:
        yield
    except TalosError:
        raise
    except (KazooException, KazooTimeoutError) as exc:
        raise CoordinationError(f"{what}: {_describe(exc)}") from exc


def txn_failure(results: Sequence[Any]) -> BaseException | None:
    """The exception that made a kazoo transaction fail, or None if it committed.

    kazoo reports a failed transaction as a list where the failing operation
    holds its real error and the others hold RolledBackError (or a runtime
    inconsistency marker).
    """
    fallback: BaseException | None = None
    for result in results:
        if isinstance(result, RolledBackError):
            fallback = fallback or result
        elif isinstance(result, BaseException):
            return result
    return fallback


def dumps(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def loads(data: bytes | None, what: str) -> Any:
    """Parse a JSON znode; corrupt metadata is a coordination problem, not a crash."""
    try:
        return json.loads(data or b"")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CoordinationError(f"{what}: znode holds invalid JSON ({exc})") from None


def numbered_children(zk: KazooClient, parents: Sequence[tuple[K, str]]) -> list[tuple[K, int]]:
    """The numeric children (partitions) of each parent znode, listed in parallel.

    A parent that vanished meanwhile has none; other children are ignored.
    """
    listings = [(key, zk.get_children_async(parent)) for key, parent in parents]
    found: list[tuple[K, int]] = []
    for key, listing in listings:
        try:
            children = listing.get()
        except NoNodeError:
            continue
        found.extend((key, int(child)) for child in children if child.isdigit())
    return found
