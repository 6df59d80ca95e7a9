"""Prepare: resolve a claim's devices against this node and check their config.

Nothing on the bus is trusted: the pool must be this node's, the device must
be in discovery's inventory and its interface in the host netns, and it must
not carry the node's default route, whatever the gateway says. Every error
names its field (``devices[0].device: ...``, ``devices[1].config.routes[0].gateway:
...``) so a person can fix the claim from the kubelet event alone.

Type-level checks of a ``NetworkConfig`` belong to ``schemas.netconfig.validate``;
the checks that need the real device (its MTU range, the address families it
will have once the host's addresses move with it) are made here.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from schemas.inventory import InventorySnapshot
from schemas.netconfig import (
    SLAAC,
    UNNUMBERED,
    NetworkConfig,
    addressing,
    child_kind,
    defaulted,
)
from schemas.plumber import Prepare
from schemas.text import q
from services.plumber.children import share_key
from services.plumber.model import ClaimPlan, PlannedDevice, RouteRec
from services.plumber.netops import LinkRec

MIN_MTU_V6 = 1280

log = logging.getLogger("knd.plumber.plan")


class PlanError(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass
class HostFacts:
    """What prepare needs to know about the host netns, read by the service."""

    links: dict[str, LinkRec] = field(default_factory=dict)
    uplinks: set[int] = field(default_factory=set)
    addresses: dict[str, list[str]] = field(default_factory=dict)
    """Global addresses (CIDR) of each candidate interface: they move with it by default."""
    routes: dict[str, list[RouteRec]] = field(default_factory=dict)
    """Routes of each candidate interface in every table: they move with it, always."""


def cdi_kind(driver: str) -> str:
    return f"{driver}/net"


def cdi_name(claim_uid: str, device: str) -> str:
    return f"{claim_uid}-{device}"


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _iface(value: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    if "/" not in value:
        return None
    try:
        return ipaddress.ip_interface(value)
    except ValueError:
        return None


def schema_errors(cfg: NetworkConfig) -> list[str]:
    """The type-level rules: ``schemas.netconfig.validate`` (looked up at call time).

    Without it only the kernel judges the values at attach time, and attach
    rolls back what it refuses.
    """
    from schemas import netconfig

    validate = getattr(netconfig, "validate", None)
    if not callable(validate):
        log.warning("schemas.netconfig.validate is missing: claim configs are not checked "
                    "before attach")
        return []
    return list(validate(cfg))


def child_errors(cfg: NetworkConfig, link: LinkRec) -> list[str]:
    """A child of ``link`` (DRANET's rules for a subinterface, knd's for its parent)."""
    i, kind = cfg.interface, child_kind(cfg.interface)
    errs = []
    if link.master:
        errs.append(f"interface.type: {link.name} is a port of another interface (index "
                    f"{link.master}), which holds its receive path: it cannot host a "
                    f"{kind} child")
    if i.mtu is not None and i.mtu > link.mtu:
        errs.append(f"interface.mtu: {i.mtu} is above the MTU of the parent {link.name} "
                    f"({link.mtu}); a {kind} child cannot exceed it")
    if i.mtu is None and link.mtu < MIN_MTU_V6:
        v6 = [f for f in ("acceptRA", "dadTransmits", "routerSolicitationDelay",
                          "routerSolicitationInterval", "addrGenMode") if getattr(i, f) is not None]
        if v6 or addressing(i) == SLAAC:
            errs.append(f"interface.{v6[0] if v6 else 'addressing'}: needs IPv6, but the "
                        f"parent {link.name} has an MTU of {link.mtu} (< {MIN_MTU_V6}) and "
                        "the claim sets no mtu")
    if not i.addresses and addressing(i) not in (SLAAC, UNNUMBERED):
        errs.append(f"interface.addresses: a {kind} child gets no address of its parent's; "
                    "set interface.addresses, or interface.addressing SLAAC or Unnumbered")
    return errs


def device_errors(cfg: NetworkConfig, link: LinkRec, host_addrs: Iterable[str]) -> list[str]:
    """Checks against the real interface (only for a config whose values parse)."""
    errs: list[str] = []
    i = cfg.interface
    # a lease is IPv4 and unknown until attach; the host's addresses stay home
    addrs = [] if i.dhcp else [a for a in (_iface(x) for x in (i.addresses or list(host_addrs)))
                               if a]
    slaac = addressing(i) == SLAAC  # an IPv6 address, known only once a router sends it
    versions = {a.version for a in addrs} | ({4} if i.dhcp else set()) | ({6} if slaac else set())
    if i.dhcp and len(bytes.fromhex(link.mac.replace(":", "") or "")) != 6:
        errs.append(f"interface.dhcp: {link.name} has no Ethernet address to ask a DHCP "
                    "lease for")
    if i.mtu is not None:
        if link.max_mtu and i.mtu > link.max_mtu:
            errs.append(f"interface.mtu: {i.mtu} is above the maximum of {link.name} "
                        f"({link.max_mtu})")
        if link.min_mtu and i.mtu < link.min_mtu:
            errs.append(f"interface.mtu: {i.mtu} is below the minimum of {link.name} "
                        f"({link.min_mtu})")
        if 6 in versions and i.mtu < MIN_MTU_V6:
            errs.append(f"interface.mtu: must be >= {MIN_MTU_V6} with IPv6 addresses")
    for knob in ("gsoMaxSize", "gsoIPv4MaxSize"):
        size = getattr(i, knob)
        if size is not None and link.tso_max_size and size > link.tso_max_size:
            errs.append(f"interface.{knob}: {size} is above what {link.name} can segment "
                        f"(tso_max_size {link.tso_max_size})")
    ips = {a.ip for a in addrs}
    for n, r in enumerate(cfg.routes):
        gw = _ip(r.gateway) if r.gateway else None
        if gw is not None and gw.version not in versions and not gw.is_link_local:
            errs.append(f"routes[{n}].gateway: IPv{gw.version} gateway {r.gateway} but the "
                        f"interface gets no IPv{gw.version} address")
        src = _ip(r.source) if r.source else None
        if src is not None and not i.dhcp and src not in ips \
                and not (slaac and src.version == 6):
            errs.append(f"routes[{n}].source: {r.source} is not an address of the interface")
    return errs


def host_route_errors(cfg: NetworkConfig, link: LinkRec,
                      host_routes: Iterable[RouteRec]) -> list[str]:
    """The host's routes of the interface move with it, as in DRANET, also when the
    config gives it other addresses; one the pod could not hold is refused here, with
    the device still at home (DRANET fails the pod when it starts)."""
    addrs = [a for a in (_iface(x) for x in cfg.interface.addresses) if a]
    if not addrs:
        return []  # the host's addresses move too: the routes work as they did
    nets = [a.network for a in addrs]
    routes = list(host_routes)
    for want in cfg.routes:  # a config route without gateway reaches gateways too
        if want.destination and not want.gateway and (net := _net(want.destination)):
            nets.append(net)
    nets += [n for r in routes if not r.gateway and (n := _net(r.dst))]
    ips = {a.ip for a in addrs}
    errs = []
    for r in routes:
        what = f"host route {r.dst}" + (f" (table {r.table})" if r.table != 254 else "")
        gw = _ip(r.gateway) if r.gateway else None
        if gw is not None and not r.onlink and not gw.is_link_local \
                and not any(gw in n for n in nets if n.version == gw.version):
            errs.append(f"interface.addresses: {what} via {r.gateway} of {link.name} moves "
                        "with the interface, but no configured address reaches its gateway")
        src = _ip(r.prefsrc) if r.prefsrc else None
        if src is not None and src not in ips:
            errs.append(f"interface.addresses: {what} of {link.name} moves with the "
                        f"interface, but its source {r.prefsrc} is not a configured address")
    return errs


def _net(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None


def config_errors(cfg: NetworkConfig, link: LinkRec | None, host_addrs: Iterable[str],
                  host_routes: Iterable[RouteRec] = ()) -> list[str]:
    errs = schema_errors(cfg)
    if not errs and link is not None:
        cfg = defaulted(cfg)
        if child_kind(cfg.interface):  # nothing of the parent's goes into the pod
            errs += child_errors(cfg, link)
            errs += device_errors(cfg, link, [])
        else:
            errs += device_errors(cfg, link, host_addrs)
            errs += host_route_errors(cfg, link, host_routes)
    return errs


def sharing_errors(device: str, cfg: NetworkConfig | None,
                   holders: list[tuple[str, str]]) -> list[str]:
    """Whether ``device`` may be prepared with ``cfg`` while ``holders`` (other claims,
    each with its :func:`share_key`) have it: only children of one kind and mode share."""
    if not holders:
        return []
    mine = share_key(cfg)
    others = ", ".join(sorted(uid for uid, _ in holders))
    alone = [uid for uid, key in holders if not key]
    if not mine:
        return [f"device: {q(device)} is already prepared for claim {others}; a device is "
                "moved into one pod only, and shared only as ipvlan or macvlan children "
                "(config.interface.type)"]
    if alone:
        return [f"device: {q(device)} is already prepared for claim "
                f"{', '.join(sorted(alone))}, which moves it into its pod"]
    differ = sorted({key for _, key in holders if key != mine})
    if differ:
        return [f"config.interface.type: {mine} cannot share {q(device)} with the "
                f"{' / '.join(differ)} children of claim {others}: one parent has one ipvlan "
                "mode and flag, and cannot host ipvlan and macvlan children at once"]
    return []


def plan_claim(req: Prepare, *, node: str, driver: str, inventory: InventorySnapshot | None,
               host: HostFacts, held: dict[str, list[tuple[str, str]]]) -> ClaimPlan:
    """Resolve ``req`` or raise PlanError listing every problem found.

    ``held`` maps devices to the other claims that have them prepared, each with its
    :func:`share_key` (how it uses the device).
    """
    errs: list[str] = []
    if not req.claim_uid:
        errs.append("claim_uid: must not be empty")
    if inventory is None:
        raise PlanError([*errs, "devices: this node's inventory is not known yet "
                                "(is discovery running?)"])
    by_name = {d.name: d for d in inventory.devices}
    planned: list[PlannedDevice] = []
    seen: dict[str, int] = {}
    names: dict[str, int] = {}
    for n, dr in enumerate(req.devices):
        p = f"devices[{n}]"
        if dr.pool != node:
            errs.append(f"{p}.pool: {q(dr.pool)} is not this node's pool {q(node)}")
            continue
        dev = by_name.get(dr.device)
        if dev is None:
            errs.append(f"{p}.device: {q(dr.device)} is not in this node's inventory")
            continue
        if dr.device in seen:
            errs.append(f"{p}.device: {q(dr.device)} is also devices[{seen[dr.device]}]")
            continue
        seen[dr.device] = n
        shared = sharing_errors(dr.device, dr.config, held.get(dr.device, []))
        if shared:
            errs += [f"{p}.{e}" for e in shared]
            continue
        ifname = dev.attributes.get(f"{driver}/ifName")
        rdma = dev.attributes.get(f"{driver}/rdmaDevice")
        ifname = ifname if isinstance(ifname, str) else ""
        rdma = rdma if isinstance(rdma, str) else ""
        cfg = dr.config or NetworkConfig()
        link = host.links.get(ifname) if ifname else None
        if not ifname and not rdma:
            errs.append(f"{p}.device: {q(dr.device)} has neither a network interface nor "
                        "an RDMA device")
            continue
        if ifname and link is None:
            errs.append(f"{p}.device: interface {q(ifname)} of {q(dr.device)} is not in the "
                        "host network namespace")
            continue
        if link is not None and link.index in host.uplinks:
            errs.append(f"{p}.device: {q(dr.device)} ({ifname}) carries the node's default "
                        "route and cannot be given to a pod")
            continue
        if not ifname and dr.config is not None and dr.config != NetworkConfig():
            errs.append(f"{p}.config: {q(dr.device)} has no network interface to configure")
            continue
        cerrs = config_errors(cfg, link, host.addresses.get(ifname, []),
                              host.routes.get(ifname, []))
        errs += [f"{p}.config.{e}" for e in cerrs]
        pod_ifname = cfg.interface.name or ifname
        if pod_ifname:
            if pod_ifname in names:
                errs.append(f"{p}.config.interface.name: {q(pod_ifname)} is also the name of "
                            f"devices[{names[pod_ifname]}] in the pod")
            names[pod_ifname] = n
        planned.append(PlannedDevice(
            request=dr.request, pool=dr.pool, device=dr.device, share_id=dr.share_id,
            ifname=ifname, pod_ifname=pod_ifname, rdma_device=rdma, config=dr.config,
            cdi_id=f"{cdi_kind(driver)}={cdi_name(req.claim_uid, dr.device)}",
            published=dev))
    if errs:
        raise PlanError(errs)
    return ClaimPlan(uid=req.claim_uid, namespace=req.namespace, name=req.name,
                     pods=list(req.pods), devices=planned)
