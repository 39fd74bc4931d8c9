"""Security for local deployments (`talos dev up --secure`, the tests): a throwaway CA,
a TLS broker with tokens required, and an admin (superuser) token."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from talos.clock import SYSTEM_CLOCK
from talos.coord.zk import connect

from .pki import DevPki, generate
from .store import SecurityStore
from .tls import ClientSecurity

ADMIN_TENANT = "admin"


@dataclass(frozen=True)
class ClusterSecurity:
    """What a local cluster's brokers run with: TLS from ``pki``, mutual TLS when ``mtls``,
    tokens and ACLs when ``auth``."""

    pki: DevPki
    mtls: bool = False
    auth: bool = True

    @classmethod
    def generate(
        cls, directory: str | os.PathLike[str], mtls: bool = False, auth: bool = True
    ) -> ClusterSecurity:
        return cls(generate(directory), mtls=mtls, auth=auth)

    def broker_args(self) -> list[str]:
        args = ["--tls-cert", self.pki.server_cert, "--tls-key", self.pki.server_key]
        if self.mtls:
            args += ["--tls-client-ca", self.pki.ca]
        if self.auth:
            args.append("--auth")
        return args

    def client(self, token: str = "") -> ClientSecurity:
        """A client trusting the CA, with the client certificate when mTLS is on."""
        if self.mtls:
            return ClientSecurity(
                ca=self.pki.ca, cert=self.pki.client_cert, key=self.pki.client_key, token=token
            )
        return ClientSecurity(ca=self.pki.ca, token=token)


def create_token(
    zookeeper: str,
    cluster: str,
    tenant: str,
    superuser: bool = False,
    description: str = "",
    token_file: str | os.PathLike[str] | None = None,
) -> str:
    """A new token for ``tenant`` in that cluster's ZooKeeper; written to ``token_file``
    (mode 0600) when given."""
    zk = connect(zookeeper, cluster)
    try:
        token, _record = SecurityStore(zk).create_token(
            tenant, superuser, SYSTEM_CLOCK.wall_ms(), description
        )
    finally:
        zk.stop()
        zk.close()
    if token_file is not None:
        path = Path(token_file)
        path.write_text(token + "\n")
        os.chmod(path, 0o600)
    return token
