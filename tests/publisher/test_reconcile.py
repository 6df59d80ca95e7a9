"""PoolReconciler against the test API server through the real client (HTTP)."""

from __future__ import annotations

import time

import anyio
import pytest

from schemas.inventory import Device
from services.common.api.files import FileApi
from services.common.api.kube import KubeApi
from services.common.api.port import ApiError
from services.publisher import validation
from services.publisher.reconcile import PoolReconciler, SliceRejected
from services.publisher.slices import slice_name
from tests.conftest import NODE
from tests.publisher.helpers import DRIVER, device, devices, pool_state, slice_devices

pytestmark = pytest.mark.anyio


def names(srv) -> list[str]:
    return sorted(o["metadata"]["name"] for o in srv.objects("resourceslices"))


def published(srv) -> set[str]:
    return {d for o in srv.objects("resourceslices") for d in slice_devices(o)}


async def test_300_devices_publish_3_valid_slices_owned_by_the_node(kube_api, kube):
    rec = PoolReconciler(kube, NODE, DRIVER)
    res = await rec.sync(devices(300))
    assert (res.writes, res.generation, res.slices, res.devices) == (3, 0, 3, 300)
    assert res.rdma == 150 and res.dropped == [] and res.last_write_at is not None
    objs = kube_api.objects("resourceslices")
    assert pool_state(objs) == ({0}, {3}, 3)
    uid = kube_api.objects("nodes")[0]["metadata"]["uid"]
    for o in objs:
        assert o["metadata"]["ownerReferences"] == [
            {"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": uid, "controller": True}]
        assert o["spec"]["nodeName"] == NODE and o["spec"]["pool"]["name"] == NODE
    assert published(kube_api) == {f"eth{i}" for i in range(300)}
    assert kube_api.writes("resourceslices") == 3


async def test_same_devices_twice_cost_no_request(kube_api, kube):
    rec = PoolReconciler(kube, NODE, DRIVER)
    await rec.sync(devices(300))
    seen = len(kube_api.requests)
    res = await rec.sync(devices(300))
    assert res.writes == 0 and res.generation == 0
    assert len(kube_api.requests) == seen  # no list, no get: the cache answered


async def test_one_more_device_is_one_write(kube_api, kube):
    rec = PoolReconciler(kube, NODE, DRIVER)
    await rec.sync(devices(300))
    res = await rec.sync(devices(301))
    assert res.writes == 1 and res.generation == 0
    assert kube_api.writes("resourceslices") == 4
    assert "eth300" in published(kube_api)


async def test_injected_conflict_rereads_and_converges(kube_api, kube):
    rec = PoolReconciler(kube, NODE, DRIVER)
    await rec.sync(devices(10))
    lists = sum(1 for v, r, _ in kube_api.requests if (v, r) == ("list", "resourceslices"))
    kube_api.inject("update", "resourceslices", status=409)
    res = await rec.sync(devices(11))
    assert res.writes == 1
    assert sum(1 for v, r, _ in kube_api.requests
               if (v, r) == ("list", "resourceslices")) == lists + 1
    assert published(kube_api) == {f"eth{i}" for i in range(11)}


async def test_someone_else_changed_a_slice(kube_api, kube):
    """A real conflict: the cached resourceVersion is stale, the update gets 409."""
    rec = PoolReconciler(kube, NODE, DRIVER)
    await rec.sync(devices(10))
    obj = kube_api.objects("resourceslices")[0]
    obj["spec"]["devices"] = obj["spec"]["devices"][:3]
    other = KubeApi(kubeconfig=kube.kubeconfig, timeout=2.0)
    try:
        await other.update_slice(obj)
    finally:
        await other.aclose()
    # our cache still believes the pool is right: nothing to do without a re-read...
    assert (await rec.sync(devices(10))).writes == 0
    # ...but the next real change hits the stale resourceVersion, re-reads and repairs all
    res = await rec.sync(devices(11))
    assert res.writes == 1
    assert published(kube_api) == {f"eth{i}" for i in range(11)}
    assert ("update", "resourceslices", 409) in kube_api.requests


