"""Show which NIC sits next to which GPU (PIX/PXB/PHB/NODE/SYS), from sysfs alone.

``knd topology`` prints an ``nvidia-smi topo -m``-like matrix of every GPU
against every NIC with each GPU's preferred NIC; ``--json`` prints the
document described in :mod:`services.topology.render` instead, and
``--svg FILE`` also draws the layout. It reads only sysfs (``--sysfs-root``,
default ``/sys`` or ``KND_SYSFS_ROOT``), needs no driver, no root and no bus,
and works on a copy of another machine's sysfs: ``--save-sysfs FILE`` writes
one (:mod:`services.topology.capture`) and ``--sysfs-root FILE`` reads it. The
relation rule is in :mod:`services.topology.affinity`.

Exit status: 0 when the tree was read (also when it has no GPU: that is said,
not treated as an error), 2 when the sysfs root is neither a directory nor a
capture, 1 when the SVG file or the capture cannot be written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from services.kernel.sysfs import Sysfs
from services.topology import affinity, capture, pci, render


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--save-sysfs", metavar="FILE", type=Path,
                   help="also write the parts of sysfs knd reads to FILE (.tar.gz) for a "
                        "bug report; no MACs, GUIDs or serial numbers")
    p.add_argument("--json", action="store_true", help="print JSON instead of the matrix")
    p.add_argument("--svg", metavar="FILE", type=Path, help="also write an SVG picture")
    p.add_argument("--vfs", action="store_true",
                   help="list SR-IOV virtual functions as NICs too (default: PFs only)")
    p.add_argument("--gpu-vendor", action="append", metavar="HEX", default=None,
                   help="GPUs are this PCI vendor's 3D, accelerator and display "
                        "controllers (repeatable; e.g. 1a03 to count a BMC's VGA); default: "
                        "any vendor's 3D controllers and accelerators, NVIDIA/AMD/Intel "
                        "display controllers")
    p.add_argument("--pci-ids", type=Path, default=None,
                   help="pci.ids file for vendor/device names (default: the system's)")


def main(args: argparse.Namespace) -> int:
    root = Path(args.sysfs_root)
    if capture.is_capture(root):
        try:
            with capture.unpacked(root) as tree:
                args.sysfs_root = str(tree)
                return _main(args, shown=root)
        except capture.UNREADABLE as e:
            print(f"knd topology: cannot unpack {root}: {e}", file=sys.stderr)
            return 2
    if not root.is_dir():
        print(f"knd topology: {root} is neither a directory nor a capture", file=sys.stderr)
        return 2
    return _main(args, shown=root)


def _main(args: argparse.Namespace, shown: Path) -> int:
    root = Path(args.sysfs_root)
    save = getattr(args, "save_sysfs", None)
    if save is not None:
        try:
            skipped = capture.capture(root, save)
        except OSError as e:
            print(f"knd topology: cannot write {save}: {e}", file=sys.stderr)
            return 1
        for entry in skipped:
            print(f"knd topology: not captured (link leaves sysfs): {entry}", file=sys.stderr)
        print(f"knd topology: wrote {save}", file=sys.stderr)
    sysfs = Sysfs(root, pci_ids=getattr(args, "pci_ids", None))
    tree = pci.read_tree(sysfs, include_vfs=getattr(args, "vfs", False),
                         gpu_vendors=getattr(args, "gpu_vendor", None))
    if shown != root:  # a capture: name the file, not the temporary directory
        tree = dataclasses.replace(tree, root=str(shown))
    aff = affinity.compute(tree)
    if args.svg is not None:
        try:
            args.svg.write_text(render.to_svg(aff))
        except OSError as e:
            print(f"knd topology: cannot write {args.svg}: {e}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(render.to_json(aff), indent=2))
    elif tree.gpus:
        print(render.to_text(aff), end="")
    notes = [f"skipped {addr}: {why}" for addr, why in tree.skipped]
    if tree.problems:
        notes.append("unreadable sysfs entries: " + ", ".join(
            f"{n} {kind}" for kind, n in sorted(tree.problems.items())))
    if not tree.gpus:
        where = shown if shown != root else root / "bus" / "pci" / "devices"
        whose = ("vendor " + "/".join(args.gpu_vendor) if args.gpu_vendor else
                 "or display 0300xx/0380xx of NVIDIA, AMD, Intel")
        notes.insert(0, f"no GPU found under {where} (PCI class 0302xx/1200xx {whose});"
                        f" {len(tree.nics)} NIC(s) found, nothing to pair them with")
    stream = sys.stderr if args.json or tree.gpus else sys.stdout
    for note in notes:
        print(f"knd topology: {note}", file=stream)
    if args.svg is not None:
        print(f"knd topology: wrote {args.svg}", file=sys.stderr)
    return 0
