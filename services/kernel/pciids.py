"""Vendor and device names from a pci.ids file, for the ``pciVendor``/``pciDevice``
attributes (``15b3`` -> ``Mellanox Technologies``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

# the logger sysfs.py uses, under the name it had in discovery (sysfs.py says why)
log = logging.getLogger("knd.discovery.sysfs")


@dataclass(frozen=True)
class PciIds:
    vendors: dict[str, str]
    devices: dict[tuple[str, str], str]


@lru_cache(maxsize=4)
def load_pci_ids(path: str) -> PciIds:
    """Parse the vendor and device lines of a pci.ids file (once per file per process).

    Subsystem lines (two tabs) and the class section (``C xx``) are not needed.
    """
    vendors: dict[str, str] = {}
    devices: dict[tuple[str, str], str] = {}
    vendor: str | None = None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("C "):
                    break
                if not line.strip() or line.startswith("#") or line.startswith("\t\t"):
                    continue
                if line.startswith("\t"):
                    dev, _, name = line[1:].rstrip("\n").partition("  ")
                    if vendor and len(dev) == 4 and name:
                        devices[(vendor, dev.lower())] = name.strip()
                    continue
                ven, _, name = line.rstrip("\n").partition("  ")
                if len(ven) == 4 and name:
                    vendor = ven.lower()
                    vendors[vendor] = name.strip()
                else:
                    vendor = None
    except OSError as e:
        log.warning("cannot read %s: %s", path, e)
    return PciIds(vendors, devices)
