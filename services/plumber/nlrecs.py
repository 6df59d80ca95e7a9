"""Netlink messages to the plumber's records and back: links, addresses, routes,
neighbours and policy rules as :mod:`netops` reads and writes them."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from schemas.netconfig import RuleConfig
from services.plumber.model import FOREVER, AddrRec, NeighRec, RouteRec, RuleRec

IFF_UP = 0x1
RTPROT_KERNEL = 2
RT_TABLE_MAIN, RT_TABLE_LOCAL = 254, 255
RTN_UNICAST = 1
RTNH_F_ONLINK = 0x4
RT_SCOPE_LINK = 253
NUD_PERMANENT = 0x80
NTF_PROXY = 0x08
FR_ACT_TO_TBL = 1
IFA_F_TEMPORARY = 0x01
KEPT_IFA_FLAGS = 0x02 | 0x10 | 0x100 | 0x200 | 0x400
"""nodad, homeaddress, mngtmpaddr, noprefixroute, mcautojoin: what ``ip addr add`` can set."""
RULE_KEPT_ATTRS = {"FRA_TABLE", "FRA_PRIORITY", "FRA_SRC", "FRA_DST", "FRA_PROTOCOL",
                   "FRA_SUPPRESS_PREFIXLEN"}
"""A rule with only these is reproduced exactly from priority, prefixes and table."""
NO_SUPPRESS = 0xFFFFFFFF


@dataclass(frozen=True)
class LinkRec:
    index: int
    name: str
    kind: str
    mtu: int
    mac: str
    up: bool
    min_mtu: int = 0
    max_mtu: int = 0
    gso_max_size: int = 0
    gro_max_size: int = 0
    gso_ipv4_max_size: int = 0
    gro_ipv4_max_size: int = 0
    tso_max_size: int = 0
    master: int = 0
    vrf_table: int = 0
    addr_gen_mode: int | None = None
    """IPv6 address generation mode (``net.ipv6.conf.<if>.addr_gen_mode``), from the
    link message: the kernel takes RTNL to read that sysctl, not to send this."""


def addr_gen_mode(msg: Any) -> int | None:
    spec = msg.get("af_spec")
    inet6 = spec.get_attr("AF_INET6") if spec is not None else None
    return inet6.get_attr("IFLA_INET6_ADDR_GEN_MODE") if inet6 is not None else None


def link_rec(msg: Any) -> LinkRec:
    return LinkRec(
        index=msg["index"], name=msg.get("ifname") or "", kind=msg.get(("linkinfo", "kind")) or "",
        mtu=msg.get("mtu") or 0, mac=msg.get("address") or "", up=bool(msg["flags"] & IFF_UP),
        min_mtu=msg.get("min_mtu") or 0, max_mtu=msg.get("max_mtu") or 0,
        gso_max_size=msg.get("gso_max_size") or 0, gro_max_size=msg.get("gro_max_size") or 0,
        gso_ipv4_max_size=msg.get("gso_ipv4_max_size") or 0,
        gro_ipv4_max_size=msg.get("gro_ipv4_max_size") or 0,
        tso_max_size=msg.get("tso_max_size") or 0, master=msg.get("master") or 0,
        vrf_table=msg.get(("linkinfo", "data", "vrf_table")) or 0,
        addr_gen_mode=addr_gen_mode(msg))


def addr_rec(msg: Any, ifname: str) -> AddrRec | None:
    family, scope = msg["family"], msg["scope"]
    flags = msg.get("flags") or msg["flags"]
    if flags & IFA_F_TEMPORARY or (family == socket.AF_INET6 and scope == RT_SCOPE_LINK):
        return None  # made by the kernel again (privacy and link-local addresses)
    ip = msg.get("local") or msg.get("address")
    if not ip:
        return None
    cache = msg.get("cacheinfo") or {}
    label = msg.get("label") or ""
    return AddrRec(cidr=f"{ip}/{msg['prefixlen']}", scope=scope,
                   broadcast=msg.get("broadcast") or "",
                   label=label if label and label != ifname else "",
                   flags=flags & KEPT_IFA_FLAGS,
                   valid=cache.get("ifa_valid", FOREVER),
                   preferred=cache.get("ifa_preferred", FOREVER))


def route_rec(msg: Any) -> RouteRec:
    family = msg["family"]
    zero = "0.0.0.0" if family == socket.AF_INET else "::"
    return RouteRec(family=family, dst=f"{msg.get('dst') or zero}/{msg['dst_len']}",
                    gateway=msg.get("gateway") or "", prefsrc=msg.get("prefsrc") or "",
                    priority=msg.get("priority") or 0,
                    table=msg.get("table") or msg["table"], scope=msg["scope"],
                    proto=msg["proto"], type=msg["type"],
                    onlink=bool(msg["flags"] & RTNH_F_ONLINK))


def route_kwargs(index: int, r: RouteRec) -> dict[str, Any]:
    net = ipaddress.ip_network(r.dst, strict=False)
    kw: dict[str, Any] = {"family": r.family, "dst_len": net.prefixlen, "oif": index,
                          "table": r.table, "scope": r.scope, "proto": r.proto, "type": r.type}
    if net.prefixlen:
        kw["dst"] = str(net.network_address)
    for key, value in (("gateway", r.gateway), ("prefsrc", r.prefsrc),
                       ("priority", r.priority)):
        if value:
            kw[key] = value
    if r.onlink:
        kw["flags"] = RTNH_F_ONLINK
    return kw


def rule_kwargs(rule: RuleConfig) -> dict[str, Any]:
    family = socket.AF_INET
    kw: dict[str, Any] = {"table": rule.table or RT_TABLE_MAIN}
    for side, value in (("src", rule.source), ("dst", rule.destination)):
        if value:
            net = ipaddress.ip_network(value, strict=False)
            family = socket.AF_INET6 if net.version == 6 else socket.AF_INET
            kw[side] = str(net.network_address)
            kw[f"{side}_len"] = net.prefixlen
    kw["family"] = family
    if rule.priority:
        kw["priority"] = rule.priority
    return kw


def neigh_rec(msg: Any) -> NeighRec | None:
    """A permanent neighbour with an address and a link-layer address, or None."""
    dst, lladdr = msg.get("dst"), msg.get("lladdr")
    if not msg["state"] & NUD_PERMANENT or msg["flags"] & NTF_PROXY or not dst or not lladdr:
        return None
    return NeighRec(dst=dst, lladdr=lladdr)


def rule_rec(msg: Any) -> tuple[RuleRec, bool] | None:
    """A lookup rule of IPv4 or IPv6 and whether its priority, prefixes and table say all
    it does (no iif, fwmark, tos, ... selectors); None for other rules."""
    family = msg["family"]
    if family not in (socket.AF_INET, socket.AF_INET6) or msg["action"] != FR_ACT_TO_TBL:
        return None
    src, dst = msg.get("src"), msg.get("dst")
    rec = RuleRec(family=family, table=msg.get("table") or msg["table"],
                  priority=msg.get("priority") or 0,
                  src=f"{src}/{msg['src_len']}" if src else "",
                  dst=f"{dst}/{msg['dst_len']}" if dst else "")
    exact = (not msg["tos"] and not msg["flags"]
             and all(name in RULE_KEPT_ATTRS for name, _ in msg["attrs"])
             and msg.get("suppress_prefixlen", NO_SUPPRESS) == NO_SUPPRESS)
    return rec, exact


def host_rule_kwargs(rule: RuleRec) -> dict[str, Any]:
    kw: dict[str, Any] = {"family": rule.family, "table": rule.table}
    for side, value in (("src", rule.src), ("dst", rule.dst)):
        if value:
            net = ipaddress.ip_network(value, strict=False)
            kw[side] = str(net.network_address)
            kw[f"{side}_len"] = net.prefixlen
    if rule.priority:
        kw["priority"] = rule.priority
    return kw
