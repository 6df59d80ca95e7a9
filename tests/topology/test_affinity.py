"""Relations (PIX/PXB/PHB/NODE/SYS) and preferred NICs, on fixture layouts and synthetic trees."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from services.topology.affinity import Affinity, Relation, compute, relation
from services.topology.pci import Function, PciTree
from tests.helpers.sysfs_tree import (
    GPU_SERVER_NICS,
    gpu_server,
    nested_switch_server,
    shared_switch_server,
)

Analyse = Callable[..., Affinity]
PIX, PXB, PHB, NODE, SYS = (Relation.PIX, Relation.PXB, Relation.PHB, Relation.NODE,
                            Relation.SYS)

# gpu_server, written out: switch -> (root complex, NUMA node, GPUs, NICs). Two switches
# per root complex, one root complex per socket: NUMA 0 = pci0000:15, NUMA 1 = pci0000:97.
GPU_SERVER_SWITCHES = {
    0: ("pci0000:15", 0, ("0000:1b:00.0", "0000:1c:00.0"), ("0000:1a:00.0", "0000:1a:00.1")),
    1: ("pci0000:15", 0, ("0000:2b:00.0", "0000:2c:00.0"), ("0000:2a:00.0", "0000:2a:00.1")),
    2: ("pci0000:97", 1, ("0000:9b:00.0", "0000:9c:00.0"), ("0000:9a:00.0", "0000:9a:00.1")),
    3: ("pci0000:97", 1, ("0000:ab:00.0", "0000:ac:00.0"), ("0000:aa:00.0", "0000:aa:00.1")),
}


def _where(kind: int) -> dict[str, tuple[int, str, int]]:
    """address -> (switch, root complex, NUMA) for GPUs (kind 2) or NICs (kind 3)."""
    return {addr: (k, root, numa) for k, (root, numa, *devs) in GPU_SERVER_SWITCHES.items()
            for addr in devs[kind - 2]}


def test_gpu_server_layout_is_what_the_table_says(tmp_path: Path, analyse: Analyse) -> None:
    aff = analyse(gpu_server(tmp_path / "sys").root)
    gpus, nics = _where(2), _where(3)
    assert [g.address for g in aff.gpus] == sorted(gpus)
    assert [n.address for n in aff.nics] == sorted(nics)
    for g in aff.gpus:
        assert (g.pcie_root, g.numa_node) == gpus[g.address][1:], g.address
        assert len(g.bridges) == 3  # root port, switch upstream, switch downstream
    for ifname, (address, rdma, root, numa) in GPU_SERVER_NICS.items():
        nic = next(n for n in aff.nics if n.address == address)
        assert nic.interfaces == (ifname,) and nic.rdma == (rdma,)
        assert (nic.pcie_root, nic.numa_node) == (root, numa) == nics[address][1:]


def test_gpu_server_relations(tmp_path: Path, analyse: Analyse) -> None:
    """Same switch: PIX; same root complex, other switch: PHB; other socket: SYS."""
    aff = analyse(gpu_server(tmp_path / "sys").root)
    gpus, nics = _where(2), _where(3)
    seen = set()
    for (g, n), rel in aff.relations.items():
        (gs, groot, gnuma), (ns, nroot, nnuma) = gpus[g], nics[n]
        if gs == ns:
            want = PIX
        elif groot == nroot:
            want = PHB
        else:
            assert gnuma != nnuma
            want = SYS
        assert rel is want, (g, n)
        seen.add(rel)
    assert len(aff.relations) == 64
    assert seen == {PIX, PHB, SYS}


def test_gpu_server_gpus_on_a_switch_spread_over_its_two_nics(tmp_path: Path,
                                                             analyse: Analyse) -> None:
    aff = analyse(gpu_server(tmp_path / "sys").root)
    chosen = {g: (c.nic, c.relation, c.shared) for g, c in aff.preferred.items() if c}
    want = {}
    for _, _, (g0, g1), (n0, n1) in GPU_SERVER_SWITCHES.values():
        want[g0] = (n0, PIX, False)
        want[g1] = (n1, PIX, False)
    assert chosen == want


def test_two_gpus_one_nic_on_a_switch_both_prefer_it_and_share(tmp_path: Path,
                                                              analyse: Analyse) -> None:
    aff = analyse(shared_switch_server(tmp_path / "sys").root, gpu_vendors={"10de", "1002"})
    assert [g.address for g in aff.gpus] == ["0000:04:00.0", "0000:05:00.0", "0000:42:00.0"]
    rel = aff.relation
    assert rel("0000:04:00.0", "0000:03:00.0") is PIX
    assert rel("0000:05:00.0", "0000:03:00.0") is PIX
    # both root complexes are on NUMA 0: crossing between them is NODE, not SYS
    assert rel("0000:04:00.0", "0000:41:00.0") is NODE
    assert rel("0000:42:00.0", "0000:03:00.0") is NODE
    assert rel("0000:42:00.0", "0000:41:00.0") is PHB  # two root ports, one root complex
    a, b, amd = (aff.preferred[x] for x in ("0000:04:00.0", "0000:05:00.0", "0000:42:00.0"))
    assert a is not None and b is not None and amd is not None
    assert (a.nic, a.relation, a.shared_with) == ("0000:03:00.0", PIX, ("0000:05:00.0",))
    assert (b.nic, b.relation, b.shared_with) == ("0000:03:00.0", PIX, ("0000:04:00.0",))
    assert a.shared and b.shared
    assert (amd.nic, amd.relation, amd.shared) == ("0000:41:00.0", PHB, False)


def test_a_bmcs_display_controller_is_no_gpu_unless_its_vendor_is_asked_for(
        tmp_path: Path, analyse: Analyse) -> None:
    root = shared_switch_server(tmp_path / "sys").root
    # by default the ASPEED VGA (1a03:2000, class 0300) is left out; NVIDIA and AMD count
    assert [g.address for g in analyse(root).gpus] == \
        ["0000:04:00.0", "0000:05:00.0", "0000:42:00.0"]
    aff = analyse(root, gpu_vendors=["1a03"])
    [vga] = aff.gpus
    assert (vga.vendor_id, vga.class_id) == ("1a03", "030000")
    assert aff.relation(vga.address, "0000:03:00.0") is PHB  # other root port, same complex
    assert [g.address for g in analyse(root, gpu_vendors=["10de"]).gpus] == \
        ["0000:04:00.0", "0000:05:00.0"]


def test_nested_switches(tmp_path: Path, analyse: Analyse) -> None:
    aff = analyse(nested_switch_server(tmp_path / "sys").root)
    want = {
        # GPU 15 sits in S2 (below S1) with NIC 16; the HCA 12 is on S1
        ("0000:15:00.0", "0000:12:00.0"): PXB, ("0000:15:00.0", "0000:16:00.0"): PIX,
        ("0000:17:00.0", "0000:12:00.0"): PIX, ("0000:17:00.0", "0000:16:00.0"): PXB,
        ("0000:22:00.0", "0000:12:00.0"): PXB, ("0000:22:00.0", "0000:16:00.0"): PXB,
    }
    for gpu in ("0000:15:00.0", "0000:17:00.0", "0000:22:00.0"):
        want[(gpu, "0000:81:00.0")] = SYS  # NUMA 1
    for nic in ("0000:12:00.0", "0000:16:00.0", "0000:81:00.0"):
        want[("0000:c1:00.0", nic)] = SYS  # NUMA unknown
    assert aff.relations == want
    hca = next(n for n in aff.nics if n.address == "0000:12:00.0")
    assert hca.class_id == "020700" and hca.interfaces == ("ibp18s0",)
    pref = {g: (c.nic, c.relation, c.shared_with) for g, c in aff.preferred.items() if c}
    assert pref == {
        "0000:15:00.0": ("0000:16:00.0", PIX, ()),
        "0000:17:00.0": ("0000:12:00.0", PIX, ("0000:22:00.0",)),
        # PXB to both; 16 already serves GPU 15, 12 serves GPU 17: tie -> lower address
        "0000:22:00.0": ("0000:12:00.0", PXB, ("0000:17:00.0",)),
        "0000:c1:00.0": ("0000:81:00.0", SYS, ()),  # the NIC nobody took
    }


# ----------------------------------------------------------- synthetic trees

def fn(address: str, root: str = "pci0000:00", bridges: tuple[str, ...] = (),
       numa: int | None = 0, kind: str = "gpu") -> Function:
    return Function(address=address, kind=kind, class_id="030200" if kind == "gpu" else "020000",
                    vendor_id=None, device_id=None, numa_node=numa, pcie_root=root,
                    bridges=bridges)


RP, UP, DOWN = "0000:00:01.0", "0000:01:00.0", "0000:02:00.0"


@pytest.mark.parametrize(("a", "b", "want"), [
    # two functions of one device behind a switch's downstream port
    (fn("0000:03:00.0", bridges=(RP, UP, DOWN)), fn("0000:03:00.1", bridges=(RP, UP, DOWN)),
     PIX),
    # one side right under the shared upstream port, the other one port down
    (fn("0000:03:00.0", bridges=(RP, UP)), fn("0000:04:00.0", bridges=(RP, UP, DOWN)), PIX),
    # deep in a nested switch, both under its downstream ports
    (fn("0000:05:00.0", bridges=(RP, UP, DOWN, "0000:03:00.0", "0000:04:00.0")),
     fn("0000:05:00.1", bridges=(RP, UP, DOWN, "0000:03:00.0", "0000:04:01.0")), PIX),
    # one side two bridges below the common upstream port: two switches crossed
    (fn("0000:05:00.0", bridges=(RP, UP, DOWN, "0000:03:00.0", "0000:04:00.0")),
     fn("0000:06:00.0", bridges=(RP, UP, "0000:02:01.0")), PXB),
    # common bridge is the root port: the root complex routes it
    (fn("0000:03:00.0", bridges=(RP,)), fn("0000:03:00.1", bridges=(RP,)), PHB),
    (fn("0000:03:00.0", bridges=(RP, UP, DOWN)), fn("0000:04:00.0", bridges=(RP, "x")), PHB),
    # root-complex integrated endpoints / different root ports
    (fn("0000:00:14.0"), fn("0000:00:15.0"), PHB),
    (fn("0000:03:00.0", bridges=(RP,)), fn("0000:04:00.0", bridges=("0000:00:02.0",)), PHB),
    # different root complexes
    (fn("0000:03:00.0", numa=0), fn("0000:83:00.0", root="pci0000:80", numa=0), NODE),
    (fn("0000:03:00.0", numa=0), fn("0000:83:00.0", root="pci0000:80", numa=1), SYS),
    (fn("0000:03:00.0", numa=None), fn("0000:83:00.0", root="pci0000:80", numa=None), SYS),
    (fn("0000:03:00.0", numa=0), fn("0000:83:00.0", root="pci0000:80", numa=None), SYS),
])
def test_relation_rule(a: Function, b: Function, want: Relation) -> None:
    assert relation(a, b) is want
    assert relation(b, a) is want


def test_relations_are_ordered_best_first() -> None:
    assert [r.name for r in sorted(Relation)] == ["PIX", "PXB", "PHB", "NODE", "SYS"]


def _tree(gpus: list[Function], nics: list[Function]) -> PciTree:
    return PciTree(root="/x", gpus=tuple(gpus), nics=tuple(nics))


def test_better_relations_are_served_first() -> None:
    """GPU 04 only has PHB NICs; GPU 05 has NIC 06 at PIX. 05 must get 06 even
    though 04 has the lower address and would otherwise take 06 (lowest NIC)."""
    sw = (RP, UP)
    nic_a = fn("0000:06:00.0", bridges=(*sw, "0000:02:01.0"), kind="nic")
    nic_b = fn("0000:07:00.0", bridges=("0000:00:03.0",), kind="nic")
    gpu_phb = fn("0000:04:00.0", bridges=("0000:00:02.0",))
    gpu_pix = fn("0000:05:00.0", bridges=(*sw, "0000:02:00.0"))
    aff = compute(_tree([gpu_phb, gpu_pix], [nic_a, nic_b]))
    chosen = {g: (c.nic, c.relation) for g, c in aff.preferred.items() if c}
    assert chosen == {"0000:05:00.0": ("0000:06:00.0", PIX),
                      "0000:04:00.0": ("0000:07:00.0", PHB)}


def test_choice_does_not_depend_on_listing_order() -> None:
    sw = (RP, UP)
    gpus = [fn(f"0000:0{i}:00.0", bridges=(*sw, f"0000:02:0{i}.0")) for i in range(1, 6)]
    nics = [fn(f"0000:0{i}:00.0", bridges=(*sw, f"0000:02:0{i}.0"), kind="nic")
            for i in range(6, 9)]
    first = compute(_tree(gpus, nics)).preferred
    assert sorted(c.nic for c in first.values() if c).count("0000:06:00.0") == 2  # 5 over 3
    shuffle = random.Random(7)
    for _ in range(5):
        g, n = gpus[:], nics[:]
        shuffle.shuffle(g)
        shuffle.shuffle(n)
        assert compute(_tree(g, n)).preferred == first


def test_no_nics_means_no_preference() -> None:
    aff = compute(_tree([fn("0000:03:00.0")], []))
    assert aff.preferred == {"0000:03:00.0": None} and aff.relations == {}


def test_every_pair_is_classified() -> None:
    gpus = [fn("0000:03:00.0"), fn("0000:83:00.0", root="pci0000:80", numa=1)]
    nics = [fn("0000:04:00.0", kind="nic"), fn("0000:84:00.0", root="pci0000:80", kind="nic")]
    aff = compute(_tree(gpus, nics))
    assert set(aff.relations) == {(g.address, n.address)
                                  for g, n in itertools.product(gpus, nics)}
