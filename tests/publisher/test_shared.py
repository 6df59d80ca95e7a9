"""Devices several claims may hold (``--shared-devices``): published with DRA consumable
capacity's ``allowMultipleAllocations`` through the test API server, which validates
them as the real one does; on a server without the feature the device stays exclusive
and the publisher does not fight the server over the field."""

from __future__ import annotations

import time

import msgspec
import pytest

from schemas.inventory import InventorySnapshot
from services.discovery.filter import DeviceFilter, shared_filter
from services.discovery.service import Scanner
from services.kernel.sysfs import Sysfs
from services.publisher.slices import same_device
from services.publisher.validation import to_wire
from tests.conftest import NODE
from tests.helpers.wait import until
from tests.kubeapi.validation import validate_resource_slice
from tests.publisher.helpers import device, slice_devices
from tests.publisher.test_service import discovery, events, publisher

pytestmark = pytest.mark.anyio


def shared_snapshot(seq: int = 1) -> InventorySnapshot:
    devs = [msgspec.structs.replace(device(0), shared=True), device(1)]
    return InventorySnapshot(node=NODE, epoch=1, seq=seq, devices=devs, taken_at=time.time())


def api_devices(srv) -> dict[str, dict]:
    return {d["name"]: d for o in srv.objects("resourceslices")
            for d in o["spec"].get("devices") or []}


@pytest.mark.parametrize("gate", [True, False], ids=["consumable-capacity", "feature-off"])
async def test_shared_device_is_published_for_multiple_allocations(bus, kube_api, kube,
                                                                   tmp_path, gate: bool):
    kube_api.store.consumable_capacity = gate
    async with events(bus) as got, publisher(bus, kube, tmp_path), discovery(bus) as pub:
        await pub(shared_snapshot())
        await until(lambda: got)
        assert got[0].dropped == [] and got[0].writes == 1
        devs = api_devices(kube_api)
        assert sorted(devs) == ["eth0", "eth1"]
        assert devs["eth0"].get("allowMultipleAllocations") is (True if gate else None)
        assert "allowMultipleAllocations" not in devs["eth1"]  # exclusive, as before
        await pub(shared_snapshot(seq=2))  # nothing changed: nothing is written again
        await until(lambda: len(got) == 2)
        assert got[1].writes == 0


def test_a_field_the_server_dropped_is_not_a_change() -> None:
    want = to_wire(msgspec.structs.replace(device(0), shared=True))
    have = {k: v for k, v in want.items() if k != "allowMultipleAllocations"}
    assert want["allowMultipleAllocations"] is True
    assert same_device(want, have)  # a server without the feature: stays exclusive
    assert not same_device(to_wire(device(0)), want)  # no longer shared: rewritten


def slice_with(dev: dict) -> dict:
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
            "metadata": {"name": "s"},
            "spec": {"driver": "knd.dev", "nodeName": NODE,
                     "pool": {"name": NODE, "generation": 1, "resourceSliceCount": 1},
                     "devices": [{"name": "eth0", **dev}]}}


@pytest.mark.parametrize(("dev", "field", "why"), [
    ({"allowMultipleAllocations": "yes"}, "spec.devices[0].allowMultipleAllocations",
     "must be a boolean"),
    ({"capacity": {"knd.dev/children": {"value": "8", "requestPolicy": {"default": "1"}}}},
     "spec.devices[0].capacity[knd.dev/children].requestPolicy",
     "allowMultipleAllocations must be true"),
    ({"allowMultipleAllocations": True, "capacity": {"knd.dev/children": {
        "value": "8", "requestPolicy": {"validValues": ["1", "2"]}}}},
     "spec.devices[0].capacity[knd.dev/children].requestPolicy.default", "Required"),
    ({"allowMultipleAllocations": True, "capacity": {"knd.dev/children": {
        "value": "8", "requestPolicy": {"default": "1", "validValues": ["2", "1"]}}}},
     "spec.devices[0].capacity[knd.dev/children].requestPolicy.validValues[1]",
     "sorted in ascending order"),
    ({"allowMultipleAllocations": True, "capacity": {"knd.dev/children": {
        "value": "8", "requestPolicy": {"default": "500m", "validRange": {"min": "1"}}}}},
     "spec.devices[0].capacity[knd.dev/children].requestPolicy.validRange.min",
     "default is less than min"),
    ({"allowMultipleAllocations": True, "capacity": {"knd.dev/children": {
        "value": "8", "requestPolicy": {"default": "1", "validRange": {"min": "1", "max": "9"}}}}},
     "spec.devices[0].capacity[knd.dev/children].requestPolicy.validRange.max",
     "max is larger than capacity value"),
    ({"allowMultipleAllocations": True, "capacity": {"knd.dev/children": {
        "value": "8", "requestPolicy": {"default": "1", "validValues": ["1"],
                                        "validRange": {"min": "1"}}}}},
     "spec.devices[0].capacity[knd.dev/children].requestPolicy", "exactly one policy"),
])
def test_api_server_rules_for_shared_devices(dev: dict, field: str, why: str) -> None:
    causes = validate_resource_slice(slice_with(dev))
    assert any(c.field.startswith(field) and why in f"{c.reason} {c.message}"
               for c in causes), causes


def test_a_valid_shared_device_passes() -> None:
    dev = {"allowMultipleAllocations": True, "capacity": {"knd.dev/children": {
        "value": "8", "requestPolicy": {"default": "1", "validRange": {"min": "1",
                                                                        "max": "8"}}}}}
    assert validate_resource_slice(slice_with(dev)) == []


async def test_discovery_marks_the_devices_chosen_by_shared_devices(node_ns, tmp_path):
    node_ns.veth("sh-a", "sh-b")
    scanner = Scanner("knd.dev", Sysfs(tmp_path / "no-sysfs"), DeviceFilter("true"),
                      node_ns.name, shared_filter('device.attributes["knd.dev"].ifName '
                                                  '== "sh-a"'))
    try:
        devices = {d.name: d for d in scanner.scan(fresh=True)}
    finally:
        scanner.close()
    assert devices["sh-a"].shared and not devices["sh-b"].shared
    assert slice_devices({"spec": {"devices": [to_wire(devices["sh-a"])]}}) == ["sh-a"]
