"""Hardware facts from sysfs: PCI function, NUMA node, PCIe root, SR-IOV and RDMA.

Netlink tells discovery what an interface *is*; sysfs tells where it sits in the
machine, which is what lets the scheduler put a NIC next to a GPU. sysfs is read
from a configurable root so that tests (and a container that bind-mounts the
host's /sys elsewhere) can point it at any tree.

sysfs is not a trustworthy filesystem: attributes can be missing on some
kernels, return EIO, or be replaced by odd links in a container. Every problem
is therefore contained here: it is logged once per entry, counted in
``knd_discovery_sysfs_errors{problem=...}``, and the device is still reported
with whatever could be read. No public method raises.

Symlinks are followed by hand, one component at a time, so that a link that
leaves the root (e.g. an absolute link into the host's own /sys in a test tree),
a loop, or a dangling target is recognised and named instead of silently
producing a wrong answer.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

from prometheus_client.metrics import Counter

from services.kernel.pciids import PciNames

# The logger and the metric keep the names they had when this module was discovery's:
# log filters and dashboards already select them by those names.
log = logging.getLogger("knd.discovery.sysfs")

SYSFS_ERRORS = Counter(
    "knd_discovery_sysfs_errors",
    "sysfs entries that could not be read (each distinct entry counted once per reader)",
    ["problem"],
)

PROBLEMS = ("missing", "unreadable", "malformed", "dangling", "loop", "escape", "internal")
"""Values of the ``problem`` label."""

SYSTEM_PCI_IDS = (Path("/usr/share/misc/pci.ids"), Path("/usr/share/hwdata/pci.ids"))

_MAX_HOPS = 40  # the kernel's own limit on symlinks followed in one lookup
_READ_LIMIT = 4096  # a sysfs attribute is at most one page
_VIRTIO = re.compile(r"^virtio\d+$")
_PCI_ADDR = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_PCI_ROOT = re.compile(r"^pci[0-9a-f]{4,8}:[0-9a-f]{2}$")
_HEX_ID = re.compile(r"^0x([0-9a-f]{4})$")
_HEX_CLASS = re.compile(r"^0x([0-9a-f]{6})$")
_CHAR_DEV = re.compile(r"^(uverbs|umad|issm)(\d+)$")
_CHAR_ORDER = {"uverbs": 0, "umad": 1, "issm": 2}

T = TypeVar("T")


@dataclass(frozen=True)
class PciHw:
    """One PCI function as sysfs describes it."""

    address: str
    vendor_id: str | None
    device_id: str | None
    subsystem: str | None = None
    """``vendor:device`` of the board (``15b3:0007``), when sysfs has both halves."""
    vendor_name: str | None = None
    device_name: str | None = None
    numa_node: int | None = None
    pcie_root: str | None = None
    """The root complex the function hangs under (``pci0000:3a``): the outermost one."""
    sriov_totalvfs: int | None = None
    sriov_numvfs: int | None = None
    is_vf: bool = False
    physfn: str | None = None
    class_id: str | None = None
    """PCI class code without ``0x`` (``020000`` Ethernet, ``030200`` 3D controller/GPU)."""


@dataclass(frozen=True)
class NetdevHw:
    """What sysfs knows about one network interface."""

    pci: PciHw | None
    virtual: bool
    rdma: tuple[str, ...] = ()
    dev_port: int | None = None


@dataclass(frozen=True)
class RdmaHw:
    """One RDMA device (``/sys/class/infiniband/<name>``)."""

    name: str
    pci: PciHw | None
    netdevs: tuple[str, ...] = ()
    char_devices: tuple[str, ...] = ()
    """``/dev/infiniband/uverbsN``, ``umadN``, ``issmN`` belonging to this device."""


class _Problem(Exception):
    """Internal: why an entry could not be read. Never leaves this module."""

    def __init__(self, kind: str, path: Path | str) -> None:
        super().__init__(f"{kind}: {path}")
        self.kind = kind
        self.path = str(path)


class Sysfs:
    """Reads network hardware facts from a sysfs tree.

    Keep one instance for the service's life: problems are logged and counted
    once per distinct entry per instance, so a broken file does not flood the
    log on every rescan.
    """

    def __init__(self, root: Path | str = "/sys", pci_ids: Path | None = None) -> None:
        self.root = Path(os.path.realpath(root))
        self._pci_ids_arg = pci_ids
        self._ids: PciNames | None = None
        self._seen: set[tuple[str, str]] = set()
        self.problems: Tally[str] = Tally()
        """Distinct problems met by this instance, by kind (the metric is process-wide)."""
        self._sole_node: tuple[int | None] | None = None  # (the node,) once read

    # ----------------------------------------------------------------- public

    def netdev(self, ifname: str) -> NetdevHw | None:
        """Hardware of interface ``ifname``; None when sysfs has no entry for it."""
        if not ifname or "/" in ifname or ifname in (".", "..") or "\0" in ifname:
            return None
        entry = self.root / "class" / "net" / ifname
        if not os.path.lexists(entry):
            return None
        try:
            return self._netdev(entry, ifname)
        except Exception as e:  # a bug must not take discovery down: report what we have
            self._note("internal", entry, e)
            return NetdevHw(pci=None, virtual=False)

    def rdma_devices(self) -> list[RdmaHw]:
        """Every RDMA device in ``class/infiniband``, sorted by name."""
        try:
            char_devs = self._char_devices()
            out = []
            for name in self._list(self.root / "class" / "infiniband"):
                try:
                    out.append(self._rdma(name, char_devs.get(name, ())))
                except Exception as e:
                    self._note("internal", self.root / "class" / "infiniband" / name, e)
                    out.append(RdmaHw(name=name, pci=None))
            return out
        except Exception as e:
            self._note("internal", self.root / "class" / "infiniband", e)
            return []

    def pci(self, address: str) -> PciHw | None:
        """The PCI function ``address`` (via ``bus/pci/devices``), or None when absent."""
        if not _PCI_ADDR.match(address):
            return None
        entry = self.root / "bus" / "pci" / "devices" / address
        try:
            dev = self._follow(entry)
            return self._pci(dev) if dev else None
        except Exception as e:
            self._note("internal", entry, e)
            return None

    # --------------------------------------------------------------- devices

    def _follow(self, link: Path, quiet: bool = False) -> Path | None:
        """The real path behind ``link``; None when absent, or broken (noted unless quiet)."""
        if not os.path.lexists(link):
            return None
        try:
            return self._resolve(link)
        except _Problem as p:
            if not quiet:
                self._note(p.kind, p.path)
            return None

    def _netdev(self, entry: Path, ifname: str) -> NetdevHw:
        real = self._follow(entry)
        if real is None:
            return NetdevHw(pci=None, virtual=False)
        virtual = real.relative_to(self.root).parts[:2] == ("devices", "virtual")
        pci: PciHw | None = None
        rdma = self._rdma_parents().get(ifname, [])
        dev = None if virtual else self._follow(real / "device")
        if dev is not None and _VIRTIO.match(dev.name) and _PCI_ADDR.match(dev.parent.name):
            # virtio-net: the netdev's device is the virtio transport child of one
            # virtio-pci function, which is where it sits in the PCI tree
            dev = dev.parent
        if dev is not None:
            pci = self._pci(dev)
            rdma.extend(self._list(dev / "infiniband"))
        return NetdevHw(pci=pci, virtual=virtual, rdma=tuple(sorted(set(rdma))),
                        dev_port=self._int(real / "dev_port", required=False))

    def _rdma(self, name: str, char_devices: tuple[str, ...]) -> RdmaHw:
        real = self._follow(self.root / "class" / "infiniband" / name)
        if real is None:
            return RdmaHw(name=name, pci=None, char_devices=char_devices)
        pci: PciHw | None = None
        netdevs: list[str] = []
        dev = self._follow(real / "device")
        if dev is not None:
            pci = self._pci(dev)
            netdevs.extend(self._list(dev / "net"))
        # software RDMA (rxe, siw) is virtual and names its netdev in ``parent``
        parent = self._text(real / "parent", required=False)
        if parent:
            netdevs.append(parent)
        return RdmaHw(name=name, pci=pci, netdevs=tuple(sorted(set(netdevs))),
                      char_devices=char_devices)

    def _rdma_parents(self) -> dict[str, list[str]]:
        """netdev -> software RDMA devices that name it as their ``parent``."""
        out: dict[str, list[str]] = {}
        base = self.root / "class" / "infiniband"
        for name in self._list(base):
            real = self._follow(base / name, quiet=True)  # noted by rdma_devices()
            parent = self._text(real / "parent", required=False) if real else None
            if parent:
                out.setdefault(parent, []).append(name)
        return out

    def _char_devices(self) -> dict[str, tuple[str, ...]]:
        """RDMA device name -> its /dev/infiniband nodes, from the verbs and mad classes."""
        found: dict[str, list[tuple[int, int, str]]] = {}
        for cls in ("infiniband_verbs", "infiniband_mad"):
            base = self.root / "class" / cls
            for entry in self._list(base):
                m = _CHAR_DEV.match(entry)
                real = self._follow(base / entry) if m else None  # skips abi_version
                ibdev = self._text(real / "ibdev", required=True) if m and real else None
                if m and ibdev:
                    key = (_CHAR_ORDER[m.group(1)], int(m.group(2)), entry)
                    found.setdefault(ibdev, []).append(key)
        return {dev: tuple(f"/dev/infiniband/{e}" for _, _, e in sorted(keys))
                for dev, keys in found.items()}

    def _pci(self, dev: Path) -> PciHw | None:
        """The PCI function at resolved path ``dev``; None when it is not a PCI function."""
        address = dev.name
        if not _PCI_ADDR.match(address):
            return None
        vendor = self._hex(dev / "vendor", _HEX_ID)
        device = self._hex(dev / "device", _HEX_ID)
        sub_v = self._hex(dev / "subsystem_vendor", _HEX_ID, required=False)
        sub_d = self._hex(dev / "subsystem_device", _HEX_ID, required=False)
        numa = self._int(dev / "numa_node", required=True)
        is_vf = os.path.lexists(dev / "physfn")
        pf = self._follow(dev / "physfn")
        physfn = pf.name if pf is not None and _PCI_ADDR.match(pf.name) else None
        vendor_name = device_name = None
        if vendor:
            vendor_name, device_name = self._pci_ids().names(vendor, device)
        roots = [p for p in dev.relative_to(self.root).parts if _PCI_ROOT.match(p)]
        return PciHw(
            address=address,
            vendor_id=vendor,
            device_id=device,
            subsystem=f"{sub_v}:{sub_d}" if sub_v and sub_d else None,
            vendor_name=vendor_name,
            device_name=device_name,
            numa_node=numa if numa is not None and numa >= 0 else self._sole_numa_node(),
            pcie_root=roots[0] if roots else None,
            sriov_totalvfs=self._int(dev / "sriov_totalvfs", required=False),
            sriov_numvfs=self._int(dev / "sriov_numvfs", required=False),
            is_vf=is_vf,
            physfn=physfn,
            class_id=self._hex(dev / "class", _HEX_CLASS, required=False),
        )

    def _sole_numa_node(self) -> int | None:
        """The node when the machine has exactly one NUMA node online, else None.

        Firmware without NUMA tables (most VMs, some single-socket boards) leaves
        ``numa_node`` at -1; with one node online every device is on it, which is
        also what ``nvidia-smi topo -m`` reports as the GPU's NUMA affinity.
        Leaving it out would make ``matchAttribute: numaNode`` fail on such nodes.
        """
        if self._sole_node is None:
            online = self._text(self.root / "devices/system/node/online", required=False)
            self._sole_node = (int(online) if online and online.isdigit() else None,)
        return self._sole_node[0]

    def _pci_ids(self) -> PciNames:
        if self._ids is None:
            candidates = (self._pci_ids_arg,) if self._pci_ids_arg else SYSTEM_PCI_IDS
            self._ids = PciNames(next((p for p in candidates if p.is_file()), None))
        return self._ids

    # -------------------------------------------------------------- plumbing

    def _note(self, kind: str, path: Path | str, err: BaseException | None = None) -> None:
        """Log and count a problem once per (kind, entry)."""
        key = (kind, str(path))
        if key in self._seen:
            return
        self._seen.add(key)
        self.problems[kind] += 1
        SYSFS_ERRORS.labels(problem=kind).inc()
        if kind == "internal":
            log.warning("sysfs: unexpected error reading %s", path, exc_info=err)
        elif kind == "missing":
            log.debug("sysfs: %s: %s", kind, path)
        else:
            log.warning("sysfs: %s entry %s%s", kind, path, f" ({err})" if err else "")

    def _resolve(self, path: Path) -> Path:
        """The real path of ``path`` (under the root), following links by hand.

        Raises _Problem: ``escape`` when a link leads outside the root,
        ``loop`` after too many links, ``dangling`` when a link target does not
        exist, ``missing`` when a plain component does not exist.
        """
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            raise _Problem("escape", path) from None
        # (component, came from a link target)
        pending = [(part, False) for part in reversed(rel.parts)]
        cur = self.root
        hops = 0
        while pending:
            part, linked = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if cur == self.root:
                    raise _Problem("escape", path)
                cur = cur.parent
                continue
            nxt = cur / part
            try:
                st = os.lstat(nxt)
            except (FileNotFoundError, NotADirectoryError):
                raise _Problem("dangling" if linked else "missing", path) from None
            except OSError:
                raise _Problem("unreadable", path) from None
            if not stat.S_ISLNK(st.st_mode):
                cur = nxt
                continue
            hops += 1
            if hops > _MAX_HOPS:
                raise _Problem("loop", path)
            try:
                target = PurePosixPath(os.readlink(nxt))
            except OSError:
                raise _Problem("unreadable", path) from None
            if target.is_absolute():
                norm = Path(os.path.normpath(target))
                if norm != self.root and self.root not in norm.parents:
                    raise _Problem("escape", path)
                target = PurePosixPath(norm.relative_to(self.root))
                cur = self.root
            pending.extend((p, True) for p in reversed(target.parts))
        return cur

    def _guarded(self, path: Path, required: bool, read: Callable[[Path], T]) -> T | None:
        """``read(path)`` (the leaf link resolved first); None, noted, when it fails.

        An absent optional entry (``sriov_totalvfs`` on a NIC without SR-IOV)
        is normal and not a problem.
        """
        try:
            if os.path.islink(path):
                path = self._resolve(path)
            return read(path)
        except _Problem as p:
            if p.kind != "missing" or required:
                self._note(p.kind, p.path)
        except (FileNotFoundError, NotADirectoryError):
            if required:
                self._note("missing", path)
        except UnicodeDecodeError:
            self._note("malformed", path)
        except OSError as e:  # EACCES, EISDIR, EIO (some attributes refuse reads)
            self._note("unreadable", path, e)
        return None

    def _text(self, path: Path, required: bool) -> str | None:
        """Stripped content of an attribute file."""
        def read(p: Path) -> str:
            with open(p, "rb") as f:
                return f.read(_READ_LIMIT).decode("ascii").strip()
        return self._guarded(path, required, read)

    def _int(self, path: Path, required: bool) -> int | None:
        text = self._text(path, required)
        if text is None:
            return None
        try:
            return int(text)
        except ValueError:
            self._note("malformed", path)
            return None

    def _hex(self, path: Path, pattern: re.Pattern[str], required: bool = True) -> str | None:
        text = self._text(path, required)
        if text is None:
            return None
        m = pattern.match(text.lower())
        if not m:
            self._note("malformed", path)
            return None
        return m.group(1)

    def _list(self, path: Path, required: bool = False) -> list[str]:
        """Sorted names in a directory; [] when it is absent or unreadable."""
        return self._guarded(path, required, lambda p: sorted(os.listdir(p))) or []
