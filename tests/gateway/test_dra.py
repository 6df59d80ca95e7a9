"""NodePrepareResources / NodeUnprepareResources as kubelet calls them, v1 and v1beta1."""

from __future__ import annotations

import time

import grpc
import pytest
from prometheus_client import REGISTRY

from kndpeers.kubelet import make_claim, opaque, prepare, ref, result, unprepare
from tests.gateway.conftest import FakePlumber, Gateway
from tests.kubeapi.server import KubeApiServer

pytestmark = pytest.mark.anyio

VERSIONS = pytest.mark.parametrize("version", ["v1", "v1beta1"])


def seed(kube_api: KubeApiServer, *claims: dict) -> None:
    for c in claims:
        kube_api.put_object("resourceclaims", c)


@VERSIONS
async def test_prepare_maps_every_uid(gateway: Gateway, kube_api: KubeApiServer,
                                      plumber: FakePlumber, version: str) -> None:
    ok = make_claim("ok", results=[result("nic", "eth0", share_id="s-1"),
                                   result("gpu", "gpu0", driver="gpu.example.com"),
                                   result("nic2", "eth1")],
                    config=[opaque({"interface": {"mtu": 9000}}, source="FromClass"),
                            opaque({"interface": {"name": "net1"}}, requests=["nic"])])
    other_only = make_claim("other", results=[result("gpu", "gpu1", driver="gpu.example.com")])
    replaced = make_claim("replaced")
    unallocated = make_claim("unallocated", allocated=False)
    invalid = make_claim("invalid", config=[opaque({"interface": {"mtu": "big"}})])
    seed(kube_api, ok, other_only, replaced, unallocated, invalid)
    missing = ("default", "missing", "uid-missing")
    stale_replaced = ("default", "replaced", "uid-of-the-old-claim")
    asked = [ref(ok), ref(other_only), stale_replaced, ref(unallocated), ref(invalid), missing]

    resp = await prepare(gateway.dra, version, asked)

    assert set(resp.claims) == {uid for _, _, uid in asked}
    good = resp.claims[ok["metadata"]["uid"]]
    assert good.error == ""
    devices = {d.device_name: d for d in good.devices}
    assert set(devices) == {"eth0", "eth1"}  # the other driver's gpu0 is not ours
    eth0 = devices["eth0"]
    assert list(eth0.request_names) == ["nic"]
    assert eth0.pool_name == "node-a"
    assert list(eth0.cdi_device_ids) == [f"knd.dev/net={ok['metadata']['uid']}-eth0"]
    if version == "v1":
        assert eth0.HasField("share_id") and eth0.share_id == "s-1"
        assert not devices["eth1"].HasField("share_id")
    # the plumber got the decoded configuration, claim over class, and the pod
    sent = plumber.prepared(ok["metadata"]["uid"])
    by_dev = {d.device: d for d in sent.devices}
    assert by_dev["eth0"].config is not None and by_dev["eth0"].config.interface.name == "net1"
    assert by_dev["eth1"].config is not None and by_dev["eth1"].config.interface.mtu == 9000
    assert [(x.uid, x.name, x.namespace) for x in sent.pods] == [
        ("pod-uid-1", "pod-1", "default")]

    other = resp.claims[other_only["metadata"]["uid"]]
    assert other.error == "" and list(other.devices) == []
    assert "replaced" in resp.claims["uid-of-the-old-claim"].error
    assert "not allocated" in resp.claims[unallocated["metadata"]["uid"]].error
    err = resp.claims[invalid["metadata"]["uid"]].error
    assert "interface.mtu" in err and "default/invalid" in err
    assert "not found" in resp.claims["uid-missing"].error
    for _, _, uid in asked:
        c = resp.claims[uid]
        assert not (c.error and c.devices)
    # only the claims with devices of ours reached the plumber
    assert {r.claim_uid for r in plumber.prepares} == {ok["metadata"]["uid"]}


