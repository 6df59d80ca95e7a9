"""The gateway's plumber client waits out a plumber that is still starting."""

from __future__ import annotations

import anyio
import nats.errors
import pytest

from schemas import plumber as p
from schemas.base import encode
from schemas.subjects import Subjects
from services.common import bus as busmod
from services.kubelet_gateway.plumber_client import PlumberClient, PlumberError
from tests.conftest import NODE
from tests.helpers.wait import until

pytestmark = pytest.mark.anyio


async def test_plumber_that_starts_late_still_answers_within_the_deadline(
        bus, monkeypatch: pytest.MonkeyPatch):
    gw = await busmod.connect(bus, "gateway")
    pl = await busmod.connect(bus, "plumber")
    unanswered = 0
    request = gw.request

    async def counted(*args, **kwargs):
        nonlocal unanswered
        try:
            return await request(*args, **kwargs)
        except nats.errors.NoRespondersError:
            unanswered += 1
            raise

    monkeypatch.setattr(gw, "request", counted)
    try:
        client = PlumberClient(gw, NODE)

        async def start_plumber_later() -> None:
            await until(lambda: unanswered >= 2, 3, "the client to ask twice in vain")

            async def answer(msg) -> None:
                await msg.respond(encode(p.UnprepareReply(claim_uid="c1")))

            await pl.subscribe(Subjects(NODE).plumber("unprepare"), cb=answer)
            await busmod.flush(pl)

        async with anyio.create_task_group() as tg:
            tg.start_soon(start_plumber_later)
            reply = await client.unprepare(p.Unprepare(claim_uid="c1"), deadline=3)
        assert reply.claim_uid == "c1" and reply.error == ""
    finally:
        await busmod.close(pl)
        await busmod.close(gw)


async def test_no_plumber_at_all_is_an_error_at_the_deadline(bus):
    gw = await busmod.connect(bus, "gateway")
    try:
        client = PlumberClient(gw, NODE)
        with anyio.fail_after(2), pytest.raises(PlumberError, match="no answer"):
            await client.unprepare(p.Unprepare(claim_uid="c2"), deadline=0.5)
    finally:
        await busmod.close(gw)
