"""A small DHCPv4 client for ``interface.dhcp: true``: one lease, at attach, in the pod.

DRANET (Go) asks for a lease with a 5 s bound and configures the address and the
classless static routes (option 121) it got. knd asks from inside the pod netns,
on the interface just moved there (so the server sees the MAC the pod will use),
within that same 5 s or the runtime's NRI deadline, whichever ends first; it also
uses the router option (3) when there is no option 121 (RFC 3442 says to ignore 3
when 121 is present) and the interface MTU option (26) when the claim sets none.
No renewal and no DHCPRELEASE (DRANET does neither): the address is configured
without a lifetime, like a static one, so the server's lease should outlive the pod
(a long lease or a reservation).

Why not a library: pyroute2 (already a dependency) has ``AsyncDHCPClient``, but it
is a long-running asyncio daemon (its own tasks, signal handlers, a lease file in
the working directory, 4 s before its first retransmission), its raw socket is
made by interface name in the caller's netns from a constructor that needs the
running loop (so it cannot be made in the pod netns on a thread), and its codec has
no option 121. scapy is large and would also need a raw socket; the PyPI clients
(dhcppython, dhcplib, ...) are unmaintained and blocking; Debian's clients
(udhcpc, dhcpcd, dhclient) configure the interface themselves through scripts,
outside the attach's rollback. DHCP over a UDP socket is short: the socket is made
inside the pod netns on a thread (it stays there), bound to port 68 on the one
interface (SO_BINDTODEVICE: several pods, or several interfaces of one pod, ask at
once), sends broadcasts (SO_BROADCAST) with the BOOTP broadcast flag set so the
answer comes back as a broadcast the interface accepts before it has an address,
and is read on the event loop (``anyio.wait_readable``), so a cancelled attach
stops it at once.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import struct
import time
from dataclasses import dataclass, field

import anyio

from services.plumber import nsfs
from services.plumber.devconf import DevconfError
from services.plumber.model import AddrRec, RouteRec
from services.plumber.netops import LinkRec, Rtnl

log = logging.getLogger("knd.plumber.dhcp")

TIMEOUT = 5.0
"""DRANET's bound on getting a lease."""
MARGIN = 0.2
"""Seconds of the runtime's deadline an exchange leaves for the rollback and the reply."""
FIRST_RETRY, MAX_RETRY = 0.25, 2.0
"""Retransmission: RFC 2131's 4 s would leave one try in the time a runtime gives an
attach; a freshly moved physical NIC may also drop the first packets until its
carrier is up."""
SERVER_PORT, CLIENT_PORT = 67, 68
RTPROT_DHCP = 16
RT_SCOPE_LINK = 253

BOOTREQUEST, BOOTREPLY = 1, 2
FLAG_BROADCAST = 0x8000
MAGIC = b"\x63\x82\x53\x63"
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s4s")
DISCOVER, OFFER, REQUEST, ACK, NAK = 1, 2, 3, 5, 6
NAMES = {DISCOVER: "DHCPDISCOVER", OFFER: "DHCPOFFER", REQUEST: "DHCPREQUEST",
         ACK: "DHCPACK", NAK: "DHCPNAK"}
OPT_PAD, OPT_MASK, OPT_ROUTER, OPT_MTU, OPT_REQUESTED_IP = 0, 1, 3, 26, 50
OPT_LEASE_TIME, OPT_MSG_TYPE, OPT_SERVER_ID, OPT_PARAMS, OPT_MESSAGE = 51, 53, 54, 55, 56
OPT_MAX_SIZE, OPT_CLIENT_ID, OPT_CLASSLESS, OPT_END = 57, 61, 121, 255
WANTED = bytes([OPT_MASK, OPT_ROUTER, OPT_MTU, OPT_LEASE_TIME, OPT_SERVER_ID, OPT_CLASSLESS])
MIN_PACKET = 300
"""BOOTP's minimum message size; some servers drop anything shorter."""


class DhcpError(DevconfError):
    """No usable lease; ``str()`` starts with ``interface.dhcp``."""

    def __init__(self, message: str) -> None:
        super().__init__("interface.dhcp", message)


