"""The publisher service: inventory snapshots in, the node's ResourceSlice pool out.

It listens to ``inventory.snapshot`` and asks ``inventory.get`` at start (so a
publisher that starts after discovery converges at once), keeps only the
newest snapshot, and one worker syncs it to the API. Snapshots that arrive
during a sync or a backoff are collapsed: the worker always syncs the newest
and never queues stale ones. API failures back off exponentially with jitter;
nothing is deleted on an error, so the cluster keeps the last good pool.
"""

from __future__ import annotations

import logging
import time

import anyio
import nats.errors
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.aio.subscription import Subscription

from schemas.base import encode
from schemas.claims import ClaimStatus
from schemas.inventory import InventoryGet, InventorySnapshot, SlicePublished
from schemas.publisher import PublisherStatus, StatusGet
from schemas.subjects import Subjects
from services.common import bus
from services.common.api import ApiError, ApiPort
from services.common.backoff import Backoff
from services.common.config import Common
from services.common.snapshots import NewestSnapshot
from services.publisher import metrics, notices
from services.publisher.claims import ClaimStatusWriter
from services.publisher.events import EventRecorder
from services.publisher.reconcile import PoolReconciler, SliceRejected, SyncResult

log = logging.getLogger("knd.publisher")

SERVICE = "publisher"
BACKOFF_MIN = 0.05
BACKOFF_MAX = 10.0
ASK_MAX = 2.0
"""Longest wait between two ``inventory.get`` tries while discovery is not up."""


