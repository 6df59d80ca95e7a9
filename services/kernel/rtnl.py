"""A lean rtnetlink reader for the three dumps discovery repeats on every rescan.

pyroute2 decodes every attribute of every message (statistics, per-family
configuration...), about 250 us a link: a 1000-interface node would cost a
quarter of a second per rescan. Discovery needs nine attributes, so it asks
the kernel to skip statistics and decodes only those, about 100x faster.
The plumber uses pyroute2 for everything that changes the kernel; a socket inside a
named network namespace is made on a thread (services.kernel.netns), never by
pyroute2's fork.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from services.kernel.links import LinkInfo
from services.kernel.netns import socket_in

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26

RTM_NEWQDISC, RTM_DELQDISC, RTM_NEWTFILTER, RTM_DELTFILTER = 36, 37, 44, 45
TC_EVENTS = (RTM_NEWQDISC, RTM_DELQDISC, RTM_NEWTFILTER, RTM_DELTFILTER)

RTMGRP_LINK, RTMGRP_TC, RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE = 0x1, 0x8, 0x10, 0x40
RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE = 0x100, 0x400
EVENT_GROUPS = (RTMGRP_LINK | RTMGRP_TC | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE
                | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE)
"""Links, addresses, routes, and tc qdiscs and filters (the ``tcFilterNames`` attribute;
TCX attachments send no netlink event, only the periodic resync sees them)."""

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_EXT_MASK = 16, 18, 20, 29
IFLA_INFO_KIND = 1
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_OIF, RTA_PRIORITY, RTA_MULTIPATH, RTA_TABLE = 4, 6, 9, 15
RT_TABLE_MAIN, RTN_UNICAST, RT_SCOPE_UNIVERSE = 254, 1, 0

_HDR = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTA = struct.Struct("=HH")
_TCMSG_HEAD = struct.Struct("=Bxxxi")
_NEXTHOP = struct.Struct("=HBBi")

OPERSTATES = ("unknown", "notpresent", "down", "lowerlayerdown", "testing", "dormant", "up")
ENCAPSULATIONS = {1: "ether", 32: "infiniband", 772: "loopback", 768: "ipip", 769: "tunnel6",
                  776: "sit", 778: "gre", 823: "ip6gre", 65534: "none", 65535: "void"}


@dataclass(frozen=True)
class Route:
    family: int
    dst_len: int
    table: int
    type: int
    priority: int
    oifs: tuple[int, ...]
    """Output interfaces: one, or each next hop of an ECMP route."""


def open_socket(netns: str | None = None, groups: int = 0) -> socket.socket:
    """A NETLINK_ROUTE socket, inside the named netns when one is given."""
    if netns:
        sock = socket_in(netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    else:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        # bursts of hundreds of links must not overflow the event queue
        sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (root)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((0, groups))
    return sock


def _attrs(data: bytes, off: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, start, end) of each rtattr between off and end."""
    while off + 4 <= end:
        length, kind = _RTA.unpack_from(data, off)
        if length < 4:
            return
        yield kind & 0x3FFF, off + 4, off + length
        off += (length + 3) & ~3


def _cstr(data: bytes, a: int, b: int) -> str:
    return data[a:b].split(b"\0", 1)[0].decode(errors="replace")