@dataclass
class Lease:
    address: ipaddress.IPv4Interface
    server: str = ""
    routers: list[str] = field(default_factory=list)
    classless: list[tuple[ipaddress.IPv4Network, str]] = field(default_factory=list)
    """Option 121: (destination, gateway), gateway ``0.0.0.0`` = on the link."""
    mtu: int = 0
    lease_time: int = 0

    def address_rec(self) -> AddrRec:
        net = self.address.network
        brd = str(net.broadcast_address) if net.prefixlen < 31 else ""
        return AddrRec(cidr=str(self.address), broadcast=brd)

    def routes(self) -> list[RouteRec]:
        """Option 121 when there is one (RFC 3442), else a default route via the first
        router; on-link gateways (0.0.0.0) become link-scope routes."""
        def rec(dst: ipaddress.IPv4Network, gw: str) -> RouteRec:
            direct = gw == "0.0.0.0"
            return RouteRec(family=socket.AF_INET, dst=str(dst), gateway="" if direct else gw,
                            scope=RT_SCOPE_LINK if direct else 0, proto=RTPROT_DHCP)
        if self.classless:
            return [rec(dst, gw) for dst, gw in self.classless]
        if self.routers:
            return [rec(ipaddress.IPv4Network("0.0.0.0/0"), self.routers[0])]
        return []


# ---- messages --------------------------------------------------------------------------


def encode(kind: int, xid: int, mac: bytes, secs: int = 0,
           extra: dict[int, bytes] | None = None) -> bytes:
    head = HEADER.pack(BOOTREQUEST, 1, 6, 0, xid, min(secs, 0xFFFF), FLAG_BROADCAST,
                       bytes(4), bytes(4), bytes(4), bytes(4), mac.ljust(16, b"\0"),
                       bytes(64), bytes(128), MAGIC)
    opts = {OPT_MSG_TYPE: bytes([kind]), OPT_CLIENT_ID: b"\x01" + mac,
            OPT_PARAMS: WANTED, OPT_MAX_SIZE: struct.pack("!H", 1500), **(extra or {})}
    body = b"".join(bytes([k, len(v)]) + v for k, v in opts.items()) + bytes([OPT_END])
    return (head + body).ljust(MIN_PACKET, b"\0")


@dataclass
class Reply:
    kind: int
    xid: int
    chaddr: bytes
    yiaddr: str
    options: dict[int, bytes]


def decode(data: bytes) -> Reply | None:
    """A BOOTREPLY with a DHCP message type, or None for anything else."""
    if len(data) < HEADER.size:
        return None
    (op, _, hlen, _, xid, _, _, _, yiaddr, _, _, chaddr, _, _,
     magic) = HEADER.unpack_from(data)
    if op != BOOTREPLY or magic != MAGIC or hlen > 16:
        return None
    options: dict[int, bytes] = {}
    i = HEADER.size
    while i < len(data):
        code = data[i]
        if code == OPT_END:
            break
        if code == OPT_PAD:
            i += 1
            continue
        if i + 1 >= len(data) or i + 2 + data[i + 1] > len(data):
            return None  # truncated
        size = data[i + 1]
        # RFC 3396: a long option comes split in several, concatenated in order
        options[code] = options.get(code, b"") + data[i + 2:i + 2 + size]
        i += 2 + size
    kind = options.get(OPT_MSG_TYPE, b"")
    if len(kind) != 1:
        return None
    return Reply(kind[0], xid, chaddr[:hlen], socket.inet_ntoa(yiaddr), options)


def _ip4(raw: bytes) -> str:
    return socket.inet_ntoa(raw)


def _classless(raw: bytes) -> list[tuple[ipaddress.IPv4Network, str]]:
    routes, i = [], 0
    while i < len(raw):
        width = raw[i]
        octets = (width + 7) // 8
        if width > 32 or i + 1 + octets + 4 > len(raw):
            raise DhcpError("the server's classless static routes (option 121) are "
                            "malformed")
        dst = raw[i + 1:i + 1 + octets].ljust(4, b"\0")
        gw = raw[i + 1 + octets:i + 5 + octets]
        routes.append((ipaddress.IPv4Network((_ip4(dst), width), strict=False), _ip4(gw)))
        i += 5 + octets
    return routes