async def test_server_error_keeps_what_is_published(kube_api, kube):
    rec = PoolReconciler(kube, NODE, DRIVER)
    await rec.sync(devices(128))
    kube_api.inject("*", "resourceslices", status=500, times=1)
    with pytest.raises(ApiError) as err:
        await rec.sync(devices(129))  # needs a 2nd slice: generation bump
    assert err.value.status == 500
    assert published(kube_api) == {f"eth{i}" for i in range(128)}
    res = await rec.sync(devices(129))
    assert res.generation == 1 and res.slices == 2
    assert pool_state(kube_api.objects("resourceslices")) == ({1}, {2}, 2)


async def test_hanging_api_is_bounded_by_the_timeout(kube_api, kubeconfig):
    api = KubeApi(kubeconfig=kubeconfig, timeout=0.3)
    try:
        rec = PoolReconciler(api, NODE, DRIVER, call_timeout=0.3)
        await rec.sync(devices(3))
        kube_api.inject("update", "resourceslices", delay=30)
        start = time.monotonic()
        with pytest.raises(ApiError):
            await rec.sync(devices(4))
        assert time.monotonic() - start < 2
        assert published(kube_api) == {"eth0", "eth1", "eth2"}
        res = await rec.sync(devices(4))
        assert published(kube_api) == {f"eth{i}" for i in range(4)}
        assert res.writes == 1
    finally:
        await api.aclose()


async def test_invalid_devices_are_dropped_and_the_rest_published(kube_api, kube):
    bad_value = device(1, **{f"{DRIVER}/alias": "a" * 65})
    bad_name = Device(name="Not_A_Label", attributes={f"{DRIVER}/ifName": "x"})
    rec = PoolReconciler(kube, NODE, DRIVER)
    res = await rec.sync([device(0), bad_value, bad_name, device(2), device(0)])
    assert published(kube_api) == {"eth0", "eth2"}
    assert res.devices == 2 and len(res.dropped) == 3
    assert res.dropped[0] == \
        f'devices[eth1].attributes["{DRIVER}/alias"]: longer than 64 characters'
    assert res.dropped[1].startswith("devices[Not_A_Label].name:")
    assert "duplicate" in res.dropped[2]
    assert all(code < 400 for _, _, code in kube_api.requests)  # never sent a bad slice


async def test_server_refusal_blames_the_device_and_does_not_loop(kube_api, kube, monkeypatch):
    """If our checks drift from the server's, the device the server names is left out."""
    monkeypatch.setattr(validation, "device_errors", lambda _dev: [])
    rec = PoolReconciler(kube, NODE, DRIVER)
    bad = device(1, **{f"{DRIVER}/alias": "a" * 65})
    res = await rec.sync([device(0), bad, device(2)])
    assert published(kube_api) == {"eth0", "eth2"}
    assert len(res.dropped) == 1 and res.dropped[0].startswith("devices[eth1]: refused")
    assert f"spec.devices[1].attributes[{DRIVER}/alias]" in res.dropped[0]
    invalid = [r for r in kube_api.requests if r[2] == 422]
    assert len(invalid) == 1
    # remembered: the same content is not sent again
    res = await rec.sync([device(0), bad, device(2)])
    assert res.writes == 0 and len(res.dropped) == 1
    assert len([r for r in kube_api.requests if r[2] == 422]) == 1
    # fixed content is published
    res = await rec.sync([device(0), device(1), device(2)])
    assert res.dropped == [] and published(kube_api) == {"eth0", "eth1", "eth2"}


async def test_refusal_without_a_device_to_blame_stops(kube_api, kube):
    rec = PoolReconciler(kube, NODE, "Bad_Driver")
    with pytest.raises(SliceRejected):
        await rec.sync(devices(2))
    assert len([r for r in kube_api.requests if r[2] == 422]) == 1


async def test_restarted_publisher_reuses_its_slices(kube_api, kube, kubeconfig):
    await PoolReconciler(kube, NODE, DRIVER).sync(devices(300))
    before = names(kube_api)
    api = KubeApi(kubeconfig=kubeconfig, timeout=2.0)
    try:
        res = await PoolReconciler(api, NODE, DRIVER).sync(devices(300))
    finally:
        await api.aclose()
    assert res.writes == 0 and res.generation == 0
    assert names(kube_api) == before == sorted(slice_name(NODE, DRIVER, i) for i in range(3))


