"""The gateway's reading of a ResourceClaim: this driver's results and their merged config."""

from __future__ import annotations

import copy

import pytest

from schemas.netconfig import NetworkConfig, RouteConfig
from schemas.plumber import DeviceRequest, PodRef
from services.kubelet_gateway.claims import ClaimError, claim_pods, claim_requests

DRIVER = "knd.dev"
UID = "6f1c3b9e-0000-4000-8000-000000000001"


def opaque(params: dict, *, source: str = "FromClaim", requests: list[str] | None = None,
           driver: str = DRIVER) -> dict:
    entry: dict = {"source": source, "opaque": {"driver": driver, "parameters": params}}
    if requests is not None:
        entry["requests"] = requests
    return entry


def make_claim(results: list[dict], configs: list[dict] | None = None, **status: object) -> dict:
    """An allocated claim as the API server serves it."""
    devices: dict = {"results": copy.deepcopy(results)}
    if configs is not None:
        devices["config"] = copy.deepcopy(configs)
    return {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": "train-0-nics", "namespace": "ml", "uid": UID,
                     "resourceVersion": "42", "generation": 1},
        "spec": {"devices": {"requests": [
            {"name": "nic", "exactly": {"deviceClassName": "knd-rdma", "count": 2}},
            {"name": "gpu", "exactly": {"deviceClassName": "gpu.example.com"}},
            {"name": "fast", "firstAvailable": [
                {"name": "cx7", "deviceClassName": "knd-cx7"},
                {"name": "any", "deviceClassName": "knd-rdma"}]}]}},
        "status": {"allocation": {"devices": devices,
                                  "nodeSelector": {"nodeSelectorTerms": []}}, **status},
    }


def result(request: str, device: str, *, driver: str = DRIVER, **extra: object) -> dict:
    return {"request": request, "driver": driver, "pool": "node-a", "device": device, **extra}


TWO_DRIVERS = [
    result("nic", "eth1"), result("gpu", "gpu-0", driver="gpu.example.com"),
    result("nic", "eth2"), result("fast/cx7", "eth3", shareID="5d0e9c2a"),
]


def test_results_of_other_drivers_are_left_out() -> None:
    got = claim_requests(make_claim(TWO_DRIVERS), driver=DRIVER, uid=UID)
    assert got == [
        DeviceRequest(request="nic", pool="node-a", device="eth1"),
        DeviceRequest(request="nic", pool="node-a", device="eth2"),
        DeviceRequest(request="fast/cx7", pool="node-a", device="eth3", share_id="5d0e9c2a"),
    ]
    assert claim_requests(make_claim(TWO_DRIVERS), driver="gpu.example.com", uid=UID) == [
        DeviceRequest(request="gpu", pool="node-a", device="gpu-0")]
    assert claim_requests(make_claim([]), driver=DRIVER, uid=UID) == []


def test_class_then_claim_configs_scoped_by_request() -> None:
    configs = [
        # listed first but FromClaim: still applied after every class config
        opaque({"interface": {"mtu": 9000}, "sysctls": {"ipv4.rp_filter": "0"}}),
        opaque({"interface": {"name": "rdma0", "mtu": 1500},
                "sysctls": {"ipv4.arp_ignore": "1", "ipv4.rp_filter": "2"}},
               source="FromClass", requests=["nic"]),
        opaque({"interface": {"mtu": 4000}}, source="FromClass", requests=["fast"]),
        opaque({"routes": [{"gateway": "10.0.0.1"}]}, requests=["fast/cx7"]),
        opaque({"interface": {"name": "gpu"}}, driver="gpu.example.com"),  # not ours
        {"source": "FromClaim", "requests": ["nic"]},  # no opaque part: ignored
        opaque({"interface": {"name": "other"}}, requests=["fast/any"]),  # not allocated
        opaque({"interface": {"name": "nope"}}, requests=["nicx", "fas"]),  # no prefix match
    ]
    got = claim_requests(make_claim(TWO_DRIVERS, configs), driver=DRIVER, uid=UID)
    nic = got[0].config
    assert nic is not None and got[1].config == nic
    assert (nic.interface.name, nic.interface.mtu) == ("rdma0", 9000)
    assert nic.sysctls == {"ipv4.arp_ignore": "1", "ipv4.rp_filter": "0"}
    assert nic.routes == []
    fast = got[2].config
    assert fast is not None
    assert (fast.interface.name, fast.interface.mtu) == ("", 9000)  # claim over class
    assert fast.routes == [RouteConfig(gateway="10.0.0.1")]
    assert fast.sysctls == {"ipv4.rp_filter": "0"}


