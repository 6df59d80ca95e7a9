"""The blocking-call watchdog every async test runs under (tests/helpers/blocking.py)."""

from __future__ import annotations

import asyncio
import threading
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
    time.sleep(1.2)  # well over the watchdog's 0.5 s, so that a busy machine sees it too


def computing() -> None:
    end = time.monotonic() + 1.2
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
            await asyncio.sleep(1.2)

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


def test_joining_a_thread_on_the_loop_is_found() -> None:
    """A join waits on a futex, as the GIL does; the join is ours to blame, the GIL not."""
    watchdog = Watchdog(blamed=(HERE,)).start()
    try:
        async def main() -> None:
            worker = threading.Thread(target=time.sleep, args=(1.2,))
            worker.start()
            worker.join()

        found = run(watchdog, main)
        assert len(found) == 1 and "worker.join()" in found[0]
    finally:
        watchdog.stop()
