"""bus.flush: once it returns, the server knows every subscription made before it."""

from __future__ import annotations

import pytest

from schemas.subjects import Subjects
from services.common import bus as busmod

pytestmark = pytest.mark.anyio

VERBS = ("prepare", "unprepare", "attach", "detach", "container-devices", "status")


async def test_a_request_right_after_flush_finds_the_new_subscriptions(bus) -> None:
    # nats-py's own flush() lost this race about one plumber start in five: its
    # PING overtakes the SUBs still queued for its flusher task
    server = await busmod.connect(bus, "plumber")
    client = await busmod.connect(bus, "gateway")

    async def echo(msg) -> None:
        await msg.respond(b"ok")

    try:
        for _ in range(30):
            subs = [await server.subscribe(Subjects(bus.node).plumber(v), queue="q", cb=echo)
                    for v in VERBS]
            await busmod.flush(server)
            reply = await client.request(Subjects(bus.node).plumber("prepare"), b"",
                                         timeout=2)
            assert reply.data == b"ok"
            for sub in subs:
                await sub.unsubscribe()
            await busmod.flush(server)
    finally:
        await busmod.close(client)
        await busmod.close(server)
