"""The API server's ResourceSlice limits, seen through KubeApi and in the raw Status.

The publisher must split and trim so that none of these ever reaches a real
API server; these tests pin that the test server rejects exactly what the
real one rejects, with the field path that tells which device is at fault.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest

from services.common.api.kube import KubeApi
from services.common.api.port import Invalid
from tests.api.objects import make_device, make_slice
from tests.kubeapi.server import KubeApiServer
from tests.kubeapi.validation import validate_resource_slice

pytestmark = pytest.mark.anyio

Mutation = Callable[[dict], None]


def _devices(n: int) -> Mutation:
    def mutate(s: dict) -> None:
        s["spec"]["devices"] = [make_device(f"eth{i}") for i in range(n)]
    return mutate


def _attr(name: str, value: dict, device: int = 0) -> Mutation:
    def mutate(s: dict) -> None:
        s["spec"]["devices"][device]["attributes"][name] = value
    return mutate


def _many_attrs(n: int) -> Mutation:
    def mutate(s: dict) -> None:
        dev = s["spec"]["devices"][0]
        dev["attributes"] = {f"knd.dev/a{i}": {"int": i} for i in range(n - len(dev["capacity"]))}
    return mutate


def _set(path: str, value: object) -> Mutation:
    def mutate(s: dict) -> None:
        *parents, last = path.split(".")
        target = s
        for p in parents:
            target = target[p]
        target[last] = value
    return mutate


def _tainted(n: int) -> Mutation:
    def mutate(s: dict) -> None:
        _devices(n)(s)
        s["spec"]["devices"][0]["taints"] = [{"key": "knd.dev/down", "effect": "NoSchedule"}]
    return mutate


def _both(a: Mutation, b: Mutation) -> Mutation:
    def mutate(s: dict) -> None:
        a(s)
        b(s)
    return mutate


INVALID = {
    "129 devices": (_devices(129), "spec.devices", "FieldValueTooMany"),
    "65 devices with a taint": (_tainted(65), "spec.devices", "FieldValueTooMany"),
    "65-char string": (_attr("knd.dev/ifName", {"string": "x" * 65}),
                       "spec.devices[0].attributes[knd.dev/ifName].string", "FieldValueTooLong"),
    "33 attributes+capacity": (_many_attrs(33), "spec.devices[0].attributes",
                               "FieldValueTooMany"),
    "device name not a label": (_set("spec.devices", [make_device("Eth_0")]),
                                "spec.devices[0].name", "FieldValueInvalid"),
    "device name too long": (_set("spec.devices", [make_device("e" * 64)]),
                             "spec.devices[0].name", "FieldValueTooLong"),
    "duplicate device": (_set("spec.devices", [make_device("eth0"), make_device("eth0")]),
                         "spec.devices[1].name", "FieldValueDuplicate"),
    "identifier starts with digit": (_attr("knd.dev/1mtu", {"int": 1}),
                                     "spec.devices[0].attributes[knd.dev/1mtu]",
                                     "FieldValueInvalid"),
    "identifier too long": (_attr("knd.dev/" + "a" * 33, {"int": 1}),
                            f"spec.devices[0].attributes[knd.dev/{'a' * 33}]",
                            "FieldValueTooLong"),
    "domain not a subdomain": (_attr("Knd_Dev/mtu", {"int": 1}),
                               "spec.devices[0].attributes[Knd_Dev/mtu]", "FieldValueInvalid"),
    "domain too long": (_attr("d" * 64 + "/mtu", {"int": 1}),
                        f"spec.devices[0].attributes[{'d' * 64}/mtu]", "FieldValueTooLong"),
    "version not semver": (_attr("knd.dev/fw", {"version": "1.2"}),
                           "spec.devices[0].attributes[knd.dev/fw].version", "FieldValueInvalid"),
    "version with v": (_attr("knd.dev/fw", {"version": "v1.2.3"}),
                       "spec.devices[0].attributes[knd.dev/fw].version", "FieldValueInvalid"),
    "two values": (_attr("knd.dev/x", {"int": 1, "string": "a"}),
                   "spec.devices[0].attributes[knd.dev/x]", "FieldValueInvalid"),
    "no value": (_attr("knd.dev/x", {}), "spec.devices[0].attributes[knd.dev/x]",
                 "FieldValueInvalid"),
    "bad quantity": (_set("spec.devices", [make_device("eth0") | {
        "capacity": {"knd.dev/bw": {"value": "ten"}}}]),
        "spec.devices[0].capacity[knd.dev/bw].value", "FieldValueInvalid"),
    "driver too long": (_set("spec.driver", "d" * 64), "spec.driver", "FieldValueTooLong"),
    "driver not a subdomain": (_set("spec.driver", "Knd.Dev"), "spec.driver",
                               "FieldValueInvalid"),
    "no pool name": (_set("spec.pool", {"generation": 0, "resourceSliceCount": 1}),
                     "spec.pool.name", "FieldValueRequired"),
    "negative generation": (_set("spec.pool.generation", -1), "spec.pool.generation",
                            "FieldValueInvalid"),
    "zero slice count": (_set("spec.pool.resourceSliceCount", 0),
                         "spec.pool.resourceSliceCount", "FieldValueInvalid"),
    "node name and all nodes": (_set("spec.allNodes", True), "spec", "FieldValueInvalid"),
    "no node selection": (_set("spec.nodeName", ""), "spec", "FieldValueInvalid"),
    "per-device node without per-device selection":
        (_set("spec.devices", [make_device("eth0") | {"nodeName": "node-a"}]),
         "spec.devices[0].nodeName", "FieldValueForbidden"),
    "bad slice name": (_set("metadata.name", "Node_A"), "metadata.name", "FieldValueInvalid"),
}

VALID = {
    "128 devices": _devices(128),
    "64 devices with a taint": _tainted(64),
    "32 attributes+capacity": _many_attrs(32),
    "64-char string": _attr("knd.dev/ifName", {"string": "x" * 64}),
    "32-char identifier": _attr("knd.dev/" + "a" * 32, {"int": 1}),
    "bare identifier": _attr("mtu", {"int": 1}),
    "semver with pre-release and build": _attr("knd.dev/fw", {"version": "10.0.1-alpha.1+b.7"}),
    "per-device node selection": _both(_set("spec.nodeName", None), _both(
        _set("spec.perDeviceNodeSelection", True),
        _set("spec.devices", [make_device("eth0") | {"nodeName": "node-a"}]))),
}


@pytest.mark.parametrize(("mutate", "field", "reason"), INVALID.values(), ids=INVALID.keys())
async def test_invalid_slice_is_rejected(kube_api: KubeApiServer, api: KubeApi,
                                         mutate: Mutation, field: str, reason: str) -> None:
    obj = make_slice()
    mutate(obj)
    with pytest.raises(Invalid) as err:
        await api.create_slice(obj)
    assert err.value.status == 422 and err.value.reason == "Invalid"
    assert field in str(err.value)
    assert kube_api.objects("resourceslices") == []
    causes = {(c.field, c.reason) for c in validate_resource_slice(obj)}
    assert (field, reason) in causes


@pytest.mark.parametrize("mutate", VALID.values(), ids=VALID.keys())
async def test_slice_at_the_limits_is_accepted(api: KubeApi, mutate: Mutation) -> None:
    obj = make_slice()
    mutate(obj)
    created = await api.create_slice(obj)
    assert created["spec"]["devices"] == obj["spec"]["devices"]


async def test_update_is_validated_too(kube_api: KubeApiServer, api: KubeApi) -> None:
    created = await api.create_slice(make_slice())
    bad = {**created, "spec": {**created["spec"],
                               "devices": [make_device(f"eth{i}") for i in range(129)]}}
    with pytest.raises(Invalid):
        await api.update_slice(bad)
    assert kube_api.objects("resourceslices") == [created]


async def test_invalid_answer_is_a_status_with_causes(kube_api: KubeApiServer) -> None:
    obj = make_slice()
    obj["spec"]["devices"][0]["name"] = "Eth_0"
    obj["spec"]["devices"][0]["attributes"]["knd.dev/s"] = {"string": "y" * 65}
    async with aiohttp.ClientSession() as http, http.post(
            f"{kube_api.url}/apis/resource.k8s.io/v1/resourceslices", json=obj) as resp:
        status = await resp.json()
    assert resp.status == 422
    assert status["kind"] == "Status" and status["apiVersion"] == "v1"
    assert status["status"] == "Failure" and status["reason"] == "Invalid"
    assert status["code"] == 422
    assert status["details"]["name"] == obj["metadata"]["name"]
    assert status["details"]["kind"] == "ResourceSlice"
    assert {(c["field"], c["reason"]) for c in status["details"]["causes"]} == {
        ("spec.devices[0].name", "FieldValueInvalid"),
        ("spec.devices[0].attributes[knd.dev/s].string", "FieldValueTooLong"),
    }
