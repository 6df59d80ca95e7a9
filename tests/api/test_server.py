"""The test API server itself: the behaviours other test folders build on.

Other engineers' tests (publisher, gateway, benchmarks) trust this server's
fault injection, request log and REST details; if those silently drifted,
their tests would pass for the wrong reason.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from tests.api.objects import make_claim, make_slice
from tests.kubeapi.server import KubeApiServer

pytestmark = pytest.mark.anyio

SLICES = "/apis/resource.k8s.io/v1/resourceslices"
ROOT = Path(__file__).resolve().parents[2]


async def _req(server: KubeApiServer, method: str, path: str, **kw: object) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.request(
            method, server.url + path, **kw) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.json()


async def test_unknown_paths_are_not_found_statuses(kube_api: KubeApiServer) -> None:
    for path in ("/apis/resource.k8s.io/v1beta1/resourceslices", "/api/v1/pods",
                 "/apis/resource.k8s.io/v1/namespaces/default/resourceslices",
                 "/apis/resource.k8s.io/v1/resourceslices/a/status"):
        code, body = await _req(kube_api, "GET", path)
        assert code == 404 and body["kind"] == "Status" and body["reason"] == "NotFound", path


async def test_not_found_status_shape(kube_api: KubeApiServer) -> None:
    code, body = await _req(kube_api, "GET", f"{SLICES}/nope")
    assert code == 404
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": 'resourceslices.resource.k8s.io "nope" not found',
                    "reason": "NotFound", "code": 404,
                    "details": {"name": "nope", "group": "resource.k8s.io",
                                "kind": "resourceslices"}}


async def test_list_selectors_and_version(kube_api: KubeApiServer) -> None:
    a = make_slice("a")
    a["metadata"]["labels"] = {"tier": "fast"}
    kube_api.put_object("resourceslices", a)
    kube_api.put_object("resourceslices", make_slice("b", node="node-b"))
    last = kube_api.put_object("resourceslices", make_slice("c", driver="x.example.com"))

    async def names(query: str) -> list[str]:
        code, body = await _req(kube_api, "GET", f"{SLICES}?{query}")
        assert code == 200, body
        assert body["kind"] == "ResourceSliceList"
        assert body["metadata"]["resourceVersion"] == last["metadata"]["resourceVersion"]
        assert all("kind" not in item for item in body["items"])
        return sorted(i["metadata"]["name"] for i in body["items"])

    assert await names("") == ["a", "b", "c"]
    assert await names("fieldSelector=spec.nodeName%3Dnode-a") == ["a", "c"]
    assert await names("fieldSelector=spec.nodeName%3Dnode-a,spec.driver%3Dknd.dev") == ["a"]
    assert await names("fieldSelector=spec.driver%21%3Dknd.dev") == ["c"]
    assert await names("labelSelector=tier%3Dfast") == ["a"]
    assert await names("labelSelector=%21tier") == ["b", "c"]
    code, body = await _req(kube_api, "GET", f"{SLICES}?fieldSelector=spec.pool.name%3Dx")
    assert code == 400 and body["reason"] == "BadRequest"


async def test_versions_are_global_and_increasing(kube_api: KubeApiServer) -> None:
    node = kube_api.add_node("node-a")
    code, created = await _req(kube_api, "POST", SLICES, json=make_slice("a"))
    assert code == 201
    code, deleted = await _req(kube_api, "DELETE", f"{SLICES}/a", json={})
    assert code == 200
    code, again = await _req(kube_api, "POST", SLICES, json=make_slice("a"))
    rvs = [int(o["metadata"]["resourceVersion"]) for o in (node, created, deleted, again)]
    assert rvs == sorted(rvs) and len(set(rvs)) == 4
    assert again["metadata"]["uid"] != created["metadata"]["uid"]


async def test_put_name_must_match_url(kube_api: KubeApiServer) -> None:
    kube_api.put_object("resourceslices", make_slice("a"))
    code, body = await _req(kube_api, "PUT", f"{SLICES}/a", json=make_slice("b"))
    assert code == 400 and body["reason"] == "BadRequest"
    code, body = await _req(kube_api, "PUT", f"{SLICES}/a",
                            json=make_slice("a") | {"kind": "ResourceClaim"})
    assert code == 400


async def test_put_object_fills_only_missing_fields(kube_api: KubeApiServer) -> None:
    seeded = kube_api.put_object("resourceclaims", make_claim())
    meta = seeded["metadata"]
    assert meta["uid"] and meta["resourceVersion"] and meta["namespace"] == "default"
    kept = kube_api.put_object("resourceclaims", make_claim("c2") | {
        "metadata": {"name": "c2", "namespace": "ns", "uid": "u-1", "resourceVersion": "50"}})
    assert kept["metadata"]["uid"] == "u-1" and kept["metadata"]["resourceVersion"] == "50"
    node = kube_api.add_node("node-b")
    assert int(node["metadata"]["resourceVersion"]) > 50
    assert [o["metadata"]["name"] for o in kube_api.objects("resourceclaims")] == ["claim-1", "c2"]


async def test_claims_are_namespaced(kube_api: KubeApiServer) -> None:
    kube_api.put_object("resourceclaims", make_claim("c", "ns1"))
    kube_api.put_object("resourceclaims", make_claim("c", "ns2"))
    code, body = await _req(kube_api, "GET", "/apis/resource.k8s.io/v1/namespaces/ns1/"
                                              "resourceclaims")
    assert code == 200
    assert [i["metadata"]["namespace"] for i in body["items"]] == ["ns1"]
    code, body = await _req(kube_api, "GET", "/apis/resource.k8s.io/v1/resourceclaims")
    assert code == 200
    assert len(body["items"]) == 2


async def test_inject_counts_and_wildcards(kube_api: KubeApiServer) -> None:
    kube_api.add_node("node-a")
    kube_api.inject("*", "*", status=503, times=2)
    assert (await _req(kube_api, "GET", "/api/v1/nodes/node-a"))[0] == 503
    code, body = await _req(kube_api, "POST", SLICES, json=make_slice("a"))
    assert code == 503 and body["reason"] == "ServiceUnavailable"
    assert (await _req(kube_api, "POST", SLICES, json=make_slice("a")))[0] == 201
    assert kube_api.requests == [("get", "nodes", 503), ("create", "resourceslices", 503),
                                 ("create", "resourceslices", 201)]
    assert kube_api.writes() == 1 and kube_api.writes("nodes") == 0


async def test_inject_matches_verb_and_subresource(kube_api: KubeApiServer) -> None:
    kube_api.put_object("resourceclaims", make_claim())
    kube_api.inject("update", "resourceclaims", status=409)
    url = "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/claim-1"
    assert (await _req(kube_api, "GET", url))[0] == 200  # other verb: untouched
    code, body = await _req(kube_api, "PUT", f"{url}/status", json=make_claim())
    assert code == 409 and body["code"] == 409
    code, _ = await _req(kube_api, "PUT", f"{url}/status", json=make_claim())
    assert code == 200
    assert kube_api.writes("resourceclaims") == 1
    with pytest.raises(ValueError):
        kube_api.inject("watch", "resourceclaims")


async def test_inject_delay_then_serve(kube_api: KubeApiServer) -> None:
    kube_api.add_node("node-a")
    kube_api.inject("get", "nodes", delay=0.3)
    start = time.monotonic()
    code, body = await _req(kube_api, "GET", "/api/v1/nodes/node-a")
    assert code == 200 and body["metadata"]["name"] == "node-a"
    assert time.monotonic() - start >= 0.3


async def test_close_does_not_wait_for_injected_hangs() -> None:
    server = KubeApiServer()
    async with server:
        server.inject("get", "nodes", delay=3600)
        async with aiohttp.ClientSession() as http:
            with pytest.raises(TimeoutError):
                async with http.get(f"{server.url}/api/v1/nodes/x",
                                    timeout=aiohttp.ClientTimeout(total=0.2)):
                    pass
        start = time.monotonic()
    assert time.monotonic() - start < 5


def test_standalone_process(tmp_path: Path) -> None:
    """``python -m tests.kubeapi`` prints its URL first and serves the nodes it was given."""
    with subprocess.Popen([sys.executable, "-m", "tests.kubeapi", "--port", "0",
                           "--node", "bench-node", "--kubeconfig", str(tmp_path / "kc")],
                          cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(f"{url}/api/v1/nodes/bench-node", timeout=5) as resp:
                assert b'"bench-node"' in resp.read()
            assert url in (tmp_path / "kc").read_text()
        finally:
            proc.terminate()
            assert proc.wait(timeout=10) == 0
