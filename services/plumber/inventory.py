"""The plumber's view of discovery's inventory: which devices exist and
which interface each one is right now.

It keeps the newest snapshot (published or asked for), using discovery's
(epoch, seq) ordering, so a reply and a publish that cross on the bus never
put an older inventory back.
"""

from __future__ import annotations

import logging

import anyio
import nats.errors
from nats.aio.client import Client
from nats.aio.subscription import Subscription

from schemas.base import encode
from schemas.inventory import Device, InventoryGet, InventorySnapshot
from schemas.subjects import Subjects
from services.common import bus
from services.common.backoff import Backoff
from services.common.snapshots import NewestSnapshot

log = logging.getLogger("knd.plumber.inventory")

SERVICE = "plumber"


class Inventory:
    def __init__(self, nc: Client, node: str) -> None:
        self.nc = nc
        self.node = node
        self.subjects = Subjects(node)
        self._newest = NewestSnapshot(node)
        self._got = anyio.Event()

    def offer(self, snap: InventorySnapshot) -> bool:
        """Keep ``snap`` if it is newer than the one we have."""
        if not self._newest.offer(snap):
            return False
        self._got.set()
        return True

    @property
    def latest(self) -> InventorySnapshot | None:
        return self._newest.latest

    async def subscribe(self) -> Subscription:
        sub = await self.nc.subscribe(self.subjects.inventory_snapshot)
        await bus.flush(self.nc)
        return sub

    async def listen(self, sub: Subscription) -> None:
        async for msg in sub.messages:
            snap = bus.decode_or_count(SERVICE, msg.subject, msg.data, InventorySnapshot)
            if snap is not None:
                self.offer(snap)

    async def ask(self, wait: float = 1.0) -> bool:
        """One ``inventory.get``; True when it brought a snapshot."""
        try:
            reply = await self.nc.request(self.subjects.inventory_get, encode(InventoryGet()),
                                          timeout=wait)
        except (nats.errors.Error, TimeoutError) as exc:
            log.debug("inventory.get: %r", exc)
            return False
        snap = bus.decode_reply(SERVICE, self.subjects.inventory_get, reply.data,
                                   InventorySnapshot)
        if snap is None:
            return False
        self.offer(snap)
        return True

    async def ask_until_known(self, max_delay: float = 2.0) -> None:
        """Ask until discovery answers: at start, and again after every reconnect to the
        bus (a snapshot published while we were away never reaches us)."""
        while True:
            backoff = Backoff(0.05, max_delay)
            while not await self.ask():
                await backoff.sleep()
            await bus.reconnected(self.nc)

    async def current(self, wait: float) -> InventorySnapshot | None:
        """The newest snapshot, asking discovery once more if we have none yet."""
        if self.latest is None:
            await self.ask(wait)
        return self.latest

    def device(self, name: str) -> Device | None:
        if self.latest is None:
            return None
        for dev in self.latest.devices:
            if dev.name == name:
                return dev
        return None
