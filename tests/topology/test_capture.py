"""``--save-sysfs`` captures: another machine reads them exactly as the original sysfs."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from services.cli import main as cli_main
from services.kernel.sysfs import Sysfs
from services.topology import capture
from tests.helpers.sysfs_tree import (
    SysfsTree,
    gpu_server,
    nested_switch_server,
    rdma_without_netdev,
    sriov_nic,
)

LAYOUTS = {"gpu_server": gpu_server, "sriov_nic": sriov_nic,
           "rdma_without_netdev": rdma_without_netdev,
           "nested_switch_server": nested_switch_server}


def _topology_json(capsys: pytest.CaptureFixture[str], root: Path, *extra: str) -> dict:
    with pytest.raises(SystemExit) as done:
        cli_main(["topology", "--sysfs-root", str(root), "--json", "--vfs",
                  "--pci-ids", "/nonexistent", *extra])
    assert done.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    doc.pop("sysfsRoot")
    return doc


def _hardware(root: Path) -> dict:
    """Everything discovery takes from sysfs, per netdev and RDMA device."""
    s = Sysfs(root, pci_ids=Path("/nonexistent"))
    nets = sorted(os.listdir(root / "class" / "net"))
    return {"net": {n: s.netdev(n) for n in nets}, "rdma": s.rdma_devices(),
            "problems": dict(s.problems)}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_capture_reads_back_the_same(tmp_path: Path, layout: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    tree = LAYOUTS[layout](tmp_path / "sys")
    out = tmp_path / "node.tar.gz"
    original = _topology_json(capsys, tree.root, "--save-sysfs", str(out))
    assert out.stat().st_size > 0
    assert _topology_json(capsys, out) == original
    with capture.unpacked(out) as copy:
        assert _hardware(copy) == _hardware(tree.root)


def test_capture_leaves_out_identifying_and_unrelated_files(tmp_path: Path) -> None:
    tree = gpu_server(tmp_path / "sys")
    fn = "devices/pci0000:15/0000:15:01.0/0000:18:00.0/0000:19:00.0/0000:1a:00.0"
    tree.write(f"{fn}/net/ens1f0np0/address", "b8:ce:f6:00:00:01")
    tree.write(f"{fn}/infiniband/mlx5_0/node_guid", "b8ce:f603:0000:0001")
    tree.write(f"{fn}/serial", "MT2000X00000")
    tree.write(f"{fn}/config", "\x86\x80")
    tree.write("devices/platform/serial8250/tty/ttyS0/dev", "4:64")
    out = tmp_path / "node.tar.gz"
    assert capture.capture(tree.root, out) == []
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
    assert f"{fn}/vendor" in names and f"{fn}/numa_node" in names
    assert f"{fn}/net/ens1f0np0/dev_port" in names
    for left_out in (f"{fn}/net/ens1f0np0/address", f"{fn}/infiniband/mlx5_0/node_guid",
                     f"{fn}/serial", f"{fn}/config", "devices/platform"):
        assert left_out not in names


def test_links_that_leave_sysfs_are_named_not_followed(tmp_path: Path) -> None:
    tree = SysfsTree(tmp_path / "sys")
    tree.pci_nic("0000:01:00.0", root="pci0000:00", bridges=["0000:00:01.0"], ifname="eth0")
    outside = tmp_path / "elsewhere" / "0000:02:00.0"
    outside.mkdir(parents=True)
    (outside / "vendor").write_text("0x15b3\n")
    tree.link("bus/pci/devices/0000:02:00.0", outside)
    out = tmp_path / "node.tar.gz"
    assert capture.capture(tree.root, out) == ["bus/pci/devices/0000:02:00.0"]
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert "bus/pci/devices/0000:02:00.0" not in names
    assert not any("elsewhere" in n for n in names)


def test_virtio_nic_sits_at_its_pci_function(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """virtio-net hangs its netdev off a ``virtioN`` child of the PCI function."""
    tree = SysfsTree(tmp_path / "sys")
    tree.virtio_nic("0000:00:03.0", root="pci0000:00", ifname="eth0", index=2)
    hw = Sysfs(tree.root, pci_ids=tmp_path / "none").netdev("eth0")
    assert hw is not None and hw.pci is not None
    assert (hw.pci.address, hw.pci.vendor_id, hw.pci.pcie_root) == (
        "0000:00:03.0", "1af4", "pci0000:00")
    assert hw.pci.numa_node is None
    out = tmp_path / "vm.tar.gz"
    doc = _topology_json(capsys, tree.root, "--save-sysfs", str(out))
    assert [n["interfaces"] for n in doc["nics"]] == [["eth0"]]
    assert _topology_json(capsys, out) == doc


@pytest.fixture(params=["extraction filter", "Python < 3.11.4"])
def python(request, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of unpacking: tarfile's ``data`` filter, and the checks by hand that
    stand in for it where tarfile has none (Debian 12's Python 3.11.2)."""
    if request.param != "extraction filter":
        monkeypatch.delattr(tarfile, "data_filter")
    return request.param


def _evil(path: Path, *members: tuple[str, str]) -> Path:
    """A tar of (name, symlink target or "" for a small file) members."""
    with tarfile.open(path, "w:gz") as tar:
        for name, target in members:
            info = tarfile.TarInfo(name)
            if target:
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
            else:
                info.size = 2
                tar.addfile(info, io.BytesIO(b"x\n"))
    return path


def test_capture_replays_without_an_extraction_filter(tmp_path: Path, python: str,
                                                      capsys: pytest.CaptureFixture[str]):
    tree = gpu_server(tmp_path / "sys")
    out = tmp_path / "node.tar.gz"
    assert _topology_json(capsys, tree.root, "--save-sysfs", str(out)) == _topology_json(
        capsys, out)


def test_unsafe_or_broken_capture_is_refused(tmp_path: Path, python: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    evils = [_evil(tmp_path / "abs-link.tar.gz", ("class/net/eth0", "/etc")),
             _evil(tmp_path / "up-link.tar.gz", ("class/net/eth0", "../../../../etc")),
             _evil(tmp_path / "dotdot.tar.gz", ("../escape", "")),
             _evil(tmp_path / "chain.tar.gz", ("a", "d"), ("d", ".."))]
    broken = tmp_path / "broken.tar.gz"
    good = tmp_path / "good.tar.gz"
    capture.capture(gpu_server(tmp_path / "sys").root, good)
    broken.write_bytes(good.read_bytes()[:-200])
    assert not (tmp_path / "escape").exists()
    for bad in (*evils, broken):
        with pytest.raises(SystemExit) as done:
            cli_main(["topology", "--sysfs-root", str(bad)])
        assert done.value.code == 2
        assert f"cannot unpack {bad}" in capsys.readouterr().err
