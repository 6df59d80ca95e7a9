"""Two netlink round trips at once (the host's and the pod's), for attach."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import anyio

from services.plumber.netops import Rtnl

A = TypeVar("A")
B = TypeVar("B")


async def together(a: Awaitable[A], b: Awaitable[B]) -> tuple[A, B]:
    """Both awaited at once (each a netlink round trip on its own socket or thread);
    if one fails the other is cancelled, and a socket it opened is closed."""
    out: list[Any] = [None, None]

    async def run(i: int, aw: Awaitable[Any]) -> None:
        out[i] = await aw

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, 0, a)
            tg.start_soon(run, 1, b)
    except BaseException as exc:
        for made in out:
            if isinstance(made, Rtnl):
                await made.aclose()  # shielded: also when we are being cancelled
        if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            raise exc.exceptions[0] from None  # callers handle the error itself
        raise
    return out[0], out[1]
