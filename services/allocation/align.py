"""ResourceClaimTemplates that pair each GPU of a node with its nearest NIC(s)
(``knd claim align``).

Each template pins one GPU (by ``resource.kubernetes.io/pciBusID``) and the NICs
nearest to it (by ``<driver>/pciAddress``), so it means the same on every node of
that machine type. Nearness comes from what is known, best first:

- on the node itself, its PCIe tree (services.topology): PIX, PXB, PHB, NODE or SYS;
- else the published attributes: the same ``resource.kubernetes.io/pcieRoot`` is PHB
  (then the template also has that ``matchAttribute`` constraint), the same NUMA node
  NODE, otherwise SYS.

The relation each template guarantees is written in its comments. RDMA NICs are
preferred when the node has any; a NIC may be nearest to several GPUs (the comment
says which share it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.allocation.objects import Device, Inputs, Node
from services.allocation.pools import SliceIndex, devices, gather
from services.topology.affinity import MEANING, Relation

PCIE_ROOT = "resource.kubernetes.io/pcieRoot"
PCI_BUS_ID = "resource.kubernetes.io/pciBusID"
NUMA = "resource.kubernetes.io/numaNode"


class AlignError(ValueError):
    """Nothing to pair; the text says what is missing."""


@dataclass(frozen=True)
class Pairing:
    gpu: Device
    nics: tuple[Device, ...]
    relation: Relation
    source: str
    """``topology`` (the node's PCIe tree) or ``attributes`` (the published ones)."""
    shared_with: tuple[str, ...] = ()

    @property
    def constrained(self) -> bool:
        """Whether both sides publish the root, so the template can require it too."""
        return self.relation <= Relation.PHB and all(
            d.attribute(PCIE_ROOT) is not None for d in (self.gpu, *self.nics))


def _numa(d: Device) -> Any:
    """The standard attribute, else the driver's own ``numaNode`` (knd's, DRANET's)."""
    value = d.attribute(NUMA)
    return value if value is not None else d.attribute(f"{d.driver}/numaNode")


def by_attributes(gpu: Device, nic: Device) -> Relation:
    roots = gpu.attribute(PCIE_ROOT), nic.attribute(PCIE_ROOT)
    if None not in roots and roots[0] == roots[1]:
        return Relation.PHB
    numas = _numa(gpu), _numa(nic)
    if None not in numas and numas[0] == numas[1]:
        return Relation.NODE
    return Relation.SYS


def _nearness(gpu: Device, nic: Device, nic_driver: str,
              topology: dict[tuple[str, str], Relation] | None) -> tuple[Relation, str]:
    """(relation, where it is known from) of a GPU and a NIC."""
    key = (str(gpu.attribute(PCI_BUS_ID)).lower(), str(nic.attribute(f"{nic_driver}/pciAddress")))
    if topology is not None and key in topology:
        return topology[key], "topology"
    return by_attributes(gpu, nic), "attributes"


def _gpus(devs: list[Device], gpu_driver: str) -> list[Device]:
    mine = [d for d in devs if d.driver == gpu_driver]
    typed = [d for d in mine if d.attribute(f"{gpu_driver}/type") is not None]
    return [d for d in typed if d.attribute(f"{gpu_driver}/type") == "gpu"] if typed else mine


def _nics(devs: list[Device], driver: str) -> list[Device]:
    pci = [d for d in devs if d.driver == driver and d.attribute(f"{driver}/pciAddress")]
    rdma = [d for d in pci if d.attribute(f"{driver}/rdma") is True]
    return rdma or pci


def pair(inputs: Inputs, node: str, gpu_driver: str, nic_driver: str, per_gpu: int,
         topology: dict[tuple[str, str], Relation] | None = None) -> list[Pairing]:
    """Each GPU of ``node`` with its ``per_gpu`` nearest NICs. ``topology``: (GPU PCI
    address, NIC PCI address) -> relation, read on the node (None: attributes only)."""
    the = inputs.nodes.get(node, Node(node))
    devs = devices(gather(SliceIndex(inputs.slices), the), the)
    gpus, nics = _gpus(devs, gpu_driver), _nics(devs, nic_driver)
    if not gpus:
        raise AlignError(f"node {node}: no GPU of driver {gpu_driver} in the slices")
    if len(nics) < per_gpu:
        raise AlignError(f"node {node}: {len(nics)} PCI NIC(s) of driver {nic_driver}, "
                         f"fewer than the {per_gpu} asked for each GPU")
    out = []
    for g in gpus:
        if g.attribute(PCI_BUS_ID) is None:
            raise AlignError(f"node {node}: GPU {g.id} publishes no {PCI_BUS_ID} to pin it by")
        near = {n.id: _nearness(g, n, nic_driver, topology) for n in nics}
        chosen = tuple(sorted(nics, key=lambda n: near[n.id][0])[:per_gpu])  # stable: ties
        worst = max((near[n.id] for n in chosen), key=lambda r: r[0])  # keep device order
        out.append(Pairing(g, chosen, worst[0], worst[1]))
    takers: dict[str, list[str]] = {}
    for p in out:
        for n in p.nics:
            takers.setdefault(n.id, []).append(p.gpu.name)
    return [Pairing(p.gpu, p.nics, p.relation, p.source, tuple(sorted(
        {o for n in p.nics for o in takers[n.id] if o != p.gpu.name}))) for p in out]


def template(p: Pairing, gpu_class: str, nic_class: str, nic_driver: str) -> dict[str, Any]:
    nics = len(p.nics)
    addresses = [str(n.attribute(f"{nic_driver}/pciAddress")) for n in p.nics]
    nic_pin = " || ".join(f'device.attributes["{nic_driver}"].pciAddress == "{a}"'
                          for a in addresses)
    devices_: dict[str, Any] = {"requests": [
        {"name": "gpu", "exactly": {"deviceClassName": gpu_class, "count": 1, "selectors": [
            {"cel": {"expression": f'device.attributes["resource.kubernetes.io"].pciBusID'
                                   f' == "{p.gpu.attribute(PCI_BUS_ID)}"'}}]}},
        {"name": "nic", "exactly": {"deviceClassName": nic_class, "count": nics,
                                    "selectors": [{"cel": {"expression": nic_pin}}]}}]}
    if p.constrained:
        devices_["constraints"] = [{"requests": ["gpu", "nic"], "matchAttribute": PCIE_ROOT}]
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
            "metadata": {"name": f"{p.gpu.name}-aligned"}, "spec": {"spec": {
                "devices": devices_}}}


def comments(p: Pairing, nic_driver: str) -> list[str]:
    nics = ", ".join(f"{n.name} ({n.attribute(f'{nic_driver}/pciAddress')})" for n in p.nics)
    out = [f"GPU {p.gpu.name} ({p.gpu.attribute(PCI_BUS_ID)}) with NIC {nics}",
           f"relation {p.relation.name}: {MEANING[p.relation]} "
           f"(from the node's {'PCIe tree' if p.source == 'topology' else 'published attributes'})"]
    if p.shared_with:
        out.append(f"the same NIC is nearest to {', '.join(p.shared_with)}: their claims "
                   "and this one cannot all be allocated at once")
    return out
