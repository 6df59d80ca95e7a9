"""Running a service until SIGTERM / SIGINT, with structured concurrency."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable

import anyio


async def until_signalled(main: Callable[[], Awaitable[None]]) -> None:
    """Run ``main``; a SIGTERM or SIGINT cancels it so its cleanup runs."""
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(watch)
        await main()
        tg.cancel_scope.cancel()


def run(main: Callable[[], Awaitable[None]]) -> None:
    anyio.run(until_signalled, main)
