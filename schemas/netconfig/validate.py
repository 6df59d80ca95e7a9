"""The checks a well-typed configuration must pass: CIDRs, address families, kernel
name rules and ranges, each problem a line starting with its field path."""

from __future__ import annotations

import ipaddress
import re

from schemas.netconfig.kinds import DHCP, addressing, validate_kind
from schemas.netconfig.types import (
    InterfaceConfig,
    NeighborConfig,
    NetworkConfig,
    RouteConfig,
    RuleConfig,
    VRFConfig,
)

MAX_PARAMETERS = 10 * 1024
"""Bytes of one opaque ``parameters`` object (the API server's limit), as compact JSON."""
IFNAMSIZ = 16
"""The kernel's interface name buffer, NUL included: names have at most 15 bytes."""
MAX_ADDRESSES = 16
"""A claim's ``networkData.ips`` holds 16 addresses; more could not be reported."""
MTU_MIN, MTU_MAX, MTU_MIN_IPV6 = 68, 65535, 1280
OFFLOAD_MAX = 524280
"""Largest GSO/GRO size the kernel accepts (BIG TCP: 512 KiB less 8)."""
SCOPES = {0: "universe", 253: "link", 254: "host"}
TABLE_MAX = 2**32 - 1
TABLE_LOCAL = 255
ARP_IGNORE = (0, 1, 2, 3, 8)
"""The kernel's arp_ignore modes; 4-7 are reserved."""
ARP_ANNOUNCE_MAX = 2
VRF_RESERVED_TABLES = (253, 254, 255)
"""default, main, local: a VRF's own table must be none of them (DRANET's rule)."""
VRF_TABLE_OFFSET, VRF_TABLE_SPAN = 1000, 1000
RULE_PRIORITY_MAX = 32766
"""32767 is the kernel's default rule."""
ETHTOOL_NAME_MAX = 32

SYSCTLS: dict[str, dict[str, tuple[int, int]]] = {
    "ipv4": {
        "accept_local": (0, 1), "accept_redirects": (0, 1), "accept_source_route": (0, 1),
        "arp_accept": (0, 2), "arp_announce": (0, 2), "arp_evict_nocarrier": (0, 1),
        "arp_filter": (0, 1), "arp_ignore": (0, 8), "arp_notify": (0, 1),
        "bc_forwarding": (0, 1), "drop_gratuitous_arp": (0, 1),
        "drop_unicast_in_l2_multicast": (0, 1), "forwarding": (0, 1),
        "ignore_routes_with_linkdown": (0, 1), "log_martians": (0, 1),
        "promote_secondaries": (0, 1), "proxy_arp": (0, 1), "proxy_arp_pvlan": (0, 1),
        "route_localnet": (0, 1), "rp_filter": (0, 2), "secure_redirects": (0, 1),
        "send_redirects": (0, 1), "src_valid_mark": (0, 1),
    },
    "ipv6": {
        "accept_dad": (0, 2), "accept_ra": (0, 2), "accept_ra_defrtr": (0, 1),
        "accept_ra_pinfo": (0, 1), "accept_ra_rtr_pref": (0, 1), "accept_redirects": (0, 1),
        "accept_source_route": (0, 1), "accept_untracked_na": (0, 2), "addr_gen_mode": (0, 3),
        "autoconf": (0, 1), "dad_transmits": (0, 10), "disable_ipv6": (0, 1),
        "drop_unicast_in_l2_multicast": (0, 1), "drop_unsolicited_na": (0, 1),
        "forwarding": (0, 1), "hop_limit": (1, 255), "ignore_routes_with_linkdown": (0, 1),
        "keep_addr_on_down": (-1, 1), "mtu": (MTU_MIN_IPV6, MTU_MAX), "ndisc_notify": (0, 1),
        "proxy_ndp": (0, 1), "router_solicitations": (-1, 100), "seg6_enabled": (0, 1),
        "use_tempaddr": (-1, 2),
    },
}
"""Per-interface sysctls a claim may set, ``family -> name -> (min, max)``: the
``net.<family>.conf.<ifname>.<name>`` knobs that shape one interface's ARP/ND,
routing and address behaviour and nothing else in the pod. Keys of
``NetworkConfig.sysctls`` are ``"<family>.<name>"``, e.g. ``"ipv4.arp_ignore"``."""

