"""A network interface as the kernel reports it (netlink, its eBPF programs), before
discovery makes inventory devices of it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Programs:
    """The eBPF programs of one interface. ``None``: none of that kind is attached."""

    tc_filters: tuple[str, ...] | None = None
    """Names of its cls_bpf filters, sorted, each once ("" for an unnamed one)."""
    tcx: tuple[str, ...] | None = None
    """Names of its TCX programs, sorted, each once; a program whose name could not be
    read (no CAP_SYS_ADMIN) is counted but not named."""


@dataclass(frozen=True)
class LinkInfo:
    """One network interface as netlink reports it (no sysfs knowledge here)."""

    index: int
    name: str
    kind: str
    """IFLA_INFO_KIND (``veth``, ``macvlan``, ``bridge``, ``vxlan``...); "" for a plain device."""
    mac: str
    mtu: int
    state: str
    """Operational state, lower case: ``up``, ``down``, ``unknown``, ``lowerlayerdown``..."""
    alias: str
    encapsulation: str
    """Link-layer type as iproute2 names it: ``ether``, ``loopback``, ``infiniband``, ``none``..."""
    ipv4: tuple[str, ...] = ()
    """Global addresses in CIDR form, in kernel order."""
    ipv6: tuple[str, ...] = ()
    master: int | None = None
    """Index of the bridge/bond this link is enslaved to."""
    parent: int | None = None
    """IFLA_LINK: the lower device of a macvlan/vlan/vxlan, when it is in this netns."""
    programs: Programs = Programs()
    """Its eBPF programs (services.discovery.ebpf)."""
