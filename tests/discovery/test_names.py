"""Device names: DNS labels, stable across runs, distinct for distinct hardware."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.limits import is_dns_label
from services.discovery.names import (
    assign_pci_port_names,
    netdev_device_name,
    pci_device_name,
    pci_port_name,
    rdma_device_name,
)
from services.kernel.sysfs import PciHw, RdmaHw


def test_pci_names() -> None:
    assert pci_device_name("0000:3b:00.0") == "pci-0000-3b-00-0"
    assert pci_device_name("0000:3B:00.7") == "pci-0000-3b-00-7"
    assert pci_device_name("10000:e1:00.1") == "pci-10000-e1-00-1"
    assert pci_port_name("0000:3b:00.0", 1) == "pci-0000-3b-00-0-p1"
    garbage = pci_device_name("???")
    assert is_dns_label(garbage) and garbage.startswith("pci-")


@pytest.mark.parametrize("ifname", ["eth0", "ens1f0np0", "veth-a1", "if-x", "a", "cni0"])
def test_valid_labels_pass_through(ifname: str) -> None:
    assert netdev_device_name(ifname) == ifname


@pytest.mark.parametrize("ifname", ["eth0.100", "Eth0", "br_int", "", "....", "-x-",
                                    "pci-foo", "rdma-x", "eth-deadbeef", "a" * 100, "é"])
def test_invalid_or_reserved_names_are_encoded(ifname: str) -> None:
    name = netdev_device_name(ifname)
    assert is_dns_label(name)
    assert name != ifname
    assert not name.startswith(("pci-", "rdma-"))


def test_encoded_form_is_stable_across_processes() -> None:
    # a fixed value: the same interface must get the same device name after a restart
    assert netdev_device_name("eth0.100") == "eth0-100-959ba6d7"
    out = subprocess.run(
        [sys.executable, "-c",
         "from services.discovery.names import netdev_device_name as n; print(n('eth0.100'))"],
        capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == "eth0-100-959ba6d7"


def _random_names(rng: random.Random, count: int) -> list[str]:
    alphabets = [
        "abcdefghijklmnopqrstuvwxyz0123456789",
        "abcXYZ0123-_.:@+",
        "-.",
        "aé☃\u200b\x00 \t",
    ]
    names = set()
    while len(names) < count:
        alphabet = rng.choice(alphabets)
        length = rng.choice([0, 1, 2, 3, 8, 15, 15, 40, 70])
        names.add("".join(rng.choice(alphabet) for _ in range(length)))
    # near-collisions that a careless encoding would merge
    names |= {"a.b", "a-b", "a_b", "A.b", "a..b", "a.b.", ".a.b", "pci-0000-3b-00-0",
              "rdma-mlx5-0", "if-a-b", "eth0", "ETH0", "eth0-100-959ba6d7", "eth0.100",
              "x" * 63, "x" * 64, "x" * 65, "y" * 54 + ".", "y" * 54 + ","}
    return sorted(names)


def test_names_are_labels_and_injective_over_many_odd_names() -> None:
    rng = random.Random(20240611)
    inputs = _random_names(rng, 6000)
    outputs = {}
    for ifname in inputs:
        name = netdev_device_name(ifname)
        assert is_dns_label(name), (ifname, name)
        assert not name.startswith(("pci-", "rdma-")), (ifname, name)
        assert netdev_device_name(ifname) == name  # pure
        assert name not in outputs, (ifname, outputs.get(name), name)
        outputs[name] = ifname
    # and the families never meet: no PCI or RDMA name equals an interface's name
    pci = {pci_device_name(f"0000:{b:02x}:00.{f}") for b in range(256) for f in range(8)}
    assert not pci & set(outputs)


def test_rdma_names() -> None:
    pci = PciHw(address="0000:86:00.0", vendor_id="15b3", device_id="101b")
    assert rdma_device_name(RdmaHw(name="mlx5_0", pci=pci)) == "pci-0000-86-00-0"
    assert rdma_device_name(RdmaHw(name="rxe0", pci=None)) == "rdma-rxe0"
    odd = rdma_device_name(RdmaHw(name="mlx5_0", pci=None))
    assert odd.startswith("rdma-mlx5-0-") and is_dns_label(odd)
    assert odd != rdma_device_name(RdmaHw(name="mlx5-0", pci=None))
    assert is_dns_label(rdma_device_name(RdmaHw(name="Z" * 80, pci=None)))


def test_multi_port_function_names_do_not_depend_on_order() -> None:
    ports = [("enp1s0f0", 0), ("enp1s0f1", 1)]
    expected = {"enp1s0f0": "pci-0000-01-00-0", "enp1s0f1": "pci-0000-01-00-0-p1"}
    assert assign_pci_port_names("0000:01:00.0", ports) == expected
    assert assign_pci_port_names("0000:01:00.0", ports[::-1]) == expected
    assert assign_pci_port_names("0000:01:00.0", [("eth0", None)]) == {"eth0": "pci-0000-01-00-0"}


def test_same_dev_port_twice_still_distinct() -> None:
    ports = [("pf0", 0), ("pf0vf0", 0), ("pf0vf1", 0)]
    names = assign_pci_port_names("0000:01:00.0", ports)
    assert names["pf0"] == "pci-0000-01-00-0"
    assert len(set(names.values())) == 3
    assert all(is_dns_label(n) for n in names.values())
    assert assign_pci_port_names("0000:01:00.0", ports[::-1]) == names
