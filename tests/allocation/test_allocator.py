"""The allocator's semantics, ported from the cases of upstream's shared allocator test
table (k8s.io/dynamic-resource-allocation/structured, allocator_testing.go) that apply
to the stable allocator: names are upstream's, objects go through the real decoding
(resource.k8s.io/v1 dicts), results are ``request -> device``."""

from __future__ import annotations

from typing import Any

import pytest

from services.allocation.celenv import SelectorError
from services.allocation.explain import Explainer
from services.allocation.objects import Inputs, Node, read

DRIVER_A, DRIVER_B = "driver-a", "driver-b"
NODE1 = Node("node-1", {"region": "region-1", "planet": "earth"})
NODE2 = Node("node-2", {"region": "region-2", "planet": "earth"})


class Version(str):
    """A ``version`` attribute value."""


def dev(name: str, capacity: dict[str, str] | None = None, qualified: dict[str, Any] | None = None,
        **attrs: Any) -> dict[str, Any]:
    def typed(v: Any) -> dict[str, Any]:
        if isinstance(v, Version):
            return {"version": str(v)}
        if isinstance(v, bool):
            return {"bool": v}
        return {"int": v} if isinstance(v, int) else {"string": v}
    out: dict[str, Any] = {"name": name, "attributes": {
        k: typed(v) for k, v in {**attrs, **(qualified or {})}.items()}}
    if capacity:
        out["capacity"] = {k: {"value": v} for k, v in capacity.items()}
    return out


def slice_(name: str, pool: str, driver: str, *devices: dict[str, Any], node: str = "node-1",
           generation: int = 1, count: int = 1, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"driver": driver, "devices": list(devices),
                            "pool": {"name": pool, "generation": generation,
                                     "resourceSliceCount": count}}
    if node:
        body["nodeName"] = node
    body.update(spec)
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
            "metadata": {"name": name}, "spec": body}


def cls(name: str, driver: str, *extra: str) -> dict[str, Any]:
    return {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": name},
            "spec": {"selectors": [{"cel": {"expression": e}}
                                   for e in (f'device.driver == "{driver}"', *extra)]}}


def req(name: str, klass: str = "class-a", count: int = 1, *selectors: str,
        mode: str = "ExactCount") -> dict[str, Any]:
    exactly: dict[str, Any] = {"deviceClassName": klass, "allocationMode": mode,
                               "selectors": [{"cel": {"expression": s}} for s in selectors]}
    if mode == "ExactCount":
        exactly["count"] = count
    return {"name": name, "exactly": exactly}


def first(name: str, *subs: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "firstAvailable": [{"name": s["name"], **s["exactly"]} for s in subs]}


def claim(name: str, *requests: dict[str, Any], constraints: tuple[dict, ...] = (),
          holds: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"devices": {"requests": list(requests), "constraints": list(constraints)}}}
    if holds:
        out["status"] = {"allocation": {"devices": {"results": [
            dict(zip(("driver", "pool", "device"), h.split("/"), strict=True),
                 request="r") for h in holds]}}}
    return out


CLASSES = [cls("class-a", DRIVER_A), cls("class-b", DRIVER_B)]


def allocate(*objects: dict[str, Any], node: Node = NODE1, who: str = "claim-0"
             ) -> tuple[dict[str, list[str]] | None, str]:
    inputs: Inputs = read((f"obj{i}", o) for i, o in enumerate([*CLASSES, *objects]))
    inputs.nodes.update({n.name: n for n in (NODE1, NODE2)})
    the = next(c for c in inputs.claims if c.name == f"default/{who}")
    result = Explainer(inputs).node(the, node)
    if not result.allocatable:
        return None, result.error
    out: dict[str, list[str]] = {}
    for d in result.devices:
        out.setdefault(d["request"], []).append(f"{d['pool']}/{d['device']}")
    return out, ""


def test_simple() -> None:
    assert allocate(claim("claim-0", req("req-0")),
                    slice_("s", "pool-1", DRIVER_A, dev("device-1"))) == (
        {"req-0": ["pool-1/device-1"]}, "")


def test_other_node() -> None:
    got = allocate(claim("claim-0", req("req-0")),
                   slice_("s1", "pool-1", DRIVER_B, dev("device-1")),
                   slice_("s2", "pool-2", DRIVER_A, dev("device-1"), node="node-2"),
                   node=NODE2)
    assert got == ({"req-0": ["pool-2/device-1"]}, "")


