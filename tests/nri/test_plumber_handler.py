"""The NRI plugin through PlumberPodHandler over the real bus, to a tiny in-test plumber."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from kndpeers.nri_runtime import NETNS, container, pod
from schemas import plumber as p
from schemas.base import decode, encode
from schemas.subjects import Subjects
from services.common import bus as busmod
from services.kubelet_gateway.nri import PlumberPodHandler, PodInfo
from services.kubelet_gateway.nri.attach_jobs import AttachJobs
from services.kubelet_gateway.nri.ttrpc import Code, TtrpcError
from services.kubelet_gateway.plumber_client import PlumberClient
from tests.conftest import NODE
from tests.nri.helpers import nri_setup

pytestmark = pytest.mark.anyio
S = Subjects(NODE)


class TinyPlumber:
    """Answers plumber.attach / detach / container-devices as user "plumber"."""

    def __init__(self) -> None:
        self.requests: list[p.Attach | p.Detach | p.ContainerDevices] = []
        self.attach_error = ""
        self.claimed: set[str] = set()

    async def on_attach(self, msg) -> None:
        req = decode(msg.data, p.Attach)
        self.requests.append(req)
        if not req.netns and req.pod.uid in self.claimed:
            reply = p.AttachReply(error="pod holds claims but has no network namespace")
        elif self.attach_error:
            reply = p.AttachReply(error=self.attach_error)
        else:
            interfaces = [p.AttachedInterface(claim_uid="c1", device="eth1", interface="net1")]
            reply = p.AttachReply(interfaces=interfaces if req.netns else [])
        await msg.respond(encode(reply))

    async def on_detach(self, msg) -> None:
        req = decode(msg.data, p.Detach)
        self.requests.append(req)
        await msg.respond(encode(p.DetachReply(restored=["eth1"])))

    async def on_devices(self, msg) -> None:
        req = decode(msg.data, p.ContainerDevices)
        self.requests.append(req)
        dev = p.LinuxDevice(path="/dev/infiniband/uverbs1", major=231, minor=193)
        await msg.respond(encode(p.ContainerDevicesReply(devices=[dev])))


@asynccontextmanager
async def plumbed(bus) -> AsyncIterator[tuple[TinyPlumber, PlumberPodHandler]]:
    plumber_nc = await busmod.connect(bus, "plumber")
    gateway_nc = await busmod.connect(bus, "gateway")
    tiny = TinyPlumber()
    try:
        await plumber_nc.subscribe(S.plumber("attach"), cb=tiny.on_attach)
        await plumber_nc.subscribe(S.plumber("detach"), cb=tiny.on_detach)
        await plumber_nc.subscribe(S.plumber("container-devices"), cb=tiny.on_devices)
        await busmod.flush(plumber_nc)
        client = PlumberClient(gateway_nc, NODE)
        async with anyio.create_task_group() as tg:
            jobs = await tg.start(AttachJobs(client, attach_timeout=3.0).run)
            yield tiny, PlumberPodHandler(client, jobs, deadline=1.0)
            tg.cancel_scope.cancel()
    finally:
        await busmod.close(gateway_nc)
        await busmod.close(plumber_nc)


async def test_pod_lifecycle_through_the_plumber(bus, sock):
    async with plumbed(bus) as (tiny, handler), \
            nri_setup(sock, handler, handler_timeout=1.5) as (_, conn, _p):
        sb = pod(uid="u1", name="web", namespace="ns1")
        await conn.run_pod_sandbox(sb)
        resp = await conn.create_container(sb, container("main", sb))
        await conn.stop_pod_sandbox(sb)
        await conn.remove_pod_sandbox(sb)
        ref = p.PodRef(uid="u1", namespace="ns1", name="web")
        attach = tiny.requests[0]
        assert isinstance(attach, p.Attach) and 0 < attach.deadline - time.time() <= 5.0
        assert tiny.requests == [
            p.Attach(pod=ref, sandbox_id="sb-u1", netns=NETNS, deadline=attach.deadline),
            p.ContainerDevices(pod=ref, container="main"),
            p.Detach(pod=ref, sandbox_id="sb-u1", netns=NETNS),
            p.Detach(pod=ref, sandbox_id="sb-u1", netns=NETNS),
        ]
        assert [(d.path, d.type, d.major, d.minor) for d in resp.adjust.linux.devices] == [
            ("/dev/infiniband/uverbs1", "c", 231, 193)]


async def test_attach_error_reaches_the_runtime(bus, sock):
    async with plumbed(bus) as (tiny, handler), \
            nri_setup(sock, handler, handler_timeout=1.5) as (_, conn, _p):
        tiny.attach_error = "interfaces.0: eth1 is not on this node"
        with pytest.raises(TtrpcError) as err:
            await conn.run_pod_sandbox(pod())
        assert err.value.code == Code.INTERNAL
        assert "eth1 is not on this node" in err.value.message


async def test_host_network_pod_is_checked_with_the_plumber(bus, sock):
    async with plumbed(bus) as (tiny, handler), \
            nri_setup(sock, handler, handler_timeout=1.5) as (_, conn, _p):
        tiny.claimed.add("claimed")
        await conn.run_pod_sandbox(pod(uid="free", netns=""))
        with pytest.raises(TtrpcError) as err:
            await conn.run_pod_sandbox(pod(uid="claimed", netns=""))
        assert err.value.code == Code.FAILED_PRECONDITION


async def test_claims_lookup_is_used_when_given(bus):
    async with plumbed(bus) as (tiny, handler):
        asked = []

        async def lookup(pod: PodInfo) -> bool:
            asked.append(pod.uid)
            return True

        handler.claims_lookup = lookup
        info = PodInfo(uid="u9", namespace="n", name="x", sandbox_id="sb")
        assert await handler.has_claims(info) is True
        assert asked == ["u9"] and tiny.requests == []


async def test_plumber_without_answer_is_an_error_not_a_hang(bus, sock):
    nc = await busmod.connect(bus, "gateway")
    try:
        client = PlumberClient(nc, NODE)
        async with anyio.create_task_group() as tg, \
                nri_setup(sock, PlumberPodHandler(client, await tg.start(
                    AttachJobs(client, attach_timeout=0).run), deadline=5.0)) as (_, conn, _p):
            # no plumber subscribed: the attach asks again until the request's budget
            # is spent, then fails the sandbox (no deferring with a timeout of 0), before
            # the runtime's own deadline (2 s)
            with anyio.fail_after(2.0), pytest.raises(TtrpcError) as err:
                await conn.run_pod_sandbox(pod())
            assert err.value.code == Code.INTERNAL
            assert "increase the container runtime NRI plugin_request_timeout" \
                in err.value.message
            tg.cancel_scope.cancel()
    finally:
        await busmod.close(nc)
