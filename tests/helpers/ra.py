"""A router that advertises one IPv6 prefix: the real thing a SLAAC interface needs,
sent from a raw ICMPv6 socket (RFC 4861 router advertisements with a prefix
information option), so tests need no radvd.

The socket lives in the router's netns and is bound to its interface; it repeats
the advertisement every ``interval`` (unsolicited), so an interface that comes up
at any time and solicits gets one within that interval."""

from __future__ import annotations

import ipaddress
import socket
import struct
import subprocess
import threading

from services.kernel.netns import socket_in

ND_ROUTER_ADVERT = 134
ND_OPT_PREFIX_INFORMATION = 3
PREFIX_ONLINK, PREFIX_AUTONOMOUS = 0x80, 0x40
IPV6_MULTICAST_HOPS, IPV6_MULTICAST_IF = 18, 17
ALL_NODES = "ff02::1"


def advertisement(prefix: str, valid: int = 3600, preferred: int = 1800) -> bytes:
    """An RA for ``prefix`` (a /64): on-link and autonomous, no default router (a
    router lifetime of 0 gives no default route: only the address is wanted). The
    kernel fills in the ICMPv6 checksum of a raw ICMPv6 socket."""
    net = ipaddress.IPv6Network(prefix)
    header = struct.pack("!BBHBBHII", ND_ROUTER_ADVERT, 0, 0, 64, 0, 0, 0, 0)
    option = struct.pack("!BBBBIII", ND_OPT_PREFIX_INFORMATION, 4, net.prefixlen,
                         PREFIX_ONLINK | PREFIX_AUTONOMOUS, valid, preferred, 0)
    return header + option + net.network_address.packed


class Router:
    """Advertise ``prefix`` on ``ifname`` of netns ``netns`` (from link-local ``source``,
    added without DAD so the first advertisement goes out at once)."""

    def __init__(self, netns: str, ifname: str, prefix: str, *, source: str = "fe80::1",
                 interval: float = 0.1) -> None:
        subprocess.run(["ip", "-n", netns, "addr", "add", f"{source}/64", "dev", ifname,
                        "nodad"], check=True, capture_output=True)
        self.sent = 0
        self._packet = advertisement(prefix)
        self._interval = interval
        self._ifindex = int(subprocess.run(
            ["ip", "netns", "exec", netns, "cat", f"/sys/class/net/{ifname}/ifindex"],
            check=True, capture_output=True, text=True).stdout)
        self._sock = socket_in(netns, socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        self._sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_HOPS, 255)  # RFC 4861
        self._sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_IF, self._ifindex)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ra", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sock.sendto(self._packet, (ALL_NODES, 0, 0, self._ifindex))
                self.sent += 1
            except OSError:  # the interface went away: the test is ending
                pass
            self._stop.wait(self._interval)

    def __enter__(self) -> Router:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()
