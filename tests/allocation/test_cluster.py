"""``knd claim explain`` against a cluster: with no slice or class in its files it reads
them (and the nodes, and the devices other claims hold) from the API server, a page at
a time, read only, through the real kubernetes-asyncio client over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import yaml

from services.common.api.kube import KubeApi
from tests.allocation.test_explain import (
    AWS,
    AWS_NODE,
    BUSY,
    CLASSES,
    PCIE_ROOT,
    ROOT,
    held_claim,
)
from tests.kubeapi.server import KubeApiServer

pytestmark = pytest.mark.anyio


def _objects(*paths: Path) -> list[dict]:
    out = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            out += doc.get("items", [doc]) if doc else []
    return out


def _seed(server: KubeApiServer) -> None:
    for obj in _objects(AWS / "resourceslice-gpu.yaml", AWS / "resourceslice-dranet.yaml"):
        server.put_object("resourceslices", obj)
    for obj in _objects(AWS / "device-class.yaml", CLASSES):
        server.put_object("deviceclasses", obj)
    server.add_node(AWS_NODE)
    server.put_object("resourceclaims", held_claim(BUSY))


async def test_the_cluster_is_read_when_the_files_hold_only_claims(tmp_path: Path) -> None:
    async with KubeApiServer() as server:
        _seed(server)
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        res = await anyio.to_thread.run_sync(lambda: subprocess.run(
            [sys.executable, "-m", "services.cli", "claim", "explain",
             str(AWS / "resource-claim-template.yaml"), "--kubeconfig", str(kubeconfig),
             "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60))
        writes = server.writes("resourceslices") + server.writes("resourceclaims")
    assert res.stderr == "" and res.returncode == 1, res
    claims = {c["name"]: c for c in json.loads(res.stdout)["claims"]}
    assert set(claims) == {"default/gpu-efa-aligned", "default/gpu-efa-unaligned"}
    (aligned,) = claims["default/gpu-efa-aligned"]["nodes"]
    assert aligned["node"] == AWS_NODE and aligned["allocatable"] is False
    why = {(e["request"], e["device"]): e["reason"] for e in aligned["excluded"]}
    assert why[("gpu", "gpu-0")] == "already allocated to claim ml/training-0"
    assert why[("gpu", "gpu-7")] == f"constraint matchAttribute {PCIE_ROOT} with request efa"
    unaligned = claims["default/gpu-efa-unaligned"]["nodes"][0]
    assert {d["request"]: d["device"] for d in unaligned["devices"]} == {
        "gpu": "gpu-6", "efa": "pci-0000-10-1b-0"}
    assert writes == 0


async def test_lists_are_read_page_by_page(tmp_path: Path) -> None:
    async with KubeApiServer() as server:
        _seed(server)
        api = KubeApi(kubeconfig=str(server.write_kubeconfig(tmp_path / "kc")), timeout=10)
        try:
            slices = await api.list_all("resourceslices", page=1)
            classes = await api.list_all("deviceclasses", page=2)
        finally:
            await api.aclose()
        lists = [r for r in server.requests if r[0] == "list"]
    assert sorted(s["spec"]["driver"] for s in slices) == ["dra.net", "gpu.nvidia.com"]
    assert {c["metadata"]["name"] for c in classes} == {
        "efa.networking.k8s.aws", "gpu.nvidia.com", "dranet.net"}
    assert all(c["kind"] == "DeviceClass" for c in classes)
    assert len(lists) == 2 + 2  # two slices a page at a time, three classes two at a time


def test_an_unreachable_cluster_is_one_line_and_status_2(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    res = subprocess.run([sys.executable, "-m", "services.cli", "claim", "explain",
                          str(AWS / "resource-claim-template.yaml"), "--kubeconfig",
                          str(kubeconfig), "--api-timeout", "3"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "the cluster cannot be read" in res.stderr
