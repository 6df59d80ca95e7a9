"""The GPUs and NICs of a node and where each sits in the PCI tree, read from sysfs.

Affinity between a GPU and a NIC is a question about the *shape* of the PCI
tree: which bridges a transfer between them has to cross. The kernel exposes
that shape in the directory layout itself: every entry of
``/sys/bus/pci/devices`` is a link into ``devices/pciDDDD:BB/<root port>/
<switch upstream port>/<switch downstream port>/.../<function>``, so the
components between the root complex (``pciDDDD:BB``) and the function are
exactly its bridge path, root port first. Nothing else (no config-space
parsing, no lspci) is needed, which is what lets a fixture tree stand in for a
real machine.

The facts about each function (class, vendor, NUMA node) come from
:class:`~services.kernel.sysfs.Sysfs`, which already contains sysfs'
failure modes (missing, malformed, looping or escaping entries); interface
and RDMA names come from the same reader, so this view and the published
ResourceSlices agree. The bridge path is taken from the fully resolved link
target and accepted only when it has the kernel's shape and stays inside the
sysfs root; anything else is skipped and named, never guessed at.

Which functions count:

- GPU (accelerator): PCI class ``0302xx`` (3D controller) or ``1200xx`` (processing
  accelerator) of any vendor; a display controller (``0300xx`` VGA, ``0380xx``
  other) only from NVIDIA ``10de``, AMD ``1002`` or Intel ``8086``: a server's BMC
  shows a VGA too (ASPEED ``1a03:2000``), and it is not a GPU. A vendor filter
  (``--gpu-vendor``) replaces that rule: any of these classes from those vendors.
- NIC: PCI class ``02xxxx`` (network; ``0207xx`` is InfiniBand). SR-IOV virtual
  functions sit exactly where their PF sits, so they are left out unless asked
  for: they would only repeat the PF's column.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from services.kernel.sysfs import PciHw, Sysfs

_PCI_ADDR = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_PCI_ROOT = re.compile(r"^pci[0-9a-f]{4,8}:[0-9a-f]{2}$")
ACCELERATOR_CLASSES = ("0302", "1200")
"""Class/subclass prefixes that are accelerators whoever makes them: 3D controller,
processing accelerator."""
DISPLAY_CLASSES = ("0300", "0380")
"""VGA and other display controllers: accelerators only from a GPU maker."""
GPU_VENDORS = frozenset({"10de", "1002", "8086"})
"""NVIDIA, AMD, Intel: the makers whose display controllers are GPUs."""
NIC_CLASS = "02"
"""Class prefix of network controllers (Ethernet ``0200``, InfiniBand ``0207``, ...)."""


def is_gpu(class_id: str | None, vendor_id: str | None,
           vendors: Collection[str] | None = None) -> bool:
    """Whether a function counts as a GPU; ``vendors`` (lower-case hex) overrides
    which makers count, display controllers included."""
    if class_id is None:
        return False
    cls = class_id[:4]
    if vendors is not None:
        return cls in (*ACCELERATOR_CLASSES, *DISPLAY_CLASSES) and vendor_id in vendors
    return cls in ACCELERATOR_CLASSES or (cls in DISPLAY_CLASSES and vendor_id in GPU_VENDORS)


def is_nic_class(class_id: str | None) -> bool:
    return class_id is not None and class_id.startswith(NIC_CLASS)


@dataclass(frozen=True)
class Function:
    """A GPU or NIC PCI function and its place in the tree."""

    address: str
    kind: str
    """``gpu`` or ``nic``."""
    class_id: str
    vendor_id: str | None
    device_id: str | None
    numa_node: int | None
    pcie_root: str
    """The root complex (``pci0000:15``): the first component below ``devices``."""
    bridges: tuple[str, ...]
    """Bridges from the root port down to the function's parent, in order."""
    vendor_name: str | None = None
    device_name: str | None = None
    interfaces: tuple[str, ...] = ()
    """Netdev names, by ``dev_port`` then name (NICs only)."""
    rdma: tuple[str, ...] = ()
    """RDMA device names (NICs only)."""
    is_vf: bool = False


