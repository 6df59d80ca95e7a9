"""Sysfs reader: topology from fake trees with the kernel's layout, and broken entries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from services.kernel import sysfs as sysfs_mod
from services.kernel.sysfs import NetdevHw, Sysfs
from tests.helpers.sysfs_tree import (
    GPU_SERVER_NICS,
    ODD_NETDEVS,
    SysfsTree,
    gpu_server,
    odd_entries,
    rdma_without_netdev,
    sriov_nic,
)


def _metric(problem: str) -> float:
    return REGISTRY.get_sample_value("knd_discovery_sysfs_errors_total",
                                     {"problem": problem}) or 0.0


@pytest.fixture
def no_pci_ids(tmp_path: Path) -> Path:
    """A pci.ids path that does not exist, so results never depend on this machine."""
    return tmp_path / "absent-pci.ids"


def test_gpu_server_nics_have_their_root_complex_and_numa(tmp_path: Path,
                                                           no_pci_ids: Path) -> None:
    tree = gpu_server(tmp_path / "sys")
    s = Sysfs(tree.root, pci_ids=no_pci_ids)
    for ifname, (address, rdma, root, numa) in GPU_SERVER_NICS.items():
        hw = s.netdev(ifname)
        assert hw is not None and hw.pci is not None, ifname
        assert hw.pci.address == address
        assert hw.pci.pcie_root == root
        assert hw.pci.numa_node == numa
        assert hw.rdma == (rdma,)
        assert hw.virtual is False
        assert hw.dev_port == 0
        assert (hw.pci.vendor_id, hw.pci.device_id) == ("15b3", "1021")
        assert hw.pci.subsystem == "15b3:0007"
        assert hw.pci.class_id == "020000"
        assert hw.pci.vendor_name is None and hw.pci.device_name is None
        assert not hw.pci.is_vf and hw.pci.sriov_totalvfs is None
    assert s.problems == {}


def test_gpu_server_gpus_are_pci_functions_beside_the_nics(tmp_path: Path) -> None:
    tree = gpu_server(tmp_path / "sys")
    s = Sysfs(tree.root, pci_ids=tmp_path / "none")
    gpus = [a for a in sorted(os.listdir(tree.root / "bus/pci/devices"))
            if (g := s.pci(a)) is not None and g.class_id == "030200"]
    assert len(gpus) == 8
    roots = {a: s.pci(a).pcie_root for a in gpus}  # type: ignore[union-attr]
    assert sorted(roots.values()) == ["pci0000:15"] * 4 + ["pci0000:97"] * 4
    gpu = s.pci("0000:1b:00.0")
    assert gpu is not None and gpu.vendor_id == "10de" and gpu.numa_node == 0
    assert s.pci("0000:ff:00.0") is None
    assert s.pci("not-an-address") is None


def test_virtual_and_unknown_netdevs(tmp_path: Path) -> None:
    s = Sysfs(gpu_server(tmp_path / "sys").root)
    assert s.netdev("cni0") == NetdevHw(pci=None, virtual=True, rdma=(), dev_port=0)
    assert s.netdev("eth42") is None
    for bad in ("", ".", "..", "../net", "a/b"):
        assert s.netdev(bad) is None


def test_gpu_server_rdma_devices_with_char_devices(tmp_path: Path) -> None:
    s = Sysfs(gpu_server(tmp_path / "sys").root)
    devs = s.rdma_devices()
    assert [d.name for d in devs] == [f"mlx5_{i}" for i in range(8)]
    by_name = {d.name: d for d in devs}
    for ifname, (address, rdma, _, _) in GPU_SERVER_NICS.items():
        dev = by_name[rdma]
        assert dev.netdevs == (ifname,)
        assert dev.pci is not None and dev.pci.address == address
    assert by_name["mlx5_3"].char_devices == (
        "/dev/infiniband/uverbs3", "/dev/infiniband/umad3", "/dev/infiniband/issm3")


def test_sriov_pf_and_vfs(tmp_path: Path) -> None:
    s = Sysfs(sriov_nic(tmp_path / "sys").root)
    pf = s.netdev("ens2f0np0")
    assert pf is not None and pf.pci is not None
    assert (pf.pci.sriov_totalvfs, pf.pci.sriov_numvfs) == (8, 4)
    assert pf.pci.is_vf is False and pf.pci.physfn is None
    for i in range(4):
        vf = s.netdev(f"ens2f0v{i}")
        assert vf is not None and vf.pci is not None
        assert vf.pci.address == f"0000:3b:00.{i + 2}"
        assert vf.pci.is_vf is True
        assert vf.pci.physfn == "0000:3b:00.0"
        assert vf.pci.sriov_totalvfs is None
        assert vf.pci.pcie_root == "pci0000:3a"
        assert vf.rdma == (f"mlx5_{i + 1}",)
    assert s.problems == {}


def test_rdma_device_without_netdev(tmp_path: Path) -> None:
    s = Sysfs(rdma_without_netdev(tmp_path / "sys").root)
    devs = {d.name: d for d in s.rdma_devices()}
    assert set(devs) == {"mlx5_0", "mlx5_1", "rxe0"}
    hca = devs["mlx5_0"]
    assert hca.netdevs == ()
    assert hca.pci is not None and hca.pci.address == "0000:86:00.0"
    assert hca.pci.class_id == "020700" and hca.pci.numa_node == 1
    assert hca.pci.pcie_root == "pci0000:85"
    assert hca.char_devices == (
        "/dev/infiniband/uverbs0", "/dev/infiniband/umad0", "/dev/infiniband/issm0")
    assert devs["mlx5_1"].netdevs == ("eth1",)
    # software RDMA: no PCI, netdev from its ``parent``, and the netdev knows it
    assert devs["rxe0"].pci is None and devs["rxe0"].netdevs == ("veth1",)
    assert devs["rxe0"].char_devices == ("/dev/infiniband/uverbs2",)
    veth = s.netdev("veth1")
    assert veth is not None and veth.virtual and veth.rdma == ("rxe0",)


def test_pci_ids_names(tmp_path: Path) -> None:
    ids = tmp_path / "pci.ids"
    ids.write_text(
        "# comment\n"
        "10de  NVIDIA Corporation\n"
        "\t2330  GH100 [H100 SXM5 80GB]\n"
        "15b3  Mellanox Technologies\n"
        "\t1021  MT2910 Family [ConnectX-7]\n"
        "\t\t15b3 0007  A board name that must not win\n"
        "\t1017  MT27800 Family [ConnectX-5]\n"
        "C 02  Network controller\n"
        "\t00  Ethernet controller\n"
    )
    s = Sysfs(gpu_server(tmp_path / "sys").root, pci_ids=ids)
    hw = s.netdev("ens1f0np0")
    assert hw is not None and hw.pci is not None
    assert hw.pci.vendor_name == "Mellanox Technologies"
    assert hw.pci.device_name == "MT2910 Family [ConnectX-7]"
    gpu = s.pci("0000:1b:00.0")
    assert gpu is not None and gpu.device_name == "GH100 [H100 SXM5 80GB]"


def test_system_pci_ids_used_when_no_path_given(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ids = tmp_path / "hwdata.ids"
    ids.write_text("15b3  Mellanox Technologies\n\t1021  CX7\n")
    monkeypatch.setattr(sysfs_mod, "SYSTEM_PCI_IDS", (tmp_path / "missing", ids))
    hw = Sysfs(gpu_server(tmp_path / "sys").root).netdev("ens1f1np1")
    assert hw is not None and hw.pci is not None and hw.pci.device_name == "CX7"


EXPECTED_ODD = {
    # netdev: (has pci, problem it must have been counted for)
    "nonuma": (True, "missing"),
    "dirvendor": (True, "unreadable"),
    "badvendor": (True, "malformed"),
    "dangling": (False, "dangling"),
    "looping": (False, "loop"),
    "escaping": (False, "escape"),
    "escabs": (False, "escape"),
    "ghost": (False, "dangling"),
    "selfloop": (False, "loop"),
}


def test_odd_entries_never_raise_and_are_counted(tmp_path: Path) -> None:
    assert set(EXPECTED_ODD) == set(ODD_NETDEVS)
    s = Sysfs(odd_entries(tmp_path / "sys").root)
    before = {p: _metric(p) for p in sysfs_mod.PROBLEMS}
    for ifname, (has_pci, problem) in EXPECTED_ODD.items():
        seen = s.problems[problem]
        hw = s.netdev(ifname)
        assert hw is not None, ifname
        assert (hw.pci is not None) is has_pci, ifname
        assert s.problems[problem] > seen, (ifname, problem)
    nonuma = s.netdev("nonuma")
    assert nonuma is not None and nonuma.pci is not None
    assert nonuma.pci.numa_node is None and nonuma.pci.vendor_id == "15b3"
    bad = s.netdev("badvendor")
    assert bad is not None and bad.pci is not None
    assert bad.pci.vendor_id is None and bad.pci.numa_node is None
    assert bad.pci.device_id == "1017"  # what could be read is still reported

    rdma = {d.name: d for d in s.rdma_devices()}
    assert set(rdma) == {"badib", "mlx5_9"}
    assert rdma["badib"].pci is None and rdma["mlx5_9"].pci is None

    after = {p: _metric(p) for p in sysfs_mod.PROBLEMS}
    counted = {p: after[p] - before[p] for p in after}
    assert counted == {p: float(s.problems[p]) for p in sysfs_mod.PROBLEMS}

    # once per entry: a rescan adds nothing
    totals = dict(s.problems)
    for ifname in ODD_NETDEVS:
        s.netdev(ifname)
    s.rdma_devices()
    assert dict(s.problems) == totals
    assert {p: _metric(p) for p in sysfs_mod.PROBLEMS} == after


def test_missing_root_is_empty(tmp_path: Path) -> None:
    s = Sysfs(tmp_path / "nothing-here")
    assert s.netdev("eth0") is None
    assert s.rdma_devices() == []
    assert s.pci("0000:00:00.0") is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads mode-000 files")
def test_unreadable_file(tmp_path: Path) -> None:
    tree = SysfsTree(tmp_path / "sys")
    rel = tree.pci_nic("0000:3b:00.0", root="pci0000:3a", ifname="eth0", numa=1)
    (tree.root / rel / "numa_node").chmod(0)
    s = Sysfs(tree.root)
    hw = s.netdev("eth0")
    assert hw is not None and hw.pci is not None and hw.pci.numa_node is None
    assert s.problems["unreadable"] == 1


def test_link_out_of_root_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "vendor").write_text("0x8086\n")
    tree = SysfsTree(tmp_path / "sys")
    rel = tree.pci_nic("0000:3b:00.0", root="pci0000:3a", ifname="eth0")
    (tree.root / rel / "vendor").unlink()
    tree.link(f"{rel}/vendor", outside / "vendor")
    s = Sysfs(tree.root)
    hw = s.netdev("eth0")
    assert hw is not None and hw.pci is not None and hw.pci.vendor_id is None
    assert s.problems["escape"] == 1


def test_unexpected_error_is_contained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Sysfs(gpu_server(tmp_path / "sys").root)

    def boom(*_: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(Sysfs, "_pci", boom)
    before = _metric("internal")
    assert s.netdev("ens1f0np0") == NetdevHw(pci=None, virtual=False)
    assert [d.pci for d in s.rdma_devices()] == [None] * 8
    assert s.pci("0000:1a:00.0") is None
    assert _metric("internal") - before == s.problems["internal"] >= 1


def test_pcie_root_is_the_outermost_root_complex(tmp_path: Path) -> None:
    # Intel VMD: a second PCI domain (pci10000:e0) nested under a function of the first
    tree = SysfsTree(tmp_path / "sys")
    tree.pci_nic("10000:e1:00.0", root="pci0000:00",
                 bridges=["0000:00:0e.0", "pci10000:e0", "10000:e0:01.0"], ifname="eth0")
    hw = Sysfs(tree.root).netdev("eth0")
    assert hw is not None and hw.pci is not None
    assert hw.pci.address == "10000:e1:00.0"
    assert hw.pci.pcie_root == "pci0000:00"


def test_numa_minus_one_means_unknown(tmp_path: Path) -> None:
    # single-node machines (and many VMs) report -1: no NUMA affinity to publish
    tree = SysfsTree(tmp_path / "sys")
    tree.pci_nic("0000:00:03.0", root="pci0000:00", ifname="ens3", numa=-1)
    s = Sysfs(tree.root)
    hw = s.netdev("ens3")
    assert hw is not None and hw.pci is not None and hw.pci.numa_node is None
    assert s.problems == {}


@pytest.mark.parametrize(("online", "expected"), [("0", 0), ("1", 1), ("0-1", None),
                                                  ("0,2", None), (None, None)])
def test_numa_unknown_means_the_only_node_online(tmp_path: Path, no_pci_ids: Path,
                                                 online: str | None,
                                                 expected: int | None) -> None:
    """A VM's firmware leaves numa_node at -1; with one node online that node is it."""
    tree = SysfsTree(tmp_path / "sys")
    tree.virtio_nic("0000:00:03.0", root="pci0000:00", ifname="eth0")
    tree.pci_nic("0000:41:00.0", root="pci0000:40", numa=1, ifname="ens1")
    if online is not None:
        tree.write("devices/system/node/online", online)
    s = Sysfs(tree.root, pci_ids=no_pci_ids)
    eth0, ens1 = s.netdev("eth0"), s.netdev("ens1")
    assert eth0 is not None and eth0.pci is not None and eth0.pci.numa_node == expected
    assert ens1 is not None and ens1.pci is not None and ens1.pci.numa_node == 1