def lease_of(ack: Reply) -> Lease:
    """What the DHCPACK grants; a lease knd cannot configure is an error, not guessed at."""
    ip = ipaddress.IPv4Address(ack.yiaddr)
    if ip.is_unspecified or ip.is_multicast or ip.is_loopback or ip.is_reserved:
        raise DhcpError(f"the server's DHCPACK offers no usable address ({ip})")
    opts = ack.options
    mask = opts.get(OPT_MASK)
    try:
        # RFC 2131 leaves the mask to the client when there is none: the address class's
        if mask is not None and len(mask) == 4:
            address = ipaddress.IPv4Interface(f"{ip}/{_ip4(mask)}")
        else:
            first = int(ip) >> 24
            address = ipaddress.IPv4Interface((ip, 8 if first < 128 else
                                               16 if first < 192 else 24))
    except ValueError:
        raise DhcpError(f"the server's subnet mask {_ip4(mask or bytes(4))} is not a "
                        "valid prefix") from None
    raw_routers = opts.get(OPT_ROUTER, b"")
    routers = [_ip4(raw_routers[j:j + 4]) for j in range(0, len(raw_routers) - 3, 4)]
    mtu = struct.unpack("!H", opts[OPT_MTU])[0] if len(opts.get(OPT_MTU, b"")) == 2 else 0
    lease = Lease(address=address, routers=[r for r in routers if r != "0.0.0.0"],
                  classless=_classless(opts.get(OPT_CLASSLESS, b"")),
                  mtu=mtu if mtu >= 68 else 0,
                  server=_ip4(opts[OPT_SERVER_ID]) if len(opts.get(OPT_SERVER_ID, b"")) == 4
                  else "",
                  lease_time=struct.unpack("!I", opts[OPT_LEASE_TIME])[0]
                  if len(opts.get(OPT_LEASE_TIME, b"")) == 4 else 0)
    return lease


# ---- the exchange ----------------------------------------------------------------------


