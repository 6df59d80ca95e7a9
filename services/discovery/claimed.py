"""Devices held by prepared claims stay in the inventory while they are in a pod.

An interface moved into a pod leaves the host netns, so a rescan no longer sees
it. Dropping it from the slices would be wrong twice over: the device is still
the node's and allocated (kubelet's health stream would call it unhealthy), and
every pod start and stop would rewrite the pool. So discovery follows the
gateway's ``events.claim.prepared|unprepared`` and keeps publishing a claimed
device as its last snapshot had it. At start it asks the plumber which claims are
prepared and how their devices were published then (the plumber's checkpoint keeps
them), so a discovery that restarts while a device is in a pod keeps it too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg

from schemas.base import encode
from schemas.events import ClaimPrepared, ClaimUnprepared
from schemas.inventory import Device
from schemas.plumber import PlumberStatus, PlumberStatusGet
from schemas.subjects import Subjects
from services.common import bus

log = logging.getLogger("knd.discovery.claimed")


class ClaimedDevices:
    def __init__(self, nc: Client, subjects: Subjects, changed: Callable[[], None]) -> None:
        self.nc = nc
        self.subjects = subjects
        self.changed = changed
        self._claims: dict[str, frozenset[str]] = {}
        self._published: dict[str, dict[str, Device]] = {}
        """Claim uid -> its devices as published at prepare (from the plumber, at start)."""

    def pinned(self) -> set[str]:
        return set().union(*self._claims.values()) if self._claims else set()

    def published(self, name: str) -> Device | None:
        """Device ``name`` of a prepared claim as it was published at prepare, if known."""
        for devices in self._published.values():
            if name in devices:
                return devices[name]
        return None

    async def seed(self) -> None:
        """The claims the plumber has prepared (it may not be up yet: then none)."""
        try:
            reply = await self.nc.request(self.subjects.plumber("status"),
                                          encode(PlumberStatusGet()), timeout=1)
        except Exception as exc:
            log.info("no prepared claims from the plumber (%s)", type(exc).__name__)
            return
        status = bus.decode_or_count("discovery", reply.subject, reply.data, PlumberStatus)
        if status is not None:
            for claim in status.claims:
                self._claims[claim.uid] = frozenset(claim.devices)
                self._published[claim.uid] = {d.name: d for d in claim.published}

    async def follow(self) -> None:
        # The bus lets discovery subscribe to the two claim events, not to a wildcard
        # over them. Their callbacks only hand each message to one stream, without
        # awaiting, so a claim's prepared and unprepared are handled as they came.
        send, receive = anyio.create_memory_object_stream[Msg](math.inf)

        async def queue(msg: Msg) -> None:
            send.send_nowait(msg)

        subs = []
        try:
            for kind in ("claim.prepared", "claim.unprepared"):
                subs.append(await self.nc.subscribe(self.subjects.event(kind), cb=queue))
            async with receive:
                async for msg in receive:
                    self._on_claim_event(msg)
        finally:
            with anyio.CancelScope(shield=True):
                for sub in subs:
                    await sub.unsubscribe()

    def _on_claim_event(self, msg: Msg) -> None:
        if msg.subject.endswith(".prepared"):
            ev = bus.decode_or_count("discovery", msg.subject, msg.data, ClaimPrepared)
            if ev is not None and not ev.error:
                self._claims[ev.claim_uid] = frozenset(ev.devices)
        elif msg.subject.endswith(".unprepared"):
            un = bus.decode_or_count("discovery", msg.subject, msg.data, ClaimUnprepared)
            if un is not None:
                self._published.pop(un.claim_uid, None)
                if self._claims.pop(un.claim_uid, None) is not None:
                    self.changed()  # a device kept for it may be gone for good
