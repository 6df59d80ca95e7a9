"""Vendor and device names from a pci.ids file, for the ``pciVendor``/``pciDevice``
attributes (``15b3`` -> ``Mellanox Technologies``).

Names are looked up in the file when first asked for and only those are kept: parsed
whole, pci.ids is some 25,000 names, megabytes of dicts in every discovery process for
the handful of devices a node has. A lookup maps the file (1.5 MB, page cache) and
finds the vendor's section with a byte search: about a millisecond, once per id.
"""

from __future__ import annotations

import logging
import mmap
from pathlib import Path

# the logger sysfs.py uses, under the name it had in discovery (sysfs.py says why)
log = logging.getLogger("knd.discovery.sysfs")


def _find(data: bytes | mmap.mmap, vendor: str,
          device: str | None) -> tuple[str | None, str | None]:
    """(vendor name, device name) from the text of a pci.ids file. Only the vendor
    section counts: subsystem lines (two tabs) and the class section (``C xx``) are
    never names."""
    classes = data.find(b"\nC ")
    limit = len(data) if classes < 0 else classes
    head = vendor.encode() + b"  "
    at = 0 if data[:len(head)] == head else data.find(b"\n" + head, 0, limit) + 1
    if at <= 0 and data[:len(head)] != head:
        return None, None
    eol = data.find(b"\n", at)
    eol = limit if eol < 0 else eol
    vendor_name = bytes(data[at + len(head):eol]).decode(errors="replace").strip() or None
    if device is None:
        return vendor_name, None
    want = b"\t" + device.encode() + b"  "
    while eol < limit:
        start = eol + 1
        eol = data.find(b"\n", start)
        eol = limit if eol < 0 or eol > limit else eol
        line = bytes(data[start:eol])
        if line.startswith(b"\t\t") or line.startswith(b"#") or not line.strip():
            continue
        if not line.startswith(b"\t"):
            break  # the next vendor
        if line.lower().startswith(want):
            return vendor_name, line[len(want):].decode(errors="replace").strip() or None
    return vendor_name, None


class PciNames:
    """Names from the pci.ids file at ``path`` (None: there is none)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._known: dict[tuple[str, str | None], tuple[str | None, str | None]] = {}
        self._warned = False

    def names(self, vendor: str, device: str | None) -> tuple[str | None, str | None]:
        """(vendor name, device name) of lower-case hex ids; None for what is not there."""
        key = (vendor, device)
        if key not in self._known:
            self._known[key] = self._lookup(vendor, device)
        return self._known[key]

    def _lookup(self, vendor: str, device: str | None) -> tuple[str | None, str | None]:
        if self.path is None:
            return None, None
        try:  # mapped, not read: the file's pages stay the page cache's, not our heap
            with self.path.open("rb") as f, mmap.mmap(f.fileno(), 0,
                                                      access=mmap.ACCESS_READ) as data:
                return _find(data, vendor, device)
        except (OSError, ValueError) as e:  # ValueError: an empty file cannot be mapped
            if not self._warned:
                self._warned = True
                log.warning("cannot read %s: %s", self.path, e)
            return None, None