def _open(ifname: str) -> socket.socket:
    """Made on a thread inside the pod netns (see the module doc)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK |
                         socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", CLIENT_PORT))
    except BaseException:
        sock.close()
        raise
    return sock


class _Client:
    def __init__(self, sock: socket.socket, ifname: str, mac: bytes) -> None:
        self.sock, self.ifname, self.mac = sock, ifname, mac
        self.started = time.monotonic()
        self.waiting = f"no {NAMES[OFFER]} to {NAMES[DISCOVER]}"
        self.sent = 0

    def _send(self, packet: bytes) -> None:
        try:
            self.sock.sendto(packet, ("255.255.255.255", SERVER_PORT))
            self.sent += 1
        except OSError as exc:
            # the carrier of a freshly moved NIC may not be up yet: the next try may go
            if exc.errno not in (errno.ENETDOWN, errno.ENOBUFS, errno.EAGAIN,
                                 errno.ENETUNREACH, errno.ENXIO):
                raise

    async def ask(self, kind: int, xid: int, extra: dict[int, bytes],
                  wanted: tuple[int, ...], server: str = "") -> Reply:
        """Send ``kind`` until a reply of a ``wanted`` type for ``xid`` comes back."""
        delay = FIRST_RETRY
        while True:
            secs = int(time.monotonic() - self.started)
            self._send(encode(kind, xid, self.mac, secs, extra))
            with anyio.move_on_after(delay):
                while True:
                    await anyio.wait_readable(self.sock)
                    try:
                        data = self.sock.recv(4096)
                    except BlockingIOError:
                        continue
                    got = decode(data)
                    if (got is None or got.xid != xid or got.chaddr != self.mac
                            or got.kind not in wanted):
                        continue  # another client's, or a stray answer
                    sid = got.options.get(OPT_SERVER_ID, b"")
                    if server and len(sid) == 4 and _ip4(sid) != server:
                        continue  # another server's answer to our broadcast REQUEST
                    return got
            delay = min(delay * 2, MAX_RETRY)

    async def lease(self) -> Lease:
        while True:
            xid = int.from_bytes(os.urandom(4), "big")
            self.waiting = f"no {NAMES[OFFER]} to {NAMES[DISCOVER]}"
            offer = await self.ask(DISCOVER, xid, {}, (OFFER,))
            sid = offer.options.get(OPT_SERVER_ID, b"")
            server = _ip4(sid) if len(sid) == 4 else ""
            self.waiting = f"no {NAMES[ACK]} from {server or 'the server'} after its offer " \
                           f"of {offer.yiaddr}"
            extra = {OPT_REQUESTED_IP: socket.inet_aton(offer.yiaddr)}
            if server:
                extra[OPT_SERVER_ID] = sid
            ack = await self.ask(REQUEST, xid, extra, (ACK, NAK), server)
            if ack.kind == ACK:
                return lease_of(ack)
            why = ack.options.get(OPT_MESSAGE, b"").decode("utf-8", "replace")
            log.warning("%s: %s refused %s (%s); asking again", self.ifname,
                        server or "the server", offer.yiaddr, why or NAMES[NAK])


async def acquire(fd: int, ifname: str, mac: str, within: float, why: str = "") -> Lease:
    """A lease for ``ifname`` in the netns ``fd`` within ``within`` seconds, or
    DhcpError saying what was missing. ``why`` names what bounds the time."""
    if within <= 0:
        raise DhcpError(f"no time left to ask for a lease on {ifname}{why}")
    try:
        raw_mac = bytes.fromhex(mac.replace(":", ""))
    except ValueError:
        raw_mac = b""
    if len(raw_mac) != 6:
        raise DhcpError(f"{ifname} has no Ethernet address to ask a lease for ({mac or '-'})")
    try:
        sock = await nsfs.in_netns(fd, _open, ifname)
    except OSError as exc:
        raise DhcpError(f"cannot listen for DHCP on {ifname}: {exc.strerror or exc}") from None
    client = _Client(sock, ifname, raw_mac)
    try:
        with anyio.fail_after(within):
            lease = await client.lease()
    except TimeoutError:
        raise DhcpError(f"no lease on {ifname} within {within:.1f} s{why}: {client.waiting} "
                        f"({client.sent} sent)") from None
    finally:
        sock.close()
    log.info("%s: leased %s from %s for %d s in %.0f ms", ifname, lease.address,
             lease.server or "-", lease.lease_time, (time.monotonic() - client.started) * 1e3)
    return lease


async def configure(pod: Rtnl, fd: int, link: LinkRec, deadline: float, *, mtu: int,
                    configured: list[RouteRec]) -> tuple[list, list]:
    """Lease for the pod's interface ``link``, as the attach's (step, record) pairs: its
    address, and its routes less those the claim sets itself (``configured``); its MTU
    is set here unless the claim sets one (``mtu``). Bounded by :data:`TIMEOUT` and by
    the runtime's ``deadline`` (epoch seconds, 0: none)."""
    budget, why = TIMEOUT, ""
    if deadline > 0:
        left = deadline - time.time() - MARGIN
        if left < budget:
            budget, why = left, " (the runtime's deadline for the pod's start)"
    lease = await acquire(fd, link.name, link.mac, budget, why)
    if lease.mtu and not mtu and lease.mtu != link.mtu:
        await pod.set_link(f"config.interface.dhcp: MTU {lease.mtu} of the lease", link.index,
                           mtu=lease.mtu)
    own = {(r.dst, r.table) for r in configured}
    routes = [(f"config.interface.dhcp: route {r.dst} of the lease", r)
              for r in lease.routes() if (r.dst, r.table) not in own]
    addr = lease.address_rec()
    return [(f"config.interface.dhcp: address {addr.cidr} of the lease", addr)], routes