class Publisher:
    """The state of one running publisher; :func:`serve` wires it to the bus."""

    def __init__(self, nc: Client, common: Common, api: ApiPort, *, api_timeout: float = 10.0,
                 resync_interval: float = 300.0, backoff_min: float = BACKOFF_MIN,
                 backoff_max: float = BACKOFF_MAX) -> None:
        self.nc = nc
        self.node = common.node
        self.driver = common.driver_name
        self.subjects = Subjects(common.node)
        self.reconciler = PoolReconciler(api, common.node, common.driver_name,
                                         call_timeout=api_timeout)
        self.resync_interval = resync_interval
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self._newest = NewestSnapshot(self.node)
        self._synced: tuple[int, int] | None = None
        self._wake = anyio.Event()
        self.status = PublisherStatus(node=self.node, pool=self.node, driver=self.driver)
        self.claims = ClaimStatusWriter(api, self.driver)
        self.events = EventRecorder(api, self.driver, self.node, call_timeout=api_timeout)

    # ---- snapshots -----------------------------------------------------------------------

    def offer(self, snap: InventorySnapshot) -> bool:
        """Keep ``snap`` if it is newer than what we have (services.common.snapshots);
        wake the worker if so."""
        if not self._newest.offer(snap):
            return False
        self.status.pending = True
        self._wake.set()
        return True

    @property
    def latest(self) -> InventorySnapshot | None:
        return self._newest.latest

    async def listen(self, sub: Subscription) -> None:
        async for msg in sub.messages:
            snap = bus.decode_or_count(SERVICE, msg.subject, msg.data, InventorySnapshot)
            if snap is not None:
                self.offer(snap)

    async def ask_inventory(self, *, reply_wait: float = 1.0) -> None:
        """Ask discovery for its inventory until it answers: at start, and again after
        every reconnect to the bus (a snapshot published while we were away is lost)."""
        subject = self.subjects.inventory_get
        while True:
            backoff = Backoff(self.backoff_min, ASK_MAX, jitter=True)
            while True:
                try:
                    reply = await self.nc.request(subject, encode(InventoryGet()),
                                                  timeout=reply_wait)
                except (nats.errors.Error, TimeoutError) as exc:
                    log.debug("inventory.get: %r; asking again in %.2fs", exc, backoff.delay)
                else:
                    snap = bus.decode_reply(SERVICE, subject, reply.data, InventorySnapshot)
                    if snap is not None:
                        self.offer(snap)
                        break
                await backoff.sleep()
            await bus.reconnected(self.nc)

    # ---- syncing -------------------------------------------------------------------------

    async def worker(self) -> None:
        """Sync the newest snapshot whenever it changes; collapse bursts into one sync."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            snap = self.latest
            if snap is None or (snap.epoch, snap.seq) == self._synced:
                continue
            await self._sync_newest()

    async def _sync_newest(self) -> None:
        backoff = Backoff(self.backoff_min, self.backoff_max, jitter=True)
        while True:
            snap = self.latest
            assert snap is not None
            try:
                result = await self.reconciler.sync(snap.devices)
            except SliceRejected as exc:
                # The same content would be refused again: wait for new inventory.
                metrics.SYNCS.labels("rejected").inc()
                self.status.last_error = str(exc)
                log.error("pool %s not published: %s", self.node, exc)
                return
            except Exception as exc:  # ApiError, or a bug: keep serving, retry later
                metrics.SYNCS.labels("error").inc()
                self.status.last_error = str(exc) or repr(exc)
                wait = backoff.next()
                log.warning("pool %s: sync failed (%s); retrying in %.2fs", self.node,
                            self.status.last_error, wait,
                            exc_info=not isinstance(exc, ApiError))
                await anyio.sleep(wait)
                continue
            self._synced = (snap.epoch, snap.seq)
            await self._published(snap, result)
            return

    async def _published(self, snap: InventorySnapshot, result: SyncResult) -> None:
        now = time.time()
        metrics.SYNCS.labels("ok").inc()
        metrics.LAST_PUBLISH.set(now)
        metrics.PUBLISHED_DEVICES.set(result.devices)
        metrics.RDMA_DEVICES.set(result.rdma)
        metrics.GENERATION.set(result.generation)
        latest = self.latest
        self.status = PublisherStatus(
            node=self.node, pool=self.node, driver=self.driver, synced=True,
            epoch=snap.epoch, seq=snap.seq, generation=result.generation, slices=result.slices,
            devices=result.devices, rdma=result.rdma, writes=result.writes,
            dropped=list(result.dropped), last_sync_at=now,
            pending=latest is not None and (latest.epoch, latest.seq) != self._synced)
        start = snap.trigger_at or snap.taken_at
        end = result.last_write_at or now
        event = SlicePublished(
            node=self.node, pool=self.node, generation=result.generation, slices=result.slices,
            devices=result.devices, writes=result.writes,
            latency_ms=max(0.0, (end - start) * 1000.0) if start else 0.0,
            dropped=list(result.dropped))
        if result.writes:
            log.info("pool %s: generation %d, %d slice(s), %d device(s), %d write(s)",
                     self.node, result.generation, result.slices, result.devices, result.writes)
        try:
            await self.nc.publish(self.subjects.event("slice.published"), encode(event))
        except nats.errors.Error as exc:  # the bus is a sidecar: it may be restarting
            log.warning("could not announce the published pool: %r", exc)

    async def resync(self) -> None:
        """Now and then read the pool from the API again and repair what others changed."""
        while True:
            await anyio.sleep(self.resync_interval)
            self.reconciler.invalidate()
            self._synced = None
            if self.latest is not None:
                self._wake.set()

    async def get_status(self, _req: StatusGet) -> PublisherStatus:
        return self.status


async def serve(nc: Client, common: Common, api: ApiPort, *,
                api_timeout: float = 10.0, resync_interval: float = 300.0,
                backoff_max: float = BACKOFF_MAX,
                task_status: TaskStatus[Publisher] = anyio.TASK_STATUS_IGNORED) -> None:
    """Run the publisher on ``nc`` until cancelled, writing through ``api``.

    ``task_status`` reports the :class:`Publisher` once it is subscribed and
    its ``status`` endpoint answers (``await tg.start(serve, ...)``).
    """
    svc = None
    try:
        pub = Publisher(nc, common, api, api_timeout=api_timeout,
                        resync_interval=resync_interval, backoff_max=backoff_max)
        sub = await nc.subscribe(pub.subjects.inventory_snapshot)
        # bus events that become Kubernetes Events (services.publisher.notices)
        event_subs = [(await nc.subscribe(subject), schema, translate)
                      for subject, (schema, translate)
                      in notices.sources(pub.subjects).items()]
        svc = await bus.serve(nc, SERVICE, "publishes the node's devices as ResourceSlices")
        group = svc.add_group(name=pub.subjects.publisher_group)
        await group.add_endpoint(name="status", handler=bus.typed_handler(
            SERVICE, "status", StatusGet, pub.get_status))
        await group.add_endpoint(name="claim-status", handler=bus.typed_handler(
            SERVICE, "claim-status", ClaimStatus, pub.claims.handle))
        await bus.flush(nc)
        async with anyio.create_task_group() as tg:
            tg.start_soon(pub.listen, sub)
            tg.start_soon(pub.worker)
            tg.start_soon(pub.ask_inventory)
            tg.start_soon(pub.events.run)
            for event_sub, schema, translate in event_subs:
                tg.start_soon(notices.listen, event_sub, schema, translate, pub.events)
            if resync_interval > 0:
                tg.start_soon(pub.resync)
            task_status.started(pub)
    finally:
        await bus.stop_service(nc, svc)
