"""Devices of prepared claims: always published, and always as they were before the claim.

An interface moved into a pod leaves the host netns, so a rescan no longer sees
it. Dropping it from the slices would be wrong twice over: the device is still
the node's and allocated (kubelet's health stream would call it unhealthy), and
every pod start and stop would rewrite the pool. Publishing what the kernel says
of it meanwhile is wrong too (its ``state`` changes as it moves), and DRANET's
users expect an allocated device's attributes to stay exactly as they were. So a
claimed device is *frozen*: published as discovery last published it before the
claim, until the claim is unprepared.

Who holds what is the plumber's checkpoint; the gateway's ``events.claim.*``
are only the fast path. Events can be lost (a bus restart between a prepare and
its event), and a discovery that starts has seen none, so discovery asks the
plumber before it publishes anything at all, before it drops a device that
vanished, and at every periodic resync. When the plumber does not answer, a
vanished device is kept as it was: a pool that lacks a device in a pod is never
published on a guess.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import anyio
import nats.errors
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg

from schemas.base import encode
from schemas.events import ClaimPrepared, ClaimUnprepared
from schemas.inventory import Device
from schemas.plumber import PlumberStatus, PlumberStatusGet
from schemas.subjects import Subjects
from services.common import bus
from services.common.backoff import Backoff

log = logging.getLogger("knd.discovery.claimed")

ASK_TIMEOUT = 1.0
RETRY_MAX = 2.0
"""Longest pause between two questions to a plumber that does not answer."""
NAG_EVERY = 30.0
"""How often a discovery still waiting for the plumber says so at warning level."""


class ClaimedDevices:
    """The claimed devices of this node and their frozen attributes.

    ``last_published`` looks a device up in discovery's newest published snapshot:
    that is the copy frozen when a claim event names a device.
    """

    def __init__(self, nc: Client, subjects: Subjects, changed: Callable[[], None],
                 last_published: Callable[[str], Device | None]) -> None:
        self.nc = nc
        self.subjects = subjects
        self.changed = changed
        self.last_published = last_published
        self._claims: dict[str, frozenset[str]] = {}
        self._frozen: dict[str, Device] = {}
        """Device name -> the device as published before it was claimed."""
        self.known = anyio.Event()
        """Set once the plumber has said which claims it holds."""

    def pinned(self) -> set[str]:
        return set().union(*self._claims.values()) if self._claims else set()

    def frozen(self, name: str, live: Device | None) -> Device | None:
        """What to publish for claimed device ``name``: its frozen copy; one never
        frozen (the plumber kept no copy) is frozen now from ``live``."""
        dev = self._frozen.get(name)
        if dev is None and live is not None:
            dev = self._frozen[name] = live
        return dev

    # ---- the plumber, the source of truth ---------------------------------------------

    async def refresh(self) -> bool:
        """Take the plumber's prepared claims as they are now; False when it did not answer."""
        subject = self.subjects.plumber("status")
        try:
            reply = await self.nc.request(subject, encode(PlumberStatusGet()),
                                          timeout=ASK_TIMEOUT)
        except (nats.errors.Error, TimeoutError) as exc:
            log.debug("plumber.status: %r", exc)
            return False
        status = bus.decode_reply("discovery", subject, reply.data, PlumberStatus)
        if status is None:
            return False
        before = self._claims
        self._claims = {c.uid: frozenset(c.devices) for c in status.claims}
        for claim in status.claims:
            for dev in claim.published:
                self._frozen.setdefault(dev.name, dev)
        self._forget_unpinned()
        if not self.known.is_set():
            log.info("the plumber holds %d prepared claim(s) with %d device(s)",
                     len(self._claims), len(self.pinned()))
            self.known.set()
        elif before != self._claims:
            self.changed()
        return True

    async def wait_known(self) -> None:
        """Ask the plumber until it answers. Nothing is published meanwhile: without its
        answer a pool could lack a device that is in a pod."""
        backoff, started, nagged = Backoff(0.05, RETRY_MAX), time.monotonic(), 0.0
        while not await self.refresh():
            waited = time.monotonic() - started
            if not nagged or waited - nagged >= NAG_EVERY:
                level = logging.INFO if not nagged else logging.WARNING
                log.log(level, "waiting for the plumber's prepared claims before publishing "
                               "(%.0f s so far)", waited)
                nagged = waited or 1e-9
            await backoff.sleep()

    # ---- the gateway's events, the fast path ------------------------------------------

    async def follow(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow claim events; started (subscribed) before the plumber is first asked,
        so no claim prepared in between is missed.

        The bus lets discovery subscribe to the two claim events, not to a wildcard over
        them. Their callbacks only hand each message to one stream, without awaiting,
        so a claim's prepared and unprepared are handled in the order they came."""
        send, receive = anyio.create_memory_object_stream[Msg](math.inf)

        async def queue(msg: Msg) -> None:
            send.send_nowait(msg)

        subs = []
        try:
            for kind in ("claim.prepared", "claim.unprepared"):
                subs.append(await self.nc.subscribe(self.subjects.event(kind), cb=queue))
            task_status.started()
            with receive:
                async for msg in receive:
                    self._on_claim_event(msg)
        finally:
            send.close()
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                for sub in subs:
                    await sub.unsubscribe()

    def _on_claim_event(self, msg: Msg) -> None:
        if msg.subject.endswith(".prepared"):
            ev = bus.decode_or_count("discovery", msg.subject, msg.data, ClaimPrepared)
            if ev is not None and not ev.error:
                self.prepared(ev.claim_uid, ev.devices)
        elif msg.subject.endswith(".unprepared"):
            un = bus.decode_or_count("discovery", msg.subject, msg.data, ClaimUnprepared)
            if un is not None:
                self.unprepared(un.claim_uid)

    def prepared(self, claim_uid: str, devices: list[str]) -> None:
        self._claims[claim_uid] = frozenset(devices)
        for name in devices:
            if name not in self._frozen and (dev := self.last_published(name)) is not None:
                self._frozen[name] = dev

    def unprepared(self, claim_uid: str) -> None:
        if self._claims.pop(claim_uid, None) is not None:
            self._forget_unpinned()
            self.changed()  # a device kept for it may be gone, or changed, for good

    def _forget_unpinned(self) -> None:
        pinned = self.pinned()
        for name in [n for n in self._frozen if n not in pinned]:
            del self._frozen[name]