async def test_stale_and_foreign_slices_are_deleted(kube_api, kube):
    rec = PoolReconciler(kube, NODE, DRIVER)
    await rec.sync(devices(3))
    mine = kube_api.objects("resourceslices")[0]
    foreign = {"metadata": {"name": "leftover-abcde"}, "spec": {**mine["spec"]}}
    old_pool = {"metadata": {"name": "old-pool-0"},
                "spec": {**mine["spec"], "pool": {"name": "old", "generation": 0,
                                                  "resourceSliceCount": 1}}}
    other_node = {"metadata": {"name": "other-node-0"},
                  "spec": {**mine["spec"], "nodeName": "node-b",
                           "pool": {"name": "node-b", "generation": 0,
                                    "resourceSliceCount": 1}}}
    for obj in (foreign, old_pool, other_node):
        kube_api.put_object("resourceslices", obj)
    rec.invalidate()
    res = await rec.sync(devices(3))
    assert names(kube_api) == sorted([slice_name(NODE, DRIVER, 0), "other-node-0"])
    assert res.generation == 1  # a foreign slice in the pool: the pool is rewritten
    deletes = [r for r in kube_api.requests if r[0] == "delete"]
    assert len(deletes) == 2 and all(code == 200 for _, _, code in deletes)


async def test_compaction_writes_before_it_deletes(kube_api, kube):
    rec = PoolReconciler(kube, NODE, DRIVER)
    await rec.sync(devices(300))
    kube_api.requests.clear()
    res = await rec.sync(devices(100))
    assert (res.generation, res.slices, res.writes) == (1, 1, 3)
    verbs = [v for v, r, _ in kube_api.requests if r == "resourceslices"]
    assert verbs == ["update", "delete", "delete"]
    assert pool_state(kube_api.objects("resourceslices")) == ({1}, {1}, 1)


async def test_node_recreated_after_resync_rewrites_owner(kube_api, kube):
    rec = PoolReconciler(kube, NODE, DRIVER)
    await rec.sync(devices(2))
    kube_api.store.data["nodes"].clear()
    new_uid = kube_api.add_node(NODE)["metadata"]["uid"]
    rec.invalidate()
    res = await rec.sync(devices(2))
    assert res.writes == 1
    assert kube_api.objects("resourceslices")[0]["metadata"]["ownerReferences"][0]["uid"] == \
        new_uid


async def test_standalone_file_store(tmp_path):
    api = FileApi(tmp_path)
    res = await PoolReconciler(api, NODE, DRIVER).sync(devices(130))
    assert res.writes == 2
    files = sorted(p.name for p in (tmp_path / "api" / "resourceslices").glob("*.json"))
    assert files == [f"{slice_name(NODE, DRIVER, i)}.json" for i in range(2)]
    again = PoolReconciler(FileApi(tmp_path), NODE, DRIVER)
    assert (await again.sync(devices(130))).writes == 0
    assert (await again.sync(devices(10))).writes == 2  # compact: one update, one delete
    files = sorted(p.name for p in (tmp_path / "api" / "resourceslices").glob("*.json"))
    assert files == [f"{slice_name(NODE, DRIVER, 0)}.json"]


async def test_concurrent_reconcilers_converge(kube_api, kube, kubeconfig):
    """Two publishers racing (a rolling update): conflicts resolve, no duplicates remain."""
    api2 = KubeApi(kubeconfig=kubeconfig, timeout=2.0)
    try:
        a, b = PoolReconciler(kube, NODE, DRIVER), PoolReconciler(api2, NODE, DRIVER)
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.sync, devices(200))
            tg.start_soon(b.sync, devices(200))
        res = await a.sync(devices(200))
        assert res.writes == 0
    finally:
        await api2.aclose()
    objs = kube_api.objects("resourceslices")
    gens, counts, n = pool_state(objs)
    assert len(gens) == 1 and counts == {2} and n == 2
    assert sorted(d for o in objs for d in slice_devices(o)) == sorted(
        f"eth{i}" for i in range(200))
