"""ttrpc: unary calls over a byte stream, as the NRI plugin protocol uses them.

Every message is ``[u32 BE length][u32 BE stream id][u8 type][u8 flags]`` followed by
``length`` bytes of payload (at most ``MAX_MESSAGE``). A call is one Request message
(type 1, a ``ttrpc.Request``) from the client on a fresh odd stream id, answered by one
Response message (type 2, a ``ttrpc.Response``) on the same stream id.

``TtrpcServer`` and ``TtrpcClient`` each own one direction of a channel (a conn of
``mux.Mux``, or anything with ``receive_exactly``, ``discard`` and ``send``). The NRI
plugin serves on conn 1 and calls on conn 2; the test runtime does the opposite with
the same classes.
"""

from __future__ import annotations

import logging
import math
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol, TypeVar

import anyio
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from services.kubelet_gateway.pb import ttrpc_pb2

log = logging.getLogger("knd.nri.ttrpc")

HEADER = struct.Struct(">IIBB")
MAX_MESSAGE = 4 * 1024 * 1024
"""Largest payload of one ttrpc message."""
DISCARD_LIMIT = 16 * 1024 * 1024
"""Oversized messages up to this length are skipped and answered with an error; a
longer announced length is taken as broken framing and ends the channel."""
MAX_STREAM_ID = 0xFFFFFFFF


class MsgType(IntEnum):
    REQUEST = 1
    RESPONSE = 2
    DATA = 3


class Code(IntEnum):
    """Status codes (the gRPC numbering, as ``google.rpc.Status`` carries them)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


def code_name(code: int) -> str:
    try:
        return Code(code).name
    except ValueError:
        return f"CODE_{code}"


class TtrpcError(Exception):
    """A call that ended with a non-OK status (raised by handlers, seen by callers)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code_name(code)}: {message}")
        self.code = code
        self.message = message


class TtrpcProtocolError(Exception):
    """The peer broke the message framing; the channel cannot be read any further."""


class Channel(Protocol):
    async def receive_exactly(self, n: int) -> bytes: ...

    async def discard(self, n: int) -> None: ...

    async def send(self, data: bytes) -> None: ...


_CLOSED = (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError,
           anyio.ClosedResourceError)


@dataclass(frozen=True)
class Frame:
    stream_id: int
    type: int
    flags: int
    payload: bytes
    oversize: int = 0
    """The announced length when it exceeded the limit (the payload was skipped)."""


async def read_message(channel: Channel, limit: int = MAX_MESSAGE) -> Frame:
    """The next message; one over ``limit`` is skipped and returned with ``oversize``."""
    length, sid, mtype, flags = HEADER.unpack(await channel.receive_exactly(HEADER.size))
    if length > max(limit, DISCARD_LIMIT):
        raise TtrpcProtocolError(f"message of {length} bytes on stream {sid}")
    if length > limit:
        await channel.discard(length)
        return Frame(sid, mtype, flags, b"", oversize=length)
    return Frame(sid, mtype, flags, await channel.receive_exactly(length))


async def write_message(channel: Channel, stream_id: int, mtype: int, payload: bytes,
                        flags: int = 0) -> None:
    if len(payload) > MAX_MESSAGE:
        raise TtrpcError(Code.RESOURCE_EXHAUSTED,
                         f"message of {len(payload)} bytes exceeds {MAX_MESSAGE}")
    await channel.send(HEADER.pack(len(payload), stream_id, mtype, flags) + payload)


M = TypeVar("M", bound=ProtoMessage)
RawHandler = Callable[[bytes], Awaitable[bytes]]
Observer = Callable[[str, str, int, float], None]
"""Called after every request: (service, method, status code, seconds)."""


