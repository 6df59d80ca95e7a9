"""A copy of the parts of a node's sysfs that knd reads, as a ``.tar.gz``.

Topology questions ("why is this NIC not paired with that GPU?", "why does
the slice say no pcieRoot?") are answered by the shape of one machine's PCI
tree, which nobody else has. ``knd topology --save-sysfs FILE`` writes that
shape in the kernel's own layout, so ``knd topology --sysfs-root FILE`` (and
discovery, and a test fixture) reads it on any other machine exactly as it
reads ``/sys`` there.

What is kept: every directory on the resolved path of each entry of
``bus/pci/devices``, ``class/net``, ``class/infiniband`` and the RDMA char
device classes; in those directories the small attribute files in
:data:`ATTRIBUTES`; the links in :data:`LINKS` when they stay inside sysfs.
What is left out on purpose: MAC addresses, GUIDs and serial numbers (a
report should not identify the machine), config space, resources, and
everything that is not on one of those paths.
"""

from __future__ import annotations

import os
import re
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SEEDS = ("bus/pci/devices", "class/net", "class/infiniband", "class/infiniband_verbs",
         "class/infiniband_mad")
"""Directories of links whose targets, and their ancestors, are captured."""
FILES = ("devices/system/node/online", "devices/system/node/possible")
"""Single files captured as they are (the NUMA nodes: see ``Sysfs._sole_numa_node``)."""

ATTRIBUTES = frozenset({
    "class", "vendor", "device", "subsystem_vendor", "subsystem_device", "revision",
    "numa_node", "local_cpulist", "sriov_totalvfs", "sriov_numvfs",
    "current_link_speed", "current_link_width", "max_link_speed", "max_link_width",
    "dev_port", "dev_id", "ifindex", "iflink", "type", "mtu", "operstate", "carrier",
    "ibdev", "parent", "node_type", "dev",
})
"""Attribute files copied where they exist (none of them identifies the machine)."""

LINKS = re.compile(r"^(device|physfn|virtfn\d+|driver)$")
"""Links inside a captured directory that are kept (and whose targets are captured)."""

_READ_LIMIT = 4096
UNREADABLE = (OSError, EOFError, tarfile.TarError, zlib.error)
"""What reading a damaged or hostile capture raises."""


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class _Copier:
    def __init__(self, src: Path, dest: Path) -> None:
        self.src = os.path.realpath(src)
        self.dest = dest
        self.done: set[str] = set()
        self.skipped: list[str] = []

    def entry(self, rel_link: str) -> None:
        """Copy the link ``rel_link`` (relative to the root) and what it leads to."""
        link = os.path.join(self.src, rel_link)
        if not os.path.islink(link):
            if os.path.isfile(link):  # e.g. class/infiniband_verbs/abi_version
                self.file(rel_link)
            return
        real = os.path.realpath(link)
        if not _inside(real, self.src) or not os.path.isdir(real):
            self.skipped.append(rel_link)
            return
        self._device(os.path.relpath(real, self.src))
        self._link(rel_link, os.path.relpath(real, self.src))

    def _link(self, rel: str, rel_target: str) -> None:
        out = self.dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(out):
            out.symlink_to(os.path.relpath(self.dest / rel_target, out.parent))

    def file(self, rel: str) -> None:
        try:
            with open(os.path.join(self.src, rel), "rb") as f:
                data = f.read(_READ_LIMIT)
        except OSError:  # some attributes refuse reads (EIO, EACCES): leave them out
            return
        out = self.dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)

    def _device(self, rel: str) -> None:
        """Copy directory ``rel`` and every ancestor below the root, with their attributes."""
        parts = Path(rel).parts
        for depth in range(1, len(parts) + 1):
            self._directory(os.path.join(*parts[:depth]))

    def _directory(self, rel: str) -> None:
        if rel in self.done:
            return
        self.done.add(rel)
        (self.dest / rel).mkdir(parents=True, exist_ok=True)
        try:
            names = sorted(os.listdir(os.path.join(self.src, rel)))
        except OSError:
            return
        for name in names:
            path = os.path.join(self.src, rel, name)
            if os.path.islink(path):
                if LINKS.match(name):
                    self._kept_link(os.path.join(rel, name))
            elif name in ATTRIBUTES and os.path.isfile(path):
                self.file(os.path.join(rel, name))

    def _kept_link(self, rel: str) -> None:
        real = os.path.realpath(os.path.join(self.src, rel))
        if not _inside(real, self.src) or not os.path.exists(real):
            return
        target = os.path.relpath(real, self.src)
        if os.path.isdir(real) and not target.startswith("bus/"):
            self._device(target)
        else:  # a driver: only its name matters
            (self.dest / target).mkdir(parents=True, exist_ok=True)
        self._link(rel, target)


def capture(src: Path | str, out_file: Path | str) -> list[str]:
    """Write the capture of sysfs root ``src`` to ``out_file`` (gzip'd tar).

    Returns the entries that were skipped because their link leaves ``src``
    or leads nowhere.
    """
    with tempfile.TemporaryDirectory(prefix="knd-sysfs-") as tmp:
        copier = _Copier(Path(src), Path(tmp))
        for seed in SEEDS:
            try:
                names = sorted(os.listdir(os.path.join(copier.src, seed)))
            except OSError:
                continue
            for name in names:
                copier.entry(os.path.join(seed, name))
        for rel in FILES:
            copier.file(rel)
        with tarfile.open(out_file, "w:gz") as tar:
            for name in sorted(os.listdir(tmp)):
                tar.add(os.path.join(tmp, name), arcname=name)
    return copier.skipped


def is_capture(path: Path | str) -> bool:
    return os.path.isfile(path) and tarfile.is_tarfile(path)


@contextmanager
def unpacked(path: Path | str) -> Iterator[Path]:
    """A capture unpacked into a temporary directory, removed afterwards.

    The ``data`` extraction filter refuses absolute names, links that leave
    the directory and device files, so a capture from elsewhere is safe to read.
    """
    with tempfile.TemporaryDirectory(prefix="knd-sysfs-") as tmp:
        with tarfile.open(path, "r:*") as tar:
            _extract(tar, tmp)
        yield Path(tmp)


def _extract(tar: tarfile.TarFile, dest: str) -> None:
    """``tar.extractall(dest, filter="data")``; on a Python without extraction filters
    (before 3.11.4: Debian bookworm's 3.11.2) the same refusals, by hand."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    root = os.path.realpath(dest)

    def inside(path: str) -> bool:
        return os.path.commonpath([root, os.path.realpath(path)]) == root

    links: set[str] = set()
    for m in tar.getmembers():
        name = os.path.normpath(m.name)
        parents = {os.path.join(*name.split(os.sep)[:i]) for i in range(1, name.count(os.sep) + 1)}
        if os.path.isabs(m.name) or not inside(os.path.join(root, name)) or parents & links:
            raise tarfile.TarError(f"{m.name}: outside the capture")  # or through a link
        if m.issym():
            links.add(name)
        if m.issym() or m.islnk():
            base = root if m.islnk() else os.path.join(root, os.path.dirname(m.name))
            if os.path.isabs(m.linkname) or not inside(os.path.join(base, m.linkname)):
                raise tarfile.TarError(f"{m.name}: a link out of the capture")
        elif not (m.isfile() or m.isdir()):
            raise tarfile.TarError(f"{m.name}: not a file, folder or link")
    tar.extractall(dest)
