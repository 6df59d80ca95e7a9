"""The plumber's ``status`` endpoint (what ``knd status`` shows of pods) and its JSON
log lines, with the real plumber in-process on a real pod netns."""

from __future__ import annotations

import pytest

from schemas import plumber as p
from schemas.base import decode, encode
from schemas.netconfig import InterfaceConfig, NetworkConfig
from schemas.subjects import Subjects
from services.common import bus as busmod
from tests.conftest import NODE
from tests.plumber.conftest import Env, netdev, uid

pytestmark = pytest.mark.anyio


async def test_status_and_json_logs_follow_an_attach(env: Env, json_logs) -> None:
    logs = json_logs("plumber")
    env.node.veth("ob0", "ob0-peer")
    admin = await busmod.connect(env.creds, "admin")
    try:
        async with env.running():
            await env.inventory([netdev("dev-ob", "ob0")])
            pod = env.pod()
            claim, pod_uid = uid(), uid("pod")
            cfg = NetworkConfig(interface=InterfaceConfig(name="net7",
                                                          addresses=["10.7.0.2/24"]))
            assert (await env.prepare(claim, [("dev-ob", cfg)], [pod_uid])).error == ""
            assert (await env.attach(pod_uid, pod)).error == ""

            reply = await admin.request(Subjects(NODE).plumber("status"),
                                        encode(p.PlumberStatusGet()), timeout=5)
            st = decode(reply.data, p.PlumberStatus)
            assert st.node == NODE
            assert [(c.uid, c.devices, [x.uid for x in c.pods]) for c in st.claims] == [
                (claim, ["dev-ob"], [pod_uid])]
            # as discovery published it at prepare: a restarted discovery keeps it from this
            assert [c.published for c in st.claims] == [
                [d for d in env.devices if d.name == "dev-ob"]]
            [att] = st.attachments
            assert (att.claim_uid, att.device, att.pod_uid, att.phase) == (
                claim, "dev-ob", pod_uid, "attached")
            assert att.interface == "net7" and att.host_interface == "ob0"
            assert att.netns == f"/var/run/netns/{pod.name}" and att.ips == ["10.7.0.2/24"]

            assert (await env.detach(pod_uid)).error == ""
            assert (await env.unprepare(claim)).error == ""
    finally:
        await busmod.close(admin)

    lines = logs.lines()
    assert lines and all(x["service"] == "plumber" for x in lines)
    mine = [x for x in lines if x.get("claim") == claim]
    said = {x["msg"].split(" in ")[0] for x in mine}
    assert any("prepared" in m for m in said), said
    attached = [x for x in mine if "attached as net7" in x["msg"]]
    detached = [x for x in mine if "detached" in x["msg"]]
    unprepared = [x for x in mine if "unprepared" in x["msg"]]
    for found in (attached, detached, unprepared):
        assert len(found) == 1, lines
        assert found[0]["pod"] == pod_uid and found[0]["device"] == "dev-ob"