class TtrpcServer:
    """Answers the requests that arrive on ``channel``, each in its own task."""

    def __init__(self, channel: Channel, *, max_inflight: int = 128,
                 observer: Observer | None = None) -> None:
        self.channel = channel
        self.max_inflight = max_inflight
        self.observer = observer
        self.handlers: dict[tuple[str, str], RawHandler] = {}
        self.inflight = 0
        self.error = ""
        """Why ``serve()`` stopped reading ("" for the end of the channel)."""

    def register_raw(self, service: str, method: str, fn: RawHandler) -> None:
        self.handlers[(service, method)] = fn

    def register(self, service: str, method: str, request_type: type[M],
                 fn: Callable[[M], Awaitable[ProtoMessage]]) -> None:
        """Serve ``service/method`` with ``fn``, which takes and returns messages."""

        async def raw(payload: bytes) -> bytes:
            try:
                req = request_type.FromString(payload)
            except DecodeError as exc:
                raise TtrpcError(Code.INVALID_ARGUMENT,
                                 f"cannot decode {request_type.__name__}: {exc}") from None
            return (await fn(req)).SerializeToString()

        self.register_raw(service, method, raw)

    async def serve(self) -> None:
        """Until the channel ends; requests still running then are cancelled."""
        async with anyio.create_task_group() as tg:
            try:
                while True:
                    frame = await read_message(self.channel)
                    if frame.type != MsgType.REQUEST:
                        log.warning("ttrpc server: ignoring message of type %d on stream %d",
                                    frame.type, frame.stream_id)
                        continue
                    if frame.oversize:
                        tg.start_soon(self._reply, frame.stream_id, Code.RESOURCE_EXHAUSTED,
                                      f"request of {frame.oversize} bytes exceeds "
                                      f"{MAX_MESSAGE}", b"")
                        continue
                    if frame.stream_id % 2 == 0:
                        tg.start_soon(self._reply, frame.stream_id, Code.INVALID_ARGUMENT,
                                      f"request on even stream id {frame.stream_id}", b"")
                        continue
                    if self.inflight >= self.max_inflight:
                        tg.start_soon(self._reply, frame.stream_id, Code.RESOURCE_EXHAUSTED,
                                      f"more than {self.max_inflight} requests in flight", b"")
                        continue
                    self.inflight += 1
                    tg.start_soon(self._handle, frame.stream_id, frame.payload)
            except _CLOSED:
                pass
            except TtrpcProtocolError as exc:
                self.error = str(exc)
                log.warning("ttrpc server: %s; giving up on the channel", exc)
            tg.cancel_scope.cancel()

    async def _handle(self, sid: int, payload: bytes) -> None:
        started = time.monotonic()
        service = method = ""
        code: int = Code.OK  # a handler's TtrpcError may carry a code Code does not name
        message, out = "", b""
        try:
            try:
                req = ttrpc_pb2.Request.FromString(payload)
                service, method = req.service, req.method
            except DecodeError as exc:
                raise TtrpcError(Code.INVALID_ARGUMENT, f"cannot decode request: {exc}") from None
            fn = self.handlers.get((service, method))
            if fn is None:
                raise TtrpcError(Code.UNIMPLEMENTED, f"{service}/{method} is not implemented")
            timeout = req.timeout_nano / 1e9 if req.timeout_nano > 0 else math.inf
            with anyio.move_on_after(timeout) as scope:
                out = await fn(req.payload)
            if scope.cancelled_caught:
                raise TtrpcError(Code.DEADLINE_EXCEEDED,
                                 f"{service}/{method}: no answer within {timeout:.3f} s")
            if len(out) > MAX_MESSAGE:
                raise TtrpcError(Code.RESOURCE_EXHAUSTED,
                                 f"{service}/{method}: reply of {len(out)} bytes is too large")
        except TtrpcError as exc:
            code, message, out = exc.code, exc.message, b""
        except Exception as exc:  # a handler bug is the caller's error, never ours
            log.exception("ttrpc server: %s/%s failed", service, method)
            code, message, out = Code.INTERNAL, str(exc) or type(exc).__name__, b""
        finally:
            self.inflight -= 1
        if self.observer is not None:
            known = (service, method) in self.handlers
            self.observer(service if known else "", method if known else "",
                          code, time.monotonic() - started)
        await self._reply(sid, code, message, out)

    async def _reply(self, sid: int, code: int, message: str, payload: bytes) -> None:
        resp = ttrpc_pb2.Response(payload=payload)
        if code != Code.OK:
            resp.status.code = code
            resp.status.message = message[:64 * 1024]
        try:
            await write_message(self.channel, sid, MsgType.RESPONSE, resp.SerializeToString())
        except _CLOSED:
            log.debug("ttrpc server: stream %d: connection closed before the reply", sid)


