"""What an attach puts into the pod besides the interface (:func:`configure`): its
configured addresses and routes as kernel records, the host's policy rules that go
with it, GSO/GRO sizes, a VRF, a DHCP lease, neighbours, ethtool and sysctls."""

from __future__ import annotations

import ipaddress
import logging
import socket

import msgspec

from schemas.netconfig import (
    SLAAC,
    NetworkConfig,
    RouteConfig,
    RuleConfig,
    addressing,
    named_sysctls,
    vrf_table,
)
from services.plumber import devconf, dhcp, ebpf, features, slaac, vrf
from services.plumber.checkpoint import Checkpoint
from services.plumber.model import AddrRec, Attachment, LinkSnapshot, RouteRec, RuleRec
from services.plumber.netops import RT_SCOPE_LINK, LinkRec, Rtnl
from services.plumber.nlrecs import RT_TABLE_LOCAL, RT_TABLE_MAIN

log = logging.getLogger("knd.plumber.attach")

IFA_F_NODAD = 0x02
RTPROT_BOOT = 3


def config_address(cidr: str) -> AddrRec:
    """A configured address; IPv4 gets its broadcast, IPv6 skips DAD (it is ours)."""
    iface = ipaddress.ip_interface(cidr)
    if iface.version == 4:
        brd = str(iface.network.broadcast_address) if iface.network.prefixlen < 31 else ""
        return AddrRec(cidr=str(iface), broadcast=brd)
    return AddrRec(cidr=str(iface), flags=IFA_F_NODAD)


def config_route(r: RouteConfig) -> RouteRec:
    gw = ipaddress.ip_address(r.gateway) if r.gateway else None
    if r.destination:
        dst = ipaddress.ip_network(r.destination, strict=False)
    else:
        dst = ipaddress.ip_network("::/0" if gw and gw.version == 6 else "0.0.0.0/0")
    v6 = dst.version == 6
    scope = 0 if v6 else (r.scope or (0 if gw else RT_SCOPE_LINK))
    return RouteRec(family=socket.AF_INET6 if v6 else socket.AF_INET, dst=str(dst),
                    gateway=r.gateway, prefsrc=r.source, table=r.table or 254, scope=scope,
                    proto=RTPROT_BOOT)


def rule_key(r: RuleConfig) -> tuple:
    def net(v: str) -> str:
        return str(ipaddress.ip_network(v, strict=False)) if v else ""
    return (net(r.source), net(r.destination), r.table or 254, r.priority)


def rule_taken(rule: RuleConfig, existing: set[tuple]) -> bool:
    """A rule like ``rule`` is already there (any priority when ``rule`` sets none)."""
    key = rule_key(rule)
    return any(k[:3] == key[:3] and (not rule.priority or k[3] == rule.priority)
               for k in existing)


def _rec_key(r: RuleRec) -> tuple:
    def net(v: str) -> str:
        return str(ipaddress.ip_network(v, strict=False)) if v else ""
    return (r.family, net(r.src), net(r.dst), r.table, r.priority)


def _config_rec(r: RuleConfig) -> RuleRec:
    """A config rule as the kernel will hold it (IPv4 unless a prefix says otherwise)."""
    six = any(ipaddress.ip_network(v, strict=False).version == 6
              for v in (r.source, r.destination) if v)
    return RuleRec(family=socket.AF_INET6 if six else socket.AF_INET, table=r.table or 254,
                   priority=r.priority, src=r.source, dst=r.destination)


def host_route_step(r: RouteRec) -> str:
    return f"host route {r.dst}" + (f" (table {r.table})" if r.table != RT_TABLE_MAIN else "")


class RuleCopier:
    """Which host rules go into the pod with a device (DRANET): those that look up a
    table, other than main and local, where the device has a route. Each is copied
    once per pod, and not when the pod has it already or a config rule adds it."""

    def __init__(self, host: Rtnl, pod: Rtnl, config_rules: list[RuleConfig]) -> None:
        self.host, self.pod = host, pod
        self._host_rules: list[tuple[RuleRec, bool]] | None = None
        self._skip: set[tuple] | None = None
        self._config = {_rec_key(_config_rec(r)) for r in config_rules}

    async def rules_for(self, snap: LinkSnapshot, where: str) -> list[RuleRec]:
        tables = {r.table for r in snap.routes} - {RT_TABLE_MAIN, RT_TABLE_LOCAL}
        if not tables:
            return []
        if self._host_rules is None or self._skip is None:
            self._host_rules = await self.host.lookup_rules()
            in_pod = await self.pod.lookup_rules()
            self._skip = {_rec_key(r) for r, _ in in_pod} | self._config
        out = []
        for rule, exact in self._host_rules:
            if rule.table not in tables or _rec_key(rule) in self._skip:
                continue
            if not exact:  # DRANET would copy it without its other selectors
                log.warning("%s: host rule %s not copied into the pod: it matches on more "
                            "than priority, from and to", where, rule.describe())
                continue
            self._skip.add(_rec_key(rule))
            out.append(rule)
        return out


