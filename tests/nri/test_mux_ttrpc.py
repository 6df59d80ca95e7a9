"""The multiplexer and ttrpc on their own, over a unix socket pair."""

from __future__ import annotations

import functools
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import UNIXSocketStream

from services.kubelet_gateway.nri.mux import Mux
from services.kubelet_gateway.nri.ttrpc import (
    HEADER,
    Code,
    MsgType,
    TtrpcClient,
    TtrpcError,
    TtrpcServer,
    read_message,
    write_message,
)
from services.kubelet_gateway.pb import nri_pb2 as api
from services.kubelet_gateway.pb import ttrpc_pb2

pytestmark = pytest.mark.anyio

SVC = "test.Echo"


@asynccontextmanager
async def mux_pair(**kw) -> AsyncIterator[tuple[Mux, Mux]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    left = Mux(await UNIXSocketStream.from_socket(a), **kw)
    right = Mux(await UNIXSocketStream.from_socket(b), **kw)
    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(left.run, shield=True))
        tg.start_soon(functools.partial(right.run, shield=True))
        try:
            yield left, right
        finally:
            with anyio.CancelScope(shield=True):
                await left.aclose()
                await right.aclose()


@asynccontextmanager
async def ttrpc_pair(**kw) -> AsyncIterator[tuple[TtrpcServer, TtrpcClient, Mux]]:
    """A server on the left's conn 1, a client on the right's conn 1."""
    async with mux_pair() as (left, right), anyio.create_task_group() as tg:
        server = TtrpcServer(left.open(1), **kw)
        client = TtrpcClient(right.open(1))
        tg.start_soon(server.serve)
        tg.start_soon(client.run)
        try:
            yield server, client, right
        finally:
            tg.cancel_scope.cancel()


@asynccontextmanager
async def server_only(**kw) -> AsyncIterator[tuple[TtrpcServer, Mux]]:
    """A server on the left's conn 1; the test reads and writes the right's conn 1 raw."""
    async with mux_pair() as (left, right), anyio.create_task_group() as tg:
        server = TtrpcServer(left.open(1), **kw)
        server.register(SVC, "Echo", api.LinuxDevice, echo)
        tg.start_soon(server.serve)
        try:
            yield server, right
        finally:
            tg.cancel_scope.cancel()


async def response(mux: Mux) -> tuple[int, ttrpc_pb2.Response]:
    frame = await read_message(mux.open(1))
    assert frame.type == MsgType.RESPONSE
    return frame.stream_id, ttrpc_pb2.Response.FromString(frame.payload)


def request(sid: int, method: str, payload: bytes = b"", service: str = SVC) -> bytes:
    body = ttrpc_pb2.Request(service=service, method=method, payload=payload)
    data = body.SerializeToString()
    return HEADER.pack(len(data), sid, MsgType.REQUEST, 0) + data


async def echo(req: api.LinuxDevice) -> api.LinuxDevice:
    return api.LinuxDevice(path=req.path.upper(), major=req.major + 1)


async def test_mux_keeps_conns_apart_and_reassembles_big_writes():
    async with mux_pair() as (left, right):
        a1, a2 = left.open(1), left.open(2)
        b1, b2 = right.open(1), right.open(2)
        big = bytes(range(256)) * (5 * 4096 + 3)  # > 5 MiB: several frames
        async with anyio.create_task_group() as tg:
            tg.start_soon(a1.send, big)
            tg.start_soon(a2.send, b"two")
            assert await b2.receive_exactly(3) == b"two"
            assert await b1.receive_exactly(len(big)) == big


async def test_mux_frame_over_the_limit_closes_the_connection():
    async with mux_pair(max_frame=1000) as (left, right):
        conn = right.open(1)
        await left.send(1, b"x" * 1000)
        assert await conn.receive_exactly(1000) == b"x" * 1000
        await left.send(1, b"x" * 1001)
        with anyio.fail_after(1):
            await right.closed.wait()
        assert "1001 byte" in right.error
        with pytest.raises(anyio.EndOfStream):
            await conn.receive_exactly(1)


async def test_messages_split_over_frames_and_packed_into_one():
    async with server_only() as (_, right):
        wire = (request(1, "Echo", api.LinuxDevice(path="a", major=1).SerializeToString())
                + request(3, "Echo", api.LinuxDevice(path="b", major=2).SerializeToString()))
        for i in range(0, len(wire), 3):  # 3-byte frames: headers split too
            await right.stream.send(struct.pack(">II", 1, len(wire[i:i + 3])) + wire[i:i + 3])
        got = {}
        for _ in range(2):
            sid, resp = await response(right)
            got[sid] = api.LinuxDevice.FromString(resp.payload)
        assert got == {1: api.LinuxDevice(path="A", major=2), 3: api.LinuxDevice(path="B", major=3)}


async def test_client_uses_odd_increasing_stream_ids_and_sends_the_deadline():
    async with mux_pair() as (left, right), anyio.create_task_group() as tg:
        client = TtrpcClient(right.open(1))
        tg.start_soon(client.run)
        seen = []

        async def raw_server() -> None:
            conn = left.open(1)
            while True:
                frame = await read_message(conn)
                req = ttrpc_pb2.Request.FromString(frame.payload)
                seen.append((frame.stream_id, frame.type, frame.flags, req.service, req.method,
                             req.timeout_nano))
                resp = ttrpc_pb2.Response(payload=req.payload)
                await write_message(conn, frame.stream_id, MsgType.RESPONSE,
                                    resp.SerializeToString())

        tg.start_soon(raw_server)
        for i in range(3):
            assert await client.call_raw(SVC, f"M{i}", b"p%d" % i, deadline=0.5) == b"p%d" % i
        assert seen == [(1, 1, 0, SVC, "M0", 500_000_000), (3, 1, 0, SVC, "M1", 500_000_000),
                        (5, 1, 0, SVC, "M2", 500_000_000)]
        tg.cancel_scope.cancel()


