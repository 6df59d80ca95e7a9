"""The lean kubernetes-asyncio load (services/common/api/kubeclient.py), in a process of
its own as the publisher and the gateway have: every call knd makes works against the
test API server, and no model class is loaded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import pytest

from tests.api.objects import make_claim, make_slice
from tests.kubeapi.server import KubeApiServer

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import asyncio, json, sys
from services.common.api.kube import KubeApi

async def main(kubeconfig):
    api = KubeApi(kubeconfig=kubeconfig, timeout=5)
    try:
        node = await api.get_node("node-a")
        created = await api.create_slice(json.loads(sys.argv[2]))
        listed = await api.list_slices("knd.dev", "node-a")
        claim = await api.get_claim("default", "claim-1")
        claim["status"] = {"devices": []}
        await api.update_claim_status(claim)
        return {"node": node["metadata"]["name"], "created": created["metadata"]["name"],
                "listed": [s["metadata"]["name"] for s in listed],
                "models": sorted(m for m in sys.modules
                                 if m.startswith("kubernetes_asyncio.client.models.")),
                "apis": sorted(m for m in sys.modules
                               if m.startswith("kubernetes_asyncio.client.api."))}
    finally:
        await api.aclose()

print(json.dumps(asyncio.run(main(sys.argv[1]))))
"""


async def test_the_lean_client_makes_every_call_without_model_classes(
        kube_api: KubeApiServer, tmp_path: Path) -> None:
    kube_api.add_node("node-a")
    kube_api.put_object("resourceclaims", make_claim())
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    slice_ = make_slice()
    res = await anyio.run_process(
        [sys.executable, "-c", SCRIPT, str(kubeconfig), json.dumps(slice_)], cwd=ROOT,
        check=False)
    assert res.returncode == 0, res.stderr.decode()
    got = json.loads(res.stdout)
    assert got["node"] == "node-a" and got["created"] == slice_["metadata"]["name"]
    assert got["listed"] == [slice_["metadata"]["name"]]
    assert got["models"] == []
    assert got["apis"] == ["kubernetes_asyncio.client.api.core_v1_api",
                           "kubernetes_asyncio.client.api.resource_v1_api"]
