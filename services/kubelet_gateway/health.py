"""Device health for kubelet (``v1alpha1.DRAResourceHealth``, server-streaming).

Health follows discovery's inventory: a device present in the latest snapshot
is HEALTHY; a device that was seen and then disappears is UNHEALTHY (it stays
listed, so a pod that holds it shows why), and HEALTHY again if it comes back.
The pool is the node's pool, whose name is the node name (``snapshot.node``).

Each watcher gets the whole list when it connects (once the first snapshot is
known), again on every change, and again every ``resend_interval`` seconds, so
that ``last_updated_time`` (the time of sending) stays within
``health_check_timeout_seconds`` while nothing changes.

Snapshots come from an async iterable (``run``) or are pushed (``update``);
an older snapshot than one already applied (by ``(epoch, seq)``) is ignored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable

import anyio
import grpc

from schemas.inventory import InventorySnapshot
from services.kubelet_gateway import rpc
from services.kubelet_gateway.pb import dra_health_v1alpha1_pb2 as pb

log = logging.getLogger("knd.gateway.health")

SERVICE = pb.DESCRIPTOR.services_by_name["DRAResourceHealth"].full_name
"""``v1alpha1.DRAResourceHealth``."""
HEALTHY, UNHEALTHY = pb.HEALTHY, pb.UNHEALTHY


class DeviceHealth:
    """The node's device health, fed with inventory snapshots, streamed to kubelet."""

    def __init__(self, *, resend_interval: float = 10.0, check_timeout: int = 30,
                 clock: Callable[[], float] = time.time) -> None:
        self.resend_interval = resend_interval
        self.check_timeout = check_timeout
        self.clock = clock
        self.health: dict[tuple[str, str], pb.HealthStatus] = {}
        """(pool, device) -> HEALTHY / UNHEALTHY."""
        self.version = 0
        """Bumped on every change; 0 until the first snapshot."""
        self._order: tuple[int, int] | None = None
        self._changed = anyio.Event()
        self._closed = False

    # ---- feeding ---------------------------------------------------------------------------

    def update(self, snap: InventorySnapshot) -> bool:
        """Apply one snapshot; True if the health of some device changed."""
        order = (snap.epoch, snap.seq)
        if self._order is not None and order < self._order:
            log.debug("ignoring snapshot %s older than %s", order, self._order)
            return False
        self._order = order
        present = {(snap.node, d.name) for d in snap.devices}
        new = {key: UNHEALTHY for key in self.health}
        new.update(dict.fromkeys(present, HEALTHY))
        if new == self.health and self.version:
            return False
        for key, state in new.items():
            if self.health.get(key) != state:
                log.info("device %s/%s is %s", key[0], key[1], pb.HealthStatus.Name(state))
        self.health = new
        self._bump()
        return True

    async def run(self, source: AsyncIterable[InventorySnapshot]) -> None:
        """Apply snapshots from ``source`` until it ends (or the caller is cancelled)."""
        async for snap in source:
            self.update(snap)

    def close(self) -> None:
        """End every open stream (server shutdown)."""
        self._closed = True
        self._changed.set()

    def _bump(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    # ---- streaming -------------------------------------------------------------------------

    def response(self) -> pb.NodeWatchResourcesResponse:
        now = int(self.clock())
        return pb.NodeWatchResourcesResponse(devices=[
            pb.DeviceHealth(device=pb.DeviceIdentifier(pool_name=pool, device_name=name),
                            health=state, last_updated_time=now,
                            health_check_timeout_seconds=self.check_timeout)
            for (pool, name), state in sorted(self.health.items())])

    async def watch(self) -> AsyncIterator[pb.NodeWatchResourcesResponse]:
        """The stream one watcher gets: the list now (once known), on change, periodically."""
        sent = 0
        while not self._closed:
            changed = self._changed
            if self.version and self.version != sent:
                sent = self.version
                yield self.response()
                continue
            with anyio.move_on_after(self.resend_interval) as scope:
                await changed.wait()
            if scope.cancelled_caught and self.version:
                sent = 0  # nothing changed: send the same list again as a keep-alive

    def handler(self) -> grpc.GenericRpcHandler:
        async def watch(data: bytes, context: grpc.aio.ServicerContext
                        ) -> AsyncIterator[pb.NodeWatchResourcesResponse]:
            try:
                rpc.parse(pb.NodeWatchResourcesRequest, data, "NodeWatchResources")
            except rpc.BadRequest as exc:
                await rpc.reject(context, exc)
            log.info("kubelet watches device health")
            async for resp in self.watch():
                yield resp

        return grpc.method_handlers_generic_handler(SERVICE, {
            "NodeWatchResources": rpc.raw_stream(watch, pb.NodeWatchResourcesResponse),
        })
