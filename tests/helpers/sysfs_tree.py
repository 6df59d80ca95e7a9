"""Fake sysfs trees with the kernel's real layout, for discovery tests.

Devices live under ``devices/pciDDDD:BB/<root port>/<bridges...>/<function>``;
``class/net``, ``class/infiniband``, ``class/infiniband_verbs|mad`` and
``bus/pci/devices`` hold relative symlinks into that tree, exactly as the kernel
lays them out, so the code under test follows the same links it follows on a
real node. Prebuilt layouts at the bottom: ``gpu_server``, ``sriov_nic``,
``rdma_without_netdev``, ``odd_entries``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

CLASS_ETHERNET = "0x020000"
CLASS_INFINIBAND = "0x020700"
CLASS_3D = "0x030200"
CLASS_BRIDGE = "0x060400"


class SysfsTree:
    """Builds a sysfs tree under ``root`` (pass it to ``Sysfs(tree.root)``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._uverbs = 0
        self._umad = 0
        self._ifindex = 1

    # ---------------------------------------------------------- primitives

    def write(self, rel: str | Path, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        return path

    def link(self, rel: str | Path, target: str | Path) -> Path:
        """Symlink ``rel`` -> ``target`` (``target`` relative to ``rel``'s folder, or absolute)."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
        return path

    def link_to(self, rel: str | Path, dest: str | Path) -> Path:
        """Relative symlink ``rel`` -> ``dest`` (both relative to the root), like the kernel's."""
        src = self.root / rel
        target = os.path.relpath(self.root / dest, src.parent)
        return self.link(rel, target)

    # ---------------------------------------------------------- PCI

    def pci_function(self, address: str, root: str, bridges: Sequence[str] = (), *,
                     vendor: str = "15b3", device: str = "1017", cls: str = CLASS_ETHERNET,
                     numa: int | None = 0, subsystem: tuple[str, str] | None = ("15b3", "0007"),
                     sriov_total: int | None = None, sriov_num: int | None = None,
                     parent: str | None = None) -> str:
        """A PCI function dir; returns its path relative to the root.

        ``bridges`` are the bridge functions between the root complex and the
        device (root port, switch upstream and downstream ports); they get dirs
        of their own. ``parent`` (a relative dir) puts the function beside
        another one instead (SR-IOV VFs are siblings of their PF).
        """
        if parent is None:
            parent = f"devices/{root}"
            for bridge in bridges:
                parent = f"{parent}/{bridge}"
                if not (self.root / parent / "class").exists():
                    self._pci_files(parent, "8086", "2030", CLASS_BRIDGE, numa, None)
                    self.link_to(f"bus/pci/devices/{bridge}", parent)
        rel = f"{parent}/{address}"
        self._pci_files(rel, vendor, device, cls, numa, subsystem)
        if sriov_total is not None:
            self.write(f"{rel}/sriov_totalvfs", str(sriov_total))
            self.write(f"{rel}/sriov_numvfs", str(sriov_num or 0))
        self.link_to(f"bus/pci/devices/{address}", rel)
        return rel

    def _pci_files(self, rel: str, vendor: str, device: str, cls: str, numa: int | None,
                   subsystem: tuple[str, str] | None) -> None:
        self.write(f"{rel}/vendor", f"0x{vendor}")
        self.write(f"{rel}/device", f"0x{device}")
        self.write(f"{rel}/class", cls)
        if numa is not None:
            self.write(f"{rel}/numa_node", str(numa))
        if subsystem is not None:
            self.write(f"{rel}/subsystem_vendor", f"0x{subsystem[0]}")
            self.write(f"{rel}/subsystem_device", f"0x{subsystem[1]}")

    def netdev(self, function: str, ifname: str, dev_port: int = 0) -> str:
        """A netdev of PCI function dir ``function``, with its class/net link."""
        rel = f"{function}/net/{ifname}"
        self.write(f"{rel}/dev_port", str(dev_port))
        self.write(f"{rel}/ifindex", str(self._next_ifindex()))
        self.link_to(f"{rel}/device", function)
        self.link_to(f"class/net/{ifname}", rel)
        return rel

    def rdma(self, function: str, name: str) -> str:
        """RDMA device ``name`` on PCI function dir ``function``, with its char devices."""
        rel = f"{function}/infiniband/{name}"
        self.write(f"{rel}/node_type", "1: CA")
        self.link_to(f"{rel}/device", function)
        self.link_to(f"class/infiniband/{name}", rel)
        n = self._uverbs
        self._uverbs += 1
        self._char_dev(function, "infiniband_verbs", f"uverbs{n}", name)
        m = self._umad
        self._umad += 1
        self._char_dev(function, "infiniband_mad", f"umad{m}", name)
        self._char_dev(function, "infiniband_mad", f"issm{m}", name)
        return rel

    def _char_dev(self, function: str, cls: str, entry: str, ibdev: str) -> None:
        rel = f"{function}/{cls}/{entry}"
        self.write(f"{rel}/ibdev", ibdev)
        self.write(f"{rel}/dev", "231:0")
        self.link_to(f"class/{cls}/{entry}", rel)
        abi = self.root / "class" / cls / "abi_version"
        if not abi.exists():
            abi.write_text("6\n")

    def _next_ifindex(self) -> int:
        self._ifindex += 1
        return self._ifindex

    # ---------------------------------------------------------- devices

    def pci_nic(self, address: str, *, root: str, bridges: Sequence[str] = (),
                numa: int | None = 0, ifname: str | Sequence[str] | None = None,
                vendor: str = "15b3", device: str = "1017", rdma: str | None = None,
                sriov_total: int | None = None, sriov_num: int | None = None,
                cls: str = CLASS_ETHERNET,
                subsystem: tuple[str, str] | None = ("15b3", "0007")) -> str:
        """A NIC function with its netdev(s) (a list: dev_port 0, 1, ...) and RDMA device."""
        rel = self.pci_function(address, root, bridges, vendor=vendor, device=device, cls=cls,
                                numa=numa, subsystem=subsystem, sriov_total=sriov_total,
                                sriov_num=sriov_num)
        names = [ifname] if isinstance(ifname, str) else list(ifname or ())
        for port, name in enumerate(names):
            self.netdev(rel, name, dev_port=port)
        if rdma:
            self.rdma(rel, rdma)
        return rel

    def vf(self, pf: str, index: int, address: str, *, ifname: str | None = None,
           device: str = "101e", rdma: str | None = None, numa: int | None = 0) -> str:
        """VF ``index`` of the PF at dir ``pf``: a sibling function with physfn/virtfnN links."""
        parent = str(Path(pf).parent)
        rel = self.pci_function(address, "", parent=parent, device=device, numa=numa)
        self.link_to(f"{rel}/physfn", pf)
        self.link_to(f"{pf}/virtfn{index}", rel)
        if ifname:
            self.netdev(rel, ifname)
        if rdma:
            self.rdma(rel, rdma)
        return rel

    def rdma_only(self, address: str, *, root: str, bridges: Sequence[str] = (),
                  numa: int | None = 0, rdma: str = "mlx5_0", vendor: str = "15b3",
                  device: str = "101b") -> str:
        """An HCA whose RDMA device has no netdev (InfiniBand without IPoIB)."""
        rel = self.pci_function(address, root, bridges, vendor=vendor, device=device,
                                cls=CLASS_INFINIBAND, numa=numa)
        self.rdma(rel, rdma)
        return rel

    def gpu(self, address: str, *, root: str, bridges: Sequence[str] = (),
            numa: int | None = 0, device: str = "2330") -> str:
        """An NVIDIA GPU function: no netdev, class 3D controller."""
        return self.pci_function(address, root, bridges, vendor="10de", device=device,
                                 cls=CLASS_3D, numa=numa, subsystem=("10de", "16c1"))

    def virtio_nic(self, address: str, *, root: str, ifname: str, index: int = 0,
                   numa: int | None = -1) -> str:
        """A virtio-net function: the netdev hangs off its ``virtioN`` transport child."""
        fn = self.pci_function(address, root, vendor="1af4", device="1041", numa=numa,
                               subsystem=("1af4", "1100"))
        virtio = f"{fn}/virtio{index}"
        self.write(f"{virtio}/vendor", "0x1af4")
        self.write(f"{virtio}/device", "0x0001")
        rel = f"{virtio}/net/{ifname}"
        self.write(f"{rel}/dev_port", "0")
        self.write(f"{rel}/ifindex", str(self._next_ifindex()))
        self.link_to(f"{rel}/device", virtio)
        self.link_to(f"class/net/{ifname}", rel)
        return rel

    def virtual(self, ifname: str) -> str:
        """A software netdev (veth, bridge...): under devices/virtual, no device link."""
        rel = f"devices/virtual/net/{ifname}"
        self.write(f"{rel}/dev_port", "0")
        self.write(f"{rel}/ifindex", str(self._next_ifindex()))
        self.link_to(f"class/net/{ifname}", rel)
        return rel

    def soft_rdma(self, name: str, parent_ifname: str) -> str:
        """A software RDMA device (rxe/siw) on netdev ``parent_ifname``."""
        rel = f"devices/virtual/infiniband/{name}"
        self.write(f"{rel}/parent", parent_ifname)
        self.write(f"{rel}/node_type", "1: CA")
        self.link_to(f"class/infiniband/{name}", rel)
        n = self._uverbs
        self._uverbs += 1
        self._char_dev(rel, "infiniband_verbs", f"uverbs{n}", name)
        return rel


# -------------------------------------------------------------- layouts

GPU_SERVER_NICS = {
    # ifname: (pci address, rdma, pcie root, numa)
    "ens1f0np0": ("0000:1a:00.0", "mlx5_0", "pci0000:15", 0),
    "ens1f1np1": ("0000:1a:00.1", "mlx5_1", "pci0000:15", 0),
    "ens2f0np0": ("0000:2a:00.0", "mlx5_2", "pci0000:15", 0),
    "ens2f1np1": ("0000:2a:00.1", "mlx5_3", "pci0000:15", 0),
    "ens3f0np0": ("0000:9a:00.0", "mlx5_4", "pci0000:97", 1),
    "ens3f1np1": ("0000:9a:00.1", "mlx5_5", "pci0000:97", 1),
    "ens4f0np0": ("0000:aa:00.0", "mlx5_6", "pci0000:97", 1),
    "ens4f1np1": ("0000:aa:00.1", "mlx5_7", "pci0000:97", 1),
}
"""What a test expects of ``gpu_server``; written out rather than computed on purpose."""


def gpu_server(tmp: Path) -> SysfsTree:
    """A 2-socket GPU server: 4 PCIe switches, 2 per root complex (one per NUMA node).

    Each switch carries a dual-port ConnectX (two functions, one netdev and one
    RDMA device each) and two GPUs; plus a virtual ``cni0`` bridge.
    """
    tree = SysfsTree(tmp)
    switches = [("pci0000:15", "15", 0, 0x18), ("pci0000:15", "15", 0, 0x28),
                ("pci0000:97", "97", 1, 0x98), ("pci0000:97", "97", 1, 0xa8)]
    for k, (root, bus, numa, base) in enumerate(switches):
        root_port = f"0000:{bus}:0{k % 2 + 1}.0"
        upstream = f"0000:{base:02x}:00.0"

        def down(j: int, base: int = base) -> str:
            return f"0000:{base + 1:02x}:0{j}.0"

        for f in (0, 1):
            nic = 2 * k + f
            tree.pci_nic(f"0000:{base + 2:02x}:00.{f}", root=root,
                         bridges=[root_port, upstream, down(0)], numa=numa,
                         ifname=f"ens{k + 1}f{f}np{f}", device="1021", rdma=f"mlx5_{nic}")
        for g in (0, 1):
            tree.gpu(f"0000:{base + 3 + g:02x}:00.0", root=root,
                     bridges=[root_port, upstream, down(g + 1)], numa=numa)
    tree.virtual("cni0")
    return tree


def sriov_nic(tmp: Path) -> SysfsTree:
    """A PF ``ens2f0np0`` (8 VFs possible, 4 configured) with VF netdevs ``ens2f0v0..3``."""
    tree = SysfsTree(tmp)
    pf = tree.pci_nic("0000:3b:00.0", root="pci0000:3a", bridges=["0000:3a:00.0"], numa=0,
                      ifname="ens2f0np0", rdma="mlx5_0", sriov_total=8, sriov_num=4)
    for i in range(4):
        tree.vf(pf, i, f"0000:3b:00.{i + 2}", ifname=f"ens2f0v{i}", rdma=f"mlx5_{i + 1}")
    return tree


def rdma_without_netdev(tmp: Path) -> SysfsTree:
    """An InfiniBand HCA (``mlx5_0``, no netdev) beside an Ethernet NIC (``eth1``/``mlx5_1``)."""
    tree = SysfsTree(tmp)
    tree.rdma_only("0000:86:00.0", root="pci0000:85", bridges=["0000:85:02.0"], numa=1,
                   rdma="mlx5_0")
    tree.pci_nic("0000:05:00.0", root="pci0000:00", bridges=["0000:00:03.0"], numa=0,
                 ifname="eth1", rdma="mlx5_1")
    tree.virtual("veth1")
    tree.soft_rdma("rxe0", "veth1")
    return tree


ODD_NETDEVS = ("nonuma", "dirvendor", "badvendor", "dangling", "looping", "escaping",
               "escabs", "ghost", "selfloop")


def odd_entries(tmp: Path) -> SysfsTree:
    """Broken entries, one per netdev named in ODD_NETDEVS, plus broken RDMA entries.

    - ``nonuma``: no numa_node file; ``dirvendor``: vendor is a directory;
      ``badvendor``: vendor holds garbage and numa_node is not a number;
    - ``dangling``: device link to a function that does not exist;
      ``looping``: device link into a loop; ``escaping``: device link that
      climbs out of the root; ``escabs``: absolute device link to the host's /;
    - ``ghost``: class/net link that dangles; ``selfloop``: class/net link to itself;
    - ``class/infiniband/badib`` dangles; ``uverbs9`` has no ibdev; ``mlx5_9``
      is an RDMA device whose device link is a loop.
    """
    tree = SysfsTree(tmp)
    bridges = ["0000:00:01.0"]
    tree.pci_nic("0000:01:00.0", root="pci0000:00", bridges=bridges, numa=None,
                 ifname="nonuma")
    rel = tree.pci_nic("0000:02:00.0", root="pci0000:00", bridges=bridges, ifname="dirvendor")
    (tree.root / rel / "vendor").unlink()
    (tree.root / rel / "vendor").mkdir()
    rel = tree.pci_nic("0000:03:00.0", root="pci0000:00", bridges=bridges, ifname="badvendor")
    tree.write(f"{rel}/vendor", "\x00\xff garbage")
    tree.write(f"{rel}/numa_node", "zero")

    for name, target in (("dangling", "../../../0000:99:00.0"),
                         ("looping", "loop_a"),
                         ("escaping", "../../../../../../../../../../../.."),
                         ("escabs", "/")):
        rel = f"devices/pci0000:00/0000:00:01.0/0000:04:00.0/net/{name}"
        tree.write(f"{rel}/dev_port", "0")
        tree.link(f"{rel}/device", target)
        tree.link_to(f"class/net/{name}", rel)
    loop_dir = "devices/pci0000:00/0000:00:01.0/0000:04:00.0/net/looping"
    tree.link(f"{loop_dir}/loop_a", "loop_b")
    tree.link(f"{loop_dir}/loop_b", "loop_a")
    tree.link("class/net/ghost", "../../devices/virtual/net/ghost")
    tree.link("class/net/selfloop", "selfloop")

    tree.link("class/infiniband/badib", "../../devices/pci0000:00/0000:05:00.0/infiniband/badib")
    tree.write("devices/pci0000:00/0000:06:00.0/infiniband_verbs/uverbs9/dev", "231:9")
    tree.link_to("class/infiniband_verbs/uverbs9",
                 "devices/pci0000:00/0000:06:00.0/infiniband_verbs/uverbs9")
    rel = "devices/pci0000:00/0000:07:00.0/infiniband/mlx5_9"
    tree.write(f"{rel}/node_type", "1: CA")
    tree.link(f"{rel}/device", "device")
    tree.link_to("class/infiniband/mlx5_9", rel)
    return tree


def shared_switch_server(tmp: Path) -> SysfsTree:
    """One socket (every function on NUMA node 0) with two root complexes.

    - ``pci0000:00``, root port ``0000:00:01.0``, switch (upstream
      ``0000:01:00.0``, downstream ``0000:02:00.0``-``02.0``): NIC ``0000:03:00.0``
      (``eth0``/``mlx5_0``) and NVIDIA GPUs ``0000:04:00.0`` and ``0000:05:00.0``:
      two GPUs, one NIC on one switch;
    - ``pci0000:00``, root port ``0000:00:02.0``: an NVMe drive ``0000:06:00.0``
      (neither GPU nor NIC); root port ``0000:00:1c.0`` -> bridge ``0000:07:00.0``
      -> the BMC's VGA ``0000:08:00.0`` (ASPEED ``1a03``, class ``030000``);
    - ``pci0000:40``, root port ``0000:40:01.0``: NIC ``0000:41:00.0`` (``eth1``,
      no RDMA); root port ``0000:40:03.0``: AMD GPU ``0000:42:00.0`` (``1002``).
    """
    tree = SysfsTree(tmp)
    switch = ["0000:00:01.0", "0000:01:00.0"]
    tree.pci_nic("0000:03:00.0", root="pci0000:00", bridges=[*switch, "0000:02:00.0"],
                 numa=0, ifname="eth0", rdma="mlx5_0")
    tree.gpu("0000:04:00.0", root="pci0000:00", bridges=[*switch, "0000:02:01.0"], numa=0)
    tree.gpu("0000:05:00.0", root="pci0000:00", bridges=[*switch, "0000:02:02.0"], numa=0)
    tree.pci_function("0000:06:00.0", "pci0000:00", ["0000:00:02.0"], vendor="144d",
                      device="a80a", cls="0x010802", numa=0, subsystem=None)
    tree.pci_function("0000:08:00.0", "pci0000:00", ["0000:00:1c.0", "0000:07:00.0"],
                      vendor="1a03", device="2000", cls="0x030000", numa=0, subsystem=None)
    tree.pci_nic("0000:41:00.0", root="pci0000:40", bridges=["0000:40:01.0"], numa=0,
                 ifname="eth1", vendor="8086", device="1593", subsystem=None)
    tree.pci_function("0000:42:00.0", "pci0000:40", ["0000:40:03.0"], vendor="1002",
                      device="74a1", cls=CLASS_3D, numa=0, subsystem=None)
    return tree


def nested_switch_server(tmp: Path) -> SysfsTree:
    """Switches inside switches, a second socket and a GPU whose NUMA node is unknown.

    Root complex ``pci0000:00`` (NUMA 0), root port ``0000:00:02.0``, switch S1
    (upstream ``0000:10:00.0``, downstream ports ``0000:11:0x.0``):

    - ``11:00.0`` -> InfiniBand HCA ``0000:12:00.0`` (class ``020700``,
      ``ibp18s0``/``mlx5_0``);
    - ``11:01.0`` -> switch S2 (upstream ``0000:13:00.0``): ``14:00.0`` -> GPU
      ``0000:15:00.0``, ``14:01.0`` -> NIC ``0000:16:00.0`` (``ens16``/``mlx5_1``);
    - ``11:02.0`` -> GPU ``0000:17:00.0``;
    - ``11:03.0`` -> switch S3 (upstream ``0000:20:00.0``), ``21:00.0`` -> GPU
      ``0000:22:00.0``.

    Root complex ``pci0000:80`` (NUMA 1): root port ``0000:80:01.0`` -> NIC
    ``0000:81:00.0`` (``ens81``). Root complex ``pci0000:c0`` (no numa_node
    files): root port ``0000:c0:01.0`` -> GPU ``0000:c1:00.0``.
    """
    tree = SysfsTree(tmp)
    s1 = ["0000:00:02.0", "0000:10:00.0"]
    tree.pci_nic("0000:12:00.0", root="pci0000:00", bridges=[*s1, "0000:11:00.0"], numa=0,
                 ifname="ibp18s0", rdma="mlx5_0", cls=CLASS_INFINIBAND, device="101b")
    s2 = [*s1, "0000:11:01.0", "0000:13:00.0"]
    tree.gpu("0000:15:00.0", root="pci0000:00", bridges=[*s2, "0000:14:00.0"], numa=0)
    tree.pci_nic("0000:16:00.0", root="pci0000:00", bridges=[*s2, "0000:14:01.0"], numa=0,
                 ifname="ens16", rdma="mlx5_1")
    tree.gpu("0000:17:00.0", root="pci0000:00", bridges=[*s1, "0000:11:02.0"], numa=0)
    s3 = [*s1, "0000:11:03.0", "0000:20:00.0"]
    tree.gpu("0000:22:00.0", root="pci0000:00", bridges=[*s3, "0000:21:00.0"], numa=0)
    tree.pci_nic("0000:81:00.0", root="pci0000:80", bridges=["0000:80:01.0"], numa=1,
                 ifname="ens81")
    tree.gpu("0000:c1:00.0", root="pci0000:c0", bridges=["0000:c0:01.0"], numa=None)
    return tree
