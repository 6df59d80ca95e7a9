"""What an attach puts into the pod besides the interface: its configured addresses
and routes as kernel records, and the host's policy rules that go with it."""

from __future__ import annotations

import ipaddress
import logging
import socket

from schemas.netconfig import RouteConfig, RuleConfig
from services.plumber.model import AddrRec, LinkSnapshot, RouteRec, RuleRec
from services.plumber.netops import RT_SCOPE_LINK, Rtnl
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


