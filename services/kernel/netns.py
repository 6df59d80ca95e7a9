"""Running a little code inside another network namespace, on a thread of its own.

netns membership is per thread: a fresh thread that ``setns()``s, does its work and
ends leaves the event loop, the worker pool and every other thread where they
were, so nothing has to be put back. It also never forks. pyroute2's
``create_socket`` forks a child that enters the netns, then SIGTERMs it; that child
still holds the parent's signal wakeup fd (asyncio's self-pipe), so a SIGTERM it
caught before exiting was read by the parent's event loop as the parent's own, and
a service stopped as if asked to (discovery under ``knd up --netns``).
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def path_of(name: str) -> str:
    """A netns given by name (``ip netns add``) or by path."""
    return name if "/" in name else f"{NETNS_RUN_DIR}/{name}"


def setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


def run_in_netns(fd: int, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` on a new thread that has entered the netns ``fd`` (blocking)."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            setns(fd)
            box["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    thread = threading.Thread(target=body, name="knd-netns", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def socket_in(name: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket made inside the named netns (it stays there once made)."""
    fd = os.open(path_of(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        return run_in_netns(fd, socket.socket, family, kind, proto)
    finally:
        os.close(fd)
