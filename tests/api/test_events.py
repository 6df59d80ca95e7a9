"""core/v1 Events through the API port: the real kubernetes-asyncio client against the
test API server (which validates them as the real one does), and the standalone files."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import aiohttp
import pytest

from services.common.api.files import EVENT_TTL, FileApi
from services.common.api.kube import KubeApi
from services.common.api.port import Conflict, Invalid, NotFound
from tests.kubeapi.server import KubeApiServer

pytestmark = pytest.mark.anyio


def event(name: str = "web-0.17a1", namespace: str = "team-a", **extra) -> dict:
    ev = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": namespace,
                           "name": "web-0", "uid": "uid-web-0"},
        "type": "Warning", "reason": "NetworkDeviceAttachFailed", "message": "boom",
        "source": {"component": "knd.dev", "host": "node-a"},
        "firstTimestamp": "2026-12-02T07:00:00Z", "lastTimestamp": "2026-12-02T07:00:00Z",
        "count": 1,
    }
    ev.update(extra)
    return ev


async def listed(srv: KubeApiServer, path: str, selector: str) -> list[dict]:
    async with aiohttp.ClientSession() as http, \
            http.get(f"{srv.url}{path}", params={"fieldSelector": selector}) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["items"]


async def test_create_patch_and_list_by_involved_object(kube_api: KubeApiServer,
                                                        api: KubeApi) -> None:
    created = await api.create_event(event())
    assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    assert created["involvedObject"]["uid"] == "uid-web-0"
    await api.create_event(event("web-1.17a2") | {"involvedObject": {
        "apiVersion": "v1", "kind": "Pod", "namespace": "team-a", "name": "web-1",
        "uid": "uid-web-1"}})
    patched = await api.patch_event("team-a", "web-0.17a1", {
        "count": 2, "lastTimestamp": "2026-12-02T07:01:00Z", "message": "boom"})
    assert patched["count"] == 2 and patched["lastTimestamp"] == "2026-12-02T07:01:00Z"
    assert patched["firstTimestamp"] == "2026-12-02T07:00:00Z"
    assert ("patch", "events", 200) in kube_api.requests
    by_uid = await listed(kube_api, "/api/v1/namespaces/team-a/events",
                          "involvedObject.uid=uid-web-0")
    assert [e["metadata"]["name"] for e in by_uid] == ["web-0.17a1"]
    by_name = await listed(kube_api, "/api/v1/events", "involvedObject.name=web-1")
    assert [e["metadata"]["name"] for e in by_name] == ["web-1.17a2"]
    by_source = await listed(kube_api, "/api/v1/events", "source=knd.dev,reason="
                             "NetworkDeviceAttachFailed")
    assert len(by_source) == 2
    assert await listed(kube_api, "/api/v1/namespaces/other/events",
                        "involvedObject.uid=uid-web-0") == []
    with pytest.raises(NotFound):
        await api.patch_event("team-a", "gone.1", {"count": 3})


@pytest.mark.parametrize(("obj", "field"), [
    (event(name=""), "metadata.name"),
    (event(name="a%b"), "metadata.name"),
    (event() | {"involvedObject": {"kind": "Pod", "namespace": "other", "name": "p"}},
     "involvedObject.namespace"),
    (event() | {"involvedObject": {"kind": "Node", "name": "node-a"}},
     "involvedObject.namespace"),
    # a new-style event (eventTime set) must say who reports it and what it did
    (event() | {"eventTime": "2026-12-02T07:00:00.000000Z"}, "reportingController"),
    (event() | {"eventTime": "2026-12-02T07:00:00.000000Z", "reportingComponent": "knd.dev",
                "reportingInstance": "node-a", "action": "Attach", "message": "m" * 1025},
     "message"),
    (event() | {"eventTime": "2026-12-02T07:00:00.000000Z", "reportingComponent": "knd.dev",
                "reportingInstance": "node-a", "action": "Attach", "reason": "R" * 129},
     "reason"),
])
async def test_the_server_refuses_what_the_real_one_refuses(kube_api: KubeApiServer,
                                                            api: KubeApi, obj: dict,
                                                            field: str) -> None:
    with pytest.raises(Invalid) as err:
        await api.create_event(obj)
    assert field in str(err.value)
    assert kube_api.objects("events") == []


async def test_the_server_accepts_what_the_real_one_accepts(kube_api: KubeApiServer,
                                                            api: KubeApi) -> None:
    """core/v1 keeps old clients working: no limits on a client-go style event's type,
    count or message, a cluster-scoped object's events in "default"."""
    await api.create_event(event("a.1", type="Custom", count=0, message="m" * 5000))
    await api.create_event(event("n.1", namespace="default") | {
        "involvedObject": {"kind": "Node", "name": "node-a"}})
    assert len(kube_api.objects("events")) == 2


