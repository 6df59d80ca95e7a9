"""Inventory devices from links + sysfs: names, DRANET attributes, API limits."""

from __future__ import annotations

import ipaddress
import random
import re
from pathlib import Path

import msgspec
import pytest

from schemas.inventory import Device
from schemas.limits import (
    MAX_ATTRIBUTE_STRING,
    MAX_ATTRIBUTES_AND_CAPACITIES,
    is_dns_label,
    qualified_name_error,
)
from services.discovery.attributes import build_devices, cut, join_cut
from services.kernel.links import LinkInfo
from services.kernel.sysfs import Sysfs
from tests.helpers.sysfs_tree import (
    GPU_SERVER_NICS,
    ODD_NETDEVS,
    SysfsTree,
    gpu_server,
    odd_entries,
    rdma_without_netdev,
    sriov_nic,
)

D = "knd.dev"
STD = "resource.kubernetes.io"


def link(name: str, index: int = 2, *, kind: str = "", alias: str = "",
         ipv4: tuple[str, ...] = (), ipv6: tuple[str, ...] = (),
         encapsulation: str = "ether") -> LinkInfo:
    return LinkInfo(index=index, name=name, kind=kind, mac=f"02:00:00:00:00:{index % 256:02x}",
                    mtu=1500, state="up", alias=alias, encapsulation=encapsulation,
                    ipv4=ipv4, ipv6=ipv6)


def by_name(devices: list[Device]) -> dict[str, Device]:
    return {d.name: d for d in devices}


def check_limits(devices: list[Device]) -> None:
    """What the API server would check on each device."""
    names = [d.name for d in devices]
    assert len(names) == len(set(names))
    assert names == sorted(names)
    for d in devices:
        assert is_dns_label(d.name), d.name
        assert len(d.attributes) + len(d.capacity) <= MAX_ATTRIBUTES_AND_CAPACITIES
        for key, value in d.attributes.items():
            assert qualified_name_error(key) is None, key
            assert isinstance(value, bool | int | str)
            if isinstance(value, str):
                assert len(value.encode()) <= MAX_ATTRIBUTE_STRING, (key, value)


@pytest.fixture
def gpu_sysfs(tmp_path: Path) -> Sysfs:
    return Sysfs(gpu_server(tmp_path / "sys").root, pci_ids=tmp_path / "none")


def gpu_links() -> list[LinkInfo]:
    links = [link(n, i + 2) for i, n in enumerate(GPU_SERVER_NICS)]
    links.append(link("cni0", 20, kind="bridge", ipv4=("10.244.0.1/24",)))
    return links


def test_gpu_server_devices(gpu_sysfs: Sysfs) -> None:
    devices = build_devices(gpu_links(), gpu_sysfs, D)
    check_limits(devices)
    devs = by_name(devices)
    assert len(devices) == 9  # 8 NICs + cni0; GPUs and RDMA-with-netdev are not devices
    for ifname, (address, rdma, root, numa) in GPU_SERVER_NICS.items():
        name = "pci-" + address.replace(":", "-").replace(".", "-")
        a = devs[name].attributes
        assert a[f"{D}/ifName"] == ifname
        assert a[f"{STD}/pcieRoot"] == root
        assert a[f"{STD}/numaNode"] == numa and a[f"{D}/numaNode"] == numa
        assert a[f"{D}/pciAddress"] == address
        assert a[f"{D}/pciVendor"] == "15b3" and a[f"{D}/pciDevice"] == "1021"
        assert a[f"{D}/pciSubsystem"] == "15b3:0007"
        assert a[f"{D}/rdma"] is True and a[f"{D}/rdmaDevice"] == rdma
        assert a[f"{D}/virtual"] is False
        assert a[f"{D}/type"] == "device"
        assert a[f"{D}/sriov"] is False and a[f"{D}/isSriovVf"] is False
        assert f"{D}/sriovVfs" not in a
        assert f"{D}/ipv4" not in a and f"{D}/alias" not in a
    cni = devs["cni0"].attributes
    assert cni == {
        f"{D}/ifName": "cni0", f"{D}/type": "bridge", f"{D}/virtual": True,
        f"{D}/mac": "02:00:00:00:00:14", f"{D}/mtu": 1500, f"{D}/state": "up",
        f"{D}/encapsulation": "ether", f"{D}/ipv4": "10.244.0.1/24", f"{D}/rdma": False,
        f"{D}/ebpf": False,
    }


