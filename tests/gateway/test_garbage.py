"""Garbage on the sockets never takes the gateway down; a valid call works afterwards."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

import anyio
import grpc
import pytest

from kndpeers.kubelet import channel, get_info, make_claim, prepare, ref
from tests.gateway.conftest import FakePlumber, Gateway
from tests.kubeapi.server import KubeApiServer

pytestmark = pytest.mark.anyio

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PREPARE_V1 = "/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodePrepareResources"


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + \
        struct.pack(">I", stream) + payload


def hpack_literal(name: str, value: str) -> bytes:
    """A header as 'literal without indexing, new name' (RFC 7541 6.2.2), short strings."""
    n, v = name.encode(), value.encode()
    assert len(n) < 127 and len(v) < 127
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def grpc_headers(path: str) -> bytes:
    return b"".join(hpack_literal(k, v) for k, v in [
        (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
        ("content-type", "application/grpc"), ("te", "trailers")])


async def raw_exchange(path: Path, data: bytes, *, read_for: float = 1.0) -> bytes:
    """Write ``data`` to the unix socket and read what comes back for ``read_for`` seconds."""
    got = b""
    async with await anyio.connect_unix(str(path)) as conn:
        try:
            await conn.send(data)
        except (anyio.BrokenResourceError, OSError):
            return got  # the server already hung up: fine
        with anyio.move_on_after(read_for):
            try:
                while True:
                    got += await conn.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                pass
    return got


async def assert_still_serving(gateway: Gateway, kube_api: KubeApiServer) -> None:
    claim = make_claim(f"after-{os.urandom(3).hex()}")
    kube_api.put_object("resourceclaims", claim)
    resp = await prepare(gateway.dra, "v1", [ref(claim)], seconds=5)
    assert resp.claims[claim["metadata"]["uid"]].error == ""
    assert (await get_info(gateway.reg)).name == "knd.dev"


async def test_raw_garbage(gateway: Gateway, kube_api: KubeApiServer,
                           plumber: FakePlumber) -> None:
    junk = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        os.urandom(4096),
        b"\x00" * 100_000,
        PREFACE + os.urandom(512),  # a preface, then nonsense frames
        PREFACE + frame(4, 0, 0) + frame(1, 4, 1, b"\xff" * 64),  # undecodable HPACK
        PREFACE[:10],  # half a preface, then hang up
    ]
    for sock in (gateway.status.dra_socket, gateway.status.registration_socket):
        for data in junk:
            await raw_exchange(sock, data, read_for=0.3)
    # a connection that says nothing does not block anybody else
    async with await anyio.connect_unix(str(gateway.status.dra_socket)):
        await assert_still_serving(gateway, kube_api)


async def test_huge_declared_length(gateway: Gateway, kube_api: KubeApiServer,
                                    plumber: FakePlumber) -> None:
    """A gRPC message that claims to be 2 GiB: refused, and nothing is allocated for it."""
    huge = b"\x00" + struct.pack(">I", 0x7FFFFFFF) + b"x" * 1000
    data = (PREFACE + frame(4, 0, 0) + frame(1, 4, 1, grpc_headers(PREPARE_V1))
            + frame(0, 0, 1, huge))
    got = await raw_exchange(gateway.status.dra_socket, data, read_for=0.5)
    assert got, "the server did not answer at all"
    reg = "/pluginregistration.Registration/GetInfo"
    await raw_exchange(gateway.status.registration_socket,
                       PREFACE + frame(4, 0, 0) + frame(1, 4, 1, grpc_headers(reg))
                       + frame(0, 0, 1, huge), read_for=0.3)
    await assert_still_serving(gateway, kube_api)


async def test_too_large_message_is_refused(gateway: Gateway, kube_api: KubeApiServer,
                                            plumber: FakePlumber) -> None:
    async with channel(gateway.dra) as ch:
        call = ch.unary_unary(PREPARE_V1, request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(b"\x0a" + b"\xff" * (17 * 1024 * 1024), timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await assert_still_serving(gateway, kube_api)


@pytest.mark.parametrize("payload", [
    b"\xff\xff\xff\xff",  # invalid tag
    b"\x0a\x10abc",  # claims field whose declared length runs past the end
    b"\x12\x05ab",  # field 2 (string) declared 5 bytes long, 2 sent
])
async def test_corrupt_protobuf(gateway: Gateway, kube_api: KubeApiServer,
                                plumber: FakePlumber, payload: bytes) -> None:
    async with channel(gateway.dra) as ch:
        for path in (PREPARE_V1,
                     "/k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin/NodeUnprepareResources",
                     "/pluginregistration.Registration/NotifyRegistrationStatus"):
            target = ch if "DRAPlugin" in path else None
            if target is None:
                async with channel(gateway.reg) as reg:
                    call = reg.unary_unary(path, request_serializer=lambda b: b,
                                           response_deserializer=lambda b: b)
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await call(payload, timeout=5)
            else:
                call = ch.unary_unary(path, request_serializer=lambda b: b,
                                      response_deserializer=lambda b: b)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call(payload, timeout=5)
            assert info.value.code() in (grpc.StatusCode.INTERNAL,
                                         grpc.StatusCode.INVALID_ARGUMENT), path
    assert gateway.status.registered is None  # the corrupt notify changed nothing
    await assert_still_serving(gateway, kube_api)


async def test_unknown_methods(gateway: Gateway, kube_api: KubeApiServer,
                               plumber: FakePlumber) -> None:
    for target, path in [
        (gateway.dra, "/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodeDoSomething"),
        (gateway.dra, "/k8s.io.kubelet.pkg.apis.dra.v1alpha4.Node/NodePrepareResources"),
        (gateway.dra, "/pluginregistration.Registration/GetInfo"),  # wrong socket
        (gateway.reg, PREPARE_V1),
        (gateway.reg, "/grpc.health.v1.Health/Check"),
    ]:
        async with channel(target) as ch:
            call = ch.unary_unary(path, request_serializer=lambda b: b,
                                  response_deserializer=lambda b: b)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(b"", timeout=5)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED, path
    await assert_still_serving(gateway, kube_api)


async def test_many_abrupt_connections(gateway: Gateway, kube_api: KubeApiServer,
                                       plumber: FakePlumber) -> None:
    """Clients that connect and vanish mid-call, many at once."""
    def slam(path: Path) -> None:
        for _ in range(50):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(path))
            s.sendall(PREFACE + frame(4, 0, 0) + frame(1, 4, 1, grpc_headers(PREPARE_V1)))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # reset

    await anyio.to_thread.run_sync(slam, gateway.status.dra_socket)
    await assert_still_serving(gateway, kube_api)
