"""The sockets: registration, health stream, stale and removed socket files."""

from __future__ import annotations

import logging
import socket
from functools import partial
from pathlib import Path

import anyio
import pytest

from kndpeers.kubelet import (
    channel,
    get_info,
    health_stream,
    make_claim,
    notify,
    prepare,
    ref,
)
from schemas.inventory import Device, InventorySnapshot
from services.common.api.kube import KubeApi
from services.kubelet_gateway.grpc_server import serve_grpc
from services.kubelet_gateway.health import DeviceHealth
from services.kubelet_gateway.pb import dra_health_v1alpha1_pb2 as hpb
from services.kubelet_gateway.plumber_client import PlumberClient
from tests.conftest import NODE
from tests.gateway.conftest import DRIVER, FakePlumber, Gateway
from tests.kubeapi.server import KubeApiServer

pytestmark = pytest.mark.anyio


async def test_registration_info(gateway: Gateway, kubelet_root: Path) -> None:
    info = await get_info(gateway.reg)
    assert info.type == "DRAPlugin"
    assert info.name == DRIVER
    assert info.endpoint == str(kubelet_root / "plugins" / DRIVER / "dra.sock")
    assert Path(info.endpoint).is_absolute()
    assert list(info.supported_versions) == ["v1.DRAPlugin", "v1beta1.DRAPlugin"]
    assert gateway.status.registration_socket == \
        kubelet_root / "plugins_registry" / f"{DRIVER}-reg.sock"
    assert gateway.status.registration_socket.is_socket()
    assert gateway.status.dra_socket.is_socket()


async def test_registration_status_is_kept(gateway: Gateway,
                                           caplog: pytest.LogCaptureFixture) -> None:
    assert gateway.status.registered is None
    with caplog.at_level(logging.INFO, logger="knd.gateway.registration"):
        await notify(gateway.reg, False, "version v1.DRAPlugin not supported")
    assert gateway.status.registered is False
    assert gateway.status.registration_error == "version v1.DRAPlugin not supported"
    assert any(r.levelno == logging.ERROR and "not supported" in r.getMessage()
               for r in caplog.records)
    await notify(gateway.reg, True)
    assert gateway.status.registered is True
    assert gateway.status.registration_error == ""


def snapshot(seq: int, *names: str, epoch: int = 1) -> InventorySnapshot:
    return InventorySnapshot(node=NODE, epoch=epoch, seq=seq, taken_at=0.0,
                             devices=[Device(name=n) for n in names])


def states(resp: hpb.NodeWatchResourcesResponse) -> dict[str, str]:
    out = {}
    for d in resp.devices:
        assert d.device.pool_name == NODE
        assert d.last_updated_time > 0 and d.health_check_timeout_seconds > 0
        out[d.device.device_name] = hpb.HealthStatus.Name(d.health)
    return out


async def test_health_stream_follows_inventory(gateway: Gateway) -> None:
    async with channel(gateway.dra) as ch:
        stream = health_stream(ch)
        await gateway.inventory.send(snapshot(1, "eth0", "eth1"))
        with anyio.fail_after(5):
            first = await stream.read()
            assert states(first) == {"eth0": "HEALTHY", "eth1": "HEALTHY"}
            await gateway.inventory.send(snapshot(2, "eth0"))
            second = await stream.read()
            assert states(second) == {"eth0": "HEALTHY", "eth1": "UNHEALTHY"}
            await gateway.inventory.send(snapshot(3, "eth0", "eth1", "eth2"))
            third = await stream.read()
            assert states(third) == {"eth0": "HEALTHY", "eth1": "HEALTHY", "eth2": "HEALTHY"}
        stream.cancel()


async def test_health_ignores_older_snapshots_and_resends() -> None:
    h = DeviceHealth(resend_interval=0.05)
    assert h.update(snapshot(5, "eth0"))
    assert not h.update(snapshot(4, "eth1"))  # out of order
    assert not h.update(snapshot(6, "eth0"))  # no change
    assert h.update(snapshot(1, "eth1", epoch=2))  # discovery restarted
    got = []
    with anyio.fail_after(2):
        async for resp in h.watch():
            got.append({d.device.device_name: d.health for d in resp.devices})
            if len(got) == 2:
                break
    assert got == [{"eth0": hpb.UNHEALTHY, "eth1": hpb.HEALTHY}] * 2  # second: keep-alive


async def test_health_advertised_only_on_request(kube: KubeApi, kubelet_root: Path,
                                                 plumber: FakePlumber, bus) -> None:
    from services.common import bus as busmod

    nc = await busmod.connect(bus, "gateway")
    try:
        async with anyio.create_task_group() as tg:
            status = await tg.start(partial(
                serve_grpc, kubelet_root=kubelet_root, driver="other.example.com", api=kube,
                plumber=PlumberClient(nc, NODE), advertise_health=True))
            info = await get_info(f"unix://{status.registration_socket}")
            assert list(info.supported_versions) == [
                "v1.DRAPlugin", "v1beta1.DRAPlugin", "v1alpha1.DRAResourceHealth"]
            assert info.name == "other.example.com"
            assert status.health is None  # no inventory source: not served
            tg.cancel_scope.cancel()
    finally:
        await busmod.close(nc)