def test_deterministic_whatever_the_order(gpu_sysfs: Sysfs) -> None:
    links = gpu_links()
    first = msgspec.json.encode(build_devices(links, gpu_sysfs, D))
    rng = random.Random(7)
    for _ in range(5):
        rng.shuffle(links)
        assert msgspec.json.encode(build_devices(links, gpu_sysfs, D)) == first


def test_pci_names_from_pci_ids(tmp_path: Path) -> None:
    ids = tmp_path / "pci.ids"
    ids.write_text("15b3  Mellanox Technologies\n\t1021  MT2910 Family [ConnectX-7]\n")
    s = Sysfs(gpu_server(tmp_path / "sys").root, pci_ids=ids)
    a = build_devices([link("ens1f0np0")], s, D)[0].attributes
    assert a[f"{D}/pciVendor"] == "Mellanox Technologies"
    assert a[f"{D}/pciDevice"] == "MT2910 Family [ConnectX-7]"


def test_sriov_pf_and_vf_attributes(tmp_path: Path) -> None:
    s = Sysfs(sriov_nic(tmp_path / "sys").root, pci_ids=tmp_path / "none")
    links = [link("ens2f0np0", 2)] + [link(f"ens2f0v{i}", 3 + i) for i in range(4)]
    devices = build_devices(links, s, D)
    check_limits(devices)
    devs = by_name(devices)
    pf = devs["pci-0000-3b-00-0"].attributes
    assert pf[f"{D}/sriov"] is True and pf[f"{D}/sriovVfs"] == 4
    assert pf[f"{D}/isSriovVf"] is False
    for i in range(4):
        vf = devs[f"pci-0000-3b-00-{i + 2}"].attributes
        assert vf[f"{D}/ifName"] == f"ens2f0v{i}"
        assert vf[f"{D}/isSriovVf"] is True and vf[f"{D}/sriov"] is False
        assert f"{D}/sriovVfs" not in vf
        assert vf[f"{D}/pciDevice"] == "101e"
        assert vf[f"{STD}/pcieRoot"] == "pci0000:3a"
        assert vf[f"{D}/rdmaDevice"] == f"mlx5_{i + 1}"


def test_rdma_only_device(tmp_path: Path) -> None:
    s = Sysfs(rdma_without_netdev(tmp_path / "sys").root, pci_ids=tmp_path / "none")
    devices = build_devices([link("eth1", 2), link("veth1", 3, kind="veth")], s, D)
    check_limits(devices)
    devs = by_name(devices)
    assert set(devs) == {"pci-0000-86-00-0", "pci-0000-05-00-0", "veth1"}
    hca = devs["pci-0000-86-00-0"].attributes
    assert hca == {
        f"{D}/type": "rdma", f"{D}/virtual": False, f"{D}/rdma": True,
        f"{D}/rdmaDevice": "mlx5_0", f"{D}/pciAddress": "0000:86:00.0",
        f"{D}/pciVendor": "15b3", f"{D}/pciDevice": "101b", f"{D}/pciSubsystem": "15b3:0007",
        f"{D}/numaNode": 1, f"{STD}/pcieRoot": "pci0000:85", f"{STD}/numaNode": 1,
        f"{D}/sriov": False, f"{D}/isSriovVf": False,
    }
    veth = devs["veth1"].attributes
    assert veth[f"{D}/rdma"] is True and veth[f"{D}/rdmaDevice"] == "rxe0"
    assert veth[f"{D}/type"] == "veth" and veth[f"{D}/virtual"] is True
    assert devs["pci-0000-05-00-0"].attributes[f"{D}/rdmaDevice"] == "mlx5_1"


def test_multi_port_function(tmp_path: Path) -> None:
    tree = SysfsTree(tmp_path / "sys")
    tree.pci_nic("0000:01:00.0", root="pci0000:00", ifname=["enp1s0", "enp1s0d1"],
                 vendor="15b3", device="1007", rdma="mlx4_0")
    s = Sysfs(tree.root)
    devices = build_devices([link("enp1s0d1", 3), link("enp1s0", 2)], s, D)
    assert [(d.name, d.attributes[f"{D}/ifName"]) for d in devices] == [
        ("pci-0000-01-00-0", "enp1s0"), ("pci-0000-01-00-0-p1", "enp1s0d1")]
    assert all(d.attributes[f"{D}/rdmaDevice"] == "mlx4_0" for d in devices)


