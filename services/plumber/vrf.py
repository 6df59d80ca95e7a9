"""VRF in the pod: ``interface.vrf`` as DRANET does it.

The pod's VRF device (``name``, ``table``) is created when missing, set up, and
the interface enslaved to it; then TCP/UDP sockets that are not bound to the
VRF may still accept on it (``net.ipv4.{tcp,udp}_l3mdev_accept=1``, netns-wide).
Every route of the interface goes into the VRF's table, and a VRF takes no
policy rules (the schema refuses them). The two requests are built here, byte
for byte what iproute2 sends for ``ip link add <name> type vrf table <t>`` and ``ip
link set dev <if> master <name>`` (tests compare them with captured requests).

A kernel without VRF support (no CONFIG_NET_VRF) refuses the creation with
EOPNOTSUPP; attach then rolls back like for any other refused step.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

import anyio

from services.plumber import devconf, nsfs
from services.plumber.netops import KernelError, LinkRec, Rtnl

L3MDEV_SYSCTLS = ("net/ipv4/tcp_l3mdev_accept", "net/ipv4/udp_l3mdev_accept")
RTM_NEWLINK = 16
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLMSG_ERROR = 2
IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO = 3, 10, 18
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_VRF_TABLE = 1, 2, 1
NETLINK_EXT_ACK, NLM_F_ACK_TLVS, NLMSGERR_ATTR_MSG = 11, 0x200, 1
SOL_NETLINK = 270


def _nla(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + bytes(-size % 4)


def _message(flags: int, index: int, attrs: bytes, seq: int = 0) -> bytes:
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), RTM_NEWLINK, flags, seq, 0) + body


def add_request(name: str, table: int, seq: int = 0) -> bytes:
    """RTM_NEWLINK creating VRF ``name`` on ``table``: the kind without its NUL and the
    nests unflagged, as iproute2 writes them."""
    info = _nla(IFLA_INFO_KIND, b"vrf") + _nla(
        IFLA_INFO_DATA, _nla(IFLA_VRF_TABLE, struct.pack("=I", table)))
    attrs = _nla(IFLA_IFNAME, name.encode() + b"\0") + _nla(IFLA_LINKINFO, info)
    return _message(NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE, 0, attrs, seq)


def master_request(index: int, master: int, seq: int = 0) -> bytes:
    """RTM_NEWLINK enslaving link ``index`` to link ``master``."""
    return _message(NLM_F_REQUEST | NLM_F_ACK, index,
                    _nla(IFLA_MASTER, struct.pack("=I", master)), seq)


def _ack_error(reply: bytes, seq: int) -> tuple[int, str] | None:
    """``(errno, kernel message)`` of the NLMSG_ERROR answering ``seq``; None for an ack."""
    while len(reply) >= 16:
        size, kind, flags, got, _ = struct.unpack_from("=IHHII", reply)
        if kind == NLMSG_ERROR and got == seq:
            code = -struct.unpack_from("=i", reply, 16)[0]
            if not code:
                return None
            text = os.strerror(code)
            if flags & NLM_F_ACK_TLVS:  # the kernel's extended ack after the echoed request
                inner = struct.unpack_from("=I", reply, 20)[0]
                pos = 16 + 4 + 16 + (0 if flags & 0x100 else inner - 16)
                while pos + 4 <= size:
                    alen, atype = struct.unpack_from("=HH", reply, pos)
                    if alen < 4:
                        break
                    if atype == NLMSGERR_ATTR_MSG:
                        text = reply[pos + 4:pos + alen].rstrip(b"\0").decode(errors="replace")
                    pos += (alen + 3) & ~3
            return code, text
        reply = reply[max((size + 3) & ~3, 16):]
    return errno.EIO, "no answer from the kernel"


def _exchange(sock: socket.socket, request: bytes, seq: int) -> tuple[int, str] | None:
    sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
    sock.send(request)
    while True:
        reply = sock.recv(65536)
        if (got := _ack_error(reply, seq)) != (errno.EIO, "no answer from the kernel"):
            return got


async def send(fd: int, step: str, build: bytes) -> None:
    """Send one request (from :func:`add_request`/:func:`master_request`) inside netns
    ``fd`` on a socket of its own; a refusal is a KernelError naming ``step``."""
    seq = struct.unpack_from("=I", build, 8)[0]
    sock = await nsfs.netlink_socket(fd)
    try:
        got = await anyio.to_thread.run_sync(_exchange, sock, build, seq)
    finally:
        sock.close()
    if got is not None:
        raise KernelError(step, got[0], got[1])


async def _vrf_link(pod: Rtnl, name: str, table: int, step: str) -> LinkRec | None:
    link = await pod.link(name=name)
    if link is not None and link.kind != "vrf":
        raise KernelError(step, errno.EEXIST, f"{name!r} is a {link.kind or 'physical'} "
                          "device in the pod, not a VRF")
    if link is not None and link.vrf_table not in (0, table):
        raise KernelError(step, errno.EEXIST, f"VRF {name!r} in the pod has table "
                          f"{link.vrf_table}, not {table}")
    return link


async def join(pod: Rtnl, fd: int, name: str, table: int, index: int,
               step: str = "config.interface.vrf") -> bool:
    """Put link ``index`` in VRF ``name`` (``table``), creating the VRF when the pod has
    none; returns whether this call created it."""
    created = False
    link = await _vrf_link(pod, name, table, step)
    if link is None:
        try:
            await send(fd, step, add_request(name, table, seq=1))
            created = True
        except KernelError as exc:
            if exc.code == errno.EOPNOTSUPP:
                raise KernelError(step, exc.code, f"cannot create VRF {name!r}: this kernel "
                                  "has no VRF support (CONFIG_NET_VRF)") from None
            if exc.code != errno.EEXIST:  # another device of the pod made it meanwhile
                raise
        link = await _vrf_link(pod, name, table, step)
        if link is None:
            raise KernelError(step, errno.ENODEV, f"VRF {name!r} is not in the pod after "
                              "its creation")
    if not link.up:
        await pod.set_link(step, link.index, state="up")
    await send(fd, step, master_request(index, link.index, seq=2))
    await devconf.write_sysctls(fd, [(step, path, "1") for path in L3MDEV_SYSCTLS])
    return created


async def drop_if_unused(pod: Rtnl, name: str) -> None:
    """Delete VRF ``name`` (one an attach created) once no link of the pod is in it."""
    link = await pod.link(name=name)
    if link is None or link.kind != "vrf":
        return
    if any(other.master == link.index for other in await pod.links()):
        return
    await pod.del_link(f"VRF {name}", link.index)
