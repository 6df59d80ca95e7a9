"""ResourceClaim get and status update, the same on the API server and on files.

The gateway reads claims and the publisher writes ``status.devices``; both
backends must agree on what a status write may change (only the status) and
when it is refused (a stale resourceVersion), or standalone runs would hide
bugs that a cluster shows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from services.common.api.files import FileApi
from services.common.api.kube import KubeApi
from services.common.api.port import ApiPort, Conflict, NotFound
from tests.api.objects import device_status, make_claim, with_status
from tests.kubeapi.server import KubeApiServer

pytestmark = pytest.mark.anyio


@dataclass
class Backend:
    api: ApiPort
    seed: Callable[[dict], Awaitable[dict]]
    stored: Callable[[str, str], Awaitable[dict]]  # read behind the port's back


@pytest.fixture(params=["kube", "files"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path,
                  anyio_backend: str) -> AsyncIterator[Backend]:
    """The same claim operations on the test API server (via KubeApi) and on files."""
    if request.param == "files":
        files = FileApi(tmp_path / "state")

        async def read_file(ns: str, name: str) -> dict:
            return json.loads((files.root / "resourceclaims" / ns / f"{name}.json").read_text())

        yield Backend(files, files.create_claim, read_file)
        return
    async with KubeApiServer() as server:
        client = KubeApi(kubeconfig=str(server.write_kubeconfig(tmp_path / "kc")), timeout=2.0)

        async def seed(obj: dict) -> dict:
            return server.put_object("resourceclaims", obj)

        async def read_server(ns: str, name: str) -> dict:
            return next(o for o in server.objects("resourceclaims")
                        if o["metadata"]["namespace"] == ns and o["metadata"]["name"] == name)

        try:
            yield Backend(client, seed, read_server)
        finally:
            await client.aclose()


async def test_get_claim(backend: Backend) -> None:
    seeded = await backend.seed(make_claim())
    got = await backend.api.get_claim("default", "claim-1")
    assert got["metadata"]["uid"] == seeded["metadata"]["uid"]
    assert got["status"]["allocation"]["devices"]["results"][0]["device"] == "eth0"
    with pytest.raises(NotFound):
        await backend.api.get_claim("default", "claim-2")
    with pytest.raises(NotFound):
        await backend.api.get_claim("other", "claim-1")


async def test_update_status_writes_only_status(backend: Backend) -> None:
    await backend.seed(make_claim())
    claim = await backend.api.get_claim("default", "claim-1")
    new = with_status(claim, device_status())
    new["spec"] = {"devices": {"requests": []}}  # must be ignored by a status write
    new["metadata"]["labels"] = {"sneaky": "yes"}
    written = await backend.api.update_claim_status(new)
    assert int(written["metadata"]["resourceVersion"]) > int(claim["metadata"]["resourceVersion"])
    assert written["status"]["devices"] == device_status()
    assert written["status"]["allocation"] == claim["status"]["allocation"]
    assert written["spec"] == claim["spec"]
    assert "labels" not in written["metadata"]
    assert await backend.stored("default", "claim-1") == written
    assert await backend.api.get_claim("default", "claim-1") == written


async def test_update_status_with_stale_version_conflicts(backend: Backend) -> None:
    await backend.seed(make_claim())
    claim = await backend.api.get_claim("default", "claim-1")
    first = await backend.api.update_claim_status(with_status(claim, device_status("10.0.0.5/24")))
    with pytest.raises(Conflict):
        await backend.api.update_claim_status(with_status(claim, device_status("10.0.0.6/24")))
    assert (await backend.stored("default", "claim-1"))["status"] == first["status"]
    # Re-read and retry: what the publisher does on 409.
    again = await backend.api.get_claim("default", "claim-1")
    done = await backend.api.update_claim_status(with_status(again, device_status("10.0.0.6/24")))
    assert done["status"]["devices"][0]["networkData"]["ips"] == ["10.0.0.6/24"]


async def test_update_status_of_missing_claim(backend: Backend) -> None:
    with pytest.raises(NotFound):
        await backend.api.update_claim_status(with_status(make_claim("gone"), device_status()))


# ---- the test server's status patch (server-side apply, merge patch) ---------------------

STATUS_URL = "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/claim-1/status"


async def _patch(server: KubeApiServer, body: object, ctype: str,
                 query: str = "") -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.patch(
            f"{server.url}{STATUS_URL}{query}", json=body,
            headers={"Content-Type": ctype}) as resp:
        return resp.status, await resp.json()


async def test_server_side_apply_of_status(kube_api: KubeApiServer) -> None:
    claim = kube_api.put_object("resourceclaims", make_claim())
    patch = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
             "metadata": {"name": "claim-1", "namespace": "default"},
             "status": {"devices": device_status()}}
    code, body = await _patch(kube_api, patch, "application/apply-patch+yaml",
                              "?fieldManager=knd.dev&force=true")
    assert code == 200, body
    assert body["status"]["devices"] == device_status()
    assert body["status"]["allocation"] == claim["status"]["allocation"]
    assert kube_api.writes("resourceclaims") == 1
    assert kube_api.requests[-1] == ("patch", "resourceclaims/status", 200)


async def test_apply_needs_a_field_manager(kube_api: KubeApiServer) -> None:
    kube_api.put_object("resourceclaims", make_claim())
    code, body = await _patch(kube_api, {"status": {}}, "application/apply-patch+yaml")
    assert code == 400 and body["reason"] == "BadRequest"


async def test_merge_patch_of_status_and_its_precondition(kube_api: KubeApiServer) -> None:
    claim = kube_api.put_object("resourceclaims", make_claim())
    rv = claim["metadata"]["resourceVersion"]
    code, body = await _patch(kube_api, {"metadata": {"resourceVersion": rv},
                                         "status": {"devices": device_status()}},
                              "application/merge-patch+json")
    assert code == 200 and body["status"]["devices"] == device_status()
    code, body = await _patch(kube_api, {"metadata": {"resourceVersion": rv},
                                         "status": {"devices": None}},
                              "application/merge-patch+json")
    assert code == 409 and body["reason"] == "Conflict"
    code, body = await _patch(kube_api, {"status": {"devices": None}},
                              "application/merge-patch+json")
    assert code == 200 and "devices" not in body["status"]


async def test_json_patch_is_refused_honestly(kube_api: KubeApiServer) -> None:
    kube_api.put_object("resourceclaims", make_claim())
    code, body = await _patch(kube_api, [{"op": "remove", "path": "/status"}],
                              "application/json-patch+json")
    assert code == 415 and body["kind"] == "Status"


async def test_client_patch_through_kubernetes_asyncio(kube_api: KubeApiServer,
                                                       api: KubeApi) -> None:
    """The generated client's own patch call (strategic merge by default) works unchanged."""
    from kubernetes_asyncio.client import ResourceV1Api

    kube_api.put_object("resourceclaims", make_claim())
    await api.get_claim("default", "claim-1")  # connects
    assert api._client is not None
    resource = ResourceV1Api(api._client)
    resp = await resource.patch_namespaced_resource_claim_status(
        "claim-1", "default", {"status": {"devices": device_status()}}, _preload_content=False)
    assert resp.status == 200
    assert (await api.get_claim("default", "claim-1"))["status"]["devices"] == device_status()