def test_not_enough_suitable_devices() -> None:
    assert allocate(claim("claim-0", req("req-0", count=2)),
                    slice_("s", "pool-1", DRIVER_A, dev("device-1"))) == (None, "")


def test_devices_split_across_different_slices() -> None:
    got = allocate(claim("claim-0", req("req-0", count=2)),
                   slice_("s1", "pool-1", DRIVER_A, dev("device-1")),
                   slice_("s2", "pool-2", DRIVER_A, dev("device-1")))
    assert got == ({"req-0": ["pool-1/device-1", "pool-2/device-1"]}, "")


def test_already_allocated_devices() -> None:
    assert allocate(claim("claim-0", req("req-0")),
                    claim("other", req("r"), holds=("driver-a/pool-1/device-1",)),
                    slice_("s", "pool-1", DRIVER_A, dev("device-1"))) == (None, "")


def test_a_device_that_allows_multiple_allocations_stays_free() -> None:
    """knd's own case (not in the upstream suite): a device published with
    ``allowMultipleAllocations`` (ipvlan/macvlan parents) is not taken by another
    claim's allocation; without it, it is."""
    other = claim("other", req("r"), holds=("driver-a/pool-1/device-1",))
    shared = dict(dev("device-1"), allowMultipleAllocations=True)
    assert allocate(claim("claim-0", req("req-0")), other,
                    slice_("s", "pool-1", DRIVER_A, shared)) == (
        {"req-0": ["pool-1/device-1"]}, "")
    # within one claim it is still one device per request
    assert allocate(claim("claim-0", req("req-0", count=2)), other,
                    slice_("s", "pool-1", DRIVER_A, shared)) == (None, "")


@pytest.mark.parametrize(("node", "expected"), [(NODE1, {"req-0": ["pool-1/device-1"]}),
                                                (NODE2, None)],
                         ids=["network-attached-device", "unsuccessful-network-attached"])
def test_network_attached_device(node: Node, expected: dict | None) -> None:
    selector = {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "region", "operator": "In", "values": ["region-1"]}]}]}
    got = allocate(claim("claim-0", req("req-0")),
                   slice_("s", "pool-1", DRIVER_A, dev("device-1"), node="",
                          nodeSelector=selector), node=node)
    assert got == (expected, "")


