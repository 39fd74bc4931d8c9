"""The broker's authentication interceptor, and how handlers learn who is calling.

Every call must carry ``authorization: Bearer <token>`` (the clients send it as call
metadata on TLS channels). The interceptor checks it against the watched token
hashes, checks the call's ACLs (see rules.py), and runs the handler with the caller's
:class:`Principal` in a context variable, read by :func:`principal_of` /
:func:`tenant_of`. Failures end the call with UNAUTHENTICATED or PERMISSION_DENIED and
a message naming what is wrong; the client turns those into Unauthenticated and
NotAuthorized.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from talos.errors import NotAuthorized, Unauthenticated
from talos.quota.model import DEFAULT_TENANT, TENANT_METADATA

from .acl import Operation, Principal, authorize, first_denial
from .rules import required
from .store import SecurityCache
from .tokens import token_id_of, verify

log = logging.getLogger(__name__)

#: grpc's RpcMethodHandler; its stubs do not type the asyncio behaviours.
Handler = Any


@dataclass(frozen=True)
class CallAuth:
    principal: Principal
    cache: SecurityCache


_CALL: contextvars.ContextVar[CallAuth | None] = contextvars.ContextVar(
    "talos_call_auth", default=None
)


def principal_of(context: object = None) -> Principal | None:
    """The authenticated caller of the current call; None when the broker runs without
    authentication. (``context``, the call's ServicerContext, is accepted so handlers
    can say whose call they mean; the principal travels with the call's task.)"""
    auth = _CALL.get()
    return auth.principal if auth is not None else None


def tenant_of(context: Any = None) -> str:
    """The tenant a call is charged to (quotas, metrics).

    With authentication, the token's tenant: a client cannot name another. Without it,
    the tenant the client names in ``talos-tenant`` metadata, else "default" (needs
    the call's ``context``; there is nothing to trust, so nothing is lost by trusting it).
    """
    principal = principal_of(context)
    if principal is not None:
        return principal.tenant
    if context is not None:
        for key, value in context.invocation_metadata() or ():
            if key == TENANT_METADATA and isinstance(value, str) and value:
                return value
    return DEFAULT_TENANT


def check(operation: Operation, topic: str) -> None:
    """Raise NotAuthorized unless the caller may do ``operation`` on ``topic``; a no-op on a
    broker without authentication. For per-batch checks inside handlers (produce)."""
    auth = _CALL.get()
    if auth is None:
        return
    decision = authorize(auth.principal, operation, topic, auth.cache.acls)
    if not decision.allowed:
        raise NotAuthorized(decision.reason)


def bearer_token(metadata: Sequence[tuple[str, Any]] | None) -> str:
    """The token of ``authorization: Bearer <token>``; Unauthenticated when absent."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("authorization: expected 'Bearer <token>'")
            return token.strip()
    raise Unauthenticated(
        "no token: this broker requires authentication; pass --token TOKEN "
        "(or set TALOS_TOKEN) with a token from `talos token create`"
    )


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, cache: SecurityCache) -> None:
        self.cache = cache

    async def authenticate(self, metadata: Sequence[tuple[str, Any]] | None) -> Principal:
        token = bearer_token(metadata)
        token_id = token_id_of(token)
        record = self.cache.token(token_id)
        if record is None:  # created a moment ago, before the watch saw it?
            record = await asyncio.to_thread(self.cache.token_fresh, token_id)
        record = verify(token, record)
        return Principal(record.tenant, record.superuser, record.token_id)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler: Handler = await continuation(details)
        if handler is None:
            return None
        method = details.method.rsplit("/", 1)[-1]
        try:
            principal = await self.authenticate(details.invocation_metadata)
        except Unauthenticated as exc:
            log.info("refused %s: %s", method, exc.message)
            return _refusing(handler, grpc.StatusCode.UNAUTHENTICATED, exc.message)
        return _wrapped(handler, method, CallAuth(principal, self.cache))


def _refusing(handler: Handler, code: grpc.StatusCode, message: str) -> Any:
    async def refuse(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)

    return _same_kind(handler, refuse, refuse)


def _wrapped(handler: Handler, method: str, auth: CallAuth) -> Any:
    """The handler, run with ``auth`` as the call's principal and its ACLs checked first."""

    async def unary_request(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        denial = first_denial(auth.principal, required(method, request), auth.cache.acls)
        if denial is not None:
            log.info("refused %s: %s", method, denial.reason)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, denial.reason)
        _CALL.set(auth)  # this call's own task context: nothing leaks to other calls
        if handler.unary_stream is not None:
            return handler.unary_stream(request, context)  # an async generator, run by caller
        return await handler.unary_unary(request, context)

    async def stream_request(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        _CALL.set(auth)
        if handler.stream_stream is not None:
            return handler.stream_stream(requests, context)
        return await handler.stream_unary(requests, context)

    return _same_kind(handler, unary_request, stream_request)


def _same_kind(
    handler: Handler,
    unary_request: Callable[..., Any],
    stream_request: Callable[..., Any],
) -> Any:
    """A method handler of the same kind and serializers as ``handler``, running ``fn``."""
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary_request, **codec)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(_streaming(stream_request), **codec)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_streaming(unary_request), **codec)
    return grpc.stream_unary_rpc_method_handler(stream_request, **codec)


def _streaming(fn: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
    """A response-streaming behavior: an async generator, as grpc.aio expects."""

    async def run(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        stream = await fn(request, context)
        if stream is None:  # refused: abort already ended the call
            return
        async for item in stream:
            yield item

    return run
