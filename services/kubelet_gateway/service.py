"""Wiring of the gateway: one bus connection, the API port, the gRPC sockets and
the NRI connection, all in one task group so a failure or a signal stops all of
them together and the sockets are removed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import nats.errors
from anyio.abc import TaskStatus
from nats.aio.client import Client

from schemas.base import encode
from schemas.inventory import InventoryGet, InventorySnapshot
from schemas.subjects import Subjects
from services.common import bus
from services.common.api import ApiPort
from services.common.config import Common
from services.kubelet_gateway.plumber_client import PlumberClient

if TYPE_CHECKING:  # both import grpc; the CLI's --help need not
    from services.kubelet_gateway.grpc_server import GrpcStatus
    from services.kubelet_gateway.nri.barrier import Barrier
    from services.kubelet_gateway.nri.plugin import NriPlugin

log = logging.getLogger("knd.gateway")

SERVICE = "kubelet-gateway"


class InventoryFeed:
    """Discovery's snapshots for the health stream: asked for at start and after every
    reconnect to the bus (one published while we were away is lost), then as published.
    :meth:`run` fills it; iterating yields the snapshots."""

    def __init__(self, nc: Client, node: str) -> None:
        self.nc = nc
        self.subjects = Subjects(node)
        self._send, self._receive = anyio.create_memory_object_stream[InventorySnapshot](16)

    def _offer(self, snap: InventorySnapshot) -> None:
        try:
            self._send.send_nowait(snap)
        except anyio.WouldBlock:
            pass  # a newer one follows; health only needs the latest

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async def on_snapshot(msg) -> None:
            snap = bus.decode_or_count("gateway", msg.subject, msg.data, InventorySnapshot)
            if snap is not None:
                self._offer(snap)

        sub = await self.nc.subscribe(self.subjects.inventory_snapshot, cb=on_snapshot)
        task_status.started()
        try:
            while True:
                await self._ask()
                await bus.reconnected(self.nc)
        finally:
            self._send.close()
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await sub.unsubscribe()

    async def _ask(self) -> None:
        subject = self.subjects.inventory_get
        try:
            reply = await self.nc.request(subject, encode(InventoryGet()), timeout=2)
        except (nats.errors.Error, TimeoutError) as exc:  # discovery may start later
            log.info("no inventory yet (%r); waiting for discovery's first snapshot", exc)
            return
        snap = bus.decode_reply("gateway", subject, reply.data, InventorySnapshot)
        if snap is not None:
            self._offer(snap)

    def __aiter__(self) -> AsyncIterator[InventorySnapshot]:
        return self._receive.__aiter__()

    def close(self) -> None:
        """Once nothing runs or reads it any more."""
        self._send.close()
        self._receive.close()


@dataclass
class Gateway:
    """What :func:`serve` runs, for readiness: kubelet's sockets and the NRI plugin."""

    grpc: GrpcStatus
    nri: NriPlugin


async def serve(nc: Client, common: Common, api: ApiPort, *, kubelet_root: Path,
                nri_socket: Path, nri_index: str = "10", plumber_timeout: float = 40.0,
                device_attach_timeout: float = 30.0, barrier: Barrier | None = None,
                task_status: TaskStatus[Gateway] = anyio.TASK_STATUS_IGNORED) -> None:
    """Run the gateway on ``nc`` until cancelled; ``task_status`` reports the
    :class:`Gateway` once kubelet's sockets listen and the NRI plugin has started.
    ``barrier``: how containers wait for a deferred attach (None: they fail until done)."""
    from services.kubelet_gateway.dra import ClaimEvents
    from services.kubelet_gateway.grpc_server import serve_grpc
    from services.kubelet_gateway.nri.attach_jobs import AttachJobs
    from services.kubelet_gateway.nri.plugin import PlumberPodHandler, run_nri

    plumber = PlumberClient(nc, common.node, timeout=plumber_timeout)
    feed = InventoryFeed(nc, common.node)
    svc = None
    try:
        # no endpoints: registered so that $SRV.PING/INFO/STATS answer for the gateway too
        svc = await bus.serve(nc, SERVICE, "kubelet DRA and NRI plugin of the node")
        async with anyio.create_task_group() as tg:
            await tg.start(feed.run)
            grpc = await tg.start(lambda task_status: serve_grpc(
                kubelet_root=kubelet_root, driver=common.driver_name, api=api,
                plumber=plumber, inventory_source=feed, task_status=task_status))
            events = grpc.dra.events = ClaimEvents(nc, common.node)
            jobs = await tg.start(AttachJobs(plumber, attach_timeout=device_attach_timeout,
                                             barrier=barrier, events=events).run)
            nri = await tg.start(lambda task_status: run_nri(
                socket_path=nri_socket, plugin_idx=nri_index,
                handler=PlumberPodHandler(plumber, jobs), task_status=task_status))
            task_status.started(Gateway(grpc, nri))
    finally:
        feed.close()
        await bus.stop_service(nc, svc)
