"""Three views of an :class:`~services.topology.affinity.Affinity`: text, JSON, SVG.

The text matrix follows ``nvidia-smi topo -m`` (GPUs as rows ``GPU0..``, NICs as
columns ``NIC0..``, legends below) so people who know that table can read it at
a glance. Numbering is by PCI address, so it is stable for a given machine.

JSON schema (``schema: "knd.dev/topology/v1"``; fields are only ever added)::

    {
      "schema": "knd.dev/topology/v1",
      "sysfsRoot": "/sys",
      "relations": {"PIX": "<meaning>", "PXB": ..., "PHB": ..., "NODE": ..., "SYS": ...},
      "nics": [NIC, ...],                 # by PCI address; NICk is nics[k]
      "gpus": [GPU, ...],                 # by PCI address; GPUk is gpus[k]
      "skipped": [{"pciAddress": str, "reason": str}],
      "sysfsProblems": {"<kind>": int}    # see services.kernel.sysfs.PROBLEMS
    }
    NIC = {"name": "NIC0", "pciAddress": "0000:1a:00.0", "class": "020000",
           "vendorId": "15b3" | null, "deviceId": "1021" | null,
           "numaNode": 0 | null, "pcieRoot": "pci0000:15",
           "bridges": ["0000:15:01.0", ...],   # root port first
           "interfaces": ["ens1f0np0"], "rdmaDevices": ["mlx5_0"], "vf": false}
    GPU = {"name": "GPU0", "pciAddress", "class", "vendorId", "deviceId",
           "numaNode", "pcieRoot", "bridges",   # as for a NIC
           "nics": [{"name", "pciAddress", "interfaces", "rdmaDevices",
                     "relation": "PIX" | "PXB" | "PHB" | "NODE" | "SYS"}],  # every NIC
           "preferredNic": null | {"name", "pciAddress", "interfaces", "rdmaDevices",
                                   "relation", "shared": bool,
                                   "sharedWith": ["<GPU pciAddress>", ...]}}

The SVG is written by hand (no drawing library on a node): NUMA nodes and root
complexes are nested boxes, each PCIe switch is a column headed by its upstream
port with its GPUs and NICs below it, and a line joins each GPU to its
preferred NIC, coloured by relation (dashed when the NIC is shared).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from services.topology import textfit
from services.topology.affinity import MEANING, Affinity, Choice, Relation
from services.topology.pci import Function

SCHEMA = "knd.dev/topology/v1"


# ------------------------------------------------------------------ names

def gpu_names(aff: Affinity) -> dict[str, str]:
    return {g.address: f"GPU{i}" for i, g in enumerate(aff.gpus)}


def nic_names(aff: Affinity) -> dict[str, str]:
    return {n.address: f"NIC{i}" for i, n in enumerate(aff.nics)}


def _nic_label(nic: Function) -> str:
    """``ens1f0np0/mlx5_0``: what a person calls the NIC."""
    names = [*nic.interfaces, *nic.rdma]
    return "/".join(names) if names else "(no interface)"


# ------------------------------------------------------------------ JSON

def _placed(f: Function, name: str) -> dict[str, Any]:
    return {"name": name, "pciAddress": f.address, "class": f.class_id,
            "vendorId": f.vendor_id, "deviceId": f.device_id, "numaNode": f.numa_node,
            "pcieRoot": f.pcie_root, "bridges": list(f.bridges)}


def _nic_ref(nic: Function, name: str) -> dict[str, Any]:
    return {"name": name, "pciAddress": nic.address, "interfaces": list(nic.interfaces),
            "rdmaDevices": list(nic.rdma)}


def to_json(aff: Affinity) -> dict[str, Any]:
    """The documented JSON document (a plain dict, ready for ``json.dumps``)."""
    nnames = nic_names(aff)
    by_addr = {n.address: n for n in aff.nics}
    gpus = []
    for g, gname in zip(aff.gpus, gpu_names(aff).values(), strict=True):
        entry = _placed(g, gname)
        entry["nics"] = [{**_nic_ref(n, nnames[n.address]),
                          "relation": aff.relation(g.address, n.address).name}
                         for n in aff.nics]
        choice = aff.preferred.get(g.address)
        entry["preferredNic"] = None if choice is None else {
            **_nic_ref(by_addr[choice.nic], nnames[choice.nic]),
            "relation": choice.relation.name, "shared": choice.shared,
            "sharedWith": list(choice.shared_with)}
        gpus.append(entry)
    nics = [{**_placed(n, nnames[n.address]), "interfaces": list(n.interfaces),
             "rdmaDevices": list(n.rdma), "vf": n.is_vf} for n in aff.nics]
    return {
        "schema": SCHEMA,
        "sysfsRoot": aff.tree.root,
        "relations": {r.name: MEANING[r] for r in Relation},
        "nics": nics,
        "gpus": gpus,
        "skipped": [{"pciAddress": a, "reason": why} for a, why in aff.tree.skipped],
        "sysfsProblems": dict(sorted(aff.tree.problems.items())),
    }


# ------------------------------------------------------------------ text

def _choice_text(choice: Choice | None, nnames: dict[str, str], gnames: dict[str, str]) -> str:
    if choice is None:
        return "-"
    text = f"{nnames[choice.nic]} ({choice.relation.name})"
    if choice.shared:
        text += " shared with " + ",".join(gnames[g] for g in choice.shared_with)
    return text


def to_text(aff: Affinity) -> str:
    """The ``nvidia-smi topo -m``-like matrix with its legends."""
    gnames, nnames = gpu_names(aff), nic_names(aff)
    header = ["", *nnames.values(), "NUMA", "pcieRoot", "Preferred NIC"]
    rows = [header]
    for g in aff.gpus:
        rows.append([gnames[g.address],
                     *(aff.relation(g.address, n.address).name for n in aff.nics),
                     "-" if g.numa_node is None else str(g.numa_node), g.pcie_root,
                     _choice_text(aff.preferred.get(g.address), nnames, gnames)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines += ["", "GPU legend:"]
    for g in aff.gpus:
        ident = f"{g.vendor_id or '?'}:{g.device_id or '?'}"
        name = f"  {g.device_name}" if g.device_name else ""
        lines.append(f"  {gnames[g.address]}: {g.address}  {ident}{name}")
    lines += ["", "NIC legend:"]
    if not aff.nics:
        lines.append("  (no NIC found)")
    for n in aff.nics:
        numa = "-" if n.numa_node is None else n.numa_node
        vf = "  VF" if n.is_vf else ""
        lines.append(f"  {nnames[n.address]}: {_nic_label(n)}  {n.address}"
                     f"  NUMA {numa}  {n.pcie_root}{vf}")
    lines += ["", "Legend:"]
    lines += [f"  {r.name:<4} = {MEANING[r]}" for r in Relation]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ SVG

NODE_W, NODE_H, GAP, PAD, HEAD, COL_GAP, MARGIN = 170, 34, 8, 12, 22, 56, 16
COLOURS = {Relation.PIX: "#2e7d32", Relation.PXB: "#7cb342", Relation.PHB: "#f9a825",
           Relation.NODE: "#ef6c00", Relation.SYS: "#c62828"}
_FILL = {"gpu": "#e3f2e1", "nic": "#e1ecf7", "switch": "#eeeeee"}


def _switch_key(bridges: tuple[str, ...]) -> tuple[str, ...]:
    """The bridge path up to the upstream port of the switch a function hangs under.

    Upstream ports are at even depths below the root port (indices 1, 3, ...);
    ``()`` when the function has no switch above it (root port or integrated).
    """
    if len(bridges) < 2:
        return ()
    last = len(bridges) - 1
    return bridges[: (last if last % 2 else last - 1) + 1]


@dataclass
class _Box:
    x: float
    y: float
    w: float
    h: float


def _clean(text: str, limit: int = 28) -> str:
    """Printable, XML-safe, short: sysfs names can hold control characters."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "~"