def _stale_socket(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # the file stays, nobody listens: what a killed gateway leaves


async def test_stale_sockets_replaced_and_removed_on_shutdown(
        kube: KubeApi, kube_api: KubeApiServer, kubelet_root: Path, plumber: FakePlumber,
        bus) -> None:
    from services.common import bus as busmod

    dra_sock = kubelet_root / "plugins" / DRIVER / "dra.sock"
    reg_sock = kubelet_root / "plugins_registry" / f"{DRIVER}-reg.sock"
    _stale_socket(dra_sock)
    reg_sock.parent.mkdir(parents=True)
    reg_sock.write_text("garbage")  # not even a socket
    claim = make_claim("c1")
    kube_api.put_object("resourceclaims", claim)
    nc = await busmod.connect(bus, "gateway")
    try:
        for _ in range(2):  # a restart finds nothing stale and works the same
            async with anyio.create_task_group() as tg:
                status = await tg.start(partial(
                    serve_grpc, kubelet_root=kubelet_root, driver=DRIVER, api=kube,
                    plumber=PlumberClient(nc, NODE)))
                assert status.dra_socket == dra_sock and status.registration_socket == reg_sock
                assert dra_sock.is_socket() and reg_sock.is_socket()
                resp = await prepare(f"unix://{dra_sock}", "v1", [ref(claim)])
                assert resp.claims[claim["metadata"]["uid"]].error == ""
                assert (await get_info(f"unix://{reg_sock}")).name == DRIVER
                tg.cancel_scope.cancel()
            assert not dra_sock.exists() and not reg_sock.exists()
            assert dra_sock.parent.is_dir()
    finally:
        await busmod.close(nc)


async def test_sockets_removed_when_the_gateway_fails(kube: KubeApi, kubelet_root: Path,
                                                      plumber: FakePlumber, bus) -> None:
    """A sibling task failing cancels serve_grpc: the sockets still go."""
    from services.common import bus as busmod

    nc = await busmod.connect(bus, "gateway")
    status = None
    try:
        with pytest.raises(ExceptionGroup):
            async with anyio.create_task_group() as tg:
                status = await tg.start(partial(
                    serve_grpc, kubelet_root=kubelet_root, driver=DRIVER, api=kube,
                    plumber=PlumberClient(nc, NODE)))
                raise RuntimeError("sibling failed")
    finally:
        await busmod.close(nc)
    assert status is not None
    assert not status.dra_socket.exists() and not status.registration_socket.exists()


async def test_socket_path_is_a_directory(kube: KubeApi, kubelet_root: Path) -> None:
    (kubelet_root / "plugins" / DRIVER / "dra.sock").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="directory"):
        await serve_grpc(kubelet_root=kubelet_root, driver=DRIVER, api=kube,
                         plumber=None)  # type: ignore[arg-type]
    assert not (kubelet_root / "plugins_registry" / f"{DRIVER}-reg.sock").exists()


async def test_shutdown_with_open_health_stream_is_prompt(
        kube: KubeApi, kubelet_root: Path, plumber: FakePlumber, bus) -> None:
    import time

    import grpc

    from services.common import bus as busmod

    nc = await busmod.connect(bus, "gateway")
    send, receive = anyio.create_memory_object_stream[InventorySnapshot](4)
    try:
        async with channel(f"unix://{kubelet_root}/plugins/{DRIVER}/dra.sock") as ch:
            async with anyio.create_task_group() as tg:
                status = await tg.start(partial(
                    serve_grpc, kubelet_root=kubelet_root, driver=DRIVER, api=kube,
                    plumber=PlumberClient(nc, NODE), inventory_source=receive))
                stream = health_stream(ch)
                await send.send(snapshot(1, "eth0"))
                with anyio.fail_after(5):
                    assert states(await stream.read()) == {"eth0": "HEALTHY"}
                start = time.monotonic()
                tg.cancel_scope.cancel()
            took = time.monotonic() - start
            assert took < 0.5, f"shutdown took {took:.2f} s"
            with anyio.fail_after(5):
                end = await stream.read()
            assert end is grpc.aio.EOF or stream.done()
        assert not status.dra_socket.exists()
    finally:
        send.close()
        receive.close()
        await busmod.close(nc)


async def test_socket_path_too_long_is_a_clear_error(tmp_path):
    from services.kubelet_gateway.grpc_server import serve_grpc

    deep = tmp_path / ("x" * 90)
    with pytest.raises(ValueError, match=r"--kubelet-root: socket path .* bytes"):
        await serve_grpc(kubelet_root=deep, driver="knd.dev", api=None, plumber=None)
