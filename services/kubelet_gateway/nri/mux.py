"""The NRI connection multiplexer: several byte streams over one unix stream socket.

Every frame is ``[u32 BE conn id][u32 BE length][length bytes]``. Each conn id is an
independent byte stream: a message of the protocol above (ttrpc) may span frames and
one frame may carry several messages, so frames are only ever concatenated.

NRI uses two conn ids on the plugin's connection to the runtime:
``PLUGIN_CONN`` (1), where the runtime calls the plugin, and ``RUNTIME_CONN`` (2),
where the plugin calls the runtime. The class is symmetric: the runtime stand-in of
the tests uses it too.

A frame longer than ``max_frame`` or a read error ends the whole connection
(``Mux.error`` says why); frames for a conn id nobody opened are skipped.
"""

from __future__ import annotations

import logging
import socket
import struct

import anyio
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream

log = logging.getLogger("knd.nri.mux")

PLUGIN_CONN = 1
"""The runtime calls the plugin (the plugin is the ttrpc server)."""
RUNTIME_CONN = 2
"""The plugin calls the runtime (the plugin is the ttrpc client)."""

HEADER = struct.Struct(">II")
MAX_FRAME = 16 * 1024 * 1024
"""Largest frame payload accepted; a longer one is a broken or hostile peer."""
SEND_CHUNK = 1024 * 1024
"""Writes longer than this are split into several frames."""
CONN_BUFFER = 8 * 1024 * 1024
"""Unread bytes one conn may hold before the reader waits for its consumer."""
SEND_TIMEOUT = 10.0
"""Seconds a frame write may wait for the peer to read."""
_READ = 64 * 1024


class MuxError(Exception):
    """The peer broke the framing; the connection is closed."""


class MuxClosed(anyio.BrokenResourceError):
    """The multiplexed connection is closed."""


