"""Broker liveness: one ephemeral znode per broker under ``/brokers``.

A registration lives exactly as long as the broker's ZooKeeper session. After
the session is lost (expired) kazoo opens a new one, and the registry puts
the znode back, so a broker that was merely cut off reappears by itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError

from talos.coord import paths
from talos.coord.zk import dumps, loads, zk_errors
from talos.errors import CoordinationError, InvalidArgument, TalosError

log = logging.getLogger(__name__)

_REREGISTER_PAUSE_S = 0.5
_REREGISTER_MAX_PAUSE_S = 5.0


def _setter(event: threading.Event) -> Callable[[Any], None]:
    return lambda _watched_event: event.set()


def validate_broker_id(broker_id: object, param: str = "broker_id") -> str:
    return paths.validate_name(broker_id, param)


class BrokerRegistry:
    """Registers this process's broker and reports the live ones.

    A znode left by an *earlier* session of the same broker id (a restart
    faster than the session timeout) is never deleted: we cannot tell a dead
    predecessor from a second live process configured with the same id.
    Instead :meth:`register` waits for ZooKeeper to expire the old session;
    if the node outlives that, another live broker holds the id and
    registration fails loudly.
    """

    def __init__(self, zk: KazooClient) -> None:
        self._zk = zk
        self._lock = threading.Lock()
        self._registered: tuple[str, bytes] | None = None
        self._session_lost = False
        self._listening = False

    def register(self, broker_id: str, address: str, *, wait_s: float | None = None) -> None:
        """Create ``/brokers/<id>``; idempotent for this session.

        ``wait_s`` bounds the wait for a stale registration of the same id to
        expire (default: the client's session timeout plus two seconds).
        """
        validate_broker_id(broker_id)
        if not isinstance(address, str) or not address:
            raise InvalidArgument(f"address: must be a non-empty 'host:port', got {address!r}")
        if wait_s is None:
            wait_s = getattr(self._zk, "_session_timeout", 10_000) / 1000.0 + 2.0
        data = dumps({"id": broker_id, "address": address})
        with self._lock:
            current = self._registered
        if current is not None and current[0] != broker_id:
            raise InvalidArgument(
                f"broker_id: this registry already registered {current[0]!r}, got {broker_id!r}"
            )
        self._create(broker_id, data, time.monotonic() + wait_s)
        with self._lock:
            self._registered = (broker_id, data)
            if not self._listening:
                self._zk.add_listener(self._on_state)
                self._listening = True

    def _create(self, broker_id: str, data: bytes, deadline: float) -> None:
        path = paths.broker(broker_id)
        with zk_errors(f"registering broker {broker_id!r}"):
            while True:
                try:
                    self._zk.create(path, data, ephemeral=True)
                    return
                except NodeExistsError:
                    pass
                try:
                    existing, stat = self._zk.get(path)
                except NoNodeError:
                    continue
                if stat.ephemeralOwner == self._zk.client_id[0]:
                    if existing != data:
                        self._zk.set(path, data)
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CoordinationError(
                        f"broker id {broker_id!r} is registered by another live ZooKeeper "
                        f"session 0x{stat.ephemeralOwner:x} ({existing!r}); is a second broker "
                        "running with this id?"
                    )
                gone = threading.Event()
                if self._zk.exists(path, watch=_setter(gone)) is not None:
                    gone.wait(min(remaining, 1.0))

    def deregister(self) -> None:
        """Remove our registration (clean shutdown) and stop re-registering."""
        with self._lock:
            current, self._registered = self._registered, None
            if self._listening:
                self._zk.remove_listener(self._on_state)
                self._listening = False
        if current is None:
            return
        path = paths.broker(current[0])
        with zk_errors(f"deregistering broker {current[0]!r}"):
            try:
                _data, stat = self._zk.get(path)
                if stat.ephemeralOwner == self._zk.client_id[0]:
                    self._zk.delete(path, version=stat.version)
            except NoNodeError:
                pass

    def _on_state(self, state: str) -> None:
        # Runs on kazoo's connection thread: must not block.
        if state == KazooState.LOST:
            with self._lock:
                self._session_lost = True
        elif state == KazooState.CONNECTED:
            with self._lock:
                lost, self._session_lost = self._session_lost, False
                registered = self._registered is not None
            if lost and registered:
                self._zk.handler.spawn(self._reregister)

    def _reregister(self) -> None:
        pause = _REREGISTER_PAUSE_S
        while True:
            with self._lock:
                current = self._registered
                if current is None or self._session_lost:
                    return
            if not self._zk.connected:
                return  # the next CONNECTED after a loss tries again
            try:
                # Our old session is gone, so its node is too; wait only briefly.
                self._create(current[0], current[1], time.monotonic())
                log.info("re-registered broker %s after a session loss", current[0])
                return
            except TalosError as exc:
                log.error("re-registering broker %s failed: %s", current[0], exc)
            except KazooException:
                log.exception("re-registering broker %s failed", current[0])
            time.sleep(pause)
            pause = min(pause * 2, _REREGISTER_MAX_PAUSE_S)

    def live(self) -> dict[str, str]:
        """Live brokers: id -> address."""
        with zk_errors("listing brokers"):
            return self._read(self._zk.get_children(paths.BROKERS))

    def _read(self, ids: list[str]) -> dict[str, str]:
        pending = [(broker_id, self._zk.get_async(paths.broker(broker_id))) for broker_id in ids]
        live: dict[str, str] = {}
        for broker_id, result in pending:
            try:
                data, _stat = result.get()
            except NoNodeError:
                continue  # left between the listing and the read
            raw: Any = loads(data, f"broker {broker_id}")
            if isinstance(raw, dict) and isinstance(raw.get("address"), str):
                live[broker_id] = raw["address"]
            else:
                log.warning("broker %s has a malformed registration %r", broker_id, data)
        return dict(sorted(live.items()))

    def watch(self, callback: Callable[[dict[str, str]], None]) -> None:
        """Call ``callback`` with the live brokers now and whenever the set changes."""

        def on_children(children: list[str]) -> None:
            try:
                callback(self._read(children))
            except Exception:
                log.exception("broker watch callback failed")

        with zk_errors("watching brokers"):
            self._zk.ChildrenWatch(paths.BROKERS, on_children)