async def test_the_namespace_comes_from_the_url(kube_api: KubeApiServer,
                                                api: KubeApi) -> None:
    ev = event()
    del ev["metadata"]["namespace"]
    with pytest.raises(KeyError):  # the port needs it to build the URL
        await api.create_event(ev)
    async with aiohttp.ClientSession() as http, \
            http.post(f"{kube_api.url}/api/v1/namespaces/team-a/events", json=ev) as resp:
        assert resp.status == 201
        assert (await resp.json())["metadata"]["namespace"] == "team-a"


# ---- standalone ---------------------------------------------------------------------------


async def test_files_create_and_patch_like_the_server(tmp_path: Path) -> None:
    api = FileApi(tmp_path)
    created = await api.create_event(event())
    path = tmp_path / "api" / "events" / "team-a" / "web-0.17a1.json"
    assert json.loads(path.read_text()) == created
    assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    with pytest.raises(Conflict) as err:
        await api.create_event(event())
    assert err.value.reason == "AlreadyExists"
    patched = await api.patch_event("team-a", "web-0.17a1", {
        "count": 2, "lastTimestamp": "2026-12-02T07:01:00Z",
        "metadata": {"name": "renamed", "uid": None}})
    assert patched["count"] == 2 and patched["metadata"]["name"] == "web-0.17a1"
    assert patched["metadata"]["uid"] == created["metadata"]["uid"]
    assert int(patched["metadata"]["resourceVersion"]) > \
        int(created["metadata"]["resourceVersion"])
    assert json.loads(path.read_text()) == patched
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left
    with pytest.raises(NotFound):
        await api.patch_event("team-a", "nope.1", {"count": 2})


@pytest.mark.parametrize(("obj", "field"), [
    (event() | {"involvedObject": {"kind": "Pod", "namespace": "other", "name": "p"}},
     "involvedObject.namespace"),
    (event(name="../../nodes/x"), "name"),
    (event(name="x" * 251), "metadata.name"),
    (event(namespace=""), "namespace"),
])
async def test_files_refuse_bad_events_and_write_nothing(tmp_path: Path, obj: dict,
                                                         field: str) -> None:
    api = FileApi(tmp_path)
    with pytest.raises(Invalid) as err:
        await api.create_event(obj)
    assert field in str(err.value)
    assert not (tmp_path / "api" / "events").exists() or \
        list((tmp_path / "api" / "events").rglob("*.json")) == []


async def test_files_forget_events_an_hour_after_their_last_write(tmp_path: Path) -> None:
    api = FileApi(tmp_path)
    await api.create_event(event("old.1"))
    await api.create_event(event("recent.1"))
    folder = tmp_path / "api" / "events" / "team-a"
    old = time.time() - EVENT_TTL - 5
    os.utime(folder / "old.1.json", (old, old))
    await api.create_event(event("new.1"))
    assert sorted(p.name for p in folder.glob("*.json")) == ["new.1.json", "recent.1.json"]