class MuxConn:
    """One conn id of a ``Mux``: a byte stream in each direction."""

    def __init__(self, mux: Mux, conn_id: int, limit: int = CONN_BUFFER) -> None:
        self.mux = mux
        self.conn_id = conn_id
        self._buf = bytearray()
        self._limit = limit
        self._eof = False
        self._readable = anyio.Event()
        self._writable = anyio.Event()

    # -- consumer side --------------------------------------------------------------

    async def receive_exactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; ``anyio.IncompleteRead`` at the end of the stream."""
        while len(self._buf) < n:
            if self._eof:
                if self._buf and n:
                    raise anyio.IncompleteRead
                raise anyio.EndOfStream
            self._readable = anyio.Event()
            await self._readable.wait()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        self._writable.set()
        return data

    async def discard(self, n: int) -> None:
        """Skip ``n`` bytes without holding them all in memory."""
        while n > 0:
            take = min(n, _READ)
            await self.receive_exactly(take)
            n -= take

    async def send(self, data: bytes) -> None:
        await self.mux.send(self.conn_id, data)

    @property
    def closed(self) -> bool:
        return self._eof

    # -- multiplexer side -----------------------------------------------------------

    async def _feed(self, data: bytes) -> None:
        while len(self._buf) >= self._limit and not self._eof:
            self._writable = anyio.Event()
            await self._writable.wait()
        if self._eof:
            return
        self._buf += data
        self._readable.set()

    def _close(self) -> None:
        self._eof = True
        self._readable.set()
        self._writable.set()


class Mux:
    """Frames of several conns over ``stream``; ``run()`` reads until the end.

    Typical use::

        mux = Mux(stream)
        conn = mux.open(PLUGIN_CONN)      # before run(): no early byte is skipped
        tg.start_soon(functools.partial(mux.run, shield=True))
        try:
            ...                           # conn.receive_exactly(n) / conn.send(data)
            await mux.closed.wait()
        finally:
            await mux.aclose()            # (shielded) stops the reader
    """

    def __init__(self, stream: ByteStream, *, max_frame: int = MAX_FRAME) -> None:
        self.stream = stream
        self.max_frame = max_frame
        self.conns: dict[int, MuxConn] = {}
        self.closed = anyio.Event()
        self.error: str = ""
        """Why the connection ended ("" for a clean end of stream or a local close)."""
        self._send_lock = anyio.Lock()
        self._reading = False
        self._reader_done = anyio.Event()

    def open(self, conn_id: int) -> MuxConn:
        if conn_id in self.conns:
            return self.conns[conn_id]
        conn = self.conns[conn_id] = MuxConn(self, conn_id)
        if self.closed.is_set():
            conn._close()
        return conn

    async def send(self, conn_id: int, data: bytes) -> None:
        """Write ``data`` on ``conn_id`` as one or more frames.

        A write is never cut in the middle by cancellation (that would break the
        framing for every conn); one the peer does not take within ``SEND_TIMEOUT``
        closes the connection.
        """
        if self.closed.is_set():
            raise MuxClosed("multiplexed connection closed")
        if not data:
            return
        view = memoryview(data)
        async with self._send_lock:
            failure = ""
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(SEND_TIMEOUT) as scope:
                    try:
                        for start in range(0, len(view), SEND_CHUNK):
                            chunk = view[start:start + SEND_CHUNK]
                            await self.stream.send(HEADER.pack(conn_id, len(chunk)) + chunk)
                    except (OSError, anyio.BrokenResourceError,
                            anyio.ClosedResourceError) as exc:
                        failure = f"write failed: {exc!r}"
                if scope.cancelled_caught:
                    failure = f"write stalled for {SEND_TIMEOUT} s"
                if failure:
                    await self.aclose(failure)
        if failure:
            raise MuxClosed(f"multiplexed connection closed ({failure})")

    async def run(self, *, shield: bool = False) -> None:
        """Read frames until the peer closes, the framing breaks, or ``aclose()``.

        With ``shield``, cancellation does not reach the pending socket read and only
        ``aclose()`` stops the reader, so the owner must close the mux on its way out.
        (Cancelling a pending read of anyio's unix socket stream in the very loop
        iteration that the socket turns readable makes asyncio report an
        InvalidStateError from its reader callback.)
        """
        self._reading = True
        try:
            with anyio.CancelScope(shield=shield):
                await self._read_frames()
        finally:
            self._reading = False
            self._reader_done.set()
            with anyio.CancelScope(shield=True):
                await self.aclose()

    async def _read_frames(self) -> None:
        reader = BufferedByteReceiveStream(self.stream)
        try:
            while True:
                try:
                    header = await reader.receive_exactly(HEADER.size)
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    return
                conn_id, length = HEADER.unpack(header)
                if length > self.max_frame:
                    raise MuxError(f"frame of {length} bytes for conn {conn_id} "
                                   f"exceeds the {self.max_frame} byte limit")
                conn = self.conns.get(conn_id)
                if conn is None:
                    log.warning("nri mux: skipping %d byte frame for unknown conn %d",
                                length, conn_id)
                while length:
                    try:
                        chunk = await reader.receive(min(length, _READ))
                    except anyio.EndOfStream:
                        raise MuxError("connection closed inside a frame") from None
                    length -= len(chunk)
                    if conn is not None:
                        await conn._feed(chunk)
        except MuxError as exc:
            self.error = self.error or str(exc)
            log.warning("nri mux: %s; closing the connection", exc)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            if not self.closed.is_set():
                self.error = self.error or f"read failed: {exc!r}"

    async def aclose(self, reason: str = "") -> None:
        """Close every conn and the socket; idempotent.

        The reader is not cut off mid-read: the socket is shut down so that its pending
        read ends by itself (end of stream), and the socket is closed after that.
        """
        if self.closed.is_set():
            return
        self.error = self.error or reason
        self.closed.set()
        for conn in self.conns.values():
            conn._close()
        try:
            if self._reading:
                raw = self.stream.extra(SocketAttribute.raw_socket, None)
                if raw is not None:
                    try:
                        raw.shutdown(socket.SHUT_RDWR)
                    except OSError as exc:  # not connected any more
                        log.debug("nri mux: shutdown: %r", exc)
                    with anyio.move_on_after(1):
                        await self._reader_done.wait()
        finally:
            # even when cancelled while waiting: a later aclose() returns at once, so
            # this one is the only one that can close the socket
            with anyio.CancelScope(shield=True):
                try:
                    await self.stream.aclose()
                except Exception as exc:  # already broken; nothing left to release
                    log.debug("nri mux: close: %r", exc)
