"""``knd claim explain`` on slices captured on real GPU machines (DRANET's examples:
AWS p5 with EFA, Azure GB300; kubernetes-sigs/dranet examples/, Apache-2.0), run as
the real command: what each claim gets, and why not where it gets nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "dranet"
AWS, GB300, CLASSES = DATA / "aws-gpu-efa", DATA / "azure-gb300", DATA / "classes.yaml"
AWS_NODE = "ip-192-168-153-160.ec2.internal"
PCIE_ROOT = "resource.kubernetes.io/pcieRoot"


def knd(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", "claim", "explain",
                           *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def explained(*paths: str | Path) -> tuple[int, dict[str, Any]]:
    res = knd(*paths, "--json")
    assert res.stderr == "", res.stderr
    return res.returncode, {c["name"]: c for c in json.loads(res.stdout)["claims"]}


def attributes(path: Path) -> dict[str, dict[str, Any]]:
    """device name -> its attributes with full names, from a slice file."""
    out = {}
    for doc in yaml.safe_load_all(path.read_text()):
        for item in doc.get("items", [doc]):
            driver = item["spec"]["driver"]
            for d in item["spec"]["devices"]:
                out[d["name"]] = {(k if "/" in k else f"{driver}/{k}"): next(iter(v.values()))
                                  for k, v in d["attributes"].items()}
    return out


BUSY = {"gpu.nvidia.com": [f"gpu-{i}" for i in range(6)], "dra.net": ["pci-0000-a0-1b-0"]}
"""What the held claim holds: every GPU but gpu-6/7, and the EFA on their root."""


def held_claim(devices: dict[str, list[str]]) -> dict[str, Any]:
    """A ResourceClaim already allocated ``devices`` (driver -> names) on the AWS node."""
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": "training-0", "namespace": "ml"},
            "spec": {"devices": {"requests": [{"name": "x", "exactly": {
                "deviceClassName": "gpu.nvidia.com"}}]}},
            "status": {"allocation": {"devices": {"results": [
                {"request": "x", "driver": driver, "pool": AWS_NODE, "device": name}
                for driver, names in devices.items() for name in names]}}}}


def holding(tmp_path: Path, devices: dict[str, list[str]]) -> Path:
    """:func:`held_claim` as a file."""
    path = tmp_path / "held.yaml"
    path.write_text(yaml.safe_dump(held_claim(devices)))
    return path


def test_aws_aligned_and_unaligned_templates_fit_and_the_aligned_pair_shares_a_root() -> None:
    code, claims = explained(AWS, CLASSES)
    assert code == 0
    attrs = {**attributes(AWS / "resourceslice-gpu.yaml"),
             **attributes(AWS / "resourceslice-dranet.yaml")}
    for name in ("default/gpu-efa-aligned", "default/gpu-efa-unaligned"):
        (node,) = claims[name]["nodes"]
        assert node["node"] == AWS_NODE and node["allocatable"] is True
        got = {d["request"]: d for d in node["devices"]}
        assert got["gpu"]["driver"] == "gpu.nvidia.com" and got["efa"]["driver"] == "dra.net"
        assert attrs[got["efa"]["device"]]["dra.net/pciDevice"] == "Elastic Fabric Adapter (EFA)"
    aligned = {d["request"]: d["device"] for d in claims["default/gpu-efa-aligned"]["nodes"][0]
               ["devices"]}
    assert attrs[aligned["gpu"]][PCIE_ROOT] == attrs[aligned["efa"]][PCIE_ROOT]


def test_aws_aligned_template_fits_nowhere_once_its_root_is_taken(tmp_path: Path) -> None:
    """gpu-0..5 and the EFA on pci0000:a0 are held: only gpu-6/7 (on a0) are free and
    their EFA is not. The aligned claim does not fit, and every device says why; the
    unaligned one takes a free GPU with any free EFA."""
    held = holding(tmp_path, BUSY)
    code, claims = explained(AWS, CLASSES, held)
    assert code == 1
    unaligned = claims["default/gpu-efa-unaligned"]["nodes"][0]
    assert unaligned["allocatable"] is True
    assert {d["request"]: d["device"] for d in unaligned["devices"]} == {
        "gpu": "gpu-6", "efa": "pci-0000-10-1b-0"}
    node = claims["default/gpu-efa-aligned"]["nodes"][0]
    assert node["allocatable"] is False and node["devices"] == []
    why = {(e["request"], e["device"]): e["reason"] for e in node["excluded"]}
    for i in range(6):
        assert why[("gpu", f"gpu-{i}")] == "already allocated to claim ml/training-0"
    for i in (6, 7):
        assert why[("gpu", f"gpu-{i}")] == f"constraint matchAttribute {PCIE_ROOT} with request efa"
    assert why[("efa", "pci-0000-a0-1b-0")] == "already allocated to claim ml/training-0"
    for root in ("10", "20", "90"):
        assert why[("efa", f"pci-0000-{root}-1b-0")] == \
            f"constraint matchAttribute {PCIE_ROOT} with request gpu"
    # the ENAs: the EFA class says no, and the reason quotes its selector
    assert why[("efa", "pci-0000-20-01-0")].startswith("class efa.networking.k8s.aws selector #0: ")
    assert why[("gpu", "pci-0000-20-01-0")].startswith("class gpu.nvidia.com selector #0: ")
    entry = next(e for e in node["excluded"] if e["device"] == "gpu-6" and e["request"] == "gpu")
    assert entry == {"request": "gpu", "device": "gpu-6", "driver": "gpu.nvidia.com",
                     "pool": AWS_NODE, "reason": why[("gpu", "gpu-6")]}


def test_gb300_hand_written_selectors_pick_the_named_devices() -> None:
    """DRANET's GB300 templates pin the GPU by PCI bus ID and the NIC by RDMA device."""
    code, claims = explained(GB300, CLASSES)
    assert code == 0
    attrs = {**attributes(GB300 / "resourceslice-gpu.yaml"),
             **attributes(GB300 / "resourceslice-dranet.yaml")}
    got = {d["request"]: d["device"] for d in claims["default/1nic-aligned"]["nodes"][0]["devices"]}
    assert attrs[got["gpu"]]["resource.kubernetes.io/pciBusID"] == "0008:06:00.0"
    assert attrs[got["nic"]]["dra.net/rdmaDevice"] == "mlx5_0"
    unaligned = {d["request"]: d["device"]
                 for d in claims["default/1nic-unaligned"]["nodes"][0]["devices"]}
    assert attrs[unaligned["nic"]]["dra.net/rdmaDevice"] == "mlx5_2"
    # the NICs publish no pcieRoot here: the reason these templates are hand-written
    assert not any(PCIE_ROOT in a for n, a in attrs.items() if n.startswith("pci-"))