def test_many_network_attached_devices() -> None:
    got = allocate(claim("claim-0", req("req-0", count=4)),
                   slice_("s1", "pool-1", DRIVER_A, dev("device-1"), node="", nodeSelector={
                       "nodeSelectorTerms": [{"matchExpressions": [
                           {"key": "region", "operator": "In", "values": ["region-1"]}]}]}),
                   slice_("s2", "pool-2", DRIVER_A, dev("device-1"), node="", allNodes=True),
                   slice_("s3", "pool-3", DRIVER_A, dev("device-1"), node="", nodeSelector={
                       "nodeSelectorTerms": [{"matchExpressions": [
                           {"key": "planet", "operator": "In", "values": ["earth"]}]}]}),
                   slice_("s4", "pool-4", DRIVER_A, dev("device-1"), node="", nodeSelector={
                       "nodeSelectorTerms": [{"matchFields": [
                           {"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}]}))
    assert got == ({"req-0": [f"pool-{i}/device-1" for i in (1, 2, 3, 4)]}, "")


def test_obsolete_slice() -> None:
    # two slices of one pool: the newer generation's alone is incomplete
    got = allocate(claim("claim-0", req("req-0")),
                   slice_("s1", "pool-1", DRIVER_A, dev("device-1"), count=2),
                   slice_("s2", "pool-1", DRIVER_A, dev("device-2"), count=2, generation=2))
    assert got == (None, "")


def test_no_allocation_from_incomplete_pools() -> None:
    assert allocate(claim("claim-0", req("req-0")),
                    slice_("s1", "pool-1", DRIVER_A, dev("device-1"), count=2)) == (None, "")


def test_different_resourceslices_in_pool_can_target_different_nodes() -> None:
    got = allocate(claim("claim-0", req("req-0")),
                   slice_("s1", "pool-1", DRIVER_A, dev("device-1"), count=2, node="node-2"),
                   slice_("s2", "pool-1", DRIVER_A, dev("device-2"), count=2))
    assert got == ({"req-0": ["pool-1/device-2"]}, "")


def test_multi_host_pool_with_stale_slice_for_current_node() -> None:
    got = allocate(claim("claim-0", req("req-0")),
                   slice_("s1", "pool-1", DRIVER_A, dev("device-1"), count=2),
                   slice_("s2", "pool-1", DRIVER_A, dev("device-2"), count=2, generation=2,
                          node="node-2"))
    assert got == (None, "")


def test_invalid_pool_is_ok_if_devices_can_be_allocated_from_other() -> None:
    got = allocate(claim("claim-0", req("req-0")),
                   slice_("s1", "pool-1", DRIVER_A, dev("device-1"), dev("device-1")),
                   slice_("s2", "pool-2", DRIVER_A, dev("device-2")))
    assert got == ({"req-0": ["pool-2/device-2"]}, "")


def _memory(at_least: str) -> str:
    return f'device.capacity["{DRIVER_A}"].memory.compareTo(quantity("{at_least}")) >= 0'


@pytest.mark.parametrize("order", [("1Gi", "2Gi"), ("2Gi", "1Gi")],
                         ids=["small-and-large", "small-and-large-backtrack-requests"])
def test_small_and_large(order: tuple[str, str]) -> None:
    devices = [dev(f"device-{size[0]}", capacity={"memory": size}) for size in order]
    got = allocate(claim("claim-0", req("req-0", "class-a", 1, _memory("1Gi")),
                         req("req-1", "class-a", 1, _memory("2Gi"))),
                   slice_("s", "pool-1", DRIVER_A, *devices))
    assert got == ({"req-0": ["pool-1/device-1"], "req-1": ["pool-1/device-2"]}, "")


def test_check_combinations_with_backtracking() -> None:
    is_x = f'device.attributes["{DRIVER_A}"].type == "X"'
    got = allocate(claim("claim-0", req("req-1", "class-a", 2), req("req-2", "class-a", 1, is_x)),
                   slice_("s", "pool-1", DRIVER_A, dev("device-1", type="X"),
                          dev("device-2", type="Y"), dev("device-3", type="Y")))
    assert got == ({"req-1": ["pool-1/device-2", "pool-1/device-3"],
                    "req-2": ["pool-1/device-1"]}, "")


def test_too_many_devices_single_request() -> None:
    got = allocate(claim("claim-0", req("req-0", count=500)),
                   slice_("s", "pool-1", DRIVER_A, dev("device-1")))
    assert got[0] is None and "exceeds the claim limit of 32" in got[1]


def test_all_devices_many_and_some_allocated() -> None:
    devices = (slice_("s1", "pool-1", DRIVER_A, dev("device-1")),
               slice_("s2", "pool-2", DRIVER_A, dev("device-1")))
    assert allocate(claim("claim-0", req("req-0", mode="All")), *devices) == (
        {"req-0": ["pool-1/device-1", "pool-2/device-1"]}, "")
    assert allocate(claim("claim-0", req("req-0", mode="All")),
                    claim("other", req("r"), holds=("driver-a/pool-2/device-1",)),
                    *devices) == (None, "")


def test_all_devices_of_the_incomplete_pool() -> None:
    got = allocate(claim("claim-0", req("req-0", mode="All")),
                   slice_("s1", "pool-1", DRIVER_A, dev("device-1"), count=2))
    assert got == (None, "claim default/claim-0, request req-0: asks for all devices, but "
                         "resource pool driver-a/pool-1 is currently being updated")


def test_with_constraint_not_matching_int_attribute_all_devices() -> None:
    got = allocate(claim("claim-0", req("req-0", mode="All"),
                         constraints=({"matchAttribute": f"{DRIVER_A}/numa"},)),
                   slice_("s", "pool-1", DRIVER_A, dev("device-1", numa=1),
                          dev("device-2", numa=2)))
    assert got == (None, "claim default/claim-0, request req-0: cannot add device "
                         "driver-a/pool-1/device-2 because a claim constraint would not be "
                         "satisfied")


@pytest.mark.parametrize(("a", "b", "fits"), [
    (1, 1, True), (1, 2, False), ("a", "a", True), ("a", "b", False), (True, True, True),
    (True, False, False), (Version("1.0.0"), Version("1.0.0"), True),
    (Version("1.0.0"), Version("2.0.0"), False), (1, "1", False)])
def test_with_constraint(a: Any, b: Any, fits: bool) -> None:
    got = allocate(claim("claim-0", req("req-0"), req("req-1"),
                         constraints=({"matchAttribute": f"{DRIVER_A}/attr"},)),
                   slice_("s", "pool-1", DRIVER_A, dev("device-1", attr=a),
                          dev("device-2", attr=b)))
    assert got == (({"req-0": ["pool-1/device-1"], "req-1": ["pool-1/device-2"]} if fits
                    else None), "")


def test_with_constraint_non_existent_attribute() -> None:
    got = allocate(claim("claim-0", req("req-0"),
                         constraints=({"matchAttribute": f"{DRIVER_A}/NonExistentAttribute"},)),
                   slice_("s", "pool-1", DRIVER_A, dev("device-1", numa=1)))
    assert got == (None, "")


def test_with_constraint_for_request_retry() -> None:
    got = allocate(claim("claim-0", req("req-0"), req("req-1"), constraints=(
        {"requests": ["req-0"], "matchAttribute": f"{DRIVER_A}/driverVersion"},
        {"matchAttribute": f"{DRIVER_A}/stringAttribute"})),
        slice_("s", "pool-1", DRIVER_A,
               dev("device-1", driverVersion=Version("1.0.0"), stringAttribute="a"),
               dev("device-2", driverVersion=Version("1.0.0"), stringAttribute="b"),
               dev("device-3", driverVersion=Version("2.0.0"), stringAttribute="b")))
    assert got == ({"req-0": ["pool-1/device-2"], "req-1": ["pool-1/device-3"]}, "")


def test_constraint_attribute_in_the_drivers_domain_by_its_short_name() -> None:
    """An unqualified attribute is the driver's: ``driver-a/numa`` finds ``numa``; a
    standard one must be published under its full name."""
    got = allocate(claim("claim-0", req("req-0"), req("req-1"),
                         constraints=({"matchAttribute": "resource.kubernetes.io/pcieRoot"},)),
                   slice_("s", "pool-1", DRIVER_A, dev("device-1", pcieRoot="a"),
                          dev("device-2", qualified={"resource.kubernetes.io/pcieRoot": "a"})))
    assert got == (None, "")


def test_prioritized_list_first_unavailable() -> None:
    got = allocate(claim("claim-0", first("req-0", req("subReq-0", "class-b"),
                                          req("subReq-1", "class-a"))),
                   slice_("s", "pool-1", DRIVER_A, dev("device-1")))
    assert got == ({"req-0/subReq-1": ["pool-1/device-1"]}, "")


def test_prioritized_list_with_backtracking() -> None:
    got = allocate(claim("claim-0",
                         first("req-0", req("subReq-0", "class-a", 1, _memory("8Gi")),
                               req("subReq-1", "class-a", 1, _memory("4Gi"))),
                         req("req-1", "class-a", 1, _memory("8Gi"))),
                   slice_("s", "pool-1", DRIVER_A, dev("device-1", capacity={"memory": "8Gi"}),
                          dev("device-2", capacity={"memory": "4Gi"})))
    assert got == ({"req-0/subReq-1": ["pool-1/device-2"], "req-1": ["pool-1/device-1"]}, "")


def test_prioritized_list_allocation_mode_all() -> None:
    got = allocate(claim("claim-0", first("req-0", req("subReq-0", mode="All"),
                                          req("subReq-1"))),
                   claim("other", req("r"), holds=("driver-a/pool-1/device-2",)),
                   slice_("s", "pool-1", DRIVER_A, dev("device-1"), dev("device-2")))
    assert got == ({"req-0/subReq-1": ["pool-1/device-1"]}, "")


def test_unknown_class() -> None:
    inputs = read([("c", claim("claim-0", req("req-0", "no-such-class")))])
    result = Explainer(inputs).claim(inputs.claims[0], [NODE1])
    assert result.error == ("claim default/claim-0, request req-0: could not retrieve device "
                            "class no-such-class")


def test_invalid_cel_is_an_error_naming_claim_request_and_selector() -> None:
    inputs = read([("c", claim("claim-0", req("req-0", "class-a", 1, "true", "noSuchVar ==")))]
                  + [("k", c) for c in CLASSES])
    with pytest.raises(SelectorError, match=r"^claim default/claim-0, request req-0: "
                                            r"selector #1: CEL compile error"):
        Explainer(inputs).compile(inputs.claims[0])


def test_a_missing_attribute_aborts_the_allocation_an_unknown_domain_does_not() -> None:
    """Upstream: an error in a selector aborts the allocation (the scheduler retries the
    pod); has() on a domain the device lacks is false, not an error."""
    got = allocate(claim("claim-0", req("req-0", "class-a", 1,
                                        f'device.attributes["{DRIVER_A}"].missing == 1')),
                   slice_("s", "pool-1", DRIVER_A, dev("device-1", numa=1)))
    assert got[0] is None
    assert got[1].startswith("claim default/claim-0, request req-0: selector #0 on device "
                             "driver-a/pool-1/device-1: CEL runtime error: no such key")
    assert got[1].endswith(f"(in: device.attributes[\"{DRIVER_A}\"].missing == 1)")
    got = allocate(claim("claim-0", req("req-0", "class-a", 1,
                                        '!has(device.attributes["other.io"].x)')),
                   slice_("s", "pool-1", DRIVER_A, dev("device-1", numa=1)))
    assert got == ({"req-0": ["pool-1/device-1"]}, "")


def test_version_attributes_compare_as_semver() -> None:
    expr = (f'device.attributes["{DRIVER_A}"].driverVersion.isGreaterThan(semver("1.10.0")) '
            f'&& device.attributes["{DRIVER_A}"].driverVersion.major() == 1')
    got = allocate(claim("claim-0", req("req-0", "class-a", 1, expr)),
                   slice_("s", "pool-1", DRIVER_A, dev("device-1", driverVersion=Version("1.9.0")),
                          dev("device-2", driverVersion=Version("1.10.1"))))
    assert got == ({"req-0": ["pool-1/device-2"]}, "")


@pytest.mark.parametrize(("numas", "expected"), [
    ((0, 1), {"req-0": ["pool-1/device-1"], "req-1": ["pool-1/device-2"]}),
    ((0, 0), None)])
def test_distinct_attribute(numas: tuple[int, int], expected: dict | None) -> None:
    """As upstream's allocator with DRAConsumableCapacity: every device a different value."""
    got = allocate(claim("claim-0", req("req-0"), req("req-1"),
                         constraints=({"distinctAttribute": f"{DRIVER_A}/numa"},)),
                   slice_("s", "pool-1", DRIVER_A, dev("device-1", numa=numas[0]),
                          dev("device-2", numa=numas[1])))
    assert got == (expected, "")


def test_v1beta1_and_v1beta2_objects_read_as_v1() -> None:
    """v1beta1: request fields on the request, device fields under ``basic``; v1beta2
    has v1's shapes."""
    beta1_slice = {"apiVersion": "resource.k8s.io/v1beta1", "kind": "ResourceSlice",
                   "metadata": {"name": "s"},
                   "spec": {"driver": DRIVER_A, "nodeName": "node-1",
                            "pool": {"name": "pool-1", "generation": 1,
                                     "resourceSliceCount": 1},
                            "devices": [{"name": "device-1", "basic": {
                                "attributes": {"numa": {"int": 1}},
                                "capacity": {"memory": {"value": "2Gi"}}}}]}}
    beta1_claim = {"apiVersion": "resource.k8s.io/v1beta1", "kind": "ResourceClaim",
                   "metadata": {"name": "claim-0", "namespace": "default"},
                   "spec": {"devices": {"requests": [{
                       "name": "req-0", "deviceClassName": "class-a",
                       "selectors": [{"cel": {"expression": _memory("2Gi")}}]}]}}}
    assert allocate(beta1_claim, beta1_slice) == ({"req-0": ["pool-1/device-1"]}, "")
    beta2 = {**claim("claim-0", req("req-0")), "apiVersion": "resource.k8s.io/v1beta2"}
    beta2_list = {"apiVersion": "resource.k8s.io/v1beta2", "kind": "ResourceSliceList",
                  "items": [{**slice_("s", "pool-1", DRIVER_A, dev("device-1")),
                             "apiVersion": "resource.k8s.io/v1beta2"}]}
    assert allocate(beta2, beta2_list) == ({"req-0": ["pool-1/device-1"]}, "")
