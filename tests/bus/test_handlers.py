"""Typed handlers: concurrent serving when the service asks for it."""

from __future__ import annotations

import anyio
import pytest

from schemas.base import decode, encode
from schemas.inventory import InventoryGet, InventorySnapshot
from schemas.subjects import Subjects
from services.common import bus as busmod
from tests.conftest import NODE

pytestmark = pytest.mark.anyio


async def _serve_pair(bus, concurrent: bool) -> bool:
    """Two requests where the first can only finish once the second has started."""
    second_started = anyio.Event()
    calls = 0

    async def handler(_: InventoryGet) -> InventorySnapshot:
        nonlocal calls
        calls += 1
        if calls == 1:
            with anyio.move_on_after(1):
                await second_started.wait()
            done = second_started.is_set()
        else:
            second_started.set()
            done = True
        return InventorySnapshot(node=NODE, epoch=1, seq=int(done), devices=[], taken_at=0)

    nc = await busmod.connect(bus, "discovery")
    client = await busmod.connect(bus, "publisher")
    try:
        async with anyio.create_task_group() as tg:
            svc = await busmod.serve(nc, "discovery", "test")
            await svc.add_endpoint(name="get", subject=Subjects(NODE).inventory_get,
                                   handler=busmod.typed_handler(
                                       "t", "get", InventoryGet, handler,
                                       concurrent=tg if concurrent else None))
            await busmod.flush(nc)
            results: list[int] = []

            async def ask() -> None:
                r = await client.request(Subjects(NODE).inventory_get, encode(InventoryGet()),
                                         timeout=3)
                results.append(decode(r.data, InventorySnapshot).seq)

            async with anyio.create_task_group() as asks:
                asks.start_soon(ask)
                await anyio.sleep(0.05)
                asks.start_soon(ask)
            await svc.stop()
        return results == [1, 1]
    finally:
        await busmod.close(client)
        await busmod.close(nc)


async def test_concurrent_handler_serves_requests_in_parallel(bus):
    assert await _serve_pair(bus, concurrent=True)


async def test_sequential_handler_queues_requests(bus):
    # the control: the same pair without a task group waits for the first one's timeout
    assert not await _serve_pair(bus, concurrent=False)