def test_no_config_gives_none_and_empty_requests_means_all() -> None:
    claim = make_claim(TWO_DRIVERS, [opaque({"interface": {"mtu": 9000}}, requests=["gpu"])])
    got = claim_requests(claim, driver=DRIVER, uid=UID)
    assert [r.config for r in got] == [None, None, None]
    claim = make_claim(TWO_DRIVERS, [opaque({}, requests=[])])
    assert [r.config for r in claim_requests(claim, driver=DRIVER, uid=UID)] == \
        [NetworkConfig()] * 3


def test_replaced_claim() -> None:
    with pytest.raises(ClaimError) as info:
        claim_requests(make_claim(TWO_DRIVERS), driver=DRIVER, uid="other-uid")
    assert str(info.value) == (f"claim ml/train-0-nics: UID {UID} differs from the UID kubelet "
                               "sent (other-uid): the claim was replaced")


def test_not_allocated() -> None:
    claim = make_claim(TWO_DRIVERS)
    del claim["status"]["allocation"]
    with pytest.raises(ClaimError, match=r"^claim ml/train-0-nics: not allocated$"):
        claim_requests(claim, driver=DRIVER, uid=UID)
    del claim["status"]
    with pytest.raises(ClaimError, match="not allocated"):
        claim_requests(claim, driver=DRIVER, uid=UID)


def test_invalid_config_names_its_path() -> None:
    configs = [opaque({"interface": {"mtu": 9000}}, source="FromClass"),
               opaque({"interface": {"name": "x"}}, driver="gpu.example.com"),
               opaque({"interface": {"nme": "net1", "mtu": 20}})]
    with pytest.raises(ClaimError) as info:
        claim_requests(make_claim(TWO_DRIVERS, configs), driver=DRIVER, uid=UID)
    assert str(info.value) == (
        "claim ml/train-0-nics: status.allocation.devices.config[2].opaque.parameters."
        "interface.nme: unknown field")
    configs[2] = opaque({"interface": {"mtu": 20, "addresses": ["10.0.0.0/24"]}})
    with pytest.raises(ClaimError) as info:
        claim_requests(make_claim(TWO_DRIVERS, configs), driver=DRIVER, uid=UID)
    assert str(info.value) == (
        "claim ml/train-0-nics: status.allocation.devices.config[2].opaque.parameters."
        "interface.addresses[0]: '10.0.0.0/24' is the network address of 10.0.0.0/24, not a "
        "host address; status.allocation.devices.config[2].opaque.parameters.interface.mtu: "
        "20 is out of range (68..65535)")


def test_invalid_config_of_another_driver_is_not_ours_to_judge() -> None:
    configs = [opaque({"bogus": True}, driver="gpu.example.com")]
    assert len(claim_requests(make_claim(TWO_DRIVERS, configs), driver=DRIVER, uid=UID)) == 3


def test_invalid_merge_names_the_result() -> None:
    configs = [opaque({"interface": {"addresses": ["2001:db8::5/64"]}}, source="FromClass"),
               opaque({"interface": {"mtu": 1200}}, requests=["fast"])]
    got = claim_requests(make_claim(TWO_DRIVERS[:3], configs), driver=DRIVER, uid=UID)
    assert got[0].config is not None and got[0].config.interface.mtu is None
    with pytest.raises(ClaimError) as info:
        claim_requests(make_claim(TWO_DRIVERS, configs), driver=DRIVER, uid=UID)
    assert str(info.value).startswith(
        "claim ml/train-0-nics: status.allocation.devices.results[3] (request fast/cx7): the "
        "merged configuration is invalid: interface.mtu: 1200 is below 1280")