def _messages(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(type, seq, payload start, payload end) of each netlink message in a datagram."""
    off = 0
    while off + 16 <= len(data):
        length, mtype, _flags, seq, _pid = _HDR.unpack_from(data, off)
        if length < 16:
            return
        yield mtype, seq, off + 16, off + length
        off += (length + 3) & ~3


def _dump(
    sock: socket.socket, mtype: int, body: bytes, seq: int
) -> Iterator[tuple[bytes, int, int, int]]:
    sock.send(_HDR.pack(16 + len(body), mtype, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
    while True:
        data = sock.recv(1 << 20)
        for t, s, a, b in _messages(data):
            if s != seq:
                continue
            if t == NLMSG_DONE:
                return
            if t == NLMSG_ERROR:
                code = -struct.unpack_from("=i", data, a)[0]
                if code:
                    raise OSError(code, os.strerror(code))
                continue
            yield data, t, a, b


class Reader:
    """Dumps links, addresses and routes of one netns over one socket (not thread-safe)."""

    def __init__(self, netns: str | None = None, sock: socket.socket | None = None) -> None:
        """Reads the named netns (default: our own), or through ``sock``, a netlink
        socket already made in the netns wanted (the reader then owns it)."""
        self.sock = sock if sock is not None else open_socket(netns)
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def links(self) -> list[LinkInfo]:
        """Every link with its global addresses; retried when a dump is interrupted."""
        for _ in range(5):
            try:
                return self._links()
            except OSError as exc:
                if exc.errno != errno.EINTR:  # NLM_F_DUMP_INTR surfaces as EINTR
                    raise
        return self._links()

    def _links(self) -> list[LinkInfo]:
        addrs = self.addresses()
        body = _IFINFO.pack(0, 0, 0, 0, 0) + _RTA.pack(8, IFLA_EXT_MASK) + struct.pack(
            "=I", RTEXT_FILTER_SKIP_STATS)
        out = []
        for data, t, a, b in _dump(self.sock, RTM_GETLINK, body, self._next()):
            if t == RTM_NEWLINK:
                out.append(_link(data, a, b, addrs))
        return out

    def addresses(self) -> dict[int, tuple[list[str], list[str]]]:
        """Global (universe-scope) addresses by ifindex, as CIDR strings, kernel order."""
        out: dict[int, tuple[list[str], list[str]]] = {}
        for data, t, a, b in _dump(self.sock, RTM_GETADDR, _IFADDR.pack(0, 0, 0, 0, 0),
                                   self._next()):
            if t != RTM_NEWADDR:
                continue
            family, plen, _flags, scope, index = _IFADDR.unpack_from(data, a)
            if scope != RT_SCOPE_UNIVERSE:
                continue
            found: dict[int, bytes] = {}
            for kind, s, e in _attrs(data, a + _IFADDR.size, b):
                if kind in (IFA_ADDRESS, IFA_LOCAL):
                    found[kind] = data[s:e]
            raw = found.get(IFA_LOCAL) or found.get(IFA_ADDRESS)
            if raw is None:
                continue
            v4, v6 = out.setdefault(index, ([], []))
            if family == socket.AF_INET:
                v4.append(f"{ipaddress.IPv4Address(raw)}/{plen}")
            elif family == socket.AF_INET6:
                v6.append(f"{ipaddress.IPv6Address(raw)}/{plen}")
        return out

    def routes(self) -> list[Route]:
        out = []
        for family in (socket.AF_INET, socket.AF_INET6):
            body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
            for data, t, a, b in _dump(self.sock, RTM_GETROUTE, body, self._next()):
                if t == RTM_NEWROUTE:
                    out.append(_route(data, a, b))
        return out


def _link(data: bytes, a: int, b: int, addrs: dict[int, tuple[list[str], list[str]]]) -> LinkInfo:
    _family, iftype, index, _flags, _change = _IFINFO.unpack_from(data, a)
    name = mac = alias = kind = ""
    mtu = 0
    state = "unknown"
    master = parent = None
    for t, s, e in _attrs(data, a + _IFINFO.size, b):
        if t == IFLA_IFNAME:
            name = _cstr(data, s, e)
        elif t == IFLA_ADDRESS:
            mac = ":".join(f"{x:02x}" for x in data[s:e])
        elif t == IFLA_MTU:
            mtu = struct.unpack_from("=I", data, s)[0]
        elif t == IFLA_OPERSTATE:
            code = data[s]
            state = OPERSTATES[code] if code < len(OPERSTATES) else str(code)
        elif t == IFLA_IFALIAS:
            alias = _cstr(data, s, e)
        elif t == IFLA_MASTER:
            master = struct.unpack_from("=I", data, s)[0] or None
        elif t == IFLA_LINK:
            link = struct.unpack_from("=i", data, s)[0]
            parent = link if link and link != index else None
        elif t == IFLA_LINKINFO:
            for nt, ns, ne in _attrs(data, s, e):
                if nt == IFLA_INFO_KIND:
                    kind = _cstr(data, ns, ne)
    v4, v6 = addrs.get(index, ((), ()))
    return LinkInfo(index=index, name=name, kind=kind, mac=mac, mtu=mtu, state=state,
                    alias=alias, encapsulation=ENCAPSULATIONS.get(iftype, str(iftype)),
                    ipv4=tuple(v4), ipv6=tuple(v6), master=master, parent=parent)


def _route(data: bytes, a: int, b: int) -> Route:
    family, dst_len, _src, _tos, table, _proto, _scope, rtype, _flags = _RTMSG.unpack_from(data, a)
    priority = 0
    oifs: list[int] = []
    for t, s, e in _attrs(data, a + _RTMSG.size, b):
        if t == RTA_TABLE:
            table = struct.unpack_from("=I", data, s)[0]
        elif t == RTA_PRIORITY:
            priority = struct.unpack_from("=I", data, s)[0]
        elif t == RTA_OIF:
            oifs.append(struct.unpack_from("=i", data, s)[0])
        elif t == RTA_MULTIPATH:
            off = s
            while off + _NEXTHOP.size <= e:
                length, _f, _hops, ifindex = _NEXTHOP.unpack_from(data, off)
                if length < _NEXTHOP.size:
                    break
                oifs.append(ifindex)
                off += (length + 3) & ~3
    return Route(family=family, dst_len=dst_len, table=table, type=rtype,
                 priority=priority, oifs=tuple(oifs))


@dataclass
class Events:
    """What one drain of the event socket saw."""

    count: int = 0
    """Link, address, route and tc messages."""
    overflow: bool = False
    """Events were lost (ENOBUFS): only a rescan can tell what changed."""
    links: set[int] = field(default_factory=set)
    """The interfaces those messages are about (a route's output interfaces)."""
    unplaced: bool = False
    """Some message is about no one interface (a route without an output one)."""


def drain_events(sock: socket.socket) -> Events:
    """Read every pending event datagram without blocking."""
    ev = Events()
    while True:
        try:
            data = sock.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return ev
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                ev.overflow = True
                continue
            raise
        for t, _seq, a, b in _messages(data):
            if t in (RTM_NEWLINK, RTM_DELLINK) and b - a >= _IFINFO.size:
                ev.links.add(_IFINFO.unpack_from(data, a)[2])
            elif t in (RTM_NEWADDR, RTM_DELADDR) and b - a >= _IFADDR.size:
                ev.links.add(_IFADDR.unpack_from(data, a)[4])
            elif t in TC_EVENTS and b - a >= _TCMSG_HEAD.size:
                ev.links.add(_TCMSG_HEAD.unpack_from(data, a)[1])
            elif t in (RTM_NEWROUTE, RTM_DELROUTE) and b - a >= _RTMSG.size:
                oifs = _route(data, a, b).oifs
                ev.links.update(oifs)
                ev.unplaced = ev.unplaced or not oifs
            else:
                continue
            ev.count += 1
