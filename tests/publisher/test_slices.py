"""Pool planning: splitting, names, sticky placement and the generation rule."""

from __future__ import annotations

import copy
import itertools

from schemas import limits
from services.publisher.slices import (
    Owner,
    Plan,
    pack,
    plan_pool,
    slice_base,
    slice_index,
    slice_name,
)
from services.publisher.validation import to_wire
from tests.publisher.helpers import DRIVER, device, devices, pool_state, slice_devices

NODE = "node-a.example.com"
OWNER = Owner(name=NODE, uid="uid-1")
_rv = itertools.count(1)


def wire(n: int, start: int = 0) -> list[dict]:
    return [to_wire(d) for d in devices(n, start)]


def apply(existing: list[dict], plan: Plan) -> list[dict]:
    """What the API would hold after executing ``plan`` (a tiny fake server)."""
    by_name = {s["metadata"]["name"]: s for s in existing}
    for w in plan.writes:
        obj = copy.deepcopy(w.obj)
        obj["metadata"]["resourceVersion"] = str(next(_rv))
        obj["metadata"].setdefault("uid", f"uid-{obj['metadata']['name']}")
        by_name[w.name] = obj
    for d in plan.deletes:
        assert by_name[d.name]["metadata"]["uid"] == d.uid
        del by_name[d.name]
    return sorted(by_name.values(), key=lambda s: s["metadata"]["name"])


def plan(devs: list[dict], existing: list[dict], owner: Owner | None = OWNER) -> Plan:
    return plan_pool(node=NODE, driver=DRIVER, owner=owner, devices=devs, existing=existing)


def test_300_devices_make_3_slices_of_one_generation():
    p = plan(wire(300), [])
    assert [len(s["spec"]["devices"]) for s in p.slices] == [128, 128, 44]
    assert pool_state(p.slices) == ({0}, {3}, 3)
    assert all(w.create for w in p.writes) and len(p.writes) == 3
    for s in p.slices:
        assert s["apiVersion"] == "resource.k8s.io/v1" and s["kind"] == "ResourceSlice"
        assert s["spec"]["driver"] == DRIVER and s["spec"]["nodeName"] == NODE
        assert s["spec"]["pool"]["name"] == NODE
        assert s["metadata"]["ownerReferences"] == [
            {"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": "uid-1",
             "controller": True}]
    names = [s["metadata"]["name"] for s in p.slices]
    assert names == [slice_name(NODE, DRIVER, i) for i in range(3)]
    assert all(limits.is_dns_subdomain(n) for n in names)


def test_no_devices_is_one_empty_slice():
    p = plan([], [])
    assert len(p.slices) == 1 and p.slices[0]["spec"]["devices"] == []


def test_same_devices_again_plan_nothing():
    api = apply([], plan(wire(300), []))
    again = plan(wire(300), api)
    assert again.empty and not again.bumped and again.generation == 0


def test_adding_one_device_rewrites_one_slice_only():
    api = apply([], plan(wire(300), []))
    p = plan(wire(301), api)
    assert not p.bumped and p.generation == 0
    assert [w.name for w in p.writes] == [slice_name(NODE, DRIVER, 2)]
    assert not p.writes[0].create
    assert p.writes[0].obj["metadata"]["resourceVersion"] == api[2]["metadata"]["resourceVersion"]
    assert p.deletes == []


def test_changed_device_stays_in_its_slice():
    api = apply([], plan(wire(300), []))
    devs = wire(300)
    devs[200]["attributes"][f"{DRIVER}/mtu"] = {"int": 9000}
    p = plan(devs, api)
    assert [w.name for w in p.writes] == [slice_name(NODE, DRIVER, 1)]
    assert slice_devices(p.writes[0].obj) == slice_devices(api[1])


def test_new_devices_fill_free_room_left_by_removed_ones():
    api = apply([], plan(wire(300), []))
    devs = [d for d in wire(300) if d["name"] != "eth5"] + wire(1, start=1000)
    p = plan(devs, api)
    assert [w.name for w in p.writes] == [slice_name(NODE, DRIVER, 0)]
    assert slice_devices(p.writes[0].obj)[-1] == "eth1000"
    assert "eth5" not in slice_devices(p.writes[0].obj)


def test_growing_past_a_slice_bumps_generation_and_rewrites_all():
    api = apply([], plan(wire(128), []))
    p = plan(wire(129), api)
    assert p.bumped and p.generation == 1
    assert [(w.name, w.create) for w in p.writes] == [
        (slice_name(NODE, DRIVER, 0), False), (slice_name(NODE, DRIVER, 1), True)]
    api = apply(api, p)
    assert pool_state(api) == ({1}, {2}, 2)


def test_removing_devices_compacts_with_a_new_generation():
    api = apply([], plan(wire(300), []))
    devs = wire(300)[::3]  # 100 devices fit one slice
    p = plan(devs, api)
    assert p.bumped and p.generation == 1 and p.slice_count == 1
    assert [w.name for w in p.writes] == [slice_name(NODE, DRIVER, 0)]
    assert [d.name for d in p.deletes] == [slice_name(NODE, DRIVER, i) for i in (1, 2)]
    api = apply(api, p)
    assert pool_state(api) == ({1}, {1}, 1)
    assert slice_devices(api[0]) == [d["name"] for d in devs]


