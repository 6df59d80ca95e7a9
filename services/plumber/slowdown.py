"""A test-only hook: attaches slowed on purpose.

``KNDTEST_ATTACH_DELAY=<seconds>`` in the plumber's environment makes each device's
move wait that long, one device at a time, as a slow NIC driver holding the kernel's
RTNL lock would. The end-to-end tests reproduce with it an attach that outlasts the
container runtime's NRI request (DRANET's e2e build does the same with
``DRANET_E2E_ATTACH_DELAY``). Unset, as everywhere outside the tests, nothing changes.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import anyio

VARIABLE = "KNDTEST_ATTACH_DELAY"


def from_environment() -> Callable[[Callable[[], bool]], Awaitable[None]] | None:
    """The delay to run before each move, or None (the variable is unset or empty); it is
    given whether the move is still wanted once its turn comes."""
    raw = os.environ.get(VARIABLE, "")
    if not raw:
        return None
    seconds = float(raw)  # a typo in a test's setup fails the plumber's start, loudly
    if not 0 < seconds <= 10:
        raise ValueError(f"{VARIABLE}={raw!r}: expected seconds, more than 0, at most 10")
    one_at_a_time = anyio.Lock()

    async def delay(wanted: Callable[[], bool]) -> None:
        async with one_at_a_time:
            if wanted():  # a move the plumber gave up on costs no driver time
                await anyio.sleep(seconds)

    return delay
