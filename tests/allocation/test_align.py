"""``knd claim align``: templates that pair each GPU with its nearest NIC(s), from the
published attributes (DRANET's AWS EFA slices) or the node's own PCIe tree (a sysfs
fixture), each checked by the explainer before it is printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.allocation.test_explain import AWS, AWS_NODE, ROOT, attributes
from tests.helpers.sysfs_tree import GPU_SERVER_NICS, gpu_server

# gpu_server: switch -> (GPUs, NICs); two GPUs and a dual-port NIC below each switch
SWITCHES = [(("0000:1b:00.0", "0000:1c:00.0"), ("0000:1a:00.0", "0000:1a:00.1")),
            (("0000:2b:00.0", "0000:2c:00.0"), ("0000:2a:00.0", "0000:2a:00.1")),
            (("0000:9b:00.0", "0000:9c:00.0"), ("0000:9a:00.0", "0000:9a:00.1")),
            (("0000:ab:00.0", "0000:ac:00.0"), ("0000:aa:00.0", "0000:aa:00.1"))]


def align(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", "claim", "align",
                           *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def templates(text: str) -> dict[str, tuple[dict[str, Any], str]]:
    """template name -> (template, its comment lines)."""
    out = {}
    for chunk in text.split("---\n"):
        doc = yaml.safe_load(chunk)
        notes = "\n".join(x for x in chunk.splitlines() if x.startswith("#"))
        out[doc["metadata"]["name"]] = (doc, notes)
    return out


def pins(t: dict[str, Any]) -> tuple[str, str]:
    """(the GPU's pinning expression, the NICs')."""
    reqs = {r["name"]: r["exactly"] for r in t["spec"]["spec"]["devices"]["requests"]}
    return (reqs["gpu"]["selectors"][0]["cel"]["expression"],
            reqs["nic"]["selectors"][0]["cel"]["expression"])


def test_aws_each_gpu_with_the_efa_on_its_root() -> None:
    res = align(AWS, "--node", AWS_NODE, "--driver-name", "dra.net", "--nic-class", "efa")
    assert res.returncode == 0, res.stderr
    got = templates(res.stdout)
    assert sorted(got) == [f"gpu-{i}-aligned" for i in range(8)]
    gpus, nics = attributes(AWS / "resourceslice-gpu.yaml"), attributes(
        AWS / "resourceslice-dranet.yaml")
    root = "resource.kubernetes.io/pcieRoot"
    for i in range(8):
        t, notes = got[f"gpu-{i}-aligned"]
        gpu_pin, nic_pin = pins(t)
        assert gpus[f"gpu-{i}"]["resource.kubernetes.io/pciBusID"] in gpu_pin
        (nic,) = [n for n, a in nics.items() if f'"{a["dra.net/pciAddress"]}"' in nic_pin]
        assert nics[nic]["dra.net/pciDevice"] == "Elastic Fabric Adapter (EFA)"
        assert nics[nic][root] == gpus[f"gpu-{i}"][root]
        assert t["spec"]["spec"]["devices"]["constraints"] == [
            {"requests": ["gpu", "nic"], "matchAttribute": root}]
        assert "relation PHB" in notes and "published attributes" in notes
        assert f"nearest to gpu-{i ^ 1}" in notes  # two GPUs per root, one EFA each


def _slices(tmp_path: Path) -> Path:
    """The gpu_server's devices as the NVIDIA driver and knd would publish them, with
    no pcieRoot and no NUMA node: only the PCIe tree can relate them."""
    gpus = [a for sw in SWITCHES for a in sw[0]]
    slices = [
        {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
         "metadata": {"name": "n1-gpu"},
         "spec": {"driver": "gpu.nvidia.com", "nodeName": "n1",
                  "pool": {"name": "n1", "generation": 1, "resourceSliceCount": 1},
                  "devices": [{"name": f"gpu-{i}", "attributes": {
                      "type": {"string": "gpu"},
                      "resource.kubernetes.io/pciBusID": {"string": a}}}
                      for i, a in enumerate(gpus)]}},
        {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
         "metadata": {"name": "n1-knd"},
         "spec": {"driver": "knd.dev", "nodeName": "n1",
                  "pool": {"name": "n1", "generation": 1, "resourceSliceCount": 1},
                  "devices": [{"name": ifname, "attributes": {
                      "pciAddress": {"string": addr}, "rdma": {"bool": True}}}
                      for ifname, (addr, *_rest) in GPU_SERVER_NICS.items()]}}]
    path = tmp_path / "slices.yaml"
    path.write_text(yaml.safe_dump_all(slices))
    return path


def test_on_the_node_its_pcie_tree_pairs_each_gpu_below_its_switch(tmp_path: Path) -> None:
    sysfs = gpu_server(tmp_path / "sys").root
    slices = _slices(tmp_path)
    res = align(slices, "--node", "n1", "--topology", "--sysfs-root", sysfs,
                "--nics-per-gpu", "2")
    assert res.returncode == 0, res.stderr
    got = templates(res.stdout)
    for i, bus in enumerate(a for sw in SWITCHES for a in sw[0]):
        t, notes = got[f"gpu-{i}-aligned"]
        gpu_pin, nic_pin = pins(t)
        assert f'"{bus}"' in gpu_pin
        (switch_nics,) = [sw[1] for sw in SWITCHES if bus in sw[0]]
        assert {a for a in switch_nics if f'"{a}"' in nic_pin} == set(switch_nics)
        assert "relation PIX" in notes and "PCIe tree" in notes
        assert "constraints" not in t["spec"]["spec"]["devices"]  # nothing to match on
    # without the tree nothing relates them: the templates say so
    res = align(slices, "--node", "n1")
    assert res.returncode == 0, res.stderr
    assert all("relation SYS" in notes for _, notes in templates(res.stdout).values())


def test_nothing_to_pair_is_one_line_and_status_2(tmp_path: Path) -> None:
    res = align(AWS / "resourceslice-dranet.yaml", "--node", AWS_NODE,
                "--driver-name", "dra.net")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip() == (f"knd claim align: node {AWS_NODE}: no GPU of driver "
                                  "gpu.nvidia.com in the slices")
    res = align(AWS, "--node", AWS_NODE, "--driver-name", "dra.net", "--nics-per-gpu", "9")
    assert res.returncode == 2 and "fewer than the 9 asked for each GPU" in res.stderr