_ETHTOOL_NAME = re.compile(r"[A-Za-z0-9_-]+")
_INT = re.compile(r"-?[0-9]{1,10}")
_MAC = re.compile(r"[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}")

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# ---- value parsers: the reason a value is wrong, or the parsed value --------------------


def _ip(text: str) -> IP | str:
    if "/" in text:
        return f"{text!r} is a CIDR, expected a single IP address"
    if "%" in text:
        return f"{text!r} has a zone; zones are not supported"
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return f"{text!r} is not an IP address"


def _prefix_ok(text: str) -> str | None:
    addr, sep, prefix = text.partition("/")
    if not sep:
        return f"{text!r} is not a CIDR (address/prefix length)"
    if "%" in addr:
        return f"{text!r} has a zone; zones are not supported"
    if not prefix.isascii() or not prefix.isdigit():
        return f"{text!r} has an invalid prefix length (expected a decimal number)"
    return None


def _interface_address(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | str:
    bad = _prefix_ok(text)
    if bad:
        return bad
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        return f"{text!r} is not a CIDR"
    ip, net = iface.ip, iface.network
    if ip.is_unspecified or ip.is_multicast:
        return f"{text!r} is not a host address"
    if ip.version == 4 and net.prefixlen <= 30 and ip in (net.network_address,
                                                          net.broadcast_address):
        which = "network" if ip == net.network_address else "broadcast"
        return f"{text!r} is the {which} address of {net}, not a host address"
    return iface


def _network(text: str) -> Network | str:
    bad = _prefix_ok(text)
    if bad:
        return bad
    try:
        return ipaddress.ip_network(text)
    except ValueError as exc:
        if "host bits set" in str(exc):
            return (f"{text!r} has host bits set (the network is "
                    f"{ipaddress.ip_network(text, strict=False)})")
        return f"{text!r} is not a CIDR"


def _mac(text: str, *, unicast: bool) -> str | None:
    if not _MAC.fullmatch(text):
        return f"{text!r} is not a MAC address (6 octets like 02:00:00:00:00:01)"
    octets = bytes.fromhex(text.replace(":", "").replace("-", ""))
    if not any(octets):
        return f"{text!r} is the all-zero MAC address"
    if unicast and octets[0] & 1:
        return f"{text!r} is a multicast MAC address"
    return None


def _int_range(errors: list[str], path: str, value: int | None, lo: int, hi: int) -> None:
    if value is not None and not lo <= value <= hi:
        errors.append(f"{path}: {value} is out of range ({lo}..{hi})")


# ---- the rules -------------------------------------------------------------------------


def validate(cfg: NetworkConfig) -> list[str]:
    """Every problem of ``cfg`` (already well-typed), each ``"<field path>: <why>"``.

    Paths are relative to the configuration (``interface.addresses[1]``); an empty
    list means valid. See the module docstring for the rules.
    """
    errors: list[str] = []
    families = _validate_interface(cfg.interface, errors)
    for i, route in enumerate(cfg.routes):
        _validate_route(route, f"routes[{i}]", errors)
    if cfg.rules and cfg.interface.vrf is not None:
        # DRANET's rule: the VRF device steers lookups to its table (l3mdev), not rules
        errors.append("rules: not supported with interface.vrf (the VRF's table is used)")
    for i, rule in enumerate(cfg.rules):
        _validate_rule(rule, f"rules[{i}]", errors)
    seen: dict[IP, int] = {}
    for i, neigh in enumerate(cfg.neighbors):
        _validate_neighbor(neigh, f"neighbors[{i}]", i, seen, errors)
    if cfg.ethtool is not None:
        for kind in ("features", "privateFlags"):
            for name in getattr(cfg.ethtool, kind):
                where = f"ethtool.{kind}[{name}]"
                if not name or len(name) > ETHTOOL_NAME_MAX or not _ETHTOOL_NAME.fullmatch(name):
                    errors.append(f"{where}: a name must have 1..{ETHTOOL_NAME_MAX} characters "
                                  "of A-Z a-z 0-9 _ -")
    for key, value in cfg.sysctls.items():
        _validate_sysctl(key, value, families, errors)
    return errors


def vrf_table(vrf: VRFConfig) -> int:
    """The VRF's routing table: its own, or DRANET's default for the name (FNV-1a 32 of
    the UTF-8 name, mod 1000, plus 1000), so every device naming a VRF shares a table."""
    if vrf.table is not None:
        return vrf.table
    h = 0x811C9DC5
    for byte in vrf.name.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h % VRF_TABLE_SPAN + VRF_TABLE_OFFSET


def _ifname(name: str, where: str, errors: list[str]) -> None:
    if not name:
        return
    if len(name.encode()) >= IFNAMSIZ:
        errors.append(f"{where}: {name!r} is longer than {IFNAMSIZ - 1} bytes")
    if name in (".", ".."):
        errors.append(f"{where}: {name!r} is not a valid interface name")
    bad = sorted({c for c in name if c in "/:\0" or c.isspace()})
    if bad:
        errors.append(f"{where}: {name!r} contains {', '.join(map(repr, bad))}, "
                      "which interface names cannot")


def _validate_vrf(iface: InterfaceConfig, errors: list[str]) -> None:
    vrf = iface.vrf
    if vrf is None:
        return
    if not vrf.name:
        errors.append("interface.vrf.name: required (the VRF device's name in the pod)")
    _ifname(vrf.name, "interface.vrf.name", errors)
    if vrf.name and vrf.name == iface.name:
        errors.append(f"interface.vrf.name: {vrf.name!r} is also interface.name; the VRF is "
                      "a device of its own")
    if vrf.table is not None:
        if not 0 < vrf.table <= TABLE_MAX:
            errors.append(f"interface.vrf.table: {vrf.table} is out of range (1..{TABLE_MAX})")
        elif vrf.table in VRF_RESERVED_TABLES:
            errors.append(f"interface.vrf.table: {vrf.table} is a reserved table (253 default, "
                          "254 main, 255 local)")


def _validate_interface(iface: InterfaceConfig, errors: list[str]) -> set[int]:
    """Check ``interface``; return the IP versions of its addresses."""
    _ifname(iface.name, "interface.name", errors)
    families: set[int] = set()
    if len(iface.addresses) > MAX_ADDRESSES:
        errors.append(f"interface.addresses: {len(iface.addresses)} addresses, more than the "
                      f"{MAX_ADDRESSES} a claim's status can report")
    seen: dict[IP, int] = {}
    for i, text in enumerate(iface.addresses):
        where = f"interface.addresses[{i}]"
        got = _interface_address(text)
        if isinstance(got, str):
            errors.append(f"{where}: {got}")
            continue
        families.add(got.version)
        if got.ip in seen:
            errors.append(f"{where}: {got.ip} is already in interface.addresses[{seen[got.ip]}]")
        else:
            seen[got.ip] = i
    if iface.mtu is not None:
        if not MTU_MIN <= iface.mtu <= MTU_MAX:
            errors.append(f"interface.mtu: {iface.mtu} is out of range ({MTU_MIN}..{MTU_MAX})")
        elif 6 in families and iface.mtu < MTU_MIN_IPV6:
            errors.append(f"interface.mtu: {iface.mtu} is below {MTU_MIN_IPV6}, the minimum "
                          "for IPv6 (interface.addresses has an IPv6 address)")
    if iface.hardwareAddr is not None:
        bad_mac = _mac(iface.hardwareAddr, unicast=True)
        if bad_mac:
            errors.append(f"interface.hardwareAddr: {bad_mac}")
    if addressing(iface) == DHCP and iface.addresses:
        field = "dhcp" if iface.dhcp else "addressing"
        errors.append(f"interface.{field}: DHCP and interface.addresses are mutually "
                      "exclusive")
    for field in ("gsoMaxSize", "groMaxSize", "gsoIPv4MaxSize", "groIPv4MaxSize"):
        _int_range(errors, f"interface.{field}", getattr(iface, field), 1, OFFLOAD_MAX)
    if iface.arpIgnore is not None and iface.arpIgnore not in ARP_IGNORE:
        errors.append(f"interface.arpIgnore: {iface.arpIgnore} is not one of 0, 1, 2, 3, 8")
    _int_range(errors, "interface.arpAnnounce", iface.arpAnnounce, 0, ARP_ANNOUNCE_MAX)
    _validate_vrf(iface, errors)
    validate_kind(iface, families, MTU_MIN_IPV6, errors)
    return families


def _validate_route(route: RouteConfig, where: str, errors: list[str]) -> None:
    family = 0  # the route's IP version once known
    if route.destination:
        dest = _network(route.destination)
        if isinstance(dest, str):
            errors.append(f"{where}.destination: {dest}")
        else:
            family = dest.version
    elif not route.gateway:
        errors.append(f"{where}.destination: required when there is no gateway (empty "
                      "means the default route, which needs a gateway)")
    for field in ("gateway", "source"):
        text = getattr(route, field)
        if not text:
            continue
        ip = _ip(text)
        if isinstance(ip, str):
            errors.append(f"{where}.{field}: {ip}")
        elif ip.is_unspecified or ip.is_multicast:
            errors.append(f"{where}.{field}: {text!r} is not a unicast address")
        elif family and ip.version != family:
            errors.append(f"{where}.{field}: {text!r} is IPv{ip.version} but the route is "
                          f"IPv{family}")
        else:
            family = ip.version
    if route.scope not in SCOPES:
        names = ", ".join(f"{n} ({s})" for n, s in SCOPES.items())
        errors.append(f"{where}.scope: {route.scope} is not one of {names}")
    elif route.gateway and route.scope != 0:
        errors.append(f"{where}.scope: a route via a gateway must have scope universe (0), "
                      f"not {SCOPES[route.scope]} ({route.scope})")
    if not 0 <= route.table <= TABLE_MAX:
        errors.append(f"{where}.table: {route.table} is out of range (0..{TABLE_MAX})")
    elif route.table == TABLE_LOCAL:
        errors.append(f"{where}.table: {TABLE_LOCAL} is the kernel's local table")


def _validate_rule(rule: RuleConfig, where: str, errors: list[str]) -> None:
    _int_range(errors, f"{where}.priority", rule.priority, 0, RULE_PRIORITY_MAX)
    if rule.table == 0:
        errors.append(f"{where}.table: required")
    elif not 0 < rule.table <= TABLE_MAX:
        errors.append(f"{where}.table: {rule.table} is out of range (1..{TABLE_MAX})")
    elif rule.table == TABLE_LOCAL:
        errors.append(f"{where}.table: {TABLE_LOCAL} is the kernel's local table")
    family = 0
    for field in ("source", "destination"):
        text = getattr(rule, field)
        if not text:
            continue
        net = _network(text)
        if isinstance(net, str):
            errors.append(f"{where}.{field}: {net}")
        elif family and net.version != family:
            errors.append(f"{where}.{field}: {text!r} is IPv{net.version} but "
                          f"{where}.source is IPv{family}")
        else:
            family = net.version


def _validate_neighbor(neigh: NeighborConfig, where: str, index: int, seen: dict[IP, int],
                       errors: list[str]) -> None:
    if not neigh.destination:
        errors.append(f"{where}.destination: required")
    else:
        ip = _ip(neigh.destination)
        if isinstance(ip, str):
            errors.append(f"{where}.destination: {ip}")
        elif ip.is_unspecified or ip.is_multicast:
            errors.append(f"{where}.destination: {neigh.destination!r} is not a unicast address")
        elif ip in seen:
            errors.append(f"{where}.destination: {ip} is already in neighbors[{seen[ip]}]")
        else:
            seen[ip] = index
    if not neigh.hardwareAddr:
        errors.append(f"{where}.hardwareAddr: required")
    else:
        bad = _mac(neigh.hardwareAddr, unicast=False)
        if bad:
            errors.append(f"{where}.hardwareAddr: {bad}")


def _validate_sysctl(key: str, value: str, families: set[int], errors: list[str]) -> None:
    where = f"sysctls[{key}]"
    family, sep, name = key.partition(".")
    allowed = SYSCTLS.get(family) if sep else None
    if allowed is None or name not in allowed:
        hint = [f"{f}.{key}" for f in SYSCTLS if key in SYSCTLS[f]] if not sep else []
        why = f"did you mean {' or '.join(hint)}?" if hint else \
            "not an allowed sysctl (see schemas.netconfig.SYSCTLS)"
        errors.append(f"{where}: {why}")
        return
    if not _INT.fullmatch(value):
        errors.append(f"{where}: {value!r} is not an integer")
        return
    lo, hi = allowed[name]
    if not lo <= int(value) <= hi:
        errors.append(f"{where}: {value} is out of range ({lo}..{hi})")
    elif key == "ipv6.disable_ipv6" and int(value) and 6 in families:
        errors.append(f"{where}: IPv6 is disabled but interface.addresses has IPv6 addresses")
