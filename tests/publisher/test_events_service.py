"""Kubernetes Events end to end: the gateway's and the plumber's bus events, published as
those users on a real nats-server, become Events that the real kubernetes-asyncio client
writes to the test API server (or standalone files)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from schemas import events as reasons
from schemas.base import Message, encode
from schemas.events import ClaimPrepared, Notice
from schemas.inventory import InventorySnapshot
from schemas.plumber import DeviceDetached, DeviceFailed
from schemas.subjects import Subjects
from services.common import bus as busmod
from services.common.api.files import FileApi
from tests.conftest import NODE
from tests.helpers.wait import until
from tests.kubeapi.server import KubeApiServer
from tests.publisher.helpers import DRIVER, devices, running_publisher

pytestmark = pytest.mark.anyio
S = Subjects(NODE)
POD = {"pod_uid": "uid-web-0", "pod_namespace": "team-a", "pod_name": "web-0"}


def publisher(bus, api, tmp_path: Path):
    return running_publisher(bus, api, tmp_path, resync_interval=0)

@asynccontextmanager
async def speaking_as(bus, user: str) -> AsyncIterator[Callable]:
    """A publish function with ``user``'s bus permissions."""
    nc = await busmod.connect(bus, user)

    async def publish(subject: str, msg: Message | bytes) -> None:
        await nc.publish(subject, msg if isinstance(msg, bytes) else encode(msg))
        await busmod.flush(nc)

    try:
        yield publish
    finally:
        await nc.close()


def failed(step: str = "move", error: str = "move: Operation not permitted",
           **kw) -> DeviceFailed:
    return DeviceFailed(node=NODE, claim_uid="uid-claim", device="eth1", step=step,
                        error=error, **(POD | kw))


def notice(**kw) -> Notice:
    base = {"node": NODE, "kind": "Pod", "namespace": "team-a", "name": "web-0",
            "uid": "uid-web-0", "type": "Warning", "reason": reasons.ATTACH_DEFERRED,
            "message": "attached 1/2 network devices to pod team-a/web-0 in time"}
    return Notice(**(base | kw))


def written(reason: str, result: str) -> float:
    return REGISTRY.get_sample_value("knd_publisher_events_written_total",
                                     {"reason": reason, "result": result}) or 0.0


def by_reason(srv: KubeApiServer) -> dict[str, dict]:
    return {e["reason"]: e for e in srv.objects("events")}


async def test_bus_events_become_kubernetes_events(bus, kube_api, kube, tmp_path):
    async with publisher(bus, kube, tmp_path), speaking_as(bus, "gateway") as gateway, \
            speaking_as(bus, "plumber") as plumber:
        await gateway(S.notice, notice())
        await gateway(S.event("claim.prepared"), ClaimPrepared(
            node=NODE, claim_uid="uid-claim", namespace="team-a", name="nets",
            error="device eth1: no longer in this node's inventory"))
        await gateway(S.event("claim.prepared"), ClaimPrepared(  # success: no event
            node=NODE, claim_uid="uid-ok", namespace="team-a", name="ok", devices=["eth2"]))
        await plumber(S.event("device.failed"), failed())
        await plumber(S.event("device.failed"), failed("rdma", "RDMA device mlx5_1 not "
                                                       "moved: busy", rolled_back=False))
        await plumber(S.event("device.failed"), failed("restore", "link: busy",
                                                       rolled_back=False))
        await plumber(S.event("device.detached"), DeviceDetached(  # normal end: no event
            node=NODE, claim_uid="uid-claim", device="veth9", interface="", reason="netns-gone",
            gone=True, **POD))
        await until(lambda: len(kube_api.objects("events")) == 5)
        got = by_reason(kube_api)
        pod_ref = {"apiVersion": "v1", "kind": "Pod", "namespace": "team-a", "name": "web-0",
                   "uid": "uid-web-0"}
        for reason in (reasons.ATTACH_DEFERRED, reasons.ATTACH_FAILED, reasons.RDMA_FAILED,
                       reasons.RESTORE_FAILED):
            ev = got[reason]
            assert ev["involvedObject"] == pod_ref, reason
            assert ev["metadata"]["namespace"] == "team-a"
            assert (ev["type"], ev["count"]) == ("Warning", 1)
            assert ev["source"] == {"component": DRIVER, "host": NODE}
        claim = got[reasons.CLAIM_PREPARE_FAILED]
        assert claim["involvedObject"] == {"apiVersion": "resource.k8s.io/v1",
                                           "kind": "ResourceClaim", "namespace": "team-a",
                                           "name": "nets", "uid": "uid-claim"}
        assert claim["message"] == "device eth1: no longer in this node's inventory"
        assert got[reasons.ATTACH_FAILED]["message"] == \
            "failed to attach network device eth1 to pod team-a/web-0: move: Operation " \
            "not permitted"
        assert "mlx5_1" in got[reasons.RDMA_FAILED]["message"]
        assert "retrying in the background" in got[reasons.RESTORE_FAILED]["message"]

        # the same failure again: the same Event, counted
        await plumber(S.event("device.failed"), failed())
        await until(lambda: by_reason(kube_api)[reasons.ATTACH_FAILED]["count"] == 2)
        assert len(kube_api.objects("events")) == 5
        assert ("patch", "events", 200) in kube_api.requests