@VERSIONS
async def test_prepare_is_idempotent(gateway: Gateway, kube_api: KubeApiServer,
                                     plumber: FakePlumber, version: str) -> None:
    claim = make_claim("c1")
    seed(kube_api, claim)
    first = await prepare(gateway.dra, version, [ref(claim)])
    again = await prepare(gateway.dra, version, [ref(claim), ref(claim)])
    assert first == again
    assert first.claims[claim["metadata"]["uid"]].devices[0].device_name == "eth0"
    assert len(plumber.prepares) == 2


async def test_claims_are_prepared_concurrently(gateway: Gateway, kube_api: KubeApiServer,
                                                plumber: FakePlumber) -> None:
    claims = [make_claim(f"c{i}") for i in range(4)]
    seed(kube_api, *claims)
    plumber.delay = 0.4
    start = time.monotonic()
    resp = await prepare(gateway.dra, "v1", [ref(c) for c in claims])
    took = time.monotonic() - start
    assert all(v.error == "" and len(v.devices) == 1 for v in resp.claims.values())
    assert took < 1.2, f"4 claims with a 0.4 s plumber took {took:.2f} s: not concurrent"


@VERSIONS
async def test_plumber_errors_are_per_claim(gateway: Gateway, kube_api: KubeApiServer,
                                            plumber: FakePlumber, version: str) -> None:
    bad, confused, good = make_claim("bad"), make_claim("confused"), make_claim("good")
    seed(kube_api, bad, confused, good)
    plumber.errors[bad["metadata"]["uid"]] = "devices[0]: eth0 is not on this node"
    plumber.wrong_uid.add(confused["metadata"]["uid"])
    resp = await prepare(gateway.dra, version, [ref(bad), ref(confused), ref(good)])
    assert "eth0 is not on this node" in resp.claims[bad["metadata"]["uid"]].error
    assert "someone-else" in resp.claims[confused["metadata"]["uid"]].error
    assert resp.claims[good["metadata"]["uid"]].error == ""
    assert len(resp.claims[good["metadata"]["uid"]].devices) == 1


async def test_plumber_silent_fails_within_deadline(gateway: Gateway, kube_api: KubeApiServer,
                                                    plumber: FakePlumber) -> None:
    slow, fine = make_claim("slow"), make_claim("fine")
    seed(kube_api, slow, fine)
    plumber.silent.add(slow["metadata"]["uid"])
    start = time.monotonic()
    resp = await prepare(gateway.dra, "v1", [ref(slow), ref(fine)], seconds=1.0)
    took = time.monotonic() - start
    assert took < 1.0
    assert "no answer" in resp.claims[slow["metadata"]["uid"]].error
    assert resp.claims[fine["metadata"]["uid"]].error == ""
    # unprepare: the same bound
    resp2 = await unprepare(gateway.dra, "v1beta1", [ref(slow), ref(fine)], seconds=1.0)
    assert "no answer" in resp2.claims[slow["metadata"]["uid"]].error
    assert resp2.claims[fine["metadata"]["uid"]].error == ""


async def test_api_server_down_is_a_claim_error(gateway: Gateway, kube_api: KubeApiServer,
                                                plumber: FakePlumber) -> None:
    claim = make_claim("c1")
    seed(kube_api, claim)
    kube_api.inject("get", "resourceclaims", status=500)
    resp = await prepare(gateway.dra, "v1", [ref(claim)])
    assert "API" in resp.claims[claim["metadata"]["uid"]].error
    resp = await prepare(gateway.dra, "v1", [ref(claim)])  # kubelet's retry succeeds
    assert resp.claims[claim["metadata"]["uid"]].error == ""


