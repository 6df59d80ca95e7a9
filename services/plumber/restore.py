"""Giving an interface back: one routine for rollback, detach and reconcile.

It does not trust its own memory of how far an attach got. It looks: is the
pod netns still the one we recorded, is the device there (under its pod name
and index, with a MAC we know), or is it in the host (under its own name, its
pod name, or its index)? Then it moves it back if needed and makes the host
copy match the snapshot, adding only what is missing, so running it twice,
or on a device that never moved, changes nothing.

Outcomes: ``restored`` (back with its original config, row dropped), ``gone``
(a virtual device that died with its pod netns: row kept as ``gone``), or
``pending`` (a physical device not back yet, or a step the kernel refused:
row kept as ``detaching`` and retried by the sweeper).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Protocol

import anyio

from schemas.text import q
from services.common.logs import fields
from services.plumber import children, devconf, nsfs, vrf
from services.plumber.checkpoint import Checkpoint
from services.plumber.devconf import DevconfError
from services.plumber.metrics import RESTORE_FAILURES
from services.plumber.model import DETACHING, GONE, Attachment, LinkSnapshot, RouteRec
from services.plumber.netops import KernelError, LinkRec, Rtnl
from services.plumber.rdma import Rdma

log = logging.getLogger("knd.plumber.restore")

RESTORED, GONE_OUT, PENDING = "restored", "gone", "pending"


class Notify(Protocol):
    def attached(self, att: Attachment, latency_ms: float) -> None: ...
    def detached(self, att: Attachment, reason: str, interface: str, gone: bool) -> None: ...
    def failed(self, att: Attachment, step: str, error: str, rolled_back: bool) -> None: ...
    def claims_changed(self, claim_uids: set[str], error: str = "") -> None: ...


GONE_WHY = {
    "netns-gone": "the pod's network namespace was deleted and virtual device {name} with it",
    "device-deleted": "virtual device {name} was deleted inside the pod",
}


def gone_message(reason: str, why: str, name: str) -> str:
    """What a person reads in the claim's status about a device that is no more: what
    happened, once (the sweeper's reason is itself ``netns-gone``), and what started it
    (``detach: ...``) when that was something else."""
    text = GONE_WHY[why].format(name=q(name))
    return text if reason == why else f"{reason}: {text}"


@dataclass
class Host:
    """The node's netns, held open for the service's life.

    Each request opens its own rtnetlink socket in it (:meth:`session`, about
    half a millisecond): the kernel runs one dump at a time per socket, and
    requests of different pods must not queue behind each other's dumps while
    a move holds RTNL.
    """

    fd: int
    id: nsfs.NsId
    own: nsfs.NsId | None = None
    """The plumber's own netns: the real host's, even when ``--netns`` names another."""
    moves: anyio.Lock = dataclasses.field(default_factory=anyio.Lock)
    """Moves back from pods take turns (see :meth:`move_turn`)."""
    _mover: Rtnl | None = None
    _mover_made: anyio.Lock = dataclasses.field(default_factory=anyio.Lock)

    async def move_in(self, index: int, dst_fd: int, *, name: str, mtu: int = 0,
                      mac: str = "", up: bool = False) -> None:
        """Move host interface ``index`` into netns ``dst_fd`` (see :meth:`Rtnl.move`).

        The kernel does a move inside the ``sendmsg()`` that asks for it, RTNL
        held, ~15 ms. Every move into a pod goes through one socket whose
        requests run on one thread of its own, which therefore sends them back
        to back in the order asked, without waiting for this loop between two;
        and one move at a time keeps every other RTNL request (a pod's address,
        route, link up) waiting for one move at most rather than for all of
        them. RTNL is not fair: with many moves in flight, all pods finished
        together, late.
        """
        async with self._mover_made:
            if self._mover is None:
                self._mover = await Rtnl.open(self.fd)
        await self._mover.move(index, dst_fd, name=name, mtu=mtu, mac=mac, up=up)

    @asynccontextmanager
    async def move_turn(self) -> AsyncIterator[None]:
        """Hold while moving an interface back from a pod: one at a time, for the
        reason :meth:`move_in` gives (each pod's socket has its own thread)."""
        async with self.moves:
            yield

    @classmethod
    def open(cls, netns: str | None) -> Host:
        fd = nsfs.open_netns(nsfs.host_netns_path(netns))
        return cls(fd, nsfs.fd_id(fd), nsfs.ns_id_of("/proc/self/ns/net"))

    async def session(self) -> Rtnl:
        return await Rtnl.open(self.fd)

    def close(self) -> None:
        if self._mover is not None:
            self._mover.close()
            self._mover = None
        os.close(self.fd)

    async def aclose(self) -> None:
        """:meth:`close` without stopping the mover's thread on the event loop (it may
        be in a move that waits for RTNL)."""
        if self._mover is not None:
            mover, self._mover = self._mover, None
            await mover.aclose()
        os.close(self.fd)


@dataclass
class Outcome:
    result: str
    interface: str = ""
    error: str = ""
    waiting: bool = False
    """Pending only because a physical device has not left its dead netns yet."""


def link_routes_first(routes: list[RouteRec]) -> list[RouteRec]:
    """Routes without a gateway first: a gateway must be reachable when its route goes in."""
    return sorted(routes, key=lambda r: bool(r.gateway))


def _macs(att: Attachment) -> set[str]:
    snap = att.host
    return {m.lower() for m in (att.mac, snap.mac if snap else "") if m}


def pod_netns_alive(att: Attachment) -> bool:
    return nsfs.ns_id_of(att.netns) == nsfs.NsId(att.ns_dev, att.ns_ino)


@contextmanager
def _pod_netns(att: Attachment) -> Iterator[int | None]:
    """The pod's netns, open, while it lives; None when it is gone."""
    if not pod_netns_alive(att):
        yield None
        return
    try:
        fd = nsfs.open_netns(att.netns)
    except nsfs.NetnsError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


class Restorer:
    def __init__(self, store: Checkpoint, host: Host, rdma: Rdma, notify: Notify) -> None:
        self.store = store
        self.host = host
        self.rdma = rdma
        self.notify = notify

    async def find_in_pod(self, pod: Rtnl, att: Attachment) -> LinkRec | None:
        snap = att.host
        assert snap is not None
        if att.child:
            return await children.find(pod, att)
        if att.pod_index:
            link = await pod.link(index=att.pod_index)
            if link and link.name == att.pod_ifname and link.kind == snap.kind:
                return link
        link = await pod.link(name=att.pod_ifname)
        if link and link.kind == snap.kind and link.mac.lower() in _macs(att):
            return link
        return None

    async def find_in_host(self, host: Rtnl, att: Attachment) -> LinkRec | None:
        snap = att.host
        assert snap is not None
        names = {snap.name, att.pod_ifname}
        link = await host.link(index=snap.index)
        if link and link.kind == snap.kind and (link.name in names
                                                or link.mac.lower() in _macs(att)):
            return link
        for name in (snap.name, att.pod_ifname):
            link = await host.link(name=name)
            if link and link.kind == snap.kind and (link.index == snap.index
                                                    or link.mac.lower() in _macs(att)):
                return link
        return None

    async def restore(self, att: Attachment, reason: str) -> Outcome:
        """Bring ``att``'s device back to the host as it was (see the module doc)."""
        if att.phase == GONE:
            return Outcome(GONE_OUT)
        if att.phase != DETACHING:
            att.phase = DETACHING
            self.store.put_attachment(att)
        try:
            return await self._restore(att, reason)
        except (KernelError, DevconfError, OSError) as exc:
            RESTORE_FAILURES.inc()
            att.reason = f"{reason}: {exc}"
            self.store.put_attachment(att)
            log.error("device %s (claim %s) not restored yet: %s", att.device, att.claim_uid,
                      exc, extra=fields(claim=att.claim_uid, pod=att.pod_uid, device=att.device))
            self.notify.failed(att, "restore", str(exc), rolled_back=False)
            return Outcome(PENDING, error=str(exc))

    async def _restore(self, att: Attachment, reason: str) -> Outcome:
        if att.child:
            return await self._remove_child(att, reason)
        snap = att.host
        with _pod_netns(att) as fd:
            alive = fd is not None
            if fd is not None:
                await self._leave_pod(att, fd)
        if snap is None:  # RDMA device without netdev: nothing else to give back
            self.store.drop_attachment(att.claim_uid, att.device)
            self.notify.detached(att, reason, "", gone=False)
            return Outcome(RESTORED)
        async with await self.host.session() as host:
            return await self._settle(host, att, reason, alive)

    async def _settle(self, host: Rtnl, att: Attachment, reason: str, alive: bool) -> Outcome:
        snap = att.host
        assert snap is not None
        link = await self.find_in_host(host, att)
        if link is None:
            if snap.virtual:
                why = "netns-gone" if not alive else "device-deleted"
                att.phase, att.reason = GONE, gone_message(reason, why, snap.name)
                self.store.put_attachment(att)
                self.notify.detached(att, why, "", gone=True)
                log.info("device %s (%s) died with pod %s's netns", att.device, snap.name,
                         att.pod_uid,
                         extra=fields(claim=att.claim_uid, pod=att.pod_uid, device=att.device))
                return Outcome(GONE_OUT)
            att.reason = f"{reason}: waiting for {snap.name} to come back to the host"
            self.store.put_attachment(att)
            return Outcome(PENDING, error=f"{snap.name} is not back in the host yet",
                           waiting=True)
        await self._restore_config(host, link, att)
        self.store.drop_attachment(att.claim_uid, att.device)
        self.notify.detached(att, reason if alive else "netns-gone", snap.name, gone=False)
        return Outcome(RESTORED, interface=snap.name)

    async def _remove_child(self, att: Attachment, reason: str) -> Outcome:
        """A child goes with nothing to give back: deleted in a live pod netns (our rules
        and a VRF we made with it), already gone with a dead one (the kernel deletes
        children with their netns). The parent is left as it is, unless this attach
        brought it up and no other child of it is left."""
        with _pod_netns(att) as fd:
            alive = fd is not None
            if fd is not None:
                async with await Rtnl.open(fd) as pod:
                    await self._drop_rules(pod, att)
                    await children.delete(pod, att)
                    if att.vrf:
                        await vrf.drop_if_unused(pod, att.vrf)
        if att.parent_raised:
            await self._lower_parent(att)
        self.store.drop_attachment(att.claim_uid, att.device)
        self.notify.detached(att, reason if alive else "netns-gone", "", gone=not alive)
        return Outcome(RESTORED if alive else GONE_OUT)

    async def _lower_parent(self, att: Attachment) -> None:
        snap = att.host
        assert snap is not None
        others = [a for a in self.store.attachments() if a.child and a.host is not None
                  and a.host.index == snap.index and a.phase != GONE
                  and (a.claim_uid, a.device) != (att.claim_uid, att.device)]
        if others:  # the last child of the parent takes it down
            others[0].parent_raised = True
            self.store.put_attachment(others[0])
            return
        async with await self.host.session() as host:
            link = await host.link(index=snap.index)
            if link is not None and link.name == snap.name and link.up:
                await host.set_link(f"restore: parent {snap.name} down", snap.index,
                                    state="down")

    async def _drop_rules(self, pod: Rtnl, att: Attachment) -> None:
        for rule in att.rules:
            try:
                await pod.del_rule(rule)
            except KernelError as exc:
                log.warning("pod %s: rule %s not removed: %s", att.pod_uid, rule, exc)
        for hr in att.host_rules:
            try:
                await pod.del_host_rule(hr)
            except KernelError as exc:
                log.warning("pod %s: rule %s not removed: %s", att.pod_uid, hr.describe(), exc)

    async def _leave_pod(self, att: Attachment, fd: int) -> None:
        """In a live pod netns: drop our rules, move the device (and RDMA device) out."""
        async with await Rtnl.open(fd) as pod:
            await self._drop_rules(pod, att)
            if att.rdma_moved:
                try:
                    await self.rdma.move(att.rdma_device, fd, self.host.fd)
                    att.rdma_moved = False
                except Exception as exc:  # best effort: the kernel returns it when the ns dies
                    log.warning("RDMA device %s stays in pod %s: %s", att.rdma_device,
                                att.pod_uid, exc)
            if att.host is None:
                return
            link = await self.find_in_pod(pod, att)
            if link is not None:
                await self._move_back(pod, link, att.host)
            if att.vrf:  # the interface left it with its move
                await vrf.drop_if_unused(pod, att.vrf)

    async def _move_back(self, pod: Rtnl, link: LinkRec, snap: LinkSnapshot) -> None:
        mtu = snap.mtu if link.mtu != snap.mtu else 0
        mac = snap.mac if snap.mac and link.mac.lower() != snap.mac.lower() else ""
        try:
            async with self.host.move_turn():
                await pod.move(link.index, self.host.fd, name=snap.name, mtu=mtu, mac=mac,
                               up=snap.up)  # one request: see Host.move_in
        except KernelError as exc:
            if exc.code != errno.EEXIST:
                raise
            # its host name was taken meanwhile: come back under a free name, rename later
            log.warning("%s is taken in the host; %s comes back as knd%d", snap.name,
                        link.name, snap.index)
            async with self.host.move_turn():
                await pod.move(link.index, self.host.fd, name=f"knd{snap.index}", mtu=mtu,
                               mac=mac)

    async def _restore_config(self, host: Rtnl, link: LinkRec, att: Attachment) -> None:
        snap = att.host
        assert snap is not None
        idx = link.index
        kw: dict = {}
        if link.name != snap.name:
            kw["ifname"] = snap.name
        if link.mtu != snap.mtu:
            kw["mtu"] = snap.mtu
        if snap.mac and link.mac.lower() != snap.mac.lower():
            kw["address"] = snap.mac
        for size in ("gso_max_size", "gro_max_size", "gso_ipv4_max_size", "gro_ipv4_max_size"):
            if getattr(snap, size) and getattr(link, size) != getattr(snap, size):
                kw[size] = getattr(snap, size)
        if kw:
            if link.up and "ifname" in kw:
                await host.set_link("restore: link down", idx, state="down")
                link = dataclasses.replace(link, up=False)
            await host.set_link("restore: name, MTU, MAC", idx, **kw)
        if att.features:
            await devconf.set_features(self.host.fd, snap.name, att.features)
        if att.private_flags:
            await devconf.set_private_flags(self.host.fd, snap.name, att.private_flags)
        saved = dict(snap.sysctls)
        if saved.get("ipv6.addr_gen_mode") == str(link.addr_gen_mode):
            del saved["ipv6.addr_gen_mode"]  # writing it waits for RTNL: only when needed
        refused = await devconf.restore_sysctls(self.host.fd, snap.name, saved)
        if refused:  # the interface works without them: say so, do not fail the restore
            log.warning("%s: host sysctls not restored: %s", snap.name, ", ".join(refused),
                        extra=fields(claim=att.claim_uid, pod=att.pod_uid, device=att.device))
        have = {a.cidr for a in await host.addresses(idx, snap.name)}
        for a in snap.addresses:
            if a.cidr not in have:
                try:
                    await host.add_address(f"restore: address {a.cidr}", idx, a)
                except KernelError as exc:
                    if exc.code != errno.EEXIST:
                        raise
        if snap.up != link.up:
            await host.set_link("restore: link state", idx, state="up" if snap.up else "down")
        if snap.up:
            for r in link_routes_first(snap.routes):
                await host.add_route(f"restore: route {r.dst}", idx, r, exist_ok=True)
        # last: a link going down (a rename above) drops even permanent neighbours
        for n in snap.neighbours:
            await host.add_neighbour(f"restore: neighbour {n.dst}", idx, n.dst, n.lladdr,
                                     replace=True)