def _rect(out: list[str], b: _Box, fill: str, extra: str = "") -> None:
    out.append(f'<rect x="{b.x:.0f}" y="{b.y:.0f}" width="{b.w:.0f}" height="{b.h:.0f}" '
               f'rx="4" fill="{fill}" stroke="#555"{extra}/>')


def _label(out: list[str], x: float, y: float, text: str, size: int = 11,
           weight: str = "normal") -> None:
    out.append(f'<text x="{x:.0f}" y="{y:.0f}" font-size="{size}" '
               f'font-weight="{weight}">{escape(_clean(text, 200))}</text>')


def _fit(text: str, size: int, room: float, bold: bool = False) -> str:
    """``text`` cut (ending in ``~``) so that it is no wider than ``room``."""
    text = _clean(text, 200)
    if textfit.width(text, size, bold) <= room:
        return text
    while len(text) > 1 and textfit.width(text + "~", size, bold) > room:
        text = text[:-1]
    return text + "~"


def _node(out: list[str], b: _Box, kind: str, top: str, bottom: str) -> None:
    _rect(out, b, _FILL[kind])
    _label(out, b.x + 6, b.y + 14, _fit(top, 11, b.w - 12, bold=True), weight="bold")
    _label(out, b.x + 6, b.y + 28, _fit(bottom, 10, b.w - 12), size=10)