@pytest.mark.parametrize(("mutate", "error"), [
    (lambda c: c["status"]["allocation"]["devices"]["config"][0].update(source="FromSpace"),
     'status.allocation.devices.config[0].source: "FromSpace" is not one of FromClass, '
     "FromClaim"),
    (lambda c: c["status"]["allocation"]["devices"]["config"][0]["opaque"].pop("parameters"),
     "status.allocation.devices.config[0].opaque.parameters: required"),
    (lambda c: c["status"]["allocation"]["devices"]["config"][0].update(requests="nic"),
     'status.allocation.devices.config[0].requests: expected a list, got a string "nic"'),
    (lambda c: c["status"]["allocation"]["devices"]["config"][0].update(requests=["nic", 7]),
     "status.allocation.devices.config[0].requests[1]: expected a string, got a number"),
    (lambda c: c["status"]["allocation"]["devices"]["results"][2].pop("device"),
     "status.allocation.devices.results[2].device: required"),
    (lambda c: c["status"]["allocation"]["devices"].update(results={}),
     "status.allocation.devices.results: expected a list, got an object"),
    (lambda c: c["status"]["allocation"]["devices"]["results"][0].update(pool=5),
     "status.allocation.devices.results[0].pool: expected a string, got a number"),
    (lambda c: c.update(status="nope"), "status: expected an object, got a string \"nope\""),
    (lambda c: c["status"].update(allocation=[]),
     "status.allocation: expected an object, got a list"),
    (lambda c: c["status"]["allocation"]["devices"].update(
        results=[result("nic", f"eth{i}") for i in range(33)]),
     "status.allocation.devices.results: 33 entries, more than the 32 the API allows"),
    (lambda c: c["status"]["allocation"]["devices"].update(
        config=[opaque({}) for _ in range(65)]),
     "status.allocation.devices.config: 65 entries, more than the 64 the API allows"),
    (lambda c: c["status"]["allocation"]["devices"]["config"][0]["opaque"].update(
        parameters={"sysctls": {f"ipv4.k{i}": "1" for i in range(1000)}}),
     "status.allocation.devices.config[0].opaque.parameters: 15903 bytes, more than the 10240 "
     "allowed"),
])
def test_malformed_claims(mutate, error: str) -> None:
    claim = make_claim(TWO_DRIVERS, [opaque({"interface": {"mtu": 9000}})])
    mutate(claim)
    with pytest.raises(ClaimError) as info:
        claim_requests(claim, driver=DRIVER, uid=UID)
    assert str(info.value) == f"claim ml/train-0-nics: {error}"


def test_limits_are_inclusive() -> None:
    claim = make_claim([result("nic", f"eth{i}") for i in range(32)],
                       [opaque({}) for _ in range(64)])
    assert len(claim_requests(claim, driver=DRIVER, uid=UID)) == 32


def test_claim_is_not_modified() -> None:
    claim = make_claim(TWO_DRIVERS, [opaque({"interface": {"mtu": 9000}})])
    before = copy.deepcopy(claim)
    claim_requests(claim, driver=DRIVER, uid=UID)
    assert claim == before


def test_claim_pods() -> None:
    claim = make_claim(TWO_DRIVERS, reservedFor=[
        {"resource": "pods", "name": "train-0", "uid": "pod-uid-0"},
        {"apiGroup": "", "resource": "pods", "name": "train-1", "uid": "pod-uid-1"},
        {"apiGroup": "batch.example.com", "resource": "pods", "name": "x", "uid": "u"},
        {"apiGroup": "apps", "resource": "statefulsets", "name": "train", "uid": "ss-uid"},
    ])
    assert claim_pods(claim) == [PodRef(uid="pod-uid-0", namespace="ml", name="train-0"),
                                 PodRef(uid="pod-uid-1", namespace="ml", name="train-1")]
    assert claim_pods(make_claim(TWO_DRIVERS)) == []