def test_long_alias_and_many_addresses_are_cut(tmp_path: Path) -> None:
    v6 = tuple(f"2001:db8:{i:x}::{i + 1:x}/64" for i in range(20))
    v4 = tuple(f"192.168.{i}.{i + 10}/24" for i in range(20))
    alias = "a very long interface alias " * 10
    s = Sysfs(tmp_path / "empty")
    d = build_devices([link("eth0", alias=alias, ipv4=v4, ipv6=v6)], s, D)[0]
    check_limits([d])
    assert d.attributes[f"{D}/alias"] == alias[:MAX_ATTRIBUTE_STRING]
    for key, full in ((f"{D}/ipv6", v6), (f"{D}/ipv4", v4)):
        value = d.attributes[key]
        assert isinstance(value, str)
        parts = value.split(",")
        assert tuple(parts) == full[:len(parts)]  # whole addresses, in order
        assert len(value) + 1 + len(full[len(parts)]) > MAX_ATTRIBUTE_STRING  # fills up
        for p in parts:
            ipaddress.ip_interface(p)


def test_cut_respects_characters() -> None:
    assert cut("é" * 40) == "é" * 32  # 64 bytes, never half a character
    assert cut("x" * 64) == "x" * 64
    assert join_cut([]) == ""
    assert join_cut(["a" * 65, "b"]) == ""  # never a partial address


def test_link_without_sysfs_entry(tmp_path: Path) -> None:
    s = Sysfs(tmp_path / "empty")
    devs = by_name(build_devices([link("vxlan.calico", 5, kind="vxlan"),
                                  link("eth0", 2)], s, D))
    assert len(devs) == 2
    vx_name = next(n for n in devs if n != "eth0")
    assert re.fullmatch(r"vxlan-calico-[0-9a-f]{8}", vx_name)
    vx = devs[vx_name]
    assert vx.attributes[f"{D}/virtual"] is True and vx.attributes[f"{D}/type"] == "vxlan"
    assert devs["eth0"].attributes[f"{D}/virtual"] is False
    assert f"{D}/pciAddress" not in devs["eth0"].attributes


def test_duplicate_links_and_reserved_names_do_not_collide(tmp_path: Path) -> None:
    tree = SysfsTree(tmp_path / "sys")
    tree.pci_nic("0000:3b:00.0", root="pci0000:3a", ifname="eth0")
    tree.virtual("pci-0000-3b-00-0")
    s = Sysfs(tree.root)
    devices = build_devices([link("eth0", 2), link("eth0", 9),
                             link("pci-0000-3b-00-0", 3, kind="dummy")], s, D)
    check_limits(devices)
    assert len(devices) == 2
    names = {d.attributes[f"{D}/ifName"]: d.name for d in devices}
    assert names["eth0"] == "pci-0000-3b-00-0"
    assert names["pci-0000-3b-00-0"].startswith("if-pci-0000-3b-00-0-")


def test_odd_entries_still_give_devices(tmp_path: Path) -> None:
    s = Sysfs(odd_entries(tmp_path / "sys").root)
    links = [link(n, i + 2) for i, n in enumerate(ODD_NETDEVS)]
    devices = build_devices(links, s, D)
    check_limits(devices)
    ifnames = {d.attributes.get(f"{D}/ifName") for d in devices}
    assert set(ODD_NETDEVS) <= ifnames
    # the two broken RDMA devices have no netdev: still listed, without PCI facts
    rdma_only = [d for d in devices if d.attributes.get(f"{D}/type") == "rdma"]
    names = sorted(d.name for d in rdma_only)
    assert names[0] == "rdma-badib"
    assert re.fullmatch(r"rdma-mlx5-9-[0-9a-f]{8}", names[1])
    assert all(d.attributes[f"{D}/rdma"] is True for d in rdma_only)
    assert all(f"{D}/pciAddress" not in d.attributes for d in rdma_only)
    nonuma = next(d for d in devices if d.attributes.get(f"{D}/ifName") == "nonuma")
    assert f"{STD}/numaNode" not in nonuma.attributes
    assert nonuma.attributes[f"{STD}/pcieRoot"] == "pci0000:00"


def test_bad_driver_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        build_devices([link("eth0")], Sysfs(tmp_path), "Not A Domain")