@VERSIONS
async def test_unprepare_after_claim_deleted(gateway: Gateway, kube_api: KubeApiServer,
                                             plumber: FakePlumber, version: str) -> None:
    claim = make_claim("c1")
    seed(kube_api, claim)
    resp = await prepare(gateway.dra, version, [ref(claim)])
    assert resp.claims[claim["metadata"]["uid"]].error == ""
    del kube_api.store.data["resourceclaims"][("default", "c1")]
    gets_before = sum(1 for verb, res, _ in kube_api.requests if verb == "get")
    out = await unprepare(gateway.dra, version, [ref(claim)])
    assert dict(out.claims).keys() == {claim["metadata"]["uid"]}
    assert out.claims[claim["metadata"]["uid"]].error == ""
    assert [u.claim_uid for u in plumber.unprepares] == [claim["metadata"]["uid"]]
    assert plumber.unprepares[0].namespace == "default" and plumber.unprepares[0].name == "c1"
    assert sum(1 for verb, res, _ in kube_api.requests if verb == "get") == gets_before
    again = await unprepare(gateway.dra, version, [ref(claim)])  # idempotent retry
    assert again == out


async def test_unprepare_errors_per_claim(gateway: Gateway, plumber: FakePlumber) -> None:
    plumber.errors["uid-b"] = "checkpoint: disk full"
    out = await unprepare(gateway.dra, "v1", [("ns", "a", "uid-a"), ("ns", "b", "uid-b"),
                                              ("", "", "uid-c"), ("ns", "d", "")])
    assert set(out.claims) == {"uid-a", "uid-b", "uid-c", ""}
    assert out.claims["uid-a"].error == ""
    assert "disk full" in out.claims["uid-b"].error
    assert out.claims["uid-c"].error == ""  # the UID is all the plumber needs
    assert "incomplete" in out.claims[""].error
    assert {u.claim_uid for u in plumber.unprepares} == {"uid-a", "uid-b", "uid-c"}
    resp = await prepare(gateway.dra, "v1", [("ns", "", "uid-e")])
    assert "incomplete" in resp.claims["uid-e"].error


async def test_empty_request(gateway: Gateway) -> None:
    resp = await prepare(gateway.dra, "v1", [])
    assert len(resp.claims) == 0


async def test_metrics_count_calls(gateway: Gateway, kube_api: KubeApiServer,
                                   plumber: FakePlumber) -> None:
    def count(method: str, version: str, status: str) -> float:
        return REGISTRY.get_sample_value("knd_gateway_dra_requests_total", {
            "method": method, "version": version, "status": status}) or 0.0

    def observed(method: str, version: str, status: str) -> float:
        return REGISTRY.get_sample_value("knd_gateway_dra_request_duration_seconds_count", {
            "method": method, "version": version, "status": status}) or 0.0

    claim = make_claim("c1")
    seed(kube_api, claim)
    before = (count("NodePrepareResources", "v1beta1", "ok"),
              count("NodePrepareResources", "v1beta1", "claim_error"),
              observed("NodeUnprepareResources", "v1", "ok"))
    await prepare(gateway.dra, "v1beta1", [ref(claim)])
    await prepare(gateway.dra, "v1beta1", [("default", "nope", "uid-nope")])
    await unprepare(gateway.dra, "v1", [ref(claim)])
    after = (count("NodePrepareResources", "v1beta1", "ok"),
             count("NodePrepareResources", "v1beta1", "claim_error"),
             observed("NodeUnprepareResources", "v1", "ok"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]


async def test_call_already_past_its_deadline(gateway: Gateway, kube_api: KubeApiServer,
                                             plumber: FakePlumber) -> None:
    """A call that expires before the gateway answers leaves the gateway working."""
    claim = make_claim("c1")
    seed(kube_api, claim)
    plumber.silent.add(claim["metadata"]["uid"])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await prepare(gateway.dra, "v1", [ref(claim)], seconds=0.0001)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # the gateway is fine after a call whose deadline passed before it started
    resp = await prepare(gateway.dra, "v1", [ref(make_claim("c2"))])
    assert "not found" in next(iter(resp.claims.values())).error