async def test_bad_or_refused_events_change_nothing_and_the_publisher_goes_on(
        bus, kube_api, kube, tmp_path):
    async with publisher(bus, kube, tmp_path) as pub, \
            speaking_as(bus, "gateway") as gateway, \
            speaking_as(bus, "plumber") as plumber, \
            speaking_as(bus, "discovery") as discovery:
        invalid = written(reasons.ATTACH_DEFERRED, "invalid")
        unknown_pod = written(reasons.ATTACH_FAILED, "no-object")
        refused = written("Refused", "error")
        await gateway(S.notice, notice(reason="not a reason"))
        await gateway(S.notice, notice(namespace="Team_A"))
        await gateway(S.notice, notice(name=""))
        await gateway(S.notice, b'{"node": "x", "kind": "Node"}')  # not a Notice at all
        # the pod is not known (the claim was gone): nothing to write it on
        await plumber(S.event("device.failed"), failed(pod_namespace="", pod_name=""))
        kube_api.inject("create", "events", status=403)
        await gateway(S.notice, notice(reason="Refused"))
        await until(lambda: ("create", "events", 403) in kube_api.requests)
        kube_api.inject("create", "events", status=422)
        await gateway(S.notice, notice(reason="Invalid"))
        await until(lambda: ("create", "events", 422) in kube_api.requests)
        assert kube_api.objects("events") == []
        assert written(reasons.ATTACH_DEFERRED, "invalid") == invalid + 2  # namespace, name
        assert written("not a reason", "invalid") >= 1
        # another subscription than the notices': it may come later
        await until(lambda: written(reasons.ATTACH_FAILED, "no-object") == unknown_pod + 1)
        assert written("Refused", "error") == refused + 1
        # still serving: events and the pool
        await gateway(S.notice, notice(reason="Fine"))
        await discovery(S.inventory_snapshot, InventorySnapshot(
            node=NODE, epoch=1, seq=1, taken_at=1.0, devices=devices(2)))
        await until(lambda: [e["reason"] for e in kube_api.objects("events")] == ["Fine"])
        await until(lambda: pub.status.synced)


async def test_standalone_events_are_files(bus, tmp_path):
    async with publisher(bus, FileApi(tmp_path), tmp_path), \
            speaking_as(bus, "gateway") as gateway:
        await gateway(S.notice, notice(reason=reasons.ATTACH_TIMEOUT))
        folder = tmp_path / "api" / "events" / "team-a"
        await until(lambda: list(folder.glob("web-0.*.json")))
        (path,) = folder.glob("web-0.*.json")
        ev = json.loads(path.read_text())
        assert (ev["reason"], ev["involvedObject"]["uid"], ev["count"]) == \
            (reasons.ATTACH_TIMEOUT, "uid-web-0", 1)
