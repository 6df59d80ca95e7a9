"""Small helpers shared by the gateway's gRPC services.

Requests are deserialised in the handler rather than by grpc: grpc.aio answers a
payload its deserializer rejects with UNKNOWN and logs a traceback for each, so
a peer sending garbage would fill the log; here it gets INVALID_ARGUMENT and
one warning line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

log = logging.getLogger("knd.gateway.grpc")

M = TypeVar("M", bound=Message)


class BadRequest(Exception):
    """The request bytes are not the expected message."""


def parse(kind: type[M], data: bytes, method: str) -> M:
    try:
        return kind.FromString(data)
    except (DecodeError, ValueError, TypeError) as exc:
        raise BadRequest(f"{method}: malformed {kind.DESCRIPTOR.full_name}: {exc}") from None


async def reject(context: grpc.aio.ServicerContext, exc: BadRequest) -> None:
    """Answer INVALID_ARGUMENT (raises, as context.abort does)."""
    log.warning("%s (peer %s)", exc, context.peer())
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))


def raw_unary(fn: Callable[..., Any], response: type[Message]) -> grpc.RpcMethodHandler:
    """A unary-unary handler that receives the raw request bytes."""
    return grpc.unary_unary_rpc_method_handler(
        fn, request_deserializer=None, response_serializer=response.SerializeToString)


def raw_stream(fn: Callable[..., Any], response: type[Message]) -> grpc.RpcMethodHandler:
    """A unary-stream handler that receives the raw request bytes."""
    return grpc.unary_stream_rpc_method_handler(
        fn, request_deserializer=None, response_serializer=response.SerializeToString)
