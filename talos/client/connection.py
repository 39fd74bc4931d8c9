"""gRPC channels to brokers, one per address, and the conversion of call failures."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc
import tenacity

from talos.errors import InvalidArgument, TalosError, Unavailable
from talos.proto import talos_pb2_grpc as pb_grpc
from talos.quota.model import TENANT_METADATA
from talos.security.tls import ClientSecurity, diagnose
from talos.wire import from_grpc_error

T = TypeVar("T")

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.enable_retries", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


_default_security: ClientSecurity | None = None


def set_default_security(security: ClientSecurity | None) -> None:
    """What clients built without ``security=`` use (the CLI sets it from its flags);
    None: read TALOS_TLS_CA, TALOS_TLS_CERT/KEY and TALOS_TOKEN(_FILE) each time."""
    global _default_security
    _default_security = security


def default_security() -> ClientSecurity:
    return _default_security if _default_security is not None else ClientSecurity.from_env()


def open_channel(address: str, security: ClientSecurity) -> grpc.Channel:
    """A blocking-API channel: TLS or plaintext (the token travels as call metadata)."""
    credentials = security.channel_credentials()
    if credentials is None:
        return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(address, credentials, options=CHANNEL_OPTIONS)


def open_aio_channel(address: str, security: ClientSecurity) -> grpc.aio.Channel:
    """The asyncio-API twin of :func:`open_channel` (the produce streams)."""
    credentials = security.channel_credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS)


def call_error(exc: grpc.RpcError, address: str, security: ClientSecurity) -> TalosError:
    """A failed call as a Talos error; a connection that failed over TLS (or plaintext
    against TLS) becomes a TlsError that says so instead of a retriable Unavailable."""
    error = from_grpc_error(exc, address)
    if isinstance(error, Unavailable):
        details = exc.details() if isinstance(exc, grpc.Call | grpc.aio.AioRpcError) else str(exc)
        return diagnose(address, security, details or "") or error
    return error


def parse_bootstrap(bootstrap: str | Sequence[str]) -> list[str]:
    """'h1:p1,h2:p2' or a list -> addresses; InvalidArgument names the parameter."""
    items = bootstrap.split(",") if isinstance(bootstrap, str) else list(bootstrap)
    addresses = [item.strip() for item in items if item.strip()]
    if not addresses:
        raise InvalidArgument("bootstrap: at least one broker address host:port is required")
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidArgument(f"bootstrap: {address!r} is not host:port with port 1-65535")
    return addresses


#: Environment variable naming the tenant when a client is not given one.
TENANT_ENV = "TALOS_TENANT"


def tenant_metadata(tenant: str | None) -> tuple[tuple[str, str], ...]:
    """The gRPC metadata that names the client's tenant (quotas): ``tenant``, else
    $TALOS_TENANT, else none (the broker charges the tenant "default")."""
    from talos.coord.paths import validate_name

    chosen = tenant if tenant is not None else os.environ.get(TENANT_ENV, "")
    if not chosen:
        return ()
    return ((TENANT_METADATA, validate_name(chosen, "tenant")),)


def call_metadata(security: ClientSecurity, tenant: str | None) -> tuple[tuple[str, str], ...]:
    """Every call's metadata: the bearer token, if any, and the tenant the client names.
    A broker with authentication charges the token's tenant and ignores the name."""
    return (*(security.metadata() or ()), *tenant_metadata(tenant))


def retry_policy(timeout: float) -> tenacity.Retrying:
    """Retry retriable Talos errors with exponential backoff until ``timeout`` seconds."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(lambda e: isinstance(e, TalosError) and e.retriable),
        wait=tenacity.wait_exponential(multiplier=0.05, max=1.0),
        stop=tenacity.stop_after_delay(timeout),
        reraise=True,
    )


def candidates(addresses: Sequence[str], bootstrap: Sequence[str]) -> list[str]:
    """The brokers to try in order: the known ones, then the bootstrap list, each once."""
    return list(dict.fromkeys([*addresses, *bootstrap]))


def nobody_answered(tried: Sequence[str], last: TalosError | None) -> Unavailable:
    return Unavailable(f"no broker answered (tried {', '.join(sorted(tried))}): {last}")


class Connections:
    """One channel and stub per broker address, shared by the client's parts."""

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        request_timeout: float = 30.0,
        tenant: str | None = None,
        security: ClientSecurity | None = None,
    ) -> None:
        self.bootstrap = parse_bootstrap(bootstrap)
        self.request_timeout = request_timeout
        self.security = security if security is not None else default_security()
        self.metadata = call_metadata(self.security, tenant)
        self._stubs: dict[str, pb_grpc.BrokerStub] = {}
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    def stub(self, address: str) -> pb_grpc.BrokerStub:
        stub = self._stubs.get(address)
        if stub is None:
            with self._lock:
                stub = self._stubs.get(address)
                if stub is None:
                    channel = open_channel(address, self.security)
                    self._channels[address] = channel
                    stub = pb_grpc.BrokerStub(channel)
                    self._stubs[address] = stub
        return stub

    def call(self, address: str, method: str, request: Any, timeout: float | None = None) -> Any:
        """One unary call; grpc failures become retriable Talos errors."""
        rpc: Callable[..., Any] = getattr(self.stub(address), method)
        try:
            return rpc(request, timeout=timeout or self.request_timeout, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise call_error(exc, address, self.security) from None

    def call_any(
        self, method: str, request: Any, addresses: Sequence[str] = (), timeout: float | None = None
    ) -> Any:
        """Try the given brokers then the bootstrap list until one answers."""
        last: TalosError | None = None
        tried = candidates(addresses, self.bootstrap)
        for address in tried:
            try:
                return self.call(address, method, request, timeout)
            except Unavailable as exc:
                last = exc
        raise nobody_answered(tried, last)

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
            self._stubs.clear()


class AioConnections:
    """grpc.aio channels for the unary calls a producer's I/O loop makes (its loop only).

    Metadata refreshes and producer ids are asked for on the loop, awaiting
    the answer, so neither blocks the loop's other work (answers from other
    brokers, sends to them).
    """

    def __init__(self, connections: Connections) -> None:
        self.bootstrap = list(connections.bootstrap)
        self.security = connections.security
        self.metadata = connections.metadata
        self.request_timeout = connections.request_timeout
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, address: str) -> pb_grpc.BrokerStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = open_aio_channel(address, self.security)
        return pb_grpc.BrokerStub(channel)

    async def call_any(self, method: str, request: Any, addresses: Sequence[str] = ()) -> Any:
        """Try the given brokers then the bootstrap list until one answers."""
        last: TalosError | None = None
        tried = candidates(addresses, self.bootstrap)
        for address in tried:
            rpc = getattr(self._stub(address), method)
            try:
                return await rpc(request, timeout=self.request_timeout, metadata=self.metadata)
            except grpc.RpcError as exc:
                error = call_error(exc, address, self.security)
                if not isinstance(error, Unavailable):
                    raise error from None
                last = error
        raise nobody_answered(tried, last)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace=None)
