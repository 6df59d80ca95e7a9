"""``knd topology``: the text matrix, --json, --svg and a node without GPUs, through the CLI."""

from __future__ import annotations

import argparse
import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from services import cli
from services.common import settings
from services.tools import topology as tool
from tests.helpers.sysfs_tree import (
    SysfsTree,
    gpu_server,
    nested_switch_server,
    shared_switch_server,
    sriov_nic,
)

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """``cli.main`` configures the root logger; give the next test the one it had."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        cli.main(["topology", *argv])
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def test_text_matrix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = gpu_server(tmp_path / "sys").root
    code, out, _ = run(capsys, "--sysfs-root", str(root))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [*(f"NIC{i}" for i in range(8)), "NUMA", "pcieRoot",
                                "Preferred", "NIC"]
    assert lines[1].split() == ["GPU0", "PIX", "PIX", "PHB", "PHB", "SYS", "SYS", "SYS", "SYS",
                                "0", "pci0000:15", "NIC0", "(PIX)"]
    assert lines[8].split() == ["GPU7", "SYS", "SYS", "SYS", "SYS", "PHB", "PHB", "PIX", "PIX",
                                "1", "pci0000:97", "NIC7", "(PIX)"]
    assert "  GPU0: 0000:1b:00.0  10de:2330" in lines
    assert "  NIC0: ens1f0np0/mlx5_0  0000:1a:00.0  NUMA 0  pci0000:15" in lines
    assert any(line.startswith("  NODE = ") for line in lines)
    assert "shared" not in out.split("GPU legend")[0]


def test_text_reports_a_shared_nic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = shared_switch_server(tmp_path / "sys").root
    code, out, _ = run(capsys, "--sysfs-root", str(root), "--gpu-vendor", "10de",
                       "--gpu-vendor", "1002")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:4]}
    assert rows["GPU0"].endswith("NIC0 (PIX) shared with GPU1")
    assert rows["GPU1"].endswith("NIC0 (PIX) shared with GPU0")
    assert rows["GPU2"].split()[1:3] == ["NODE", "PHB"]
    assert rows["GPU2"].endswith("NIC1 (PHB)")


def test_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = nested_switch_server(tmp_path / "sys").root
    code, out, _ = run(capsys, "--sysfs-root", str(root), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["schema"] == "knd.dev/topology/v1"
    assert list(doc["relations"]) == ["PIX", "PXB", "PHB", "NODE", "SYS"]
    assert [n["name"] for n in doc["nics"]] == ["NIC0", "NIC1", "NIC2"]
    hca = doc["nics"][0]
    assert hca == {"name": "NIC0", "pciAddress": "0000:12:00.0", "class": "020700",
                   "vendorId": "15b3", "deviceId": "101b", "numaNode": 0,
                   "pcieRoot": "pci0000:00",
                   "bridges": ["0000:00:02.0", "0000:10:00.0", "0000:11:00.0"],
                   "interfaces": ["ibp18s0"], "rdmaDevices": ["mlx5_0"], "vf": False}
    gpus = {g["pciAddress"]: g for g in doc["gpus"]}
    g22 = gpus["0000:22:00.0"]
    assert (g22["name"], g22["numaNode"], g22["pcieRoot"]) == ("GPU2", 0, "pci0000:00")
    assert [(n["name"], n["relation"]) for n in g22["nics"]] == \
        [("NIC0", "PXB"), ("NIC1", "PXB"), ("NIC2", "SYS")]
    assert g22["nics"][1]["interfaces"] == ["ens16"]
    assert g22["preferredNic"] == {"name": "NIC0", "pciAddress": "0000:12:00.0",
                                   "interfaces": ["ibp18s0"], "rdmaDevices": ["mlx5_0"],
                                   "relation": "PXB", "shared": True,
                                   "sharedWith": ["0000:17:00.0"]}
    assert gpus["0000:c1:00.0"]["numaNode"] is None
    assert gpus["0000:15:00.0"]["preferredNic"]["shared"] is False
    assert doc["skipped"] == []


def _svg(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return root


def test_svg_is_xml_with_one_line_per_preferred_pair(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    root = shared_switch_server(tmp_path / "sys").root
    svg = tmp_path / "topo.svg"
    # the BMC's VGA too (ASPEED 1a03), so that its PCIe-to-PCI bridge is drawn
    code, out, err = run(capsys, "--sysfs-root", str(root), "--svg", str(svg), "--json",
                         *(f"--gpu-vendor={v}" for v in ("10de", "1002", "1a03")))
    assert code == 0 and f"wrote {svg}" in err
    doc = json.loads(out)
    picture = _svg(svg)
    lines = [p for p in picture.iter(f"{SVG}path") if p.get("class") == "preferred"]
    want = {(g["pciAddress"], g["preferredNic"]["pciAddress"], g["preferredNic"]["shared"])
            for g in doc["gpus"]}
    got = {(p.get("data-gpu"), p.get("data-nic"), p.get("stroke-dasharray") is not None)
           for p in lines}
    assert len(lines) == len(doc["gpus"]) == 4 and got == want
    text = " ".join(t.text or "" for t in picture.iter(f"{SVG}text"))
    for label in ("NUMA 0", "root complex pci0000:00", "root complex pci0000:40",
                  "switch 0000:01:00.0", "bridge 0000:07:00.0", "GPU3 0000:42:00.0",
                  "NIC0 0000:03:00.0", "eth0/mlx5_0", "eth1"):
        assert label in text, label


def test_svg_nested_switches_are_joined(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    root = nested_switch_server(tmp_path / "sys").root
    svg = tmp_path / "nested.svg"
    assert run(capsys, "--sysfs-root", str(root), "--svg", str(svg))[0] == 0
    picture = _svg(svg)
    text = " ".join(t.text or "" for t in picture.iter(f"{SVG}text"))
    for label in ("switch 0000:10:00.0", "switch 0000:13:00.0", "switch 0000:20:00.0",
                  "NUMA ?", "NUMA 1"):
        assert label in text, label
    joins = [e for e in picture.iter(f"{SVG}line") if e.get("stroke") == "#555"]
    assert len(joins) == 2  # S1 -> S2, S1 -> S3


def test_names_that_are_not_xml_safe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = SysfsTree(tmp_path / "sys")
    tree.pci_nic("0000:03:00.0", root="pci0000:00", bridges=["0000:00:01.0"],
                 ifname="x<&>'\"\x01")
    tree.gpu("0000:04:00.0", root="pci0000:00", bridges=["0000:00:02.0"])
    svg = tmp_path / "odd.svg"
    code, out, _ = run(capsys, "--sysfs-root", str(tree.root), "--svg", str(svg), "--json")
    assert code == 0
    assert json.loads(out)["nics"][0]["interfaces"] == ["x<&>'\"\x01"]
    text = " ".join(t.text or "" for t in _svg(svg).iter(f"{SVG}text"))
    assert "x<&>'\"?" in text


def test_no_gpu_is_said_plainly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = sriov_nic(tmp_path / "sys").root
    code, out, _ = run(capsys, "--sysfs-root", str(root))
    assert code == 0
    assert out.startswith("knd topology: no GPU found under ")
    assert "1 NIC(s) found" in out
    code, out, err = run(capsys, "--sysfs-root", str(root), "--json")
    assert code == 0 and "no GPU found" in err
    doc = json.loads(out)
    assert doc["gpus"] == [] and [n["pciAddress"] for n in doc["nics"]] == ["0000:3b:00.0"]


def test_bad_root_and_unwritable_svg(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--sysfs-root", str(tmp_path / "absent"))
    assert code == 2 and "neither a directory nor a capture" in err
    root = gpu_server(tmp_path / "sys").root
    code, _, err = run(capsys, "--sysfs-root", str(root), "--svg",
                       str(tmp_path / "no" / "such" / "dir.svg"))
    assert code == 1 and "cannot write" in err
    code, _, err = run(capsys, "--sysfs-root", str(root), "--save-sysfs",
                       str(tmp_path / "no" / "such" / "node.tar.gz"))
    assert code == 1 and "cannot write" in err


def test_main_with_parsed_args_and_env_default(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root = gpu_server(tmp_path / "sys").root
    monkeypatch.setenv("KND_SYSFS_ROOT", str(root))
    parser = argparse.ArgumentParser()
    settings.add_to(parser, "topology")
    tool.add_arguments(parser)
    args = parser.parse_args(["--json", "--vfs"])
    assert args.sysfs_root == str(root)
    assert tool.main(args) == 0
    assert len(json.loads(capsys.readouterr().out)["gpus"]) == 8
