"""The claim status the plumber reports, as DRANET writes it: ``Ready`` (reason
``NetworkDeviceReady``), ``NetworkReady``, ``RDMALinkReady`` and, for an RDMA device
without netdev, ``Ready`` with ``RDMAOnlyDeviceReady``; checked in the claim object the
real publisher wrote to the test API server (which enforces the API's limits)."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.netconfig import InterfaceConfig, NetworkConfig, RouteConfig
from services.common.api.files import FileApi
from services.plumber.checkpoint import Checkpoint
from services.plumber.model import ATTACHED, Attachment, ClaimPlan, LinkSnapshot, PlannedDevice
from services.plumber.status import claim_status
from services.publisher.claims import ClaimStatusWriter
from tests.claims.test_claim_status import publisher
from tests.conftest import NODE
from tests.helpers.wait import until as wait_until
from tests.kubeapi.server import KubeApiServer
from tests.plumber.conftest import DRIVER, Env, env, netdev, uid  # noqa: F401

pytestmark = pytest.mark.anyio


def claim_object(claim_uid: str, devices: list[str]) -> dict:
    """The allocated claim as the API has it (``Env.prepare`` names it n-<uid>)."""
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": f"n-{claim_uid}", "namespace": "default", "uid": claim_uid},
            "spec": {"devices": {"requests": []}},
            "status": {"allocation": {"devices": {"results": [
                {"request": "req", "driver": DRIVER, "pool": NODE, "device": d}
                for d in devices]}}}}


def written(srv: KubeApiServer, claim_uid: str) -> list[dict]:
    obj = next(o for o in srv.objects("resourceclaims")
               if o["metadata"]["uid"] == claim_uid)
    return obj["status"].get("devices", [])


async def until(srv: KubeApiServer, claim_uid: str, reason: str) -> dict:
    """Our device entry, once its first condition has ``reason``."""
    def ours() -> dict | None:
        devices = written(srv, claim_uid)
        return devices[0] if devices and devices[0]["conditions"][0]["reason"] == reason else None
    return await wait_until(ours, 5, f"claim {claim_uid} status {reason}")


def plain(conditions: list[dict]) -> list[tuple]:
    for c in conditions:
        assert c["lastTransitionTime"].endswith("Z")
    return [(c["type"], c["status"], c["reason"], c["message"]) for c in conditions]


async def test_attach_detach_and_failure_as_dranet_writes_them(env: Env, kube_api, kube,  # noqa: F811
                                                               tmp_path: Path) -> None:
    env.node.veth("sa0", "sb0")
    env.node.ip("addr", "add", "10.80.0.1/24", "dev", "sb0")
    claim, pod_uid = uid(), uid("pod")
    kube_api.put_object("resourceclaims", claim_object(claim, ["dev-s"]))
    async with publisher(env.creds, kube, tmp_path / "pub"), env.running():
        await env.inventory([netdev("dev-s", "sa0")])
        cfg = NetworkConfig(interface=InterfaceConfig(name="net1", addresses=["10.80.0.2/24"],
                                                      hardwareAddr="02:00:00:00:80:02"))
        assert (await env.prepare(claim, [("dev-s", cfg)], [pod_uid])).error == ""
        pod = env.pod()
        assert (await env.attach(pod_uid, pod)).error == ""
        entry = await until(kube_api, claim, "NetworkDeviceReady")
        assert plain(entry["conditions"]) == [
            ("Ready", "True", "NetworkDeviceReady", ""),
            ("NetworkReady", "True", "NetworkReady", "")]
        assert entry["networkData"] == {"interfaceName": "net1", "ips": ["10.80.0.2/24"],
                                        "hardwareAddress": "02:00:00:00:80:02"}
        assert (entry["driver"], entry["pool"], entry["device"]) == (DRIVER, NODE, "dev-s")

        assert (await env.detach(pod_uid)).restored == ["dev-s"]
        entry = await until(kube_api, claim, "Detached")
        assert plain(entry["conditions"]) == [("Ready", "False", "Detached", ""),
                                              ("NetworkReady", "False", "Detached", "")]
        assert "networkData" not in entry

        # a failed attach: knd's own reason, the error as the message
        bad, bad_pod = uid(), uid("pod")
        assert (await env.unprepare(claim)).error == ""
        kube_api.put_object("resourceclaims", claim_object(bad, ["dev-s"]))
        cfg = NetworkConfig(interface=InterfaceConfig(addresses=["10.80.0.2/24"]),
                            routes=[RouteConfig(destination="10.81.0.0/16",
                                                gateway="10.99.0.1")])
        assert (await env.prepare(bad, [("dev-s", cfg)], [bad_pod])).error == ""
        assert "rolled back" in (await env.attach(bad_pod, env.pod())).error
        entry = await until(kube_api, bad, "AttachFailed")
        (_, status, _, message), second = plain(entry["conditions"])
        assert status == "False" and "config.routes[0]" in message
        assert second[:3] == ("NetworkReady", "False", "AttachFailed")


def rdma_plan(claim_uid: str) -> ClaimPlan:
    return ClaimPlan(uid=claim_uid, namespace="default", name=f"n-{claim_uid}", devices=[
        PlannedDevice(request="req", pool=NODE, device="roce", ifname="eth1",
                      pod_ifname="net1", rdma_device="mlx5_1"),
        PlannedDevice(request="req", pool=NODE, device="ib", rdma_device="mlx5_0"),
        PlannedDevice(request="req", pool=NODE, device="ib-shared", rdma_device="mlx5_2")])


def attachment(claim_uid: str, device: str, **kw) -> Attachment:
    return Attachment(claim_uid=claim_uid, device=device, pod_uid="pod-1", phase=ATTACHED,
                      netns="/var/run/netns/x", **kw)


async def test_rdma_conditions(kube_api, kube, tmp_path: Path) -> None:
    """RDMA links cannot be moved on this machine (no RDMA hardware): the attachments
    are recorded as an exclusive-mode attach leaves them, and the status built from
    them is written through the real writer to the test API server."""
    claim = "claim-rdma-1"
    store = Checkpoint(tmp_path / "checkpoint.db")
    try:
        store.put_claim(rdma_plan(claim))
        snap = LinkSnapshot(index=7, name="eth1", mtu=1500)
        store.put_attachment(attachment(claim, "roce", host=snap, pod_ifname="net1",
                                        rdma_device="mlx5_1", rdma_moved=True,
                                        ips=["10.82.0.2/24"], mac="02:00:00:00:82:02"))
        store.put_attachment(attachment(claim, "ib", rdma_device="mlx5_0", rdma_moved=True))
        store.put_attachment(attachment(claim, "ib-shared", rdma_device="mlx5_2"))
        status = claim_status(DRIVER, rdma_plan(claim), store.attachment)
    finally:
        store.close()
    kube_api.put_object("resourceclaims", claim_object(claim, ["roce", "ib", "ib-shared"]))
    assert await ClaimStatusWriter(kube, DRIVER).write(status) == "written"
    roce, ib, shared = written(kube_api, claim)
    assert plain(roce["conditions"]) == [("Ready", "True", "NetworkDeviceReady", ""),
                                         ("NetworkReady", "True", "NetworkReady", ""),
                                         ("RDMALinkReady", "True", "RDMALinkReady", "")]
    assert roce["networkData"]["interfaceName"] == "net1"
    assert plain(ib["conditions"]) == [("RDMALinkReady", "True", "RDMALinkReady", ""),
                                       ("Ready", "True", "RDMAOnlyDeviceReady", "")]
    assert "networkData" not in ib
    assert plain(shared["conditions"]) == [("Ready", "True", "RDMAOnlyDeviceReady", "")]


async def test_rdma_move_that_failed_is_said(tmp_path: Path) -> None:
    """knd's RDMA move is best effort: a failed one is reported (DRANET fails the pod)."""
    claim = "claim-rdma-2"
    plan = rdma_plan(claim)
    att = attachment(claim, "roce", host=LinkSnapshot(index=7, name="eth1", mtu=1500),
                     pod_ifname="net1", rdma_device="mlx5_1",
                     rdma_error="RDMA device mlx5_1 not moved: no such device")
    status = claim_status(DRIVER, plan, lambda c, d: att if d == "roce" else None)
    files = FileApi(tmp_path / "state")
    seeded = await files.create_claim(claim_object(claim, ["roce", "ib", "ib-shared"]))
    status.uid = seeded["metadata"]["uid"]
    assert await ClaimStatusWriter(files, DRIVER).write(status) == "written"
    roce, ib, _ = (await files.get_claim("default", f"n-{claim}"))["status"]["devices"]
    assert plain(roce["conditions"])[2] == (
        "RDMALinkReady", "False", "RDMALinkMoveFailed",
        "RDMA device mlx5_1 not moved: no such device")
    assert plain(ib["conditions"]) == [("Ready", "False", "Detached", "")]
