"""``publisher.claim-status`` end to end: the plumber's request on the real bus, the real
publisher, and the claim in the test API server (through kubernetes-asyncio) or in the
standalone JSON files."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from schemas.base import ErrorReply, decode, encode
from schemas.claims import ClaimStatus, ClaimStatusReply, Condition, DeviceStatus, NetworkData
from schemas.subjects import Subjects
from services.common import bus as busmod
from services.common.api.files import FileApi
from services.common.api.kube import KubeApi
from services.publisher.claims import ClaimStatusWriter
from tests.conftest import NODE
from tests.kubeapi.server import KubeApiServer
from tests.publisher.helpers import running_publisher

pytestmark = pytest.mark.anyio

DRIVER = "knd.dev"
OTHER = "gpu.example.com"
S = Subjects(NODE)
OLD = "2020-01-01T00:00:00Z"

OTHER_ENTRY = {"driver": OTHER, "pool": NODE, "device": "gpu-0",
               "conditions": [{"type": "Ready", "status": "True", "reason": "Up", "message": "",
                               "lastTransitionTime": OLD}],
               "data": {"uuid": "GPU-1"}}


def make_claim(uid: str = "claim-uid-1", devices: list[dict] | None = None) -> dict:
    """An allocated claim with devices of two drivers; ``devices``: its status.devices."""
    status: dict = {"allocation": {"devices": {"results": [
        {"request": "nic", "driver": DRIVER, "pool": NODE, "device": "eth1"},
        {"request": "gpu", "driver": OTHER, "pool": NODE, "device": "gpu-0"},
        {"request": "nic", "driver": DRIVER, "pool": NODE, "device": "eth2", "shareID": "s1"},
    ]}}, "reservedFor": [{"resource": "pods", "name": "p", "uid": "pod-1"}]}
    if devices is not None:
        status["devices"] = copy.deepcopy(devices)
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": "nics", "namespace": "ml", "uid": uid},
            "spec": {"devices": {"requests": []}}, "status": status}


def attached(device: str = "eth1", *, ips: list[str] | None = None, share_id: str = "",
             ready: str = "True") -> DeviceStatus:
    return DeviceStatus(
        driver=DRIVER, pool=NODE, device=device, share_id=share_id,
        conditions=[Condition(type="Ready", status=ready, reason="Attached",
                              message="moved into the pod"),
                    Condition(type="knd.dev/Configured", status="True", reason="Applied")],
        network_data=NetworkData(interface_name="net1",
                                 ips=["10.1.0.5/24", "2001:DB8::5/64"] if ips is None else ips,
                                 hardware_address="02:00:00:aa:bb:cc"))


def request(*devices: DeviceStatus, uid: str = "claim-uid-1") -> ClaimStatus:
    return ClaimStatus(namespace="ml", name="nics", uid=uid, devices=list(devices))


def count(result: str) -> float:
    return REGISTRY.get_sample_value("knd_publisher_claim_status_writes_total",
                                     {"result": result}) or 0.0


def publisher(bus, api, tmp_path: Path):
    return running_publisher(bus, api, tmp_path, resync_interval=0)

@asynccontextmanager
async def plumber(bus) -> AsyncIterator:
    """Send a claim-status request as the plumber user; returns the decoded reply."""
    nc = await busmod.connect(bus, "plumber")

    async def ask(msg: ClaimStatus | bytes) -> ClaimStatusReply:
        reply = await nc.request(S.claim_status, msg if isinstance(msg, bytes) else encode(msg),
                                 timeout=5)
        return decode(reply.data, ClaimStatusReply)

    try:
        yield ask
    finally:
        await nc.close()


def stored(srv: KubeApiServer) -> dict:
    return next(o for o in srv.objects("resourceclaims") if o["metadata"]["name"] == "nics")


def since(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


async def test_writes_our_devices_and_keeps_other_drivers(bus, kube_api, kube, tmp_path):
    kube_api.put_object("resourceclaims", make_claim(devices=[
        OTHER_ENTRY,
        {"driver": DRIVER, "pool": NODE, "device": "eth9", "conditions": []},  # stale: ours
    ]))
    written = count("written")
    async with publisher(bus, kube, tmp_path), plumber(bus) as ask:
        start = time.time()
        reply = await ask(request(attached(), attached("eth2", share_id="s1", ips=[])))
        assert reply.error == ""
        claim = stored(kube_api)
        devices = claim["status"]["devices"]
        assert devices[0] == OTHER_ENTRY
        stamp = devices[1]["conditions"][0]["lastTransitionTime"]
        assert start - 1 <= since(stamp) <= time.time()
        assert devices[1:] == [
            {"driver": DRIVER, "pool": NODE, "device": "eth1", "conditions": [
                {"type": "Ready", "status": "True", "reason": "Attached",
                 "message": "moved into the pod", "lastTransitionTime": stamp},
                {"type": "knd.dev/Configured", "status": "True", "reason": "Applied",
                 "message": "", "lastTransitionTime": stamp}],
             "networkData": {"interfaceName": "net1", "ips": ["10.1.0.5/24", "2001:db8::5/64"],
                             "hardwareAddress": "02:00:00:aa:bb:cc"}},
            {"driver": DRIVER, "pool": NODE, "device": "eth2", "shareID": "s1",
             "conditions": devices[2]["conditions"],
             "networkData": {"interfaceName": "net1", "hardwareAddress": "02:00:00:aa:bb:cc"}},
        ]
        assert claim["status"]["allocation"] == make_claim()["status"]["allocation"]
        assert claim["status"]["reservedFor"] == make_claim()["status"]["reservedFor"]
        assert count("written") == written + 1
        assert kube_api.writes("resourceclaims") == 1

        # the same report again: nothing to write
        unchanged = count("unchanged")
        assert (await ask(request(attached(), attached("eth2", share_id="s1", ips=[])))).error \
            == ""
        assert kube_api.writes("resourceclaims") == 1
        assert count("unchanged") == unchanged + 1

        # empty devices: our entries go, the other driver's stay
        assert (await ask(request())).error == ""
        assert stored(kube_api)["status"]["devices"] == [OTHER_ENTRY]
        assert kube_api.writes("resourceclaims") == 2


async def test_transition_time_kept_while_status_holds(bus, kube_api, kube, tmp_path):
    old = {"driver": DRIVER, "pool": NODE, "device": "eth1", "conditions": [
        {"type": "Ready", "status": "True", "reason": "Attached", "message": "",
         "lastTransitionTime": OLD},
        {"type": "knd.dev/Configured", "status": "False", "reason": "Pending", "message": "",
         "lastTransitionTime": OLD}]}
    kube_api.put_object("resourceclaims", make_claim(devices=[old]))
    async with publisher(bus, kube, tmp_path), plumber(bus) as ask:
        assert (await ask(request(attached()))).error == ""
        ready, configured = stored(kube_api)["status"]["devices"][0]["conditions"]
        assert ready["lastTransitionTime"] == OLD  # True -> True: kept
        assert ready["message"] == "moved into the pod"
        assert configured["lastTransitionTime"] != OLD  # False -> True: now
        assert since(configured["lastTransitionTime"]) > since(OLD)
        assert (await ask(request(attached(ready="False")))).error == ""
        ready, _ = stored(kube_api)["status"]["devices"][0]["conditions"]
        assert ready["status"] == "False" and ready["lastTransitionTime"] != OLD


async def test_uid_mismatch_writes_nothing(bus, kube_api, kube, tmp_path):
    kube_api.put_object("resourceclaims", make_claim(uid="new-uid", devices=[OTHER_ENTRY]))
    replaced = count("replaced")
    async with publisher(bus, kube, tmp_path), plumber(bus) as ask:
        reply = await ask(request(attached(), uid="claim-uid-1"))
    assert reply.error == ("claim ml/nics: UID new-uid differs from the UID the plumber sent "
                           "(claim-uid-1): the claim was replaced; nothing written")
    assert kube_api.writes("resourceclaims") == 0
    assert stored(kube_api)["status"]["devices"] == [OTHER_ENTRY]
    assert count("replaced") == replaced + 1


async def test_injected_conflicts_are_retried(bus, kube_api, kube, tmp_path):
    kube_api.put_object("resourceclaims", make_claim())
    kube_api.inject("update", "resourceclaims", status=409, times=2)
    async with publisher(bus, kube, tmp_path), plumber(bus) as ask:
        assert (await ask(request(attached()))).error == ""
    assert [(v, c) for v, r, c in kube_api.requests if r.startswith("resourceclaims")] == [
        ("get", 200), ("update", 409), ("get", 200), ("update", 409), ("get", 200),
        ("update", 200)]
    assert stored(kube_api)["status"]["devices"][0]["device"] == "eth1"


async def test_endless_conflicts_give_up(bus, kube_api, kube, tmp_path):
    kube_api.put_object("resourceclaims", make_claim())
    kube_api.inject("update", "resourceclaims", status=409, times=100)
    conflicts = count("conflict")
    async with publisher(bus, kube, tmp_path), plumber(bus) as ask:
        reply = await ask(request(attached()))
    assert reply.error.startswith("claim ml/nics: still conflicting after 5 tries")
    assert kube_api.writes("resourceclaims") == 0
    assert "devices" not in stored(kube_api)["status"]
    assert count("conflict") == conflicts + 1


class RacingApi:
    """KubeApi whose first status write loses a race: another driver writes just before."""

    def __init__(self, api: KubeApi, srv: KubeApiServer) -> None:
        self.api, self.srv, self.raced = api, srv, False

    def __getattr__(self, name: str):
        return getattr(self.api, name)

    async def update_claim_status(self, obj: dict) -> dict:
        if not self.raced:
            self.raced = True
            theirs = stored(self.srv)
            theirs["status"]["devices"] = [OTHER_ENTRY]
            del theirs["metadata"]["resourceVersion"]  # seeding bumps it
            self.srv.put_object("resourceclaims", theirs)
        return await self.api.update_claim_status(obj)


async def test_real_conflict_rereads_and_keeps_the_other_write(bus, kube_api, kube, tmp_path):
    kube_api.put_object("resourceclaims", make_claim())
    async with publisher(bus, RacingApi(kube, kube_api), tmp_path), plumber(bus) as ask:
        assert (await ask(request(attached()))).error == ""
    devices = stored(kube_api)["status"]["devices"]
    assert [d["driver"] for d in devices] == [OTHER, DRIVER]
    assert devices[0] == OTHER_ENTRY
    assert ("update", "resourceclaims/status", 409) in kube_api.requests


@pytest.mark.parametrize(("devices", "error"), [
    ([attached(ips=["10.1.0.5/24", "10.1.0.300/24"])],
     "devices[0].network_data.ips[1]: '10.1.0.300/24' is not a CIDR (address/prefix length)"),
    ([attached(ips=["10.1.0.5"])],
     "devices[0].network_data.ips[0]: '10.1.0.5' is not a CIDR"),
    ([attached(ips=["10.1.0.5/24", "10.1.0.5/24"])],
     "devices[0].network_data.ips[1]: '10.1.0.5/24' is listed twice"),
    ([attached(ips=[f"10.1.0.{i}/24" for i in range(1, 18)])],
     "devices[0].network_data.ips: 17 addresses, more than the 16 allowed"),
    ([attached(), DeviceStatus(driver=DRIVER, pool=NODE, device="eth2", share_id="s1",
                               network_data=NetworkData(interface_name="n" * 257))],
     "devices[1].network_data.interface_name: longer than 256 characters"),
    ([DeviceStatus(driver=DRIVER, pool=NODE, device="eth1",
                   network_data=NetworkData(hardware_address="a" * 129))],
     "devices[0].network_data.hardware_address: longer than 128 characters"),
    ([DeviceStatus(driver=DRIVER, pool=NODE, device="eth1", conditions=[
        Condition(type=f"T{i}", status="True", reason="R") for i in range(9)])],
     "devices[0].conditions: 9 conditions, more than the 8 allowed"),
    ([DeviceStatus(driver=DRIVER, pool=NODE, device="eth1", conditions=[
        Condition(type="Ready", status="Yes", reason="R")])],
     "devices[0].conditions[0].status: 'Yes' is not one of True, False, Unknown"),
    ([DeviceStatus(driver=DRIVER, pool=NODE, device="eth1", conditions=[
        Condition(type="Ready", status="True")])],
     "devices[0].conditions[0].reason: required"),
    ([DeviceStatus(driver=DRIVER, pool=NODE, device="eth1", conditions=[
        Condition(type="Ready", status="True", reason="not a reason")])],
     "devices[0].conditions[0].reason: 'not a reason' must be a CamelCase word"),
    ([DeviceStatus(driver=DRIVER, pool=NODE, device="eth1", conditions=[
        Condition(type="Ready", status="True", reason="A"),
        Condition(type="Ready", status="False", reason="B")])],
     "devices[0].conditions[1].type: 'Ready' is listed twice"),
    ([DeviceStatus(driver=DRIVER, pool=NODE, device="eth1", conditions=[
        Condition(type="not ready", status="True", reason="A")])],
     "devices[0].conditions[0].type: 'not ready' is not a qualified name"),
    ([DeviceStatus(driver=OTHER, pool=NODE, device="gpu-0")],
     "devices[0].driver: 'gpu.example.com' is not this driver (knd.dev)"),
    ([attached(), attached()], "devices[1]: device node-a.example.com/eth1 is listed twice"),
    ([attached("eth7")],
     "devices[0]: device node-a.example.com/eth7 is not allocated to this claim"),
    ([attached("eth2")],  # allocated with a shareID: the key must carry it
     "devices[0]: device node-a.example.com/eth2 is not allocated to this claim"),
])
async def test_invalid_requests_name_the_field_and_write_nothing(
        bus, kube_api, kube, tmp_path, devices, error):
    kube_api.put_object("resourceclaims", make_claim(devices=[OTHER_ENTRY]))
    invalid = count("invalid")
    async with publisher(bus, kube, tmp_path), plumber(bus) as ask:
        reply = await ask(request(*devices))
    assert reply.error.startswith(f"claim ml/nics: {error}"), reply.error
    assert reply.error.endswith("; nothing written")
    assert kube_api.writes("resourceclaims") == 0
    assert stored(kube_api)["status"]["devices"] == [OTHER_ENTRY]
    assert count("invalid") == invalid + 1


async def test_api_errors_become_error_replies(bus, kube_api, kube, tmp_path):
    async with publisher(bus, kube, tmp_path), plumber(bus) as ask:
        reply = await ask(request(attached()))
        assert reply.error == "claim ml/nics not found; nothing written"
        kube_api.put_object("resourceclaims", make_claim())
        kube_api.inject("update", "resourceclaims", status=500)
        errors = count("error")
        reply = await ask(request(attached()))
        assert reply.error.startswith("claim ml/nics: ") and "500" in reply.error
        assert count("error") == errors + 1
        unallocated = make_claim()
        del unallocated["status"]["allocation"]
        kube_api.put_object("resourceclaims", unallocated)
        reply = await ask(request(attached()))
        assert reply.error == "claim ml/nics: the claim is not allocated; nothing written"
        # a malformed request is answered, and the endpoint keeps serving
        raw = await busmod.connect(bus, "plumber")
        try:
            bad = await raw.request(S.claim_status, b'{"namespace": "ml"}', timeout=5)
        finally:
            await raw.close()
        assert "invalid ClaimStatus" in decode(bad.data, ErrorReply).error
        kube_api.put_object("resourceclaims", make_claim())
        assert (await ask(request(attached()))).error == ""
    assert kube_api.writes("resourceclaims") == 1


async def test_standalone_files(bus, tmp_path):
    files = FileApi(tmp_path / "state")
    seeded = await files.create_claim(make_claim(devices=[OTHER_ENTRY]))
    path = files.root / "resourceclaims" / "ml" / "nics.json"
    inode = path.stat().st_ino
    async with publisher(bus, files, tmp_path), plumber(bus) as ask:
        assert (await ask(request(attached(), uid="claim-uid-1"))).error.endswith(
            "the claim was replaced; nothing written")  # create_claim gave it a fresh uid
        assert path.stat().st_ino == inode
        reply = await ask(request(attached(), uid=seeded["metadata"]["uid"]))
    assert reply.error == ""
    on_disk = json.loads(path.read_text())
    assert [d["driver"] for d in on_disk["status"]["devices"]] == [OTHER, DRIVER]
    assert on_disk["status"]["devices"][1]["networkData"]["ips"] == \
        ["10.1.0.5/24", "2001:db8::5/64"]
    assert int(on_disk["metadata"]["resourceVersion"]) > \
        int(seeded["metadata"]["resourceVersion"])
    assert on_disk["spec"] == seeded["spec"]
    # replaced by rename (a new inode), no temporary file left behind
    assert path.stat().st_ino != inode
    assert sorted(p.name for p in path.parent.iterdir()) == ["nics.json"]


async def test_writer_without_the_bus(tmp_path):
    """The writer alone, on files, with a fixed clock: exact timestamps."""
    files = FileApi(tmp_path / "state")
    seeded = await files.create_claim(make_claim())
    clock = [1_700_000_000.0]
    writer = ClaimStatusWriter(files, DRIVER, clock=lambda: clock[0])
    uid = seeded["metadata"]["uid"]
    assert await writer.write(request(attached(), uid=uid)) == "written"
    clock[0] += 60
    assert await writer.write(request(attached(), uid=uid)) == "unchanged"
    assert await writer.write(request(attached(ready="False"), uid=uid)) == "written"
    got = (await files.get_claim("ml", "nics"))["status"]["devices"][0]["conditions"]
    assert [c["lastTransitionTime"] for c in got] == ["2023-11-14T22:14:20Z",
                                                      "2023-11-14T22:13:20Z"]
