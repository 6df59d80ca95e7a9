"""Plumber test harness: the real plumber in-process on the real bus, a throwaway
node netns and pod netns, an inventory published as the discovery user, and
requests sent as the gateway user."""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from nats.aio.client import Client

from schemas import plumber as p
from schemas.base import DecodeError, ErrorReply, Message, decode, encode
from schemas.inventory import Device, InventoryGet, InventorySnapshot
from schemas.netconfig import NetworkConfig
from schemas.subjects import Subjects
from services.common import bus as busmod
from services.common.auth import Credentials
from services.common.config import Common
from services.plumber.service import Plumber, serve
from tests.conftest import NODE
from tests.helpers.netns import NetNS

DRIVER = "knd.dev"
R = TypeVar("R", bound=Message)
_uids = itertools.count(1)


def uid(prefix: str = "claim") -> str:
    return f"{prefix}-{next(_uids):04d}-{int(time.time() * 1000) % 100000}"


def netdev(name: str, ifname: str, **extra: Any) -> Device:
    """An inventory record for interface ``ifname``, shaped like discovery's."""
    attrs: dict[str, Any] = {f"{DRIVER}/ifName": ifname, f"{DRIVER}/type": "veth",
                             f"{DRIVER}/virtual": True, f"{DRIVER}/rdma": False}
    attrs.update({f"{DRIVER}/{k}": v for k, v in extra.items()})
    return Device(name=name, attributes=attrs)


@dataclass
class Env:
    creds: Credentials
    node: NetNS
    tmp: Path
    gw: Client
    disc: Client
    nc: Client
    devices: list[Device] = field(default_factory=list)
    pods: list[NetNS] = field(default_factory=list)
    plumber: Plumber | None = None
    seq: int = 0
    epoch: int = field(default_factory=time.time_ns)

    @property
    def common(self) -> Common:
        return Common(node=NODE, state_dir=self.tmp / "state",
                      bus_creds=self.tmp / "creds.json", driver_name=DRIVER)

    @property
    def cdi_root(self) -> Path:
        return self.tmp / "cdi"

    def snapshot(self) -> InventorySnapshot:
        return InventorySnapshot(node=NODE, epoch=self.epoch, seq=self.seq,
                                 devices=list(self.devices), taken_at=time.time())

    async def inventory(self, devices: list[Device]) -> None:
        """Publish ``devices`` as the node's inventory and wait until the plumber has it."""
        self.devices = list(devices)
        self.seq += 1
        await self.disc.publish(Subjects(NODE).inventory_snapshot, encode(self.snapshot()))
        with anyio.fail_after(5):
            while self.plumber is not None and (
                    self.plumber.inventory.latest is None
                    or self.plumber.inventory.latest.seq != self.seq):
                await anyio.sleep(0.005)

    def pod(self) -> NetNS:
        ns = NetNS(prefix="knd-pod")
        self.pods.append(ns)
        return ns

    @asynccontextmanager
    async def running(self, **kw: Any) -> AsyncIterator[Plumber]:
        opts: dict[str, Any] = dict(netns=self.node.name, sysfs_root=self.tmp / "sysfs",
                                    dev_root=self.tmp / "dev", cdi_root=self.cdi_root,
                                    rdma_mode="shared", sweep_interval=0, status_timeout=0.5)
        opts.update(kw)
        async with anyio.create_task_group() as tg:
            self.plumber = await tg.start(partial(serve, self.nc, self.common, **opts))
            try:
                yield self.plumber
            finally:
                tg.cancel_scope.cancel()
                self.plumber = None

    async def ask(self, verb: str, msg: Message, kind: type[R], wait: float = 10) -> R:
        reply = await self.gw.request(Subjects(NODE).plumber(verb), encode(msg), timeout=wait)
        try:
            return decode(reply.data, kind)
        except DecodeError:
            err = decode(reply.data, ErrorReply)
            raise AssertionError(f"{verb}: error reply {err.error}") from None

    async def prepare(self, claim: str, devices: list[tuple[str, NetworkConfig | None]],
                      pods: list[str], pool: str = NODE) -> p.PrepareReply:
        return await self.ask("prepare", p.Prepare(
            claim_uid=claim, namespace="default", name=f"n-{claim}",
            devices=[p.DeviceRequest(request="req", pool=pool, device=d, config=c)
                     for d, c in devices],
            pods=[p.PodRef(uid=x, namespace="default", name=f"pod-{x}") for x in pods]),
            p.PrepareReply)

    async def attach(self, pod_uid: str, ns: NetNS | str) -> p.AttachReply:
        path = ns if isinstance(ns, str) else f"/var/run/netns/{ns.name}"
        return await self.ask("attach", p.Attach(pod=p.PodRef(uid=pod_uid),
                                                 sandbox_id=f"sb-{pod_uid}", netns=path),
                              p.AttachReply)

    async def detach(self, pod_uid: str) -> p.DetachReply:
        return await self.ask("detach", p.Detach(pod=p.PodRef(uid=pod_uid)), p.DetachReply)

    async def unprepare(self, claim: str) -> p.UnprepareReply:
        return await self.ask("unprepare", p.Unprepare(claim_uid=claim), p.UnprepareReply)


def no_link_local(ns: NetNS) -> None:
    """No IPv6 link-local addresses in the node netns: the kernel adds them to a veth
    peer whenever its carrier comes up (asynchronously, through linkwatch), which
    would make "exactly as before" snapshots flaky for reasons that are not ours."""
    subprocess.run(["ip", "netns", "exec", ns.name, "sysctl", "-qw",
                    "net.ipv6.conf.default.addr_gen_mode=1",
                    "net.ipv6.conf.all.addr_gen_mode=1"], check=True)


@pytest.fixture
async def env(bus: Credentials, node_ns: NetNS, tmp_path: Path) -> AsyncIterator[Env]:
    """Bus clients and the node netns; the plumber is started with ``env.running()``.

    The discovery user answers ``inventory.get`` with the test's inventory, so
    a plumber restarted mid-test finds it at once.
    """
    no_link_local(node_ns)
    nc = await busmod.connect(bus, "plumber")
    gw = await busmod.connect(bus, "gateway")
    disc = await busmod.connect(bus, "discovery")
    e = Env(creds=bus, node=node_ns, tmp=tmp_path, gw=gw, disc=disc, nc=nc)

    async def answer(msg) -> None:
        decode(msg.data, InventoryGet)
        await msg.respond(encode(e.snapshot()))

    await disc.subscribe(Subjects(NODE).inventory_get, cb=answer)
    await busmod.flush(disc)
    try:
        yield e
    finally:
        for ns in e.pods:
            ns.delete()
        for c in (gw, disc, nc):
            await busmod.close(c)


@pytest.fixture
async def plumber(env: Env) -> AsyncIterator[Plumber]:
    async with env.running() as pl:
        yield pl
