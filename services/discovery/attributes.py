"""From netlink links and sysfs facts to inventory devices with DRANET's attributes.

The attribute vocabulary is DRANET's, so that its DeviceClasses and CEL
selectors work by changing only the driver name; the two standard topology
attributes (``resource.kubernetes.io/pcieRoot`` and ``.../numaNode``) are what
lets the scheduler align a NIC with a GPU of another driver.

Every value respects the ResourceSlice limits here rather than in the
publisher, so that a device never gets dropped later for an over-long alias:
strings are cut to 64 bytes of UTF-8 at a character boundary (the API server
measures bytes; this also satisfies a 64-character rule), address lists at an
address boundary, and a device never carries more than 32 attributes.

``type`` is the netlink link kind (``veth``, ``macvlan``, ``bridge``, ``vxlan``,
``ipoib``...) and ``device`` for a plain physical interface, as DRANET reports
it; the link-layer type (``ether``, ``infiniband``) is ``encapsulation``. An
RDMA device with no netdev has ``type: rdma``.

``ebpf``, ``tcFilterNames`` and ``tcxProgramNames`` follow DRANET: the names are
the cls_bpf filters' (ingress and egress) and the TCX programs', each once,
comma-joined (sorted here; DRANET's order is random), whole names only within
64 bytes; an unnamed program counts for ``ebpf`` but adds no empty name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Protocol

from schemas.inventory import AttrValue, Device
from schemas.limits import MAX_ATTRIBUTE_STRING, MAX_ATTRIBUTES_AND_CAPACITIES, qualified_name_error
from services.discovery.names import (
    assign_pci_port_names,
    netdev_device_name,
    rdma_device_name,
    short_hash,
)
from services.kernel.links import LinkInfo, Programs
from services.kernel.sysfs import NetdevHw, PciHw, RdmaHw

log = logging.getLogger("knd.discovery.attributes")

STANDARD_DOMAIN = "resource.kubernetes.io"
TYPE_PLAIN = "device"
TYPE_RDMA = "rdma"


def cut(value: str, limit: int = MAX_ATTRIBUTE_STRING) -> str:
    """``value`` shortened to at most ``limit`` UTF-8 bytes, never splitting a character."""
    data = value.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return value
    return data[:limit].decode("utf-8", "ignore")


def join_cut(items: Iterable[str], limit: int = MAX_ATTRIBUTE_STRING) -> str:
    """Comma-join as many leading ``items`` as fit in ``limit`` bytes, whole items only."""
    out = ""
    for item in items:
        candidate = f"{out},{item}" if out else item
        if len(candidate.encode("utf-8", "surrogatepass")) > limit:
            break
        out = candidate
    return out


class _Attrs:
    """Ordered attribute map: insertion order is priority when the 32 cap bites."""

    def __init__(self, driver: str) -> None:
        self.driver = driver
        self.values: dict[str, AttrValue] = {}

    def put(self, name: str, value: AttrValue | None, standard: bool = False,
            keep_empty: bool = False) -> None:
        if value is None or (value == "" and not keep_empty):
            return
        key = f"{STANDARD_DOMAIN}/{name}" if standard else f"{self.driver}/{name}"
        self.values[key] = cut(value) if isinstance(value, str) else value

    def done(self, device: str) -> dict[str, AttrValue]:
        if len(self.values) > MAX_ATTRIBUTES_AND_CAPACITIES:
            dropped = list(self.values)[MAX_ATTRIBUTES_AND_CAPACITIES:]
            log.warning("device %s: dropping attributes over the limit: %s", device, dropped)
            return dict(list(self.values.items())[:MAX_ATTRIBUTES_AND_CAPACITIES])
        return self.values


def _pci_attrs(a: _Attrs, pci: PciHw) -> None:
    a.put("pciAddress", pci.address)
    a.put("pciVendor", pci.vendor_name or pci.vendor_id)
    a.put("pciDevice", pci.device_name or pci.device_id)
    a.put("pciSubsystem", pci.subsystem)
    a.put("numaNode", pci.numa_node)
    a.put("pcieRoot", pci.pcie_root, standard=True)
    a.put("numaNode", pci.numa_node, standard=True)
    sriov = not pci.is_vf and (pci.sriov_totalvfs or 0) > 0
    a.put("sriov", sriov)
    if sriov:
        a.put("sriovVfs", pci.sriov_numvfs or 0)
    a.put("isSriovVf", pci.is_vf)


def link_attributes(link: LinkInfo, hw: NetdevHw | None, driver: str) -> dict[str, AttrValue]:
    """The attributes of one interface. Without sysfs facts, a link with a kind is virtual."""
    a = _Attrs(driver)
    a.put("ifName", link.name)
    a.put("type", link.kind or TYPE_PLAIN)
    a.put("virtual", hw.virtual if hw is not None else bool(link.kind))
    a.put("mac", link.mac)
    a.put("mtu", link.mtu)
    a.put("state", link.state)
    a.put("encapsulation", link.encapsulation)
    a.put("alias", link.alias)
    a.put("ipv4", join_cut(link.ipv4))
    a.put("ipv6", join_cut(link.ipv6))
    if hw is not None and hw.pci is not None:
        _pci_attrs(a, hw.pci)
    rdma = hw.rdma if hw is not None else ()
    a.put("rdma", bool(rdma))
    a.put("rdmaDevice", rdma[0] if rdma else None)
    _ebpf_attrs(a, link.programs)
    return a.done(link.name)


def _ebpf_attrs(a: _Attrs, p: Programs) -> None:
    """DRANET's eBPF attributes: a names attribute for each kind attached (even when
    none of its programs has a name), and ``ebpf`` always, true when either is."""
    for attr, names in (("tcFilterNames", p.tc_filters), ("tcxProgramNames", p.tcx)):
        if names is not None:
            a.put(attr, join_cut(n for n in names if n), keep_empty=True)
    a.put("ebpf", p.tc_filters is not None or p.tcx is not None)


def rdma_attributes(rdma: RdmaHw, driver: str) -> dict[str, AttrValue]:
    """The attributes of an RDMA device that has no netdev (e.g. an InfiniBand HCA)."""
    a = _Attrs(driver)
    a.put("type", TYPE_RDMA)
    a.put("virtual", False)
    a.put("rdma", True)
    a.put("rdmaDevice", rdma.name)
    if rdma.pci is not None:
        _pci_attrs(a, rdma.pci)
    return a.done(rdma.name)


class Hardware(Protocol):
    """The sysfs facts devices are built from: a ``Sysfs``, or discovery's cache of one."""

    def netdev(self, ifname: str) -> NetdevHw | None: ...

    def rdma_devices(self) -> list[RdmaHw]: ...


