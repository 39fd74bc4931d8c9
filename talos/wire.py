"""Errors across the wire: TalosError <-> the proto Error message, and gRPC failures.

Both the broker and the client use these, so one error means one thing on
both sides.
"""

from __future__ import annotations

import grpc

from talos import metrics
from talos.errors import (
    ErrorCode,
    Gap,
    NotAuthorized,
    NotOwner,
    OffsetOutOfRange,
    TalosError,
    TalosTimeout,
    Throttled,
    Unauthenticated,
    Unavailable,
    from_wire,
)
from talos.proto import talos_pb2 as pb


def error_to_proto(exc: TalosError) -> pb.Error:
    metrics.error_answered(exc.code)
    error = pb.Error(code=int(exc.code), message=exc.message)
    if isinstance(exc, NotOwner):
        error.owner_id = exc.owner_id
        error.owner_address = exc.owner_address
    elif isinstance(exc, Gap):
        error.log_end = exc.log_end
    elif isinstance(exc, OffsetOutOfRange):
        error.log_end = exc.log_end
        error.log_start = exc.log_start
    elif isinstance(exc, Throttled):
        error.retry_after_ms = exc.retry_after_ms
    return error


def error_from_proto(error: pb.Error) -> TalosError | None:
    """None when the message carries no error."""
    if error.code == ErrorCode.NONE:
        return None
    return from_wire(
        error.code,
        error.message,
        owner_id=error.owner_id,
        owner_address=error.owner_address,
        log_end=error.log_end,
        log_start=error.log_start,
        retry_after_ms=error.retry_after_ms,
    )


def raise_for(error: pb.Error) -> None:
    exc = error_from_proto(error)
    if exc is not None:
        raise exc


def from_grpc_error(exc: grpc.RpcError, address: str) -> TalosError:
    """A failed call as a Talos error: retriable when the broker is down, timed out or
    cancelled; not when it refused the caller's token or ACLs."""
    has_status = isinstance(exc, grpc.Call | grpc.aio.AioRpcError)  # sync, or asyncio calls
    code = exc.code() if has_status else None
    details = exc.details() if has_status else str(exc)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return TalosTimeout(f"broker {address}: deadline exceeded")
    if code == grpc.StatusCode.UNAUTHENTICATED:  # the broker's auth interceptor refused
        return Unauthenticated(f"broker {address}: {details}")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return NotAuthorized(f"broker {address}: {details}")
    return Unavailable(f"broker {address}: {code.name if code else 'error'}: {details}")
