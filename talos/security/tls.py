"""TLS with grpc's own credentials: the broker's server side and the clients' channel side.

Certificate and key files are read and parsed once, when the credentials are built, so a
wrong path or a file that is not PEM is refused at start with the parameter named, not at
the first handshake with an OpenSSL error.
"""

from __future__ import annotations

import enum
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from talos.errors import InvalidArgument, TalosError, TlsError

#: Environment variables a client reads when no flag names its credentials.
ENV_CA = "TALOS_TLS_CA"
ENV_CERT = "TALOS_TLS_CERT"
ENV_KEY = "TALOS_TLS_KEY"
ENV_TOKEN = "TALOS_TOKEN"
ENV_TOKEN_FILE = "TALOS_TOKEN_FILE"

#: How long the plaintext-versus-TLS probe of a failed connection may take.
PROBE_TIMEOUT_S = 1.0


def read_file(path: str, param: str) -> bytes:
    """The bytes of ``path``; InvalidArgument names the parameter when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise InvalidArgument(f"{param}: cannot read {path!r}: {exc.strerror or exc}") from None


def read_certificates(path: str, param: str) -> bytes:
    """PEM certificates (one or a chain), checked to parse."""
    data = read_file(path, param)
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise InvalidArgument(f"{param}: {path!r} holds no PEM certificate") from None
    return data


def read_private_key(path: str, param: str) -> bytes:
    """A PEM private key without a passphrase, checked to parse."""
    data = read_file(path, param)
    try:
        serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise InvalidArgument(f"{param}: {path!r} is not an unencrypted PEM private key") from None
    return data


@dataclass(frozen=True)
class ServerTLS:
    """The broker's certificate and key; with ``client_ca`` clients must present a
    certificate signed by it (mutual TLS)."""

    cert: str
    key: str
    client_ca: str = ""

    def credentials(self) -> grpc.ServerCredentials:
        cert = read_certificates(self.cert, "tls-cert")
        key = read_private_key(self.key, "tls-key")
        client_ca = read_certificates(self.client_ca, "tls-client-ca") if self.client_ca else None
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
        )


def server_tls(cert: str, key: str, client_ca: str = "") -> ServerTLS | None:
    """None when neither is given; both or neither, else InvalidArgument."""
    if not cert and not key:
        if client_ca:
            raise InvalidArgument("tls-client-ca: needs --tls-cert and --tls-key (mTLS is TLS)")
        return None
    if not cert or not key:
        missing = "tls-cert" if not cert else "tls-key"
        raise InvalidArgument(
            f"{missing}: --tls-cert and --tls-key go together; {missing} is missing"
        )
    return ServerTLS(cert=cert, key=key, client_ca=client_ca)


@dataclass(frozen=True)
class ClientSecurity:
    """How a client reaches brokers: plaintext, or TLS trusting ``ca`` (system roots when
    empty), with an optional client certificate and bearer token. A token implies TLS: it
    must never cross the network in plaintext."""

    tls: bool = False
    ca: str = ""
    cert: str = ""
    key: str = ""
    token: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            missing = "tls-client-key" if self.cert else "tls-client-cert"
            raise InvalidArgument(
                f"{missing}: a client certificate and its key go together; {missing} is missing"
            )
        if self.ca or self.cert or self.token:
            object.__setattr__(self, "tls", True)

    @classmethod
    def from_settings(
        cls, ca: str = "", cert: str = "", key: str = "", token: str = "", token_file: str = ""
    ) -> ClientSecurity:
        """From flags or a topology file: ``token_file`` is read here (one line)."""
        if token and token_file:
            raise InvalidArgument("token: give a token or a token file, not both")
        if token_file:
            token = read_file(token_file, "token-file").decode("utf-8", "replace").strip()
            if not token:
                raise InvalidArgument(f"token-file: {token_file!r} is empty")
        return cls(ca=ca, cert=cert, key=key, token=token.strip())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ClientSecurity:
        return cls.from_settings(
            ca=environ.get(ENV_CA, ""),
            cert=environ.get(ENV_CERT, ""),
            key=environ.get(ENV_KEY, ""),
            token=environ.get(ENV_TOKEN, ""),
            token_file=environ.get(ENV_TOKEN_FILE, ""),
        )

    def describe(self) -> str:
        if not self.tls:
            return "plaintext"
        parts = [f"TLS trusting {self.ca or 'the system roots'}"]
        if self.cert:
            parts.append(f"client certificate {self.cert}")
        parts.append("a token" if self.token else "no token")
        return ", ".join(parts)

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """None for plaintext; else TLS credentials (the token goes in :meth:`metadata`)."""
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=read_certificates(self.ca, "tls-ca") if self.ca else None,
            private_key=read_private_key(self.key, "tls-client-key") if self.key else None,
            certificate_chain=read_certificates(self.cert, "tls-client-cert")
            if self.cert
            else None,
        )

    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        """``authorization: Bearer <token>`` for every call, or None without a token.

        Sent as call metadata rather than grpc's access-token call credentials: those run
        a Python plugin on a thread for every call, measured at ~380 us of CPU per call
        (bench/README.md), more than the TLS itself. The header is the same, and a token
        implies TLS, so it never travels in plaintext.
        """
        return (("authorization", f"Bearer {self.token}"),) if self.token else None


PLAINTEXT = ClientSecurity()


#: gRPC's words for a connection the server closed at once (plaintext against TLS, or a
#: TLS server that wants a client certificate). Only then is the broker probed.
_CLOSED = ("socket closed", "connection reset", "end of file", "eof")


class Probe(enum.Enum):
    DOWN = "down"
    PLAINTEXT = "plaintext"
    TLS = "tls"
    TLS_NEEDS_CLIENT_CERT = "tls-needs-client-cert"


def probe(address: str, timeout: float = PROBE_TIMEOUT_S) -> Probe:
    """What the server at ``address`` speaks, from one TLS handshake without a client
    certificate and a short read (a gRPC server sends its HTTP/2 settings at once; a
    server that requires a client certificate closes the connection instead).

    Called only after a connection was closed by the broker, to tell "broker going down"
    from "broker wants TLS" or "broker wants a client certificate".
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, int(port)), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            try:
                first = tls.recv(1)
            except ssl.SSLError as exc:
                first = b"" if "CERTIFICATE_REQUIRED" in str(exc).upper() else b"?"
            except OSError:  # no settings yet (a slow server): still TLS
                first = b"?"
            # TLS 1.3 ends the handshake before the server checks the client's
            # certificate; a server that wants one closes the connection right after.
            return Probe.TLS if first else Probe.TLS_NEEDS_CLIENT_CERT
    except ssl.SSLError:  # the server answered the ClientHello with something not TLS
        return Probe.PLAINTEXT
    except (OSError, ValueError):
        return Probe.DOWN


