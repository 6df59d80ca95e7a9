"""rtnetlink operations, through pyroute2: the plumber's hands on links,
addresses, routes, rules and neighbours.

One :class:`Rtnl` is one netlink socket inside one network namespace (made by
:mod:`nsfs` on a thread that entered it). Every kernel error becomes a
:class:`KernelError` that names the step, so an attach reply can say which
part of the configuration the kernel refused. Nothing here decides anything:
:mod:`attach` says what to do and in which order.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import anyio
from pyroute2.iproute.linux import AsyncIPRoute
from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_GETADDR, RTM_GETNEIGH, RTM_GETROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from schemas.netconfig import RuleConfig
from services.kernel import rtnl
from services.kernel.uplinks import default_route_oifs
from services.plumber import nsfs
from services.plumber.model import FOREVER, AddrRec, LinkSnapshot, NeighRec, RouteRec, RuleRec
from services.plumber.nlrecs import (
    NUD_PERMANENT,
    RT_SCOPE_LINK,
    RT_TABLE_LOCAL,
    RTN_UNICAST,
    RTPROT_KERNEL,
    LinkRec,
    addr_rec,
    host_rule_kwargs,
    link_rec,
    neigh_rec,
    route_kwargs,
    route_rec,
    rule_kwargs,
    rule_rec,
)

__all__ = ["RT_SCOPE_LINK", "KernelError", "LinkRec", "Rtnl"]

T = TypeVar("T")


IFLA_ALLMULTI, IFLA_GSO_IPV4_MAX_SIZE, IFLA_GRO_IPV4_MAX_SIZE = 61, 63, 64
"""linux/if_link.h (the IPv4 sizes since Linux 6.3, 62 being IFLA_DEVLINK_PORT)."""


def _know_ipv4_offload_sizes() -> None:
    """Teach pyroute2's link message the IPv4 GSO/GRO size attributes (pyroute2 0.9
    stops at IFLA_ALLMULTI), so ``gso_ipv4_max_size=`` is encoded and decoded like
    ``gso_max_size``. The map is positional; the class compiles it once, on first use,
    so it is told to compile again."""
    names = [item[0] for item in ifinfmsg.nla_map]
    if "IFLA_GSO_IPV4_MAX_SIZE" in names:  # a pyroute2 that knows them already
        return
    if len(names) != IFLA_ALLMULTI + 1 or names[IFLA_ALLMULTI] != "IFLA_ALLMULTI":
        raise ImportError("pyroute2's ifinfmsg attribute map is not the one knd extends")
    ifinfmsg.nla_map = (*ifinfmsg.nla_map, ("IFLA_DEVLINK_PORT", "hex"),
                        ("IFLA_GSO_IPV4_MAX_SIZE", "uint32"),
                        ("IFLA_GRO_IPV4_MAX_SIZE", "uint32"))
    ifinfmsg._nlmsg_base__compiled_nla = False


_know_ipv4_offload_sizes()


class KernelError(Exception):
    """The kernel refused one step; ``str()`` is ``"<step>: <kernel message>"``."""

    def __init__(self, step: str, code: int, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.code = code


class _Loop:
    """An event loop on a thread of its own, where one socket's requests run.

    The kernel handles an rtnetlink request inside the ``sendmsg()`` that
    carries it, RTNL held: a netns move is ~15 ms of that, and waiting for RTNL
    behind another process's move is more. On the service's loop that call would
    stop every other pod's attach, the bus and the checkpoint for as long; here
    only this thread waits (without the GIL) and the service's loop goes on.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="knd-rtnl",
                                        daemon=True)
        self._thread.start()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """``coro`` run to its end on this loop; cancelling the caller cancels it."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self, last: Callable[[], object] | None = None) -> None:
        """Stop the loop, after ``last`` (a cleanup that must run on it)."""
        def finish() -> None:
            if last is not None:
                last()
            # a transport that ``last`` closed lets go of its socket on the loop's next
            # turn: stop after that turn, not before it (an "unclosed transport" then)
            self.loop.call_soon(self.loop.stop)

        self.loop.call_soon_threadsafe(finish)
        self._thread.join()
        self.loop.close()


async def _setup(sock: socket.socket) -> AsyncIPRoute:
    ipr = AsyncIPRoute(use_socket=sock, groups=0, ext_ack=True, strict_check=True)
    await ipr.setup_endpoint()
    return ipr


async def _collect(call: Awaitable[Any]) -> list[Any]:
    return [m async for m in await call]


class Rtnl:
    """An rtnetlink socket inside one netns; ``fd`` is that netns (not owned).

    Requests run on the socket's own :class:`_Loop`; callers just await them.
    """

    def __init__(self, ipr: AsyncIPRoute, fd: int, loop: _Loop) -> None:
        self.ipr = ipr
        self.fd = fd
        self._loop = loop
        self._dumping = anyio.Lock()
        self._moving: asyncio.Lock | None = None
        """Made and used on ``loop`` only."""

    @classmethod
    async def open(cls, fd: int) -> Rtnl:
        sock = await nsfs.netlink_socket(fd)
        loop = await anyio.to_thread.run_sync(_Loop)  # a thread's start waits for it
        try:
            ipr = await loop.run(_setup(sock))
        except BaseException:
            loop.close()
            sock.close()
            raise
        return cls(ipr, fd, loop)

    def close(self) -> None:
        sock = self.ipr.use_socket
        self._loop.close(last=self.ipr.close)  # its transport belongs to that loop
        if sock is not None:
            sock.close()

    async def __aenter__(self) -> Rtnl:
        return self

    async def aclose(self) -> None:
        """:meth:`close` off the service's loop: the socket's thread may still be in a
        kernel call (a move waiting for RTNL), and stopping it waits for that."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.close)

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _do(self, step: str, call: Coroutine[Any, Any, T]) -> T:
        try:
            return await self._loop.run(call)
        except NetlinkError as exc:
            raise KernelError(step, exc.code, str(exc.args[1] if len(exc.args) > 1 else exc))\
                from None

    async def _dump(self, step: str, call: Awaitable[Any]) -> list[Any]:
        """A dump request. The kernel runs one dump at a time per socket (EBUSY
        otherwise), so dumps on a shared socket take turns; other requests do not."""
        async with self._dumping:
            try:
                return await self._loop.run(_collect(call))
            except NetlinkError as exc:
                raise KernelError(step, exc.code, str(exc.args[1] if len(exc.args) > 1
                                                      else exc)) from None

    # ---- reading -------------------------------------------------------------------------

    async def links(self) -> list[LinkRec]:
        return [link_rec(m) for m in await self._dump("links", self.ipr.link("dump"))]

    async def link(self, *, index: int = 0, name: str = "") -> LinkRec | None:
        """One link by index or name; None when there is no such link."""
        kw: dict[str, Any] = {"index": index} if index else {"ifname": name}
        try:
            msgs = await self._loop.run(self.ipr.link("get", **kw))
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT, errno.EINVAL):
                return None
            raise KernelError("link", exc.code, str(exc)) from None
        return link_rec(msgs[0]) if msgs else None

    async def _filtered(self, step: str, msg: Any, msg_type: int) -> list[Any]:
        """A dump the kernel filters itself (the socket has strict checking on): a
        busy node's whole address or route table is never decoded in Python."""
        return await self._dump(step, self.ipr.nlm_request(
            msg, msg_type=msg_type, msg_flags=NLM_F_REQUEST | NLM_F_DUMP))

    async def addresses(self, index: int, ifname: str) -> list[AddrRec]:
        req = ifaddrmsg()
        req["index"] = index
        out = []
        for m in await self._filtered("addresses", req, RTM_GETADDR):
            rec = addr_rec(m, ifname)
            if rec is not None and m["index"] == index:
                out.append(rec)
        return out

    async def ipv6_global(self, index: int) -> list[tuple[str, int]]:
        """``(cidr, IFA_F_* flags)`` of the universe-scope IPv6 addresses of ``index``,
        temporary and tentative ones included (for :mod:`slaac` to judge)."""
        req = ifaddrmsg()
        req["index"], req["family"] = index, socket.AF_INET6
        return [(f"{m.get('address')}/{m['prefixlen']}", m.get("flags") or m["flags"])
                for m in await self._filtered("addresses", req, RTM_GETADDR)
                if m["index"] == index and m["scope"] == 0]

    async def routes(self, index: int) -> list[RouteRec]:
        """Routes through ``index`` in every table, less those the kernel makes itself."""
        out = []
        for family in (socket.AF_INET, socket.AF_INET6):
            req = rtmsg()
            req["family"] = family
            req["attrs"] = [("RTA_OIF", index)]
            for m in await self._filtered("routes", req, RTM_GETROUTE):
                if (m.get("oif") != index or m.get("multipath") or m["proto"] == RTPROT_KERNEL
                        or (m.get("table") or m["table"]) == RT_TABLE_LOCAL
                        or m["type"] != RTN_UNICAST):
                    continue
                out.append(route_rec(m))
        return out

    async def neighbours(self, index: int) -> list[NeighRec]:
        """The permanent neighbours of ``index`` (IPv4 and IPv6; not bridge FDB entries,
        which an unspecified family would dump too)."""
        out = []
        for family in (socket.AF_INET, socket.AF_INET6):
            req = ndmsg()
            req["family"] = family
            req["attrs"] = [("NDA_IFINDEX", index)]
            for m in await self._filtered("neighbours", req, RTM_GETNEIGH):
                rec = neigh_rec(m) if m["ifindex"] == index else None
                if rec is not None:
                    out.append(rec)
        return out

    async def snapshot(self, link: LinkRec) -> LinkSnapshot:
        return LinkSnapshot(
            index=link.index, name=link.name, kind=link.kind, mtu=link.mtu, mac=link.mac,
            up=link.up, addresses=await self.addresses(link.index, link.name),
            routes=await self.routes(link.index),
            neighbours=await self.neighbours(link.index), gso_max_size=link.gso_max_size,
            gro_max_size=link.gro_max_size, gso_ipv4_max_size=link.gso_ipv4_max_size,
            gro_ipv4_max_size=link.gro_ipv4_max_size)

    async def uplink_indexes(self) -> set[int]:
        """Output links of the lowest-metric main-table default route of each family:
        the same rule discovery applies, through its lean route reader (the main
        table holds a connected route per interface, too many to decode slowly)."""
        sock = await nsfs.netlink_socket(self.fd)
        reader = rtnl.Reader(sock=sock)
        try:
            return default_route_oifs(await anyio.to_thread.run_sync(reader.routes))
        except OSError as exc:
            raise KernelError("routes", exc.errno or 0, str(exc)) from None
        finally:
            reader.close()

    async def rules(self) -> list[RuleConfig]:
        out = []
        for m in await self._dump("rules", self.ipr.rule("dump")):
            src, dst = m.get("src"), m.get("dst")
            out.append(RuleConfig(
                priority=m.get("priority") or 0,
                source=f"{src}/{m['src_len']}" if src else "",
                destination=f"{dst}/{m['dst_len']}" if dst else "",
                table=m.get("table") or m["table"]))
        return out

    async def lookup_rules(self) -> list[tuple[RuleRec, bool]]:
        """IPv4 and IPv6 lookup rules, each with whether priority, prefixes and table
        are all it matches on (see :func:`nlrecs.rule_rec`)."""
        out = []
        for m in await self._dump("rules", self.ipr.rule("dump")):
            rec = rule_rec(m)
            if rec is not None:
                out.append(rec)
        return out

    # ---- changing ------------------------------------------------------------------------

    async def move(self, index: int, dst_fd: int, *, name: str, mtu: int = 0,
                   mac: str = "", up: bool = False) -> None:
        """Into netns ``dst_fd``, renamed, with MTU and MAC, then down or up: one
        RTM_NEWLINK (the kernel moves first and applies the rest in the new netns)."""
        kw: dict[str, Any] = {"index": index, "net_ns_fd": dst_fd, "ifname": name,
                              "state": "up" if up else "down"}
        if mtu:
            kw["mtu"] = mtu
        if mac:
            kw["address"] = mac
        await self._do("move", self._in_turn(self.ipr.link("set", **kw)))

    async def _in_turn(self, call: Awaitable[T]) -> T:
        """On this socket's loop: one move at a time, each reply read before the
        next is sent (sent together, every one would wait for the last)."""
        if self._moving is None:
            self._moving = asyncio.Lock()
        async with self._moving:
            return await call

    async def set_link(self, step: str, index: int, **kw: Any) -> None:
        await self._do(step, self.ipr.link("set", index=index, **kw))

    async def add_link(self, step: str, **kw: Any) -> None:
        await self._do(step, self.ipr.link("add", **kw))

    async def del_link(self, step: str, index: int) -> None:
        await self._do(step, self.ipr.link("del", index=index))

    async def add_address(self, step: str, index: int, rec: AddrRec) -> None:
        iface = ipaddress.ip_interface(rec.cidr)
        kw: dict[str, Any] = {"index": index, "address": str(iface.ip),
                              "prefixlen": iface.network.prefixlen}
        if rec.broadcast:
            kw["broadcast"] = rec.broadcast
        if rec.label:
            kw["label"] = rec.label
        if rec.flags:
            kw["flags"] = rec.flags
        if rec.scope:
            kw["scope"] = rec.scope
        if rec.valid != FOREVER or rec.preferred != FOREVER:
            kw["valid_lft"] = rec.valid
            kw["preferred_lft"] = rec.preferred
        await self._do(step, self.ipr.addr("add", **kw))

    async def add_route(self, step: str, index: int, rec: RouteRec, *,
                        exist_ok: bool = False) -> None:
        try:
            await self._do(step, self.ipr.route("add", **route_kwargs(index, rec)))
        except KernelError as exc:
            if not (exist_ok and exc.code == errno.EEXIST):
                raise

    async def add_rule(self, step: str, rule: RuleConfig) -> None:
        await self._do(step, self.ipr.rule("add", **rule_kwargs(rule)))

    async def del_rule(self, rule: RuleConfig) -> bool:
        """Remove ``rule``; False when it was not there."""
        try:
            await self._do("rule", self.ipr.rule("del", **rule_kwargs(rule)))
        except KernelError as exc:
            if exc.code in (errno.ENOENT, errno.ESRCH):
                return False
            raise
        return True

    async def add_host_rule(self, step: str, rule: RuleRec) -> None:
        await self._do(step, self.ipr.rule("add", **host_rule_kwargs(rule)))

    async def del_host_rule(self, rule: RuleRec) -> bool:
        """Remove ``rule``; False when it was not there."""
        try:
            await self._do("rule", self.ipr.rule("del", **host_rule_kwargs(rule)))
        except KernelError as exc:
            if exc.code in (errno.ENOENT, errno.ESRCH):
                return False
            raise
        return True

    async def add_neighbour(self, step: str, index: int, dst: str, lladdr: str, *,
                            exist_ok: bool = False, replace: bool = False) -> None:
        """A permanent neighbour; ``replace`` makes an entry already there (a learnt
        one) permanent with ``lladdr``, ``exist_ok`` leaves it as it is."""
        ip = ipaddress.ip_address(dst)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        try:
            await self._do(step, self.ipr.neigh("replace" if replace else "add", dst=str(ip),
                                                lladdr=lladdr, ifindex=index, family=family,
                                                state=NUD_PERMANENT))
        except KernelError as exc:
            if not (exist_ok and exc.code == errno.EEXIST):
                raise
