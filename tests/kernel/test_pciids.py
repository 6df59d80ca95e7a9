"""pci.ids names looked up on demand (services/kernel/pciids.py), not the file held."""

from __future__ import annotations

from pathlib import Path

from services.kernel.pciids import PciNames

IDS = (
    "8086  Intel Corporation\n"          # a vendor on the very first line
    "\t1572  Ethernet Controller X710 for 10GbE SFP+\n"
    "# a comment inside a section\n"
    "\t\t8086 0001  Ethernet Converged Network Adapter X710-4\n"
    "\t1021  not a Mellanox part\n"
    "10de  NVIDIA Corporation\n"
    "\t2330  GH100 [H100 SXM5 80GB]\n"
    "15b3  Mellanox Technologies\n"
    "\t1017  MT27800 Family [ConnectX-5]\n"
    "\t\t15b3 1021  a subsystem, not a device\n"
    "\t1021  MT2910 Family [ConnectX-7]\n"
    "C 02  Network controller\n"
    "\t00  Ethernet controller\n"
    "\t0300  a class line shaped like a device\n"
)


def test_names_from_the_vendors_own_section(tmp_path: Path) -> None:
    (tmp_path / "pci.ids").write_text(IDS)
    names = PciNames(tmp_path / "pci.ids")
    assert names.names("15b3", "1021") == ("Mellanox Technologies", "MT2910 Family [ConnectX-7]")
    assert names.names("8086", "1572") == ("Intel Corporation",
                                           "Ethernet Controller X710 for 10GbE SFP+")
    assert names.names("8086", "1021") == ("Intel Corporation", "not a Mellanox part")
    assert names.names("10de", None) == ("NVIDIA Corporation", None)
    assert names.names("10de", "0300") == ("NVIDIA Corporation", None)
    assert names.names("15b3", "9999") == ("Mellanox Technologies", None)
    assert names.names("1a03", "2000") == (None, None)


def test_each_id_is_read_once_and_a_missing_file_names_nothing(tmp_path: Path) -> None:
    path = tmp_path / "pci.ids"
    path.write_text(IDS)
    names = PciNames(path)
    assert names.names("10de", "2330")[1] == "GH100 [H100 SXM5 80GB]"
    path.unlink()  # known ids are answered from memory; new ones find no file
    assert names.names("10de", "2330")[1] == "GH100 [H100 SXM5 80GB]"
    assert names.names("15b3", "1017") == (None, None)
    assert PciNames(None).names("15b3", "1017") == (None, None)
