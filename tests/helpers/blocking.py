"""A test fails when a synchronous call blocked its event loop: asyncio's debug mode.

As anyio's own suite does, async tests run their loop in debug mode. Debug mode
times every callback and task step and logs, on the ``asyncio`` logger, each one
that held the loop longer than ``slow_callback_duration``; :class:`BlockedLoop`
collects those lines and the ``blocked_loop`` fixture (tests/conftest.py) fails
the test that caused them. Debug mode also reports coroutines never awaited and
non-thread-safe calls from other threads.

BLOCKED_AFTER is 0.5 s, not asyncio's default 0.1 s: CI and development machines
here have 2 cores shared by several test runs, and a step that does 50 ms of CPU
work can take several times that in wall time there. A blocking call worth fixing
(a netlink dump of a busy node, a subprocess, a file fsync on a slow disk, an HTTP
request) stays in the loop far longer than half a second on such a machine.
"""

from __future__ import annotations

import asyncio
import logging
import re

BLOCKED_AFTER = 0.5
"""Seconds a single callback or task step may hold the event loop."""

_SLOW = re.compile(r"^Executing .* took \d+\.\d+ seconds$", re.S)


def debug_loop() -> asyncio.AbstractEventLoop:
    """An event loop (anyio's ``loop_factory``) that reports steps over BLOCKED_AFTER."""
    loop = asyncio.new_event_loop()
    loop.slow_callback_duration = BLOCKED_AFTER
    return loop


class BlockedLoop(logging.Handler):
    """Collects asyncio's reports of steps that held the loop too long."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reports: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if _SLOW.match(message):
            self.reports.append(message)
