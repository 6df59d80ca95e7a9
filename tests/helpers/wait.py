"""Waiting for something another process, thread or task will do.

``wait_for`` blocks (threads, subprocesses, synchronous tests); ``until`` is the same
for async tests: it checks between awaits, so the event loop keeps running the very
tasks the test is waiting on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import anyio

T = TypeVar("T")

POLL = 0.01
"""Between two checks: small against every wait the tests make, large against a check."""


def wait_for(probe: Callable[[], T | None], timeout: float = 10.0, what: str = "") -> T:
    """``probe()``'s first truthy value; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or probe}")
        time.sleep(0.02)


async def until(probe: Callable[[], T | None], limit: float = 10.0, what: str = "") -> T:
    """``probe()``'s first truthy value, awaited; AssertionError naming ``what`` after
    ``limit`` seconds."""
    deadline = anyio.current_time() + limit
    while True:
        value = probe()
        if value:
            return value
        if anyio.current_time() > deadline:
            raise AssertionError(f"timed out waiting for {what or probe}")
        await anyio.sleep(POLL)
