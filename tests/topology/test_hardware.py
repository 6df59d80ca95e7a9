"""knd's topology of real machines (captured sysfs) against nvidia-smi's on the same machine.

See ``tests/topology/hardware/README.md`` for where the captures come from.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.cli import main as cli_main
from services.kernel.sysfs import Sysfs
from services.topology import capture

HERE = Path(__file__).parent / "hardware"
MACHINES = sorted(p.name for p in HERE.iterdir() if (p / "sysfs.tar.gz").is_file())
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class SmiTopo:
    """What ``nvidia-smi topo -m`` says: GPU -> column -> relation, NUMA, NIC names."""

    relations: dict[str, dict[str, str]] = field(default_factory=dict)
    numa: dict[str, int | None] = field(default_factory=dict)
    nic_names: dict[str, str] = field(default_factory=dict)
    """``NIC0`` -> RDMA device name (``mlx5_0``), from the NIC legend."""


def parse_smi_topo(text: str) -> SmiTopo:
    lines = [_ANSI.sub("", line) for line in text.splitlines()]
    header = [c.strip() for c in lines[0].split("\t")][1:]
    out = SmiTopo()
    for line in lines[1:]:
        cells = [c.strip() for c in line.split("\t")]
        if re.fullmatch(r"GPU\d+", cells[0]):
            row = dict(zip(header, cells[1:], strict=False))
            out.relations[cells[0]] = {col: rel for col, rel in row.items()
                                       if re.fullmatch(r"(GPU|NIC)\d+", col)}
            numa = row.get("NUMA Affinity", "")
            out.numa[cells[0]] = int(numa) if numa.isdigit() else None
        m = re.fullmatch(r"\s*(NIC\d+):\s*(\S+)\s*", line)
        if m:
            out.nic_names[m.group(1)] = m.group(2)
    return out


def _smi_gpus(folder: Path) -> list[str]:
    """PCI addresses nvidia-smi reports, in its GPU order, as sysfs spells them."""
    with open(folder / "nvidia-smi-gpus.csv") as f:
        rows = list(csv.DictReader(f, skipinitialspace=True))
    return [row["pci.bus_id"].lower()[-12:] for row in rows]


def _knd(folder: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    with pytest.raises(SystemExit) as done:
        cli_main(["topology", "--sysfs-root", str(folder / "sysfs.tar.gz"), "--json",
                  "--gpu-vendor", "10de", "--pci-ids", "/nonexistent"])
    assert done.value.code == 0
    return json.loads(capsys.readouterr().out)


def test_parser_reads_a_matrix_with_nics() -> None:
    """The parser itself, on nvidia-smi's layout with NIC columns and a NIC legend."""
    text = ("\t\x1b[4mGPU0\tGPU1\tNIC0\tNIC1\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m\n"
            "GPU0\t X \tNV18\tPIX\tSYS\t0-55\t0\t\tN/A\n"
            "GPU1\tNV18\t X \tSYS\tPIX\t56-111\t1\t\tN/A\n"
            "NIC0\tPIX\tSYS\t X \tSYS\t\t\t\t\n\nNIC Legend:\n\n  NIC0: mlx5_0\n  NIC1: mlx5_1\n")
    smi = parse_smi_topo(text)
    assert smi.relations == {"GPU0": {"GPU0": "X", "GPU1": "NV18", "NIC0": "PIX", "NIC1": "SYS"},
                             "GPU1": {"GPU0": "NV18", "GPU1": "X", "NIC0": "SYS", "NIC1": "PIX"}}
    assert smi.numa == {"GPU0": 0, "GPU1": 1}
    assert smi.nic_names == {"NIC0": "mlx5_0", "NIC1": "mlx5_1"}


@pytest.mark.parametrize("machine", MACHINES)
def test_knd_agrees_with_nvidia_smi(machine: str, capsys: pytest.CaptureFixture[str]) -> None:
    folder = HERE / machine
    smi = parse_smi_topo((folder / "nvidia-smi-topo.txt").read_text())
    knd = _knd(folder, capsys)
    gpus = knd["gpus"]
    assert [g["pciAddress"] for g in gpus] == _smi_gpus(folder)
    assert len(gpus) == len(smi.relations)
    for i, gpu in enumerate(gpus):
        name = f"GPU{i}"
        assert gpu["numaNode"] == smi.numa[name], name
        by_rdma = {r: nic["relation"] for nic in gpu["nics"] for r in nic["rdmaDevices"]}
        for col, rel in smi.relations[name].items():
            if col.startswith("NIC"):
                assert by_rdma[smi.nic_names[col]] == rel, (name, col)


def test_h100_vm_discovery_view() -> None:
    """What discovery publishes for the VM's virtio NIC: its function, root and node."""
    with capture.unpacked(HERE / "h100-vm" / "sysfs.tar.gz") as root:
        s = Sysfs(root, pci_ids=Path("/nonexistent"))
        eth0 = s.netdev("eth0")
        gpu = s.pci("0000:00:06.0")
        assert not s.problems
    assert eth0 is not None and eth0.pci is not None and not eth0.virtual
    assert (eth0.pci.address, eth0.pci.vendor_id, eth0.pci.device_id) == (
        "0000:00:03.0", "1af4", "1041")
    assert (eth0.pci.pcie_root, eth0.pci.numa_node) == ("pci0000:00", 0)
    assert gpu is not None and (gpu.vendor_id, gpu.device_id, gpu.class_id) == (
        "10de", "2330", "030200")
    assert (gpu.pcie_root, gpu.numa_node) == (eth0.pci.pcie_root, 0)