def diagnose(address: str, security: ClientSecurity, details: str) -> TalosError | None:
    """A TlsError naming the mismatch, when a failed connection was a TLS problem.

    ``details`` is what gRPC said about the failure; None means "not a TLS problem"
    (the broker is down or unreachable), which the caller reports as Unavailable.
    """
    lowered = details.lower()
    if "certificate_verify_failed" in lowered:
        return TlsError(
            f"broker {address}: its certificate is not trusted by "
            f"{security.ca or 'the system roots'} (CERTIFICATE_VERIFY_FAILED); pass the CA "
            "that signed the broker's certificate with --tls-ca"
        )
    if "wrong_version_number" in lowered:
        return TlsError(
            f"broker {address} does not speak TLS (it runs without --tls-cert) and this "
            "client uses TLS; a token is never sent in plaintext"
        )
    if "handshake failed" in lowered:
        return TlsError(f"broker {address}: TLS handshake failed: {details}")
    if not any(word in lowered for word in _CLOSED):
        return None
    found = probe(address)
    if found is Probe.TLS and not security.tls:
        return TlsError(
            f"broker {address} requires TLS and this client connects in plaintext: "
            f"pass --tls-ca CA_PEM (or set {ENV_CA})"
        )
    if found is Probe.TLS_NEEDS_CLIENT_CERT and not security.cert:
        return TlsError(
            f"broker {address} requires a client certificate (mutual TLS): pass "
            f"--tls-client-cert and --tls-client-key (or set {ENV_CERT} and {ENV_KEY})"
        )
    return None