def to_svg(aff: Affinity) -> str:
    """A standalone SVG document of the node's GPU/NIC layout and preferred pairs."""
    gnames, nnames = gpu_names(aff), nic_names(aff)
    # numa -> root complex -> switch key -> functions
    tree: dict[int | None, dict[str, dict[tuple[str, ...], list[Function]]]] = {}
    for f in (*aff.gpus, *aff.nics):
        cols = tree.setdefault(f.numa_node, {}).setdefault(f.pcie_root, {})
        key = _switch_key(f.bridges)
        cols.setdefault(key, []).append(f)
        while len(key) >= 4:  # make the enclosing switches visible too
            key = key[:-2]
            cols.setdefault(key, [])
    out: list[str] = []
    where: dict[str, _Box] = {}
    switch_at: dict[tuple[str, tuple[str, ...]], _Box] = {}
    x, top = float(MARGIN), float(MARGIN + 24)
    height = 0.0
    for numa in sorted(tree, key=lambda n: (n is None, n or 0)):
        numa_x = x
        x += PAD
        numa_height = 0.0
        for root in sorted(tree[numa]):
            rc_x = x
            x += PAD
            rc_height = 0.0
            for key in sorted(tree[numa][root]):
                fs = sorted(tree[numa][root][key], key=lambda f: (f.kind != "gpu", f.address))
                y = top + 2 * HEAD + PAD
                head = _Box(x, y, NODE_W, NODE_H)
                # a switch has downstream ports; a lone bridge (PCIe-to-PCI) has none
                kind = "switch" if not fs or any(len(f.bridges) > len(key) for f in fs) \
                    else "bridge"
                text = (f"{kind} {key[-1]}", f"under {key[-2]}") if key else \
                    ("no switch", "on a root port / integrated")
                _node(out, head, "switch", *text)
                if key:
                    switch_at[(root, key)] = head
                for f in fs:
                    y += NODE_H + GAP
                    b = where[f.address] = _Box(x, y, NODE_W, NODE_H)
                    if f.kind == "gpu":
                        _node(out, b, "gpu", f"{gnames[f.address]} {f.address}",
                              f"{f.vendor_id or '?'}:{f.device_id or '?'}")
                    else:
                        _node(out, b, "nic", f"{nnames[f.address]} {f.address}", _nic_label(f))
                rc_height = max(rc_height, y + NODE_H + PAD - (top + HEAD))
                x += NODE_W + COL_GAP
            x += PAD + 24 - COL_GAP  # room for the last column's curves
            rc = _Box(rc_x, top + HEAD, x - rc_x, rc_height)
            _rect(out, rc, "none", ' stroke-dasharray="6 3"')
            _label(out, rc_x + 6, top + HEAD + 15, f"root complex {root}", weight="bold")
            numa_height = max(numa_height, rc_height)
            x += PAD
        numa_box = _Box(numa_x, top, x - numa_x, numa_height + HEAD + PAD)
        height = max(height, numa_box.h)
        _rect(out, numa_box, "none", ' stroke-width="2"')
        _label(out, numa_x + 6, top + 15, "NUMA " + ("?" if numa is None else str(numa)),
               size=12, weight="bold")
        x += MARGIN
    out = _links(aff, where, switch_at) + out  # lines under the nodes
    width = max(x, 2 * MARGIN + 480)
    # the title and the legend wrap to the picture's width (a narrow one cut them off);
    # the drawing moves down by the title's extra lines
    title = textfit.wrap(title_text(aff), TITLE_SIZE, width - 2 * MARGIN, bold=True)
    shift = TITLE_LINE * (len(title) - 1)
    legend: list[str] = []
    y = top + height + 24 + shift
    for r in Relation:
        legend.append(f'<line x1="{MARGIN}" y1="{y - 4:.0f}" x2="{MARGIN + 30}" '
                      f'y2="{y - 4:.0f}" stroke="{COLOURS[r]}" stroke-width="3"/>')
        for line in textfit.wrap(f"{r.name}: {MEANING[r]}", 11, width - 2 * MARGIN - 38):
            _label(legend, MARGIN + 38, y, line)
            y += 14
        y += 6
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
            f'height="{y + 10:.0f}" font-family="sans-serif">',
            f"<title>GPU/NIC topology of {escape(_clean(aff.tree.root, 80))}</title>",
            '<rect width="100%" height="100%" fill="white"/>']
    for i, line in enumerate(title):
        _label(svg, MARGIN, MARGIN + 10 + TITLE_LINE * i, line, size=TITLE_SIZE,
               weight="bold")
    body = [f'<g transform="translate(0 {shift})">', *out, "</g>"] if shift else out
    return "\n".join([*svg, *body, *legend, "</svg>"]) + "\n"


