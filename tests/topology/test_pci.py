"""Reading GPUs, NICs and bridge paths from sysfs trees, including broken ones."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from services.kernel.sysfs import Sysfs
from services.topology.affinity import Affinity, Relation
from services.topology.pci import placement, read_tree
from tests.helpers.sysfs_tree import (
    CLASS_3D,
    SysfsTree,
    gpu_server,
    odd_entries,
    rdma_without_netdev,
    sriov_nic,
)

Analyse = Callable[..., Affinity]


def test_classes_decide_what_is_a_gpu_and_what_is_a_nic(tmp_path: Path,
                                                       analyse: Analyse) -> None:
    tree = SysfsTree(tmp_path / "sys")
    rp = "0000:00:01.0"
    classes = {
        "0000:01:00.0": ("10de", "0x030000"),  # NVIDIA VGA: GPU
        "0000:02:00.0": ("abcd", "0x030200"),  # 3D controller, any vendor: GPU
        "0000:03:00.0": ("10de", "0x030100"),  # XGA: not a GPU
        "0000:04:00.0": ("1002", "0x038000"),  # AMD other display: GPU
        "0000:05:00.0": ("abcd", "0x120000"),  # processing accelerator, any vendor: GPU
        "0000:06:00.0": ("1a03", "0x030000"),  # a BMC's VGA (ASPEED): not a GPU
        "0000:07:00.0": ("abcd", "0x038000"),  # someone else's display: not a GPU
        "0000:08:00.0": ("8086", "0x030000"),  # Intel VGA: GPU
        "0000:09:00.0": ("abcd", "0x020000"),  # Ethernet: NIC
        "0000:0a:00.0": ("abcd", "0x020700"),  # InfiniBand: NIC
        "0000:0b:00.0": ("abcd", "0x028000"),  # other network: NIC
        "0000:0c:00.0": ("abcd", "0x010802"),  # NVMe: neither
        "0000:0d:00.0": ("abcd", "0x0c0330"),  # USB: neither
    }
    for address, (vendor, cls) in classes.items():
        tree.pci_function(address, "pci0000:00", [rp], vendor=vendor, cls=cls)
    aff = analyse(tree.root)
    assert [g.address for g in aff.gpus] == ["0000:01:00.0", "0000:02:00.0", "0000:04:00.0",
                                             "0000:05:00.0", "0000:08:00.0"]
    assert [n.address for n in aff.nics] == ["0000:09:00.0", "0000:0a:00.0", "0000:0b:00.0"]
    assert all(n.interfaces == () and n.rdma == () for n in aff.nics)
    assert aff.tree.skipped == ()
    # --gpu-vendor replaces the rule: that vendor's display and 3D controllers only
    asked = analyse(tree.root, gpu_vendors=["1A03", "0xabcd"])
    assert [g.address for g in asked.gpus] == ["0000:02:00.0", "0000:05:00.0",
                                               "0000:06:00.0", "0000:07:00.0"]


def test_gpu_vendor_filter_accepts_0x_and_upper_case(tmp_path: Path, analyse: Analyse) -> None:
    tree = SysfsTree(tmp_path / "sys")
    tree.gpu("0000:01:00.0", root="pci0000:00", bridges=["0000:00:01.0"])
    tree.pci_function("0000:02:00.0", "pci0000:00", ["0000:00:02.0"], vendor="1002",
                      cls=CLASS_3D)
    assert len(analyse(tree.root).gpus) == 2
    assert [g.vendor_id for g in analyse(tree.root, gpu_vendors=["0x10DE"]).gpus] == ["10de"]


def test_sriov_vfs_only_when_asked(tmp_path: Path, analyse: Analyse) -> None:
    tree = sriov_nic(tmp_path / "sys")
    tree.gpu("0000:3c:00.0", root="pci0000:3a", bridges=["0000:3a:02.0"])
    pf_only = analyse(tree.root)
    assert [(n.address, n.interfaces, n.is_vf) for n in pf_only.nics] == \
        [("0000:3b:00.0", ("ens2f0np0",), False)]
    all_fns = analyse(tree.root, include_vfs=True)
    assert [n.address for n in all_fns.nics] == \
        ["0000:3b:00.0", *(f"0000:3b:00.{i}" for i in range(2, 6))]
    vf = all_fns.nics[1]
    assert vf.is_vf and vf.interfaces == ("ens2f0v0",) and vf.rdma == ("mlx5_1",)
    assert vf.bridges == ("0000:3a:00.0",)  # a VF sits where its PF sits
    assert {all_fns.relation("0000:3c:00.0", n.address) for n in all_fns.nics} == \
        {Relation.PHB}


def test_ports_in_dev_port_order_and_rdma_without_netdev(tmp_path: Path,
                                                        analyse: Analyse) -> None:
    tree = rdma_without_netdev(tmp_path / "sys")
    tree.pci_nic("0000:06:00.0", root="pci0000:00", bridges=["0000:00:04.0"],
                 ifname=["zz0", "aa1"], rdma="mlx5_2")
    nics = {n.address: n for n in analyse(tree.root).nics}
    assert set(nics) == {"0000:05:00.0", "0000:06:00.0", "0000:86:00.0"}  # not rxe0
    assert nics["0000:06:00.0"].interfaces == ("zz0", "aa1")
    hca = nics["0000:86:00.0"]
    assert (hca.interfaces, hca.rdma, hca.class_id) == ((), ("mlx5_0",), "020700")
    assert (hca.pcie_root, hca.numa_node) == ("pci0000:85", 1)


def test_nested_pci_domain_is_part_of_the_path(tmp_path: Path) -> None:
    """Intel VMD hangs a second domain below one of its functions."""
    tree = SysfsTree(tmp_path / "sys")
    vmd = "devices/pci0000:00/0000:00:0e.0"
    tree.write(f"{vmd}/class", "0x010400")
    rel = f"{vmd}/pci10000:00/10000:00:02.0/10000:01:00.0"
    tree.write(f"{rel}/class", "0x030200")
    tree.link_to("bus/pci/devices/10000:01:00.0", rel)
    where = placement(Sysfs(tree.root).root, "10000:01:00.0")
    assert where == ("pci0000:00", ("0000:00:0e.0", "pci10000:00", "10000:00:02.0"))


def _break(tree: SysfsTree) -> None:
    """Add broken bus/pci/devices entries beside a healthy tree."""
    tree.link("bus/pci/devices/0000:ee:00.0", "../../../devices/pci0000:ee/0000:ee:00.0")
    tree.link("bus/pci/devices/0000:ef:00.0", "/")
    tree.link("bus/pci/devices/0000:f2:00.0", "0000:f2:00.0")
    tree.write("devices/platform/0000:f0:00.0/class", "0x030200")
    tree.write("devices/platform/0000:f0:00.0/vendor", "0x10de")
    tree.link_to("bus/pci/devices/0000:f0:00.0", "devices/platform/0000:f0:00.0")
    rel = tree.gpu("0000:f1:00.0", root="pci0000:f1", bridges=["0000:f1:01.0"])
    tree.write(f"{rel}/class", "a GPU, honest")
    rel = tree.gpu("0000:f3:00.0", root="pci0000:f1", bridges=["0000:f1:02.0"])
    (tree.root / rel / "class").unlink()
    (tree.root / rel / "class").mkdir()
    tree.link_to("bus/pci/devices/garbage", "devices/pci0000:15")
    tree.write("bus/pci/devices/0000:f4:00.0", "not a link")
    # a GPU whose numa_node is junk and a NIC function whose netdev link dangles
    rel = tree.gpu("0000:f5:00.0", root="pci0000:f5", bridges=["0000:f5:01.0"])
    tree.write(f"{rel}/numa_node", "many")
    tree.link("class/net/lost0", "../../devices/pci0000:f5/0000:f5:02.0/net/lost0")


def test_odd_entries_are_skipped_and_named_not_fatal(tmp_path: Path, analyse: Analyse) -> None:
    tree = gpu_server(tmp_path / "sys")
    _break(tree)
    aff = analyse(tree.root)
    assert len(aff.gpus) == 9 and len(aff.nics) == 8
    junk = next(g for g in aff.gpus if g.address == "0000:f5:00.0")
    assert junk.numa_node is None
    assert {aff.relation(junk.address, n.address) for n in aff.nics} == {Relation.SYS}
    assert aff.relation("0000:1b:00.0", "0000:1a:00.0") is Relation.PIX  # rest intact
    skipped = dict(aff.tree.skipped)
    assert set(skipped) == {"0000:ee:00.0", "0000:ef:00.0", "0000:f0:00.0", "0000:f1:00.0",
                            "0000:f2:00.0", "0000:f3:00.0", "0000:f4:00.0"}
    assert "devices/pciDDDD:BB" in skipped["0000:f0:00.0"]
    assert skipped["0000:f1:00.0"] == "PCI class unreadable"
    assert aff.tree.problems  # counted by the reader


def test_odd_netdev_entries_do_not_crash(tmp_path: Path, analyse: Analyse) -> None:
    aff = analyse(odd_entries(tmp_path / "sys").root)
    assert aff.gpus == ()
    by_addr = {n.address: n for n in aff.nics}
    assert by_addr["0000:01:00.0"].interfaces == ("nonuma",)
    assert by_addr["0000:01:00.0"].numa_node is None
    assert by_addr["0000:03:00.0"].interfaces == ("badvendor",)


def test_placement_refuses_links_out_of_the_root(tmp_path: Path) -> None:
    tree = SysfsTree(tmp_path / "sys")
    outside = tmp_path / "elsewhere" / "devices" / "pci0000:00" / "0000:00:01.0"
    outside.mkdir(parents=True)
    tree.link("bus/pci/devices/0000:00:01.0", outside)
    assert placement(Sysfs(tree.root).root, "0000:00:01.0") == "link leaves the sysfs root"
    tree.write("bus/pci/devices/0000:00:02.0", "a file, not a link")
    assert placement(Sysfs(tree.root).root, "0000:00:02.0") == \
        "link does not lead into devices/pciDDDD:BB/"


def test_empty_or_missing_bus_is_an_empty_tree(tmp_path: Path) -> None:
    (tmp_path / "sys").mkdir()
    tree = read_tree(Sysfs(tmp_path / "sys"))
    assert (tree.gpus, tree.nics, tree.skipped) == ((), (), ())