def test_taints_lower_the_limit_to_64():
    devs = wire(100)
    devs[3]["taints"] = [{"key": "knd.dev/unhealthy", "effect": "NoSchedule"}]
    groups = pack(devs)
    assert [len(g) for g in groups] == [64, 36]
    assert groups[0][0]["name"] == "eth3"
    counters = wire(130)
    for d in counters:
        d["consumesCounters"] = [{"counterSet": "port", "counters": {"x": {"value": "1"}}}]
    assert [len(g) for g in pack(counters)] == [64, 64, 2]
    assert [len(g) for g in pack(wire(300))] == [128, 128, 44]


def test_a_new_taint_that_overfills_its_slice_repacks():
    api = apply([], plan(wire(150), []))  # 128 + 22
    devs = wire(150)
    devs[10]["taints"] = [{"key": "knd.dev/unhealthy", "effect": "NoSchedule"}]
    p = plan(devs, api)  # still two slices, but 64 + 86
    assert p.bumped and p.generation == 1 and len(p.writes) == 2
    assert "no longer fit" in p.why
    assert all(len(s["spec"]["devices"]) <= 128 for s in p.slices)
    assert len(p.slices[0]["spec"]["devices"]) == 64


def test_inconsistent_pool_is_rewritten_with_a_new_generation():
    api = apply([], plan(wire(300), []))
    api[1]["spec"]["pool"]["generation"] = 7  # mixed generations
    p = plan(wire(300), api)
    assert p.bumped and p.generation == 8 and len(p.writes) == 3
    assert "mixed" in p.why
    api = apply(api, p)
    assert pool_state(api) == ({8}, {3}, 3)
    assert plan(wire(300), api).empty


def test_wrong_count_and_foreign_slices_and_duplicates():
    api = apply([], plan(wire(300), []))
    bad = copy.deepcopy(api)
    bad[0]["spec"]["pool"]["resourceSliceCount"] = 4
    assert "resourceSliceCount" in plan(wire(300), bad).why

    foreign = copy.deepcopy(api[0])
    foreign["metadata"].update(name="someone-else-xyz", uid="uid-foreign")
    p = plan(wire(300), [*api, foreign])
    assert p.bumped and "not ours" in p.why
    assert [d.name for d in p.deletes] == ["someone-else-xyz"]
    assert pool_state(p.slices) == ({1}, {3}, 3) and len(p.writes) == 3

    dup = copy.deepcopy(api)
    dup[1]["spec"]["devices"].append(dict(dup[0]["spec"]["devices"][0]))
    assert "twice" in plan(wire(300), dup).why


def test_other_pool_of_the_node_is_deleted():
    api = apply([], plan(wire(3), []))
    old = copy.deepcopy(api[0])
    old["metadata"].update(name="old-pool-0", uid="uid-old")
    old["spec"]["pool"]["name"] = "old-pool"
    p = plan(wire(3), [*api, old])
    assert p.writes == [] and [d.name for d in p.deletes] == ["old-pool-0"]
    assert p.deletes[0].uid == "uid-old"


def test_server_respelled_quantities_and_added_defaults_are_not_changes():
    api = apply([], plan(wire(3), []))
    for d in api[0]["spec"]["devices"]:
        d["capacity"][f"{DRIVER}/bandwidth"]["value"] = "10000M"
    assert plan(wire(3), api).empty
    api[0]["spec"]["devices"][0]["capacity"][f"{DRIVER}/bandwidth"]["value"] = "1G"
    assert len(plan(wire(3), api).writes) == 1


def test_removed_attribute_is_a_change():
    api = apply([], plan(wire(3), []))
    devs = wire(3)
    del devs[1]["attributes"][f"{DRIVER}/mtu"]
    assert [w.name for w in plan(devs, api).writes] == [slice_name(NODE, DRIVER, 0)]


def test_new_owner_uid_rewrites():
    api = apply([], plan(wire(3), []))
    p = plan(wire(3), api, owner=Owner(NODE, "uid-2"))
    assert len(p.writes) == 1
    assert p.writes[0].obj["metadata"]["ownerReferences"][0]["uid"] == "uid-2"
    # unknown owner (node not found): keep whatever owner the slices have
    assert plan(wire(3), api, owner=None).empty


def test_names_are_stable_unique_and_within_limits():
    assert slice_name(NODE, DRIVER, 0) == slice_name(NODE, DRIVER, 0)
    assert slice_name(NODE, DRIVER, 0) != slice_name("node-b", DRIVER, 0)
    assert slice_name(NODE, DRIVER, 0) != slice_name(NODE, "other.dev", 0)
    long_a = ".".join(["a" * 60] * 4)  # 243 chars: a valid, very long node name
    long_b = ".".join(["a" * 60] * 3 + ["a" * 59 + "b"])
    for node in (long_a, long_b):
        for i in (0, 1, 99999):
            name = slice_name(node, DRIVER, i)
            assert limits.is_dns_subdomain(name) and len(name) <= 253, name
            assert slice_index(slice_base(node, DRIVER), name) == i
    assert slice_name(long_a, DRIVER, 0) != slice_name(long_b, DRIVER, 0)
    assert slice_index(slice_base(NODE, DRIVER), slice_name(NODE, DRIVER, 0) + "x") is None
    assert slice_index(slice_base(NODE, DRIVER), slice_base(NODE, DRIVER) + "-01") is None


def test_device_order_inside_a_slice_is_kept():
    api = apply([], plan(wire(5), []))
    assert slice_devices(api[0]) == [f"eth{i}" for i in range(5)]
    # discovery reordering its list is not a change
    assert plan(list(reversed(wire(5))), api).empty


def test_single_device_builder():
    assert to_wire(device(0))["attributes"][f"{DRIVER}/rdma"] == {"bool": True}
