"""``tenant_of()`` inside handlers: the interceptor's principal reaches unary and streaming
handlers (and tasks they start), and calls do not see each other's tenant."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from talos.coord.zk import connect
from talos.errors import Unauthenticated
from talos.quota.model import DEFAULT_TENANT
from talos.security.interceptor import AuthInterceptor, tenant_of
from talos.security.pki import generate
from talos.security.store import SecurityCache, SecurityStore
from talos.security.tls import ClientSecurity, ServerTLS
from talos.testing.zookeeper import ZooKeeperServer
from talos.wire import from_grpc_error


async def unary(request: bytes, context: Any) -> bytes:
    return tenant_of(context).encode()


async def streaming(requests: Any, context: Any) -> Any:
    async for _ in requests:
        # a task started by the handler sees the caller too (ProduceStream works this way)
        yield (await asyncio.ensure_future(asyncio.sleep(0, tenant_of()))).encode()


class Echo(grpc.GenericRpcHandler):
    """Named as broker methods that need authentication only (others need ACLs)."""

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        if details.method == "/t/Metadata":
            return grpc.unary_unary_rpc_method_handler(unary)
        return grpc.stream_stream_rpc_method_handler(streaming)


def test_handlers_read_the_callers_tenant(tmp_path: Path, zk_server: ZooKeeperServer) -> None:
    assert tenant_of() == DEFAULT_TENANT  # outside any authenticated call
    pki = generate(tmp_path)
    zk = connect(zk_server.address, f"tenant-{uuid.uuid4().hex[:8]}")
    try:
        store = SecurityStore(zk)
        shop, _ = store.create_token("shop", False, 0)
        billing, _ = store.create_token("billing", False, 0)

        async def run() -> list[bytes]:
            cache = SecurityCache(zk)
            await asyncio.to_thread(cache.start)
            server = grpc.aio.server(interceptors=[AuthInterceptor(cache)])
            server.add_generic_rpc_handlers((Echo(),))
            port = server.add_secure_port(
                "127.0.0.1:0", ServerTLS(pki.server_cert, pki.server_key).credentials()
            )
            await server.start()
            address = f"127.0.0.1:{port}"
            got: list[bytes] = []
            try:
                for token in (shop, billing):
                    client = ClientSecurity(ca=pki.ca, token=token)
                    credentials = client.channel_credentials()
                    async with grpc.aio.secure_channel(address, credentials) as channel:
                        metadata = client.metadata()
                        got.append(await channel.unary_unary("/t/Metadata")(b"", metadata=metadata))
                        call = channel.stream_stream("/t/ProduceStream")(
                            iter([b"", b""]), metadata=metadata
                        )
                        got.extend([answer async for answer in call])
                anonymous = ClientSecurity(ca=pki.ca).channel_credentials()
                async with grpc.aio.secure_channel(address, anonymous) as channel:
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await channel.unary_unary("/t/Metadata")(b"")
                    error = from_grpc_error(refused.value, address)
                    assert isinstance(error, Unauthenticated)
                    assert "no token" in error.message
            finally:
                await server.stop(None)
            return got

        assert asyncio.run(run()) == [b"shop"] * 3 + [b"billing"] * 3
    finally:
        zk.stop()
        zk.close()
