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
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from pyroute2 import AsyncIPRoute
from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_GETADDR, RTM_GETROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from schemas.netconfig import RuleConfig
from services.discovery import rtnl
from services.discovery.uplinks import default_route_oifs
from services.plumber import nsfs
from services.plumber.model import FOREVER, AddrRec, LinkSnapshot, RouteRec

IFF_UP = 0x1
RTPROT_KERNEL = 2
RT_TABLE_MAIN, RT_TABLE_LOCAL = 254, 255
RTN_UNICAST = 1
RTNH_F_ONLINK = 0x4
RT_SCOPE_LINK = 253
NUD_PERMANENT = 0x80
IFA_F_TEMPORARY = 0x01
KEPT_IFA_FLAGS = 0x02 | 0x10 | 0x100 | 0x200 | 0x400
"""nodad, homeaddress, mngtmpaddr, noprefixroute, mcautojoin: what ``ip addr add`` can set."""

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
    ifinfmsg._nlmsg_base__compiled_nla = False  # type: ignore[attr-defined]


_know_ipv4_offload_sizes()


class KernelError(Exception):
    """The kernel refused one step; ``str()`` is ``"<step>: <kernel message>"``."""

    def __init__(self, step: str, code: int, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.code = code


@dataclass(frozen=True)
class LinkRec:
    index: int
    name: str
    kind: str
    mtu: int
    mac: str
    up: bool
    min_mtu: int = 0
    max_mtu: int = 0
    gso_max_size: int = 0
    gro_max_size: int = 0
    gso_ipv4_max_size: int = 0
    gro_ipv4_max_size: int = 0
    tso_max_size: int = 0
    master: int = 0
    vrf_table: int = 0
    addr_gen_mode: int | None = None
    """IPv6 address generation mode (``net.ipv6.conf.<if>.addr_gen_mode``), from the
    link message: the kernel takes RTNL to read that sysctl, not to send this."""


def _addr_gen_mode(msg: Any) -> int | None:
    spec = msg.get("af_spec")
    inet6 = spec.get_attr("AF_INET6") if spec is not None else None
    return inet6.get_attr("IFLA_INET6_ADDR_GEN_MODE") if inet6 is not None else None


def _link(msg: Any) -> LinkRec:
    return LinkRec(
        index=msg["index"], name=msg.get("ifname") or "", kind=msg.get(("linkinfo", "kind")) or "",
        mtu=msg.get("mtu") or 0, mac=msg.get("address") or "", up=bool(msg["flags"] & IFF_UP),
        min_mtu=msg.get("min_mtu") or 0, max_mtu=msg.get("max_mtu") or 0,
        gso_max_size=msg.get("gso_max_size") or 0, gro_max_size=msg.get("gro_max_size") or 0,
        gso_ipv4_max_size=msg.get("gso_ipv4_max_size") or 0,
        gro_ipv4_max_size=msg.get("gro_ipv4_max_size") or 0,
        tso_max_size=msg.get("tso_max_size") or 0, master=msg.get("master") or 0,
        vrf_table=msg.get(("linkinfo", "data", "vrf_table")) or 0,
        addr_gen_mode=_addr_gen_mode(msg))


def _addr(msg: Any, ifname: str) -> AddrRec | None:
    family, scope = msg["family"], msg["scope"]
    flags = msg.get("flags") or msg["flags"]
    if flags & IFA_F_TEMPORARY or (family == socket.AF_INET6 and scope == RT_SCOPE_LINK):
        return None  # made by the kernel again (privacy and link-local addresses)
    ip = msg.get("local") or msg.get("address")
    if not ip:
        return None
    cache = msg.get("cacheinfo") or {}
    label = msg.get("label") or ""
    return AddrRec(cidr=f"{ip}/{msg['prefixlen']}", scope=scope,
                   broadcast=msg.get("broadcast") or "",
                   label=label if label and label != ifname else "",
                   flags=flags & KEPT_IFA_FLAGS,
                   valid=cache.get("ifa_valid", FOREVER),
                   preferred=cache.get("ifa_preferred", FOREVER))


def _route(msg: Any) -> RouteRec:
    family = msg["family"]
    zero = "0.0.0.0" if family == socket.AF_INET else "::"
    return RouteRec(family=family, dst=f"{msg.get('dst') or zero}/{msg['dst_len']}",
                    gateway=msg.get("gateway") or "", prefsrc=msg.get("prefsrc") or "",
                    priority=msg.get("priority") or 0,
                    table=msg.get("table") or msg["table"], scope=msg["scope"],
                    proto=msg["proto"], type=msg["type"],
                    onlink=bool(msg["flags"] & RTNH_F_ONLINK))


def route_kwargs(index: int, r: RouteRec) -> dict[str, Any]:
    net = ipaddress.ip_network(r.dst, strict=False)
    kw: dict[str, Any] = {"family": r.family, "dst_len": net.prefixlen, "oif": index,
                          "table": r.table, "scope": r.scope, "proto": r.proto, "type": r.type}
    if net.prefixlen:
        kw["dst"] = str(net.network_address)
    for key, value in (("gateway", r.gateway), ("prefsrc", r.prefsrc),
                       ("priority", r.priority)):
        if value:
            kw[key] = value
    if r.onlink:
        kw["flags"] = RTNH_F_ONLINK
    return kw


def _rule_kwargs(rule: RuleConfig) -> dict[str, Any]:
    family = socket.AF_INET
    kw: dict[str, Any] = {"table": rule.table or RT_TABLE_MAIN}
    for side, value in (("src", rule.source), ("dst", rule.destination)):
        if value:
            net = ipaddress.ip_network(value, strict=False)
            family = socket.AF_INET6 if net.version == 6 else socket.AF_INET
            kw[side] = str(net.network_address)
            kw[f"{side}_len"] = net.prefixlen
    kw["family"] = family
    if rule.priority:
        kw["priority"] = rule.priority
    return kw


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
        if last is not None:
            self.loop.call_soon_threadsafe(last)
        self.loop.call_soon_threadsafe(self.loop.stop)
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
        loop = _Loop()
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

    async def __aexit__(self, *_: object) -> None:
        self.close()

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
        return [_link(m) for m in await self._dump("links", self.ipr.link("dump"))]

    async def link(self, *, index: int = 0, name: str = "") -> LinkRec | None:
        """One link by index or name; None when there is no such link."""
        kw: dict[str, Any] = {"index": index} if index else {"ifname": name}
        try:
            msgs = await self._loop.run(self.ipr.link("get", **kw))
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT, errno.EINVAL):
                return None
            raise KernelError("link", exc.code, str(exc)) from None
        return _link(msgs[0]) if msgs else None

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
            rec = _addr(m, ifname)
            if rec is not None and m["index"] == index:
                out.append(rec)
        return out

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
                out.append(_route(m))
        return out

    async def snapshot(self, link: LinkRec) -> LinkSnapshot:
        return LinkSnapshot(
            index=link.index, name=link.name, kind=link.kind, mtu=link.mtu, mac=link.mac,
            up=link.up, addresses=await self.addresses(link.index, link.name),
            routes=await self.routes(link.index), gso_max_size=link.gso_max_size,
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
        await self._do(step, self.ipr.rule("add", **_rule_kwargs(rule)))

    async def del_rule(self, rule: RuleConfig) -> bool:
        """Remove ``rule``; False when it was not there."""
        try:
            await self._do("rule", self.ipr.rule("del", **_rule_kwargs(rule)))
        except KernelError as exc:
            if exc.code in (errno.ENOENT, errno.ESRCH):
                return False
            raise
        return True

    async def add_neighbour(self, step: str, index: int, dst: str, lladdr: str) -> None:
        ip = ipaddress.ip_address(dst)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        await self._do(step, self.ipr.neigh("add", dst=str(ip), lladdr=lladdr, ifindex=index,
                                            family=family, state=NUD_PERMANENT))