async def test_unknown_method_and_handler_errors():
    async def boom(req: api.Empty) -> api.Empty:
        raise ValueError("the disk is on fire")

    async with ttrpc_pair() as (server, client, _):
        server.register(SVC, "Boom", api.Empty, boom)
        with pytest.raises(TtrpcError) as err:
            await client.call(SVC, "Nope", api.Empty(), api.Empty, deadline=1)
        assert err.value.code == Code.UNIMPLEMENTED
        with pytest.raises(TtrpcError) as err:
            await client.call(SVC, "Boom", api.Empty(), api.Empty, deadline=1)
        assert (err.value.code, err.value.message) == (Code.INTERNAL, "the disk is on fire")


async def test_client_deadline_and_server_side_timeout():
    cancelled = anyio.Event()

    async def slow(req: api.Empty) -> api.Empty:
        try:
            await anyio.sleep(10)
        finally:
            cancelled.set()
        return api.Empty()

    async with ttrpc_pair() as (server, client, _):
        server.register(SVC, "Slow", api.Empty, slow)
        with anyio.fail_after(1):
            with pytest.raises(TtrpcError) as err:
                await client.call(SVC, "Slow", api.Empty(), api.Empty, deadline=0.1)
            assert err.value.code == Code.DEADLINE_EXCEEDED
            await cancelled.wait()  # the server applied timeout_nano too
        # server-side deadline only: the client waits longer than the request's timeout
        req = ttrpc_pb2.Request(service=SVC, method="Slow", timeout_nano=50_000_000)
        with anyio.fail_after(1):
            resp = await client.exchange(req.SerializeToString(), deadline=5)
        assert resp.status.code == Code.DEADLINE_EXCEEDED


async def test_requests_run_concurrently_and_inflight_is_bounded():
    gate = anyio.Event()

    async def wait(req: api.Empty) -> api.Empty:
        await gate.wait()
        return api.Empty()

    async with ttrpc_pair(max_inflight=2) as (server, client, _):
        server.register(SVC, "Wait", api.Empty, wait)
        server.register(SVC, "Echo", api.LinuxDevice, echo)
        results = []

        async def call() -> None:
            try:
                await client.call(SVC, "Wait", api.Empty(), api.Empty, deadline=2)
                results.append("ok")
            except TtrpcError as exc:
                results.append(Code(exc.code).name)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            tg.start_soon(call)
            with anyio.fail_after(1):
                while server.inflight < 2:
                    await anyio.sleep(0.005)
            # both slots are taken: a third request is refused, not queued forever
            with pytest.raises(TtrpcError) as err:
                await client.call(SVC, "Echo", api.LinuxDevice(), api.LinuxDevice, deadline=1)
            assert err.value.code == Code.RESOURCE_EXHAUSTED
            gate.set()
        assert results == ["ok", "ok"]
        assert (await client.call(SVC, "Echo", api.LinuxDevice(path="x"), api.LinuxDevice,
                                  deadline=1)).path == "X"


async def test_even_stream_id_is_refused():
    async with server_only() as (_, right):
        await right.send(1, request(2, "Echo"))
        sid, resp = await response(right)
        assert (sid, resp.status.code) == (2, Code.INVALID_ARGUMENT)


async def test_oversized_request_is_answered_and_skipped():
    async with server_only() as (_, right):
        size = 4 * 1024 * 1024 + 1
        await right.send(1, HEADER.pack(size, 7, MsgType.REQUEST, 0) + b"\x00" * size)
        await right.send(1, request(9, "Echo", api.LinuxDevice(path="z").SerializeToString()))
        sid, resp = await response(right)
        assert (sid, resp.status.code) == (7, Code.RESOURCE_EXHAUSTED)
        sid, resp = await response(right)
        assert (sid, resp.status.code) == (9, Code.OK)
        assert api.LinuxDevice.FromString(resp.payload).path == "Z"


async def test_absurd_message_length_ends_the_channel():
    async with server_only() as (server, right):
        await right.send(1, HEADER.pack(0xFFFFFFFF, 1, MsgType.REQUEST, 0))
        with anyio.fail_after(1):
            while not server.error:
                await anyio.sleep(0.005)
        assert "4294967295 bytes" in server.error


async def test_responses_and_data_sent_to_a_server_are_ignored():
    async with server_only() as (_, right):
        await right.send(1, HEADER.pack(2, 1, MsgType.RESPONSE, 0) + b"\x08\x01")
        await right.send(1, HEADER.pack(1, 3, MsgType.DATA, 1) + b"x")
        await right.send(1, request(5, "Echo"))
        sid, resp = await response(right)
        assert (sid, resp.status.code) == (5, Code.OK)


async def test_pending_calls_fail_when_the_connection_closes():
    called = anyio.Event()

    async def never(req: api.Empty) -> api.Empty:
        called.set()
        await anyio.sleep(10)
        return api.Empty()

    async with ttrpc_pair() as (server, client, right):
        server.register(SVC, "Never", api.Empty, never)
        async with anyio.create_task_group() as tg:
            async def close_soon() -> None:
                await called.wait()  # the call is pending
                await right.aclose()

            tg.start_soon(close_soon)
            with anyio.fail_after(1), pytest.raises(TtrpcError) as err:
                await client.call(SVC, "Never", api.Empty(), api.Empty)
        assert err.value.code == Code.UNAVAILABLE
        with pytest.raises(TtrpcError):
            await client.call(SVC, "Never", api.Empty(), api.Empty)