def test_the_table_a_person_reads(tmp_path: Path) -> None:
    held = holding(tmp_path, BUSY)
    res = knd(AWS, CLASSES, held, "--node", AWS_NODE)
    assert res.returncode == 1 and res.stderr == ""
    lines = res.stdout.splitlines()
    assert "claim default/gpu-efa-aligned: NOT allocatable" in lines
    assert f"  {AWS_NODE}: no" in lines
    # per request, each reason once, then the devices it rules out
    at = lines.index(f"    gpu: constraint matchAttribute {PCIE_ROOT} with request efa")
    assert lines[at + 1:at + 3] == [f"      gpu.nvidia.com/{AWS_NODE}/gpu-6",
                                    f"      gpu.nvidia.com/{AWS_NODE}/gpu-7"]
    held = lines.index("    gpu: already allocated to claim ml/training-0")
    # held is checked before any selector, as upstream: the held EFA is listed here too
    assert set(lines[held + 1:held + 8]) == {
        *(f"      gpu.nvidia.com/{AWS_NODE}/gpu-{i}" for i in range(6)),
        f"      dra.net/{AWS_NODE}/pci-0000-a0-1b-0"}
    assert "claim default/gpu-efa-unaligned: allocatable" in lines


@pytest.mark.parametrize(("content", "needle"), [
    ("kind: [unclosed", "bad.yaml: "),
    ("apiVersion: resource.k8s.io/v2\nkind: DeviceClass\nmetadata: {name: x}\n",
     "resource.k8s.io/v2: expected one of resource.k8s.io/v1"),
    ("apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: c}\n"
     "spec: {devices: {requests: [{name: r, exactly: {deviceClassName: x, count: two}}]}}\n",
     "ResourceClaim default/c: spec.devices.requests[0].exactly.count: expected an integer"),
    ("apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: c}\n"
     "spec: {devices: {requests: [{name: r, exactly: {deviceClassName: gpu.nvidia.com, "
     "selectors: [{cel: {expression: 'true'}}, {cel: {expression: 'device.driver =='}}]}}]}}\n",
     "claim default/c, request r: selector #1: CEL compile error"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path: Path, content: str, needle: str) -> None:
    (tmp_path / "bad.yaml").write_text(content)
    res = knd(AWS, CLASSES, tmp_path / "bad.yaml")
    assert res.returncode == 2, res
    assert res.stdout == "" and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stderr.startswith("knd claim explain: ") and needle in res.stderr, res.stderr


def test_no_claims_or_no_such_path_is_status_2(tmp_path: Path) -> None:
    res = knd(AWS / "resourceslice-gpu.yaml")
    assert res.returncode == 2 and "no ResourceClaim or ResourceClaimTemplate" in res.stderr
    res = knd(tmp_path / "missing")
    assert res.returncode == 2 and "no such file or folder" in res.stderr


OCI, MI300X = DATA / "oci-gb200", DATA / "azure-mi300x"


def test_oci_gb200_numa_templates_and_placeholder_topology_ids() -> None:
    """OKE GB200: the NIC is picked by NUMA node as the templates ask. The placement-group
    templates carry placeholder fabric ids (their README says to replace them): no NIC
    matches, and explain says which selector rules each one out."""
    code, claims = explained(OCI, CLASSES)
    assert code == 1  # the placeholders
    nics = attributes(OCI / "resourceslice-dranet.yaml")
    for name, numa in (("default/1nic-aligned", 0), ("default/1nic-unaligned", 1)):
        (node,) = claims[name]["nodes"]
        got = {d["request"]: d["device"] for d in node["devices"]}
        assert node["allocatable"] is True and nics[got["nic"]]["dra.net/numaNode"] == numa
    blocked = claims["default/2nic-aligned-local-block"]
    assert blocked["allocatable"] is False
    why = {e["device"]: e["reason"] for e in blocked["nodes"][0]["excluded"]
           if e["request"] == "nic" and e["driver"] == "dra.net"}
    assert set(why) == set(nics)
    assert all(r.startswith("request nic selector #0: ") and "localBlockId" in r
               for r in why.values()), why


def test_mi300x_nics_by_numa_node() -> None:
    code, claims = explained(MI300X, CLASSES)
    assert code == 0
    nics = attributes(MI300X / "resourceslice-dranet.yaml")
    for name, numas in (("default/4nic-same-numa", {0}), ("default/4nic-cross-numa", {1})):
        got = [d["device"] for d in claims[name]["nodes"][0]["devices"]]
        assert len(got) == 4 and {nics[n]["dra.net/numaNode"] for n in got} == numas
    assert len(claims["default/8nic-all"]["nodes"][0]["devices"]) == 8
