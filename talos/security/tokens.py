"""Bearer tokens: ``talos_<id>_<secret>``, stored in ZooKeeper only as a SHA-256 hash.

The id is not secret (it names the token for ``talos token revoke``); the secret is
256 random bits. A fast hash is enough for that much entropy (no one can search
2^256 secrets), and a slow password hash (bcrypt, scrypt) would cost milliseconds
on every RPC.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from talos.coord.paths import validate_name
from talos.errors import InvalidArgument, Unauthenticated

PREFIX = "talos"
_TOKEN = re.compile(r"^talos_([0-9a-f]{12})_([A-Za-z0-9_-]{20,})$")
_ID = re.compile(r"^[0-9a-f]{12}$")


@dataclass(frozen=True)
class TokenRecord:
    """What ZooKeeper holds for one token: never the token itself."""

    token_id: str
    tenant: str
    sha256: str
    superuser: bool = False
    created_ms: int = 0
    description: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "tenant": self.tenant,
            "sha256": self.sha256,
            "superuser": self.superuser,
            "created_ms": self.created_ms,
            "description": self.description,
        }

    @classmethod
    def from_json(cls, token_id: str, data: dict[str, object]) -> TokenRecord:
        return cls(
            token_id=token_id,
            tenant=str(data["tenant"]),
            sha256=str(data["sha256"]),
            superuser=bool(data.get("superuser", False)),
            created_ms=int(str(data.get("created_ms", 0))),
            description=str(data.get("description", "")),
        )

    def public(self) -> dict[str, object]:
        """For ``talos token list``: no hash either."""
        return {
            "id": self.token_id,
            "tenant": self.tenant,
            "superuser": self.superuser,
            "created_ms": self.created_ms,
            "description": self.description,
        }


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(
    tenant: str, superuser: bool, now_ms: int, description: str = ""
) -> tuple[str, TokenRecord]:
    """A fresh token and the record to store; the token is shown once and kept nowhere."""
    validate_name(tenant, "tenant")
    token_id = secrets.token_hex(6)
    token = f"{PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
    record = TokenRecord(token_id, tenant, digest(token), superuser, now_ms, description)
    return token, record


def token_id_of(token: str) -> str:
    """The id part of a well-formed token; Unauthenticated (saying how it is malformed) else."""
    match = _TOKEN.match(token)
    if match is None:
        raise Unauthenticated(
            "token: malformed; expected talos_<12 hex id>_<secret> as `talos token create` "
            "prints it"
        )
    return match.group(1)


def validate_token_id(token_id: str, param: str = "id") -> str:
    if not _ID.match(token_id):
        raise InvalidArgument(
            f"{param}: {token_id!r} must be the 12 hex digits `talos token list` shows"
        )
    return token_id


def verify(token: str, record: TokenRecord | None) -> TokenRecord:
    """The record when ``token`` hashes to it; Unauthenticated naming the token id else."""
    token_id = token_id_of(token)
    if record is None:
        raise Unauthenticated(f"token {token_id}: unknown or revoked")
    if not hmac.compare_digest(digest(token), record.sha256):
        raise Unauthenticated(f"token {token_id}: wrong secret")
    return record