def build_devices(links: Sequence[LinkInfo], sysfs: Hardware, driver: str) -> list[Device]:
    """One device per link plus one per RDMA device without a netdev, sorted by name.

    Deterministic: the same links and sysfs give the same devices whatever the
    order of ``links``. Raises ValueError only for a driver name that cannot
    qualify attribute names (a configuration error, not a hardware one).
    """
    err = qualified_name_error(f"{driver}/ifName")
    if err:
        raise ValueError(f"driver name {driver!r} cannot qualify attributes: {err}")

    by_name: dict[str, LinkInfo] = {}
    for link in sorted(links, key=lambda lk: (lk.name, lk.index)):
        if link.name in by_name:
            log.warning("interface %s listed twice (ifindex %d, %d); keeping the first",
                        link.name, by_name[link.name].index, link.index)
            continue
        by_name[link.name] = link
    hws = {name: sysfs.netdev(name) for name in by_name}

    # Name the devices. PCI functions first (a function with several netdevs
    # numbers its ports), then other interfaces, then RDMA-only devices; the
    # families cannot collide by construction, the guard below is a backstop.
    ports: dict[str, list[tuple[str, int | None]]] = {}
    for name, hw in hws.items():
        if hw is not None and hw.pci is not None:
            ports.setdefault(hw.pci.address, []).append((name, hw.dev_port))
    dev_names: dict[str, str] = {}
    for address in sorted(ports):
        dev_names.update(assign_pci_port_names(address, ports[address]))
    for name in by_name:
        dev_names.setdefault(name, netdev_device_name(name))

    taken: set[str] = set()
    devices: list[Device] = []

    def claim(name: str, key: str) -> str:
        if name in taken:
            fallback = f"{name[:54].rstrip('-')}-{short_hash(key)}"
            log.warning("device name %s already used; %s becomes %s", name, key, fallback)
            name = fallback
        taken.add(name)
        return name

    for ifname, link in by_name.items():
        dev = claim(dev_names[ifname], f"netdev/{ifname}")
        devices.append(Device(name=dev, attributes=link_attributes(link, hws[ifname], driver)))
    for rdma in sysfs.rdma_devices():
        if rdma.netdevs:
            continue
        dev = claim(rdma_device_name(rdma), f"rdma/{rdma.name}")
        devices.append(Device(name=dev, attributes=rdma_attributes(rdma, driver)))
    devices.sort(key=lambda d: d.name)
    return devices