@dataclass(frozen=True)
class PciTree:
    """Everything the affinity computation needs, sorted by PCI address."""

    root: str
    gpus: tuple[Function, ...]
    nics: tuple[Function, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    """(bus entry, why) for GPU/NIC candidates that could not be placed."""
    problems: dict[str, int] = field(default_factory=dict)
    """sysfs problems met by the reader, by kind (see ``Sysfs.problems``)."""


def placement(root: Path, entry: str) -> tuple[str, tuple[str, ...]] | str:
    """``(pcie_root, bridges)`` of ``bus/pci/devices/<entry>``, or why it cannot be placed.

    The link is resolved completely (``realpath``); the result must stay under
    ``root`` and read ``devices/<pci root>/<bridge>.../<entry>``. Components
    below the root complex may be PCI addresses or a nested ``pciDDDD:BB``
    domain (Intel VMD puts a second domain below one of its functions).
    """
    try:
        real = Path(os.path.realpath(root / "bus" / "pci" / "devices" / entry))
        rel = real.relative_to(root)
    except (OSError, ValueError):
        return "link leaves the sysfs root"
    parts = rel.parts
    if len(parts) < 3 or parts[0] != "devices" or not _PCI_ROOT.match(parts[1]):
        return "link does not lead into devices/pciDDDD:BB/"
    if parts[-1] != entry:
        return "link does not lead to a function of that name"
    middle = parts[2:-1]
    if not all(_PCI_ADDR.match(p) or _PCI_ROOT.match(p) for p in middle):
        return "bridge path holds a component that is not a PCI address"
    if not real.is_dir():
        return "function directory is missing"
    return parts[1], middle


def _list(path: Path) -> list[str]:
    """Sorted directory entries; [] when absent or unreadable (Sysfs notes real problems)."""
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _netdevs_by_function(sysfs: Sysfs) -> dict[str, list[tuple[int, str]]]:
    """PCI address -> [(dev_port, ifname)] from ``class/net``."""
    out: dict[str, list[tuple[int, str]]] = {}
    for ifname in _list(sysfs.root / "class" / "net"):
        hw = sysfs.netdev(ifname)
        if hw is not None and hw.pci is not None:
            out.setdefault(hw.pci.address, []).append((hw.dev_port or 0, ifname))
    return out


def _rdma_by_function(sysfs: Sysfs) -> dict[str, list[str]]:
    """PCI address -> RDMA device names (software RDMA has no function and is left out)."""
    out: dict[str, list[str]] = {}
    for dev in sysfs.rdma_devices():
        if dev.pci is not None:
            out.setdefault(dev.pci.address, []).append(dev.name)
    return out


def _function(hw: PciHw, kind: str, root: str, bridges: tuple[str, ...],
              netdevs: list[tuple[int, str]], rdma: list[str]) -> Function:
    return Function(
        address=hw.address, kind=kind, class_id=hw.class_id or "",
        vendor_id=hw.vendor_id, device_id=hw.device_id, numa_node=hw.numa_node,
        pcie_root=root, bridges=bridges, vendor_name=hw.vendor_name,
        device_name=hw.device_name,
        interfaces=tuple(name for _, name in sorted(set(netdevs))),
        rdma=tuple(sorted(set(rdma))), is_vf=hw.is_vf,
    )


def read_tree(sysfs: Sysfs, *, include_vfs: bool = False,
              gpu_vendors: Collection[str] | None = None) -> PciTree:
    """Walk ``bus/pci/devices`` and return its GPUs and NICs with their bridge paths.

    ``gpu_vendors`` (hex vendor ids) says whose GPUs count (see :func:`is_gpu`);
    None: the default rule. Never raises on a broken tree: what cannot be
    read is skipped and listed in ``skipped``/``problems``.
    """
    vendors = {v.lower().removeprefix("0x") for v in gpu_vendors} if gpu_vendors else None
    gpus: list[Function] = []
    nics: list[Function] = []
    skipped: list[tuple[str, str]] = []
    netdevs: dict[str, list[tuple[int, str]]] | None = None
    rdma: dict[str, list[str]] | None = None
    for entry in _list(sysfs.root / "bus" / "pci" / "devices"):
        hw = sysfs.pci(entry)
        if hw is None:
            if _PCI_ADDR.match(entry):
                skipped.append((entry, "unreadable PCI function"))
            continue
        if hw.class_id is None:
            skipped.append((entry, "PCI class unreadable"))
            continue
        gpu = is_gpu(hw.class_id, hw.vendor_id, vendors)
        nic = not gpu and is_nic_class(hw.class_id)
        if not (gpu or nic):
            continue
        if nic and hw.is_vf and not include_vfs:
            continue
        where = placement(sysfs.root, entry)
        if isinstance(where, str):
            skipped.append((entry, where))
            continue
        pcie_root, bridges = where
        if gpu:
            gpus.append(_function(hw, "gpu", pcie_root, bridges, [], []))
            continue
        if netdevs is None or rdma is None:  # only read when there is a NIC
            netdevs, rdma = _netdevs_by_function(sysfs), _rdma_by_function(sysfs)
        nics.append(_function(hw, "nic", pcie_root, bridges,
                              netdevs.get(entry, []), rdma.get(entry, [])))
    return PciTree(root=str(sysfs.root), gpus=tuple(gpus), nics=tuple(nics),
                   skipped=tuple(skipped), problems=dict(sysfs.problems))
