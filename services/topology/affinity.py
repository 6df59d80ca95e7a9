"""GPU <-> NIC relations in ``nvidia-smi topo -m``'s vocabulary, and each GPU's NIC.

A GPU that reads from or writes to a NIC directly (GPUDirect RDMA) is only as
fast as the worst link on the way, so the question "which NIC goes with this
GPU" is "which NIC is the fewest and cheapest hops away in the PCI tree". The
answer is computed from bridge paths alone (see :mod:`services.topology.pci`).

The rule
--------

Every function has a root complex ``R`` (``pciDDDD:BB``, the host bridge) and a
bridge path ``b1/b2/.../bn`` below it: ``b1`` is the root port, and below a
root port a PCIe switch shows up as two levels, its upstream port and then one
of its downstream ports (``b2`` = upstream, ``b3`` = downstream, a switch
nested below that adds ``b4``/``b5``, and so on). For a GPU ``g`` and a NIC
``n``:

1. Different root complexes: traffic leaves one host bridge and enters
   another. ``NODE`` when both sides have the same, known NUMA node (the
   host bridges' interconnect inside one socket); otherwise ``SYS`` (across
   sockets; a NUMA node that sysfs does not know counts as "maybe the other
   socket", hence ``SYS``, never better than what can be shown).
2. Same root complex. Let ``c`` be the length of the longest common prefix of
   the two bridge paths (the deepest common bridge is ``C = b_c``), and
   ``dg``, ``dn`` the number of bridges each side has below ``C``.

   - ``c == 0``: the paths only meet at the host bridge (different root
     ports, or root-complex integrated endpoints): ``PHB``.
   - ``c == 1``: the deepest common bridge is the root port. Peer traffic
     between two of its functions is routed by the root complex: ``PHB``.
   - ``c >= 2``: ``C`` is inside a switch, so the transfer turns around
     below the root port and never touches the host bridge. It is ``PIX``
     when ``dg <= 1`` and ``dn <= 1``: each side is at most one bridge (the
     downstream port it hangs off) below the shared upstream port, i.e.
     exactly one switch is crossed. Any further bridge on either side is the
     upstream port of another switch, so more than one switch is crossed:
     ``PXB``.

Order of preference: ``PIX < PXB < PHB < NODE < SYS``.

Preferred NIC
-------------

Each GPU's candidates are the NICs at its best relation. GPUs are served in
order of (best relation, fewer candidates, PCI address), and each takes the
candidate fewest GPUs have taken so far (ties: lowest PCI address). So two
GPUs behind one switch with two NICs get one NIC each, instead of both
queueing on the lower address; GPUs with one candidate are placed before
those that have a choice, so a choosy GPU does not take a NIC another one
cannot do without. When there are more GPUs than NICs at that level they
share, and the choice says so (``shared_with``): a shared NIC is still the
best placement, but its bandwidth is split.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import IntEnum

from services.topology.pci import Function, PciTree


class Relation(IntEnum):
    """Path classes, best first (the value orders them)."""

    PIX = 0
    PXB = 1
    PHB = 2
    NODE = 3
    SYS = 4


MEANING = {
    Relation.PIX: "at most one PCIe switch between them (no host bridge)",
    Relation.PXB: "several PCIe switches, still below the root port (no host bridge)",
    Relation.PHB: "through a PCIe host bridge: same root complex (pcieRoot)",
    Relation.NODE: "different root complexes within one NUMA node",
    Relation.SYS: "across NUMA nodes (sockets), or a NUMA node unknown",
}
"""One line per relation, for legends."""


def relation(a: Function, b: Function) -> Relation:
    """The relation between two placed functions (symmetric), per the module's rule."""
    if a.pcie_root != b.pcie_root:
        if a.numa_node is not None and a.numa_node == b.numa_node:
            return Relation.NODE
        return Relation.SYS
    common = 0
    for x, y in zip(a.bridges, b.bridges, strict=False):
        if x != y:
            break
        common += 1
    if common <= 1:
        return Relation.PHB
    below_a, below_b = len(a.bridges) - common, len(b.bridges) - common
    return Relation.PIX if below_a <= 1 and below_b <= 1 else Relation.PXB


@dataclass(frozen=True)
class Choice:
    """The NIC chosen for one GPU."""

    gpu: str
    nic: str
    relation: Relation
    shared_with: tuple[str, ...] = ()
    """Other GPUs (PCI addresses) that chose the same NIC."""

    @property
    def shared(self) -> bool:
        return bool(self.shared_with)


@dataclass(frozen=True)
class Affinity:
    """Relations for every (GPU, NIC) pair and each GPU's preferred NIC."""

    tree: PciTree
    relations: dict[tuple[str, str], Relation]
    """(GPU address, NIC address) -> relation."""
    preferred: dict[str, Choice | None]
    """GPU address -> its NIC; None when the node has no NIC."""

    @property
    def gpus(self) -> tuple[Function, ...]:
        return self.tree.gpus

    @property
    def nics(self) -> tuple[Function, ...]:
        return self.tree.nics

    def relation(self, gpu: str, nic: str) -> Relation:
        return self.relations[(gpu, nic)]


def _choose(gpus: tuple[Function, ...], nics: tuple[Function, ...],
            relations: dict[tuple[str, str], Relation]) -> dict[str, Choice | None]:
    if not nics:
        return {g.address: None for g in gpus}
    candidates: dict[str, tuple[Relation, list[str]]] = {}
    for g in gpus:
        best = min(relations[(g.address, n.address)] for n in nics)
        candidates[g.address] = (best, sorted(n.address for n in nics
                                              if relations[(g.address, n.address)] == best))
    order = sorted(candidates, key=lambda a: (candidates[a][0], len(candidates[a][1]), a))
    load: Counter[str] = Counter()
    picked: dict[str, tuple[str, Relation]] = {}
    for gpu in order:
        best, nic_list = candidates[gpu]
        nic = min(nic_list, key=lambda n: (load[n], n))
        load[nic] += 1
        picked[gpu] = (nic, best)
    takers: dict[str, list[str]] = {}
    for gpu, (nic, _) in sorted(picked.items()):
        takers.setdefault(nic, []).append(gpu)
    return {g.address: Choice(
        gpu=g.address, nic=picked[g.address][0], relation=picked[g.address][1],
        shared_with=tuple(o for o in takers[picked[g.address][0]] if o != g.address),
    ) for g in gpus}


def compute(tree: PciTree) -> Affinity:
    """Relations of every GPU to every NIC, and the preferred NIC of each GPU."""
    relations = {(g.address, n.address): relation(g, n) for g in tree.gpus for n in tree.nics}
    return Affinity(tree=tree, relations=relations,
                    preferred=_choose(tree.gpus, tree.nics, relations))
