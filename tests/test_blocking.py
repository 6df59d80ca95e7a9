"""The blocking-call watchdog every async test runs under (tests/helpers/blocking.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from tests.helpers.blocking import Watchdog

HERE = str(Path(__file__).resolve())


def run(watchdog: Watchdog, main: Callable[[], Coroutine[Any, Any, None]]) -> list[str]:
    loop = watchdog.loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return watchdog.take()


def blocking_sleep() -> None:
    time.sleep(0.5)


def computing() -> None:
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        pass


def test_a_blocking_call_in_blamed_code_is_found_with_its_stack() -> None:
    watchdog = Watchdog(blamed=(HERE,)).start()
    try:
        async def main() -> None:
            blocking_sleep()

        found = run(watchdog, main)
        assert len(found) == 1 and "blocking_sleep" in found[0] and "time.sleep" in found[0]

        async def awaits() -> None:
            await asyncio.sleep(0.5)

        async def computes() -> None:
            computing()

        assert run(watchdog, awaits) == []
        assert run(watchdog, computes) == []  # busy, but not blocked in the kernel
    finally:
        watchdog.stop()


def test_code_that_is_not_blamed_may_block() -> None:
    watchdog = Watchdog().start()  # blames services/ and schemas/ only
    try:
        async def main() -> None:
            blocking_sleep()

        assert run(watchdog, main) == []
    finally:
        watchdog.stop()
