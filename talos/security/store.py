"""Tokens and ACLs in ZooKeeper, and the broker's watched copy of them.

Layout under the cluster chroot:
  /security/tokens/<id>                      {"tenant", "sha256", "superuser", ...}
  /security/acls/<tenant>:<operation>:<pattern>  {"tenant", "operation", "pattern", ...}

One znode per ACL entry makes add and remove idempotent (an existing node is success
on retry). Whoever can write this ZooKeeper can change them: secure ZooKeeper itself
(network, SASL) in production.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError

from talos.coord.zk import dumps, loads, zk_errors
from talos.errors import InvalidArgument

from .acl import AclEntry, AclSet, parse_operation
from .tokens import TokenRecord, new_token, validate_token_id

log = logging.getLogger(__name__)

ROOT = "/security"
TOKENS = f"{ROOT}/tokens"
ACLS = f"{ROOT}/acls"


def _entry_from_json(data: Any) -> AclEntry:
    return AclEntry(
        str(data["tenant"]), parse_operation(str(data["operation"])), str(data["pattern"])
    )


class SecurityStore:
    """Reads and writes tokens and ACLs (the CLI and tests; the broker reads through
    :class:`SecurityCache`)."""

    def __init__(self, zk: KazooClient) -> None:
        self.zk = zk

    def create_token(
        self, tenant: str, superuser: bool, now_ms: int, description: str = ""
    ) -> tuple[str, TokenRecord]:
        token, record = new_token(tenant, superuser, now_ms, description)
        with zk_errors(f"creating a token for tenant {tenant!r}"):
            self.zk.create(f"{TOKENS}/{record.token_id}", dumps(record.to_json()), makepath=True)
        return token, record

    def get_token(self, token_id: str) -> TokenRecord | None:
        with zk_errors(f"reading token {token_id}"):
            try:
                data, _stat = self.zk.get(f"{TOKENS}/{token_id}")
            except NoNodeError:
                return None
        return TokenRecord.from_json(token_id, loads(data, f"token {token_id}"))

    def revoke_token(self, token_id: str) -> None:
        validate_token_id(token_id)
        with zk_errors(f"revoking token {token_id}"):
            try:
                self.zk.delete(f"{TOKENS}/{token_id}")
            except NoNodeError:
                raise InvalidArgument(f"id: no token {token_id} (see `talos token list`)") from None

    def list_tokens(self) -> list[TokenRecord]:
        with zk_errors("listing tokens"):
            try:
                ids = self.zk.get_children(TOKENS)
            except NoNodeError:
                return []
        records = [self.get_token(token_id) for token_id in sorted(ids)]
        return [r for r in records if r is not None]

    def add_acl(self, entry: AclEntry, now_ms: int) -> bool:
        """True if added, False if it was there already."""
        data = {
            "tenant": entry.tenant,
            "operation": entry.operation.value,
            "pattern": entry.pattern,
            "created_ms": now_ms,
        }
        with zk_errors(f"adding ACL {entry.node_name}"):
            try:
                self.zk.create(f"{ACLS}/{entry.node_name}", dumps(data), makepath=True)
            except NodeExistsError:
                return False
        return True

    def remove_acl(self, entry: AclEntry) -> None:
        with zk_errors(f"removing ACL {entry.node_name}"):
            try:
                self.zk.delete(f"{ACLS}/{entry.node_name}")
            except NoNodeError:
                raise InvalidArgument(
                    f"acl: tenant {entry.tenant!r} has no {entry.describe()} (see `talos acl list`)"
                ) from None

    def list_acls(self) -> AclSet:
        with zk_errors("listing ACLs"):
            try:
                names = self.zk.get_children(ACLS)
            except NoNodeError:
                return AclSet()
            entries = []
            for name in names:
                try:
                    data, _stat = self.zk.get(f"{ACLS}/{name}")
                except NoNodeError:
                    continue
                entries.append(_entry_from_json(loads(data, f"ACL {name}")))
        return AclSet.of(entries)


class SecurityCache:
    """The broker's copy of tokens and ACLs, kept current by ZooKeeper watches, so the
    per-call check reads memory. A token created a moment ago and not yet seen by the
    watch is read from ZooKeeper once (:meth:`token_fresh`)."""

    def __init__(self, zk: KazooClient) -> None:
        self.store = SecurityStore(zk)
        self._zk = zk
        self._tokens: dict[str, TokenRecord] = {}
        self.acls = AclSet()
        self._lock = threading.Lock()

    def start(self) -> None:
        with zk_errors("watching tokens and ACLs"):
            self._zk.ensure_path(TOKENS)
            self._zk.ensure_path(ACLS)
            self._zk.ChildrenWatch(TOKENS, self._on_tokens)
            self._zk.ChildrenWatch(ACLS, self._on_acls)

    def token(self, token_id: str) -> TokenRecord | None:
        return self._tokens.get(token_id)

    def token_fresh(self, token_id: str) -> TokenRecord | None:
        """Read one token from ZooKeeper (a cache miss); blocking, call it in a thread."""
        record = self.store.get_token(token_id)
        if record is not None:
            with self._lock:
                self._tokens[token_id] = record
        return record

    def _on_tokens(self, ids: list[str]) -> None:
        with self._lock:
            known = dict(self._tokens)
        fresh: dict[str, TokenRecord] = {}
        for token_id in ids:
            record = known.get(token_id)
            if record is None:
                try:
                    record = self.store.get_token(token_id)
                except Exception:  # a watch thread must survive a bad znode
                    log.warning("token %s: cannot be read", token_id, exc_info=True)
            if record is not None:
                fresh[token_id] = record
        with self._lock:
            self._tokens = fresh

    def _on_acls(self, _names: list[str]) -> None:
        try:
            self.acls = self.store.list_acls()
        except Exception:  # keep the last good set; the next change re-reads
            log.warning("ACLs cannot be read; keeping the previous set", exc_info=True)
