"""Fixtures of the kubelet-facing gateway tests.

The test plays kubelet over the real unix sockets with a real gRPC client; the
gateway reads claims from the test API server through the product's KubeApi,
and asks a small plumber stand-in on the real bus (connected as user
"plumber", so the bus permissions are exercised too).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import anyio
import pytest

from schemas import plumber as p
from schemas.base import decode, encode
from schemas.inventory import InventorySnapshot
from schemas.subjects import Subjects
from services.common import bus as busmod
from services.common.api.kube import KubeApi
from services.common.auth import Credentials
from services.kubelet_gateway.grpc_server import GrpcStatus, serve_grpc
from services.kubelet_gateway.plumber_client import PlumberClient
from tests.conftest import NODE
from tests.kubeapi.fixtures import kube_api, kube_client  # noqa: F401

DRIVER = "knd.dev"


@pytest.fixture
def kubelet_root() -> Iterator[Path]:
    """A short path: unix socket paths are limited to 107 bytes."""
    root = Path(tempfile.mkdtemp(prefix="kndk-", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def kube(kube_client: KubeApi) -> KubeApi:  # noqa: F811
    return kube_client

@dataclass
class FakePlumber:
    """Answers plumber.prepare / plumber.unprepare like the plumber, with knobs for faults."""

    prepares: list[p.Prepare] = field(default_factory=list)
    unprepares: list[p.Unprepare] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    """claim UID -> error to answer."""
    silent: set[str] = field(default_factory=set)
    """claim UIDs never answered."""
    delay: float = 0.0
    wrong_uid: set[str] = field(default_factory=set)
    """claim UIDs answered with another claim's UID."""

    def prepared(self, uid: str) -> p.Prepare:
        return next(r for r in reversed(self.prepares) if r.claim_uid == uid)


@pytest.fixture
async def plumber(bus: Credentials) -> AsyncIterator[FakePlumber]:
    fake = FakePlumber()
    nc = await busmod.connect(bus, "plumber")
    s = Subjects(NODE)

    async def answer(msg, reply: bytes) -> None:
        if fake.delay:
            await anyio.sleep(fake.delay)
        await msg.respond(reply)

    async def on_prepare(msg) -> None:
        req = decode(msg.data, p.Prepare)
        fake.prepares.append(req)
        if req.claim_uid in fake.silent:
            return
        uid = "someone-else" if req.claim_uid in fake.wrong_uid else req.claim_uid
        reply = p.PrepareReply(claim_uid=uid, error=fake.errors.get(req.claim_uid, ""),
                               devices=[p.PreparedDevice(
                                   request=d.request, pool=d.pool, device=d.device,
                                   cdi_ids=[f"{DRIVER}/net={req.claim_uid}-{d.device}"],
                                   share_id=d.share_id) for d in req.devices])
        tg.start_soon(answer, msg, encode(reply))

    async def on_unprepare(msg) -> None:
        req = decode(msg.data, p.Unprepare)
        fake.unprepares.append(req)
        if req.claim_uid in fake.silent:
            return
        uid = "someone-else" if req.claim_uid in fake.wrong_uid else req.claim_uid
        reply = p.UnprepareReply(claim_uid=uid, error=fake.errors.get(req.claim_uid, ""))
        tg.start_soon(answer, msg, encode(reply))

    async with anyio.create_task_group() as tg:
        subs = [await nc.subscribe(s.plumber("prepare"), cb=on_prepare),
                await nc.subscribe(s.plumber("unprepare"), cb=on_unprepare)]
        await busmod.flush(nc)
        try:
            yield fake
        finally:
            for sub in subs:
                await sub.unsubscribe()
            await busmod.close(nc)
            tg.cancel_scope.cancel()


@dataclass
class Gateway:
    status: GrpcStatus
    root: Path
    inventory: anyio.abc.ObjectSendStream[InventorySnapshot]

    @property
    def dra(self) -> str:
        return f"unix://{self.status.dra_socket}"

    @property
    def reg(self) -> str:
        return f"unix://{self.status.registration_socket}"


@pytest.fixture
async def gateway(bus: Credentials, kube: KubeApi, plumber: FakePlumber,
                  kubelet_root: Path) -> AsyncIterator[Gateway]:
    nc = await busmod.connect(bus, "gateway")
    client = PlumberClient(nc, NODE, timeout=5.0)
    send, receive = anyio.create_memory_object_stream[InventorySnapshot](8)
    try:
        async with anyio.create_task_group() as tg:
            status = await tg.start(partial(
                serve_grpc, kubelet_root=kubelet_root, driver=DRIVER, api=kube, plumber=client,
                inventory_source=receive))
            yield Gateway(status, kubelet_root, send)
            tg.cancel_scope.cancel()
    finally:
        send.close()
        receive.close()
        await busmod.close(nc)