class _Pending:
    def __init__(self) -> None:
        self.done = anyio.Event()
        self.response = ttrpc_pb2.Response()
        self.error: TtrpcError | None = None

    def fail(self, error: TtrpcError) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


class TtrpcClient:
    """Makes calls on ``channel``; ``run()`` must be reading its responses."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._next_id = 1
        self._pending: dict[int, _Pending] = {}
        self.closed = False
        self.error = ""
        """Why ``run()`` stopped reading ("" for the end of the channel)."""

    async def run(self) -> None:
        """Deliver responses until the channel ends; then every open call fails."""
        try:
            while True:
                frame = await read_message(self.channel)
                pending = self._pending.get(frame.stream_id)
                if frame.type != MsgType.RESPONSE or pending is None:
                    log.warning("ttrpc client: ignoring message of type %d on stream %d",
                                frame.type, frame.stream_id)
                    continue
                if frame.oversize:
                    pending.fail(TtrpcError(Code.RESOURCE_EXHAUSTED,
                                            f"response of {frame.oversize} bytes is too large"))
                    continue
                try:
                    pending.response = ttrpc_pb2.Response.FromString(frame.payload)
                except DecodeError as exc:
                    pending.fail(TtrpcError(Code.INTERNAL, f"cannot decode response: {exc}"))
                    continue
                pending.done.set()
        except _CLOSED:
            pass
        except TtrpcProtocolError as exc:
            self.error = str(exc)
            log.warning("ttrpc client: %s; giving up on the channel", exc)
        finally:
            self.closed = True
            for pending in self._pending.values():
                pending.fail(TtrpcError(Code.UNAVAILABLE, "connection closed"))

    async def call_raw(self, service: str, method: str, payload: bytes, *,
                       deadline: float | None = None,
                       metadata: dict[str, str] | None = None) -> bytes:
        """Call ``service/method``; ``deadline`` (seconds) also travels as ``timeout_nano``.

        Raises ``TtrpcError``: the peer's status, DEADLINE_EXCEEDED, or UNAVAILABLE when
        the connection is or goes closed.
        """
        req = ttrpc_pb2.Request(service=service, method=method, payload=payload)
        if deadline is not None:
            req.timeout_nano = max(1, int(deadline * 1e9))
        for key, value in (metadata or {}).items():
            req.metadata.add(key=key, value=value)
        resp = await self.exchange(req.SerializeToString(), deadline=deadline,
                                   what=f"{service}/{method}")
        if resp.status.code != Code.OK:
            raise TtrpcError(resp.status.code, resp.status.message)
        return resp.payload

    async def exchange(self, request: bytes, *, deadline: float | None = None,
                       what: str = "request") -> ttrpc_pb2.Response:
        """Send ``request`` (a serialized ``ttrpc.Request``, or any bytes) as a Request
        message on a new stream and return the peer's Response, whatever its status."""
        if self.closed:
            raise TtrpcError(Code.UNAVAILABLE, "connection closed")
        sid = self._next_id
        if sid > MAX_STREAM_ID:
            raise TtrpcError(Code.RESOURCE_EXHAUSTED, "stream ids exhausted")
        self._next_id += 2
        pending = self._pending[sid] = _Pending()
        try:
            try:
                await write_message(self.channel, sid, MsgType.REQUEST, request)
            except _CLOSED:
                raise TtrpcError(Code.UNAVAILABLE, "connection closed") from None
            with anyio.move_on_after(math.inf if deadline is None else deadline):
                await pending.done.wait()
        finally:
            del self._pending[sid]
        if not pending.done.is_set():
            raise TtrpcError(Code.DEADLINE_EXCEEDED, f"{what}: no answer within {deadline} s")
        if pending.error is not None:
            raise pending.error
        return pending.response

    async def call(self, service: str, method: str, request: ProtoMessage,
                   response_type: type[M], *, deadline: float | None = None,
                   metadata: dict[str, str] | None = None) -> M:
        out = await self.call_raw(service, method, request.SerializeToString(),
                                  deadline=deadline, metadata=metadata)
        try:
            return response_type.FromString(out)
        except DecodeError as exc:
            raise TtrpcError(Code.INTERNAL,
                             f"cannot decode {response_type.__name__}: {exc}") from None
