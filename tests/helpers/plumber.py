"""A plumber stand-in on the real bus that answers only ``plumber.status``, for tests of
discovery alone: discovery publishes nothing before the plumber says which claims it
holds, and asks it again before dropping a device that vanished."""

from __future__ import annotations

from schemas.base import decode, encode
from schemas.inventory import Device
from schemas.plumber import ClaimView, PlumberStatus, PlumberStatusGet
from schemas.subjects import Subjects
from services.common import bus as busmod
from services.common.auth import Credentials


class StatusOnlyPlumber:
    def __init__(self, node: str) -> None:
        self.node = node
        self.claims: dict[str, ClaimView] = {}
        self.answering = True
        """False: requests go unanswered, as while the plumber is down."""
        self.asked = 0
        self._nc = None

    def hold(self, uid: str, devices: list[str], published: list[Device] = ()) -> None:
        self.claims[uid] = ClaimView(uid=uid, devices=devices, published=list(published))

    async def start(self, creds: Credentials) -> StatusOnlyPlumber:
        self._nc = nc = await busmod.connect(creds, "plumber")

        async def status(msg) -> None:
            decode(msg.data, PlumberStatusGet)
            self.asked += 1
            if self.answering:
                await msg.respond(encode(PlumberStatus(node=self.node,
                                                       claims=list(self.claims.values()))))

        await nc.subscribe(Subjects(self.node).plumber("status"), cb=status)
        await busmod.flush(nc)
        return self

    async def close(self) -> None:
        if self._nc is not None:
            await busmod.close(self._nc)
