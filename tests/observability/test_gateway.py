"""The gateway announces each claim it prepares or unprepares on the bus
(``events.claim.prepared|unprepared``) and logs it with the claim's fields."""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import pytest

from kndpeers import kubelet
from schemas import plumber as p
from schemas.base import decode, encode
from schemas.events import ClaimPrepared, ClaimUnprepared
from schemas.subjects import Subjects
from services.common import bus as busmod
from services.common.api.files import FileApi
from services.kubelet_gateway.dra import ClaimEvents, ClaimRef, DraPlugin
from services.kubelet_gateway.plumber_client import PlumberClient
from tests.conftest import NODE

pytestmark = pytest.mark.anyio


async def test_claim_events_and_logs(bus, tmp_path: Path, json_logs) -> None:
    logs = json_logs("kubelet-gateway")
    s = Subjects(NODE)
    plumber = await busmod.connect(bus, "plumber")
    gateway = await busmod.connect(bus, "gateway")
    observer = await busmod.connect(bus, "observer")
    seen: list[tuple[str, bytes]] = []

    async def on_prepare(msg) -> None:
        req = decode(msg.data, p.Prepare)
        await msg.respond(encode(p.PrepareReply(claim_uid=req.claim_uid, devices=[
            p.PreparedDevice(request=d.request, pool=d.pool, device=d.device)
            for d in req.devices])))

    async def on_unprepare(msg) -> None:
        req = decode(msg.data, p.Unprepare)
        await msg.respond(encode(p.UnprepareReply(claim_uid=req.claim_uid)))

    async def on_event(msg) -> None:
        seen.append((msg.subject, msg.data))

    api = FileApi(tmp_path)
    try:
        await plumber.subscribe(s.plumber("prepare"), cb=on_prepare)
        await plumber.subscribe(s.plumber("unprepare"), cb=on_unprepare)
        for kind in ("claim.prepared", "claim.unprepared"):  # the observer's, one by one
            await observer.subscribe(s.event(kind), cb=on_event)
        for c in (plumber, observer):
            await busmod.flush(c)
        claim = await api.create_claim(kubelet.make_claim(
            f"c-{uuid.uuid4().hex[:6]}", results=[kubelet.result("nic", "eth9", pool=NODE)]))
        ns, name, cuid = kubelet.ref(claim)
        dra = DraPlugin(driver="knd.dev", api=api, plumber=PlumberClient(gateway, NODE, 5),
                        events=ClaimEvents(gateway, NODE))
        missing = ClaimRef("default", "nope", "uid-missing")
        got = await dra.prepare([ClaimRef(ns, name, cuid), missing], budget=5)
        assert [d.device for d in got[cuid].devices] == ["eth9"] and got["uid-missing"].error
        assert await dra.unprepare([ClaimRef(ns, name, cuid)], budget=5) == {cuid: ""}
        with anyio.fail_after(5):
            while len(seen) < 3:
                await anyio.sleep(0.01)
    finally:
        await api.aclose()
        for c in (plumber, gateway, observer):
            await busmod.close(c)

    by_uid = {}
    for subject, data in seen:
        kind = subject.split(".events.", 1)[1]
        msg = decode(data, ClaimPrepared if kind == "claim.prepared" else ClaimUnprepared)
        by_uid[(kind, msg.claim_uid)] = msg
    ok = by_uid[("claim.prepared", cuid)]
    assert (ok.node, ok.namespace, ok.name, ok.devices, ok.error) == (NODE, ns, name, ["eth9"],
                                                                      "")
    assert ok.latency_ms > 0
    bad = by_uid[("claim.prepared", "uid-missing")]
    assert bad.devices == [] and "not found" in bad.error
    gone = by_uid[("claim.unprepared", cuid)]
    assert gone.error == "" and gone.latency_ms > 0

    lines = [x for x in logs.lines() if x.get("claim") == cuid]
    assert {x["service"] for x in lines} == {"kubelet-gateway"}
    prepared = [x for x in lines if x["msg"].startswith("NodePrepareResources")]
    assert len(prepared) == 1 and prepared[0]["device"] == "eth9"
    assert any(x["msg"].startswith("NodeUnprepareResources") for x in lines)
    failed = [x for x in logs.lines() if x.get("claim") == "uid-missing"]
    assert failed and failed[0]["level"] == "warning"