async def configure(cfg: NetworkConfig, att: Attachment, deadline: float, pod: Rtnl, fd: int,
                    link: LinkRec, store: Checkpoint) -> None:
    """Step 3 of an attach: configure ``link``, just moved into the pod (``fd`` its
    netns), as ``cfg`` says, with what the host had (``att.host``) where it says
    nothing. What a restore must undo besides the move (a VRF it made, the ethtool
    values before) goes into ``att`` and the checkpoint before it is changed."""
    snap = att.host
    assert snap is not None
    iface, idx, name = cfg.interface, link.index, link.name
    sizes = {k: v for k, v in (("gso_max_size", iface.gsoMaxSize),
                               ("gro_max_size", iface.groMaxSize),
                               ("gso_ipv4_max_size", iface.gsoIPv4MaxSize),
                               ("gro_ipv4_max_size", iface.groIPv4MaxSize)) if v}
    # a child had its sizes and sysctls before it came up (children.create), and has
    # nothing of its parent's: the snapshot of a parent holds no addresses or routes
    if sizes and not att.child:
        await pod.set_link("config.interface.gso/gro sizes", idx, **sizes)
    sysctls = devconf.interface_sysctls(name, cfg.sysctls, named_sysctls(iface))
    if not link.up and not att.child:  # moved down (SLAAC): the policy before the link
        await devconf.write_sysctls(fd, sysctls)
        await pod.set_link("link up", idx, state="up")
    # as DRANET: the host's routes of the interface, in every table, go too, with or
    # without configured addresses; one already there (a config route) is no error
    routes = [(f"config.routes[{n}]", config_route(r), False)
              for n, r in enumerate(cfg.routes)]
    if iface.dhcp:
        addrs, leased = await dhcp.configure(
            pod, fd, link, deadline, mtu=iface.mtu or 0,
            configured=[r for _, r, _ in routes])
        # a lease's route the pod has already (its primary network's default route,
        # typically) is left as it is, as DRANET does, rather than failing the pod
        routes = [(step, r, True) for step, r in leased] + routes
    elif iface.addresses:
        addrs = [(f"config.interface.addresses[{n}]", config_address(a))
                 for n, a in enumerate(iface.addresses)]
    else:  # DRANET's default: the host's addresses move with the interface; with SLAAC
        # only its IPv4 ones (IPv6 comes from the pod's own router advertisement)
        slaac_only = addressing(iface) == SLAAC
        addrs = [(f"host address {a.cidr}", a) for a in snap.addresses
                 if not (slaac_only and ":" in a.cidr)]
    if not iface.dhcp:  # with a lease the host's configuration stays home
        routes += [(host_route_step(r), r, True) for r in snap.routes]
    if iface.vrf is not None:  # before addresses: enslaving cycles the link
        table = vrf_table(iface.vrf)
        if not await pod.link(name=iface.vrf.name):
            att.vrf = iface.vrf.name  # the intent, before the VRF may exist
            store.put_attachment(att)
        await vrf.join(pod, fd, iface.vrf.name, table, idx)
        # DRANET's rule: every route of the interface is in the VRF's table
        routes = [(step, msgspec.structs.replace(r, table=table), ok)
                  for step, r, ok in routes]
    for step, a in addrs:
        await pod.add_address(step, idx, a)
    autoconf: list[str] = []
    if addressing(iface) == SLAAC:  # the pod starts with its address, or not at all; and
        # before routes: a gateway in the advertised prefix is reachable only then
        autoconf = await slaac.wait(pod, idx, name, deadline)
    for step, r, exist_ok in sorted(routes, key=lambda x: bool(x[1].gateway)):
        await pod.add_route(step, idx, r, exist_ok=exist_ok)
    for n, rule in enumerate(cfg.rules):
        await pod.add_rule(f"config.rules[{n}]", rule)
    for hr in att.host_rules:
        await pod.add_host_rule(f"host rule {hr.describe()}", hr)
    for n, nb in enumerate(cfg.neighbors):
        await pod.add_neighbour(f"config.neighbors[{n}]", idx, nb.destination,
                                nb.hardwareAddr)
    for hn in snap.neighbours:  # after the config's: DRANET lets those win
        await pod.add_neighbour(f"host neighbour {hn.dst}", idx, hn.dst, hn.lladdr,
                                exist_ok=True)
    if cfg.ethtool and cfg.ethtool.features:
        wanted = await features.kernel_bits(fd, name, cfg.ethtool.features)
        att.features = await devconf.feature_values(fd, name, list(wanted))
        store.put_attachment(att)
        await devconf.set_features(fd, name, wanted)
    if cfg.ethtool and cfg.ethtool.privateFlags:
        wanted = cfg.ethtool.privateFlags
        att.private_flags = await devconf.private_flag_values(fd, name, list(wanted))
        store.put_attachment(att)
        await devconf.set_private_flags(fd, name, wanted)
    if iface.disableEbpfPrograms:
        await ebpf.detach_programs(fd, idx, name)
    if link.up and not att.child:
        await devconf.write_sysctls(fd, sysctls)
    att.ips = [a.cidr for _, a in addrs] + autoconf
