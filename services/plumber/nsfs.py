"""Network namespace handles: telling a real netns from anything else, and
running a little code inside one.

A pod netns path comes from the bus, so it is checked before it is opened: it
must be an inode of the nsfs file system (the one ``/proc/self/ns/net`` lives
on), so a FIFO, a device node or a regular file is never even opened, and the
open file must then answer ``NS_GET_NSTYPE`` with ``CLONE_NEWNET``.

Code that must run inside another netns (creating a netlink socket there,
writing ``/proc/sys/net/...`` sysctls, ethtool ioctls) runs on a fresh thread
that ``setns()``s and then ends: netns membership is per thread, so the event
loop and the worker pool never change namespace and nothing has to be put
back (services.kernel.netns). This avoids both ``ip netns exec`` and pyroute2's
fork-per-socket path (a few ms each, and a stray signal: see that module). The
plumber never keeps a pod netns fd open after a call: holding one would keep a
dead pod's netns alive and stop the kernel from handing physical devices back to
the host.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

from schemas.text import q
from services.kernel.netns import CLONE_NEWNET, path_of, run_in_netns

NS_GET_NSTYPE = 0xB703
NETLINK_ROUTE = 0

T = TypeVar("T")

class NetnsError(Exception):
    """A path that is not a usable network namespace; the text says why."""


@dataclass(frozen=True)
class NsId:
    """Identity of a namespace: its nsfs inode."""

    dev: int
    ino: int


_nsfs_dev: int | None = None


def _nsfs() -> int:
    global _nsfs_dev
    if _nsfs_dev is None:
        _nsfs_dev = os.stat("/proc/self/ns/net").st_dev
    return _nsfs_dev


def ns_id_of(path: str) -> NsId | None:
    """The identity of the netns at ``path``, or None when there is none (any more)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_dev != _nsfs():
        return None
    return NsId(st.st_dev, st.st_ino)


def fd_id(fd: int) -> NsId:
    st = os.fstat(fd)
    return NsId(st.st_dev, st.st_ino)


def open_netns(path: str) -> int:
    """Open ``path`` as a network namespace (O_CLOEXEC fd) or raise NetnsError."""
    if not path:
        raise NetnsError("no network namespace given (host-network pod)")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NetnsError(f"{q(path)} does not exist") from None
    except OSError as exc:
        raise NetnsError(f"{q(path)}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode) or st.st_dev != _nsfs():
        raise NetnsError(f"{q(path)} is not a network namespace (not an nsfs file)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise NetnsError(f"{q(path)}: {exc.strerror}") from None
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        os.close(fd)
        raise NetnsError(f"{q(path)} is not a namespace file") from None
    if kind != CLONE_NEWNET:
        os.close(fd)
        raise NetnsError(f"{q(path)} is a namespace of another type, not a network namespace")
    return fd


def host_netns_path(name: str | None) -> str:
    """The node's netns: our own, or a named one (``--netns``, for tests and demos)."""
    return path_of(name) if name else "/proc/self/ns/net"


async def in_netns(fd: int, fn: Callable[..., T], *args: Any) -> T:
    """:func:`run_in_netns` without blocking the event loop."""
    return await anyio.to_thread.run_sync(run_in_netns, fd, fn, *args)


SOL_NETLINK, NETLINK_GET_STRICT_CHK = 270, 12


def _netlink_socket(proto: int) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, proto)
    # strict checking makes the kernel honour the filters of a dump request (an
    # ifindex, an output interface, a table): without it every dump returns the
    # whole netns and pyroute2 filters in Python, ~0.1 ms a message on a busy node
    sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
    return sock


async def netlink_socket(fd: int, proto: int = NETLINK_ROUTE) -> socket.socket:
    """A netlink socket that lives in the netns ``fd`` (it stays there once made)."""
    return await in_netns(fd, _netlink_socket, proto)