TITLE_SIZE, TITLE_LINE = 13, 17


def title_text(aff: Affinity) -> str:
    return (f"{len(aff.gpus)} GPU(s), {len(aff.nics)} NIC(s): lines join each GPU to its "
            "preferred NIC (dashed: shared)")


def _links(aff: Affinity, where: dict[str, _Box],
           switch_at: dict[tuple[str, tuple[str, ...]], _Box]) -> list[str]:
    """Switch-to-nested-switch lines, then one curve per preferred (GPU, NIC) pair."""
    out: list[str] = []
    for (root, key), b in sorted(switch_at.items()):
        parent = switch_at.get((root, key[:-2])) if len(key) >= 4 else None
        if parent is not None:
            out.append(f'<line x1="{parent.x + parent.w:.0f}" y1="{parent.y + 17:.0f}" '
                       f'x2="{b.x:.0f}" y2="{b.y + 17:.0f}" stroke="#555"/>')
    gnames, nnames = gpu_names(aff), nic_names(aff)
    for i, g in enumerate(aff.gpus):
        choice = aff.preferred.get(g.address)
        if choice is None:
            continue
        a, b = where[g.address], where[choice.nic]
        bend = 12 + 6 * (i % 4)
        if abs(a.x - b.x) < 1:  # same column: bulge out to the right
            x1, x2 = a.x + a.w, b.x + b.w
            c1, c2 = x1 + bend, x2 + bend
        elif a.x < b.x:
            x1, x2 = a.x + a.w, b.x
            c1, c2 = x1 + bend * 2, x2 - bend * 2
        else:
            x1, x2 = a.x, b.x + b.w
            c1, c2 = x1 - bend * 2, x2 + bend * 2
        y1, y2 = a.y + a.h / 2, b.y + b.h / 2
        dash = ' stroke-dasharray="5 3"' if choice.shared else ""
        tip = (f"{gnames[g.address]} -> {nnames[choice.nic]}: {choice.relation.name}"
               + (" (shared)" if choice.shared else ""))
        out.append(f'<path d="M {x1:.0f} {y1:.0f} C {c1:.0f} {y1:.0f} {c2:.0f} {y2:.0f} '
                   f'{x2:.0f} {y2:.0f}" fill="none" stroke="{COLOURS[choice.relation]}" '
                   f'stroke-width="2"{dash} class="preferred" '
                   f'data-gpu={quoteattr(g.address)} data-nic={quoteattr(choice.nic)}>'
                   f"<title>{escape(tip)}</title></path>")
    return out
