"""What kind of interface a pod gets (``interface.type``: the device itself, or an
ipvlan / macvlan child of it), how it is addressed (``interface.addressing``) and the
IPv6 knobs that go with SLAAC: their rules, DRANET's defaults, and the per-interface
sysctls the named fields stand for."""

from __future__ import annotations

import msgspec

from schemas.netconfig.types import InterfaceConfig, IPVlanConfig, MacvlanConfig, NetworkConfig

PASSTHROUGH, IPVLAN, MACVLAN = "Passthrough", "IPVLAN", "MACVLAN"
TYPES = (PASSTHROUGH, IPVLAN, MACVLAN)
STATIC, DHCP, SLAAC, UNNUMBERED = "Static", "DHCP", "SLAAC", "Unnumbered"
ADDRESSING = (STATIC, DHCP, SLAAC, UNNUMBERED)
IPVLAN_MODES = ("L2", "L3", "L3S")
IPVLAN_FLAGS = ("Bridge", "Private", "VEPA")
MACVLAN_MODES = ("Bridge", "Private", "VEPA")
ADDR_GEN_RANDOM = 3
INT32_MAX = 2**31 - 1
"""A sysctl is a C int: larger values are refused by the kernel, so by us first."""

IPV6_FIELDS = ("acceptRA", "dadTransmits", "routerSolicitationDelay",
               "routerSolicitationInterval", "disableIPv6", "addrGenMode")
"""The named IPv6 knobs (DRANET's ``HasIPv6Sysctls``)."""


def canonical(value: str, allowed: tuple[str, ...]) -> str | None:
    """``value`` spelled as in ``allowed`` (DRANET's spelling), matched without case;
    None when it is none of them."""
    for name in allowed:
        if value.lower() == name.lower():
            return name
    return None


def interface_type(iface: InterfaceConfig) -> str:
    """``Passthrough``, ``IPVLAN`` or ``MACVLAN`` (an unknown type counts as
    passthrough here; :func:`validate_kind` refuses it)."""
    return canonical(iface.type, TYPES) or PASSTHROUGH if iface.type else PASSTHROUGH


def child_kind(iface: InterfaceConfig) -> str:
    """The kernel link kind of the child made in the pod: ``ipvlan``, ``macvlan``, or ""
    when the device itself moves."""
    kind = interface_type(iface)
    return "" if kind == PASSTHROUGH else kind.lower()


def addressing(iface: InterfaceConfig) -> str:
    """The addressing mode, DRANET's deprecated ``dhcp: true`` folded in."""
    if iface.addressing:
        return canonical(iface.addressing, ADDRESSING) or iface.addressing
    return DHCP if iface.dhcp else STATIC


def defaulted(cfg: NetworkConfig) -> NetworkConfig:
    """``cfg`` with DRANET's defaults filled in where it says nothing (a new struct;
    ``cfg`` is not changed): the child's mode and flag, ``dhcp`` from ``addressing:
    DHCP``, and for ``SLAAC`` the knobs that make a pod solicit and accept a router
    advertisement at once (accept_ra 2, so forwarding does not turn RAs off; no
    solicitation delay; a random address without DAD on a child, which shares its
    parent's hardware address)."""
    i = cfg.interface
    kind, mode = interface_type(i), addressing(i)
    changes: dict = {}
    if kind == IPVLAN:
        ipv = i.ipvlan or IPVlanConfig()
        changes["ipvlan"] = IPVlanConfig(mode=canonical(ipv.mode, IPVLAN_MODES) or "L2",
                                         flag=canonical(ipv.flag, IPVLAN_FLAGS) or "Bridge")
    elif kind == MACVLAN:
        mac = i.macvlan or MacvlanConfig()
        changes["macvlan"] = MacvlanConfig(mode=canonical(mac.mode, MACVLAN_MODES) or "Bridge")
    if mode == DHCP:
        changes["dhcp"] = True
    if mode == SLAAC:
        child = kind != PASSTHROUGH
        gen = i.addrGenMode if i.addrGenMode is not None else (ADDR_GEN_RANDOM if child else None)
        no_dad = gen == ADDR_GEN_RANDOM or (not child and not i.hardwareAddr)
        for name, value in (("acceptRA", 2), ("disableIPv6", False), ("addrGenMode", gen),
                            ("dadTransmits", 0 if no_dad else None),
                            ("routerSolicitationDelay", 0), ("routerSolicitationInterval", 1)):
            if getattr(i, name) is None and value is not None:
                changes[name] = value
    if not changes:
        return cfg
    return msgspec.structs.replace(cfg, interface=msgspec.structs.replace(i, **changes))


def named_sysctls(iface: InterfaceConfig) -> list[tuple[str, str, str]]:
    """``(field, "<family>.<name>", value)`` for the named per-interface knobs, in the
    order they must be written: ARP first, then the IPv6 ones as DRANET orders them
    (addr_gen_mode before the solicitation knobs, accept_ra after them, disable_ipv6
    last, so the interface never solicits with the wrong policy)."""
    out: list[tuple[str, str, str]] = []
    if iface.forwarding is not None:
        flag = "1" if iface.forwarding else "0"
        out += [("interface.forwarding", "ipv4.forwarding", flag),
                ("interface.forwarding", "ipv6.forwarding", flag)]
    for field, key in (("arpIgnore", "ipv4.arp_ignore"), ("arpAnnounce", "ipv4.arp_announce"),
                       ("addrGenMode", "ipv6.addr_gen_mode"),
                       ("dadTransmits", "ipv6.dad_transmits"),
                       ("routerSolicitationDelay", "ipv6.router_solicitation_delay"),
                       ("routerSolicitationInterval", "ipv6.router_solicitation_interval"),
                       ("acceptRA", "ipv6.accept_ra"), ("disableIPv6", "ipv6.disable_ipv6")):
        value = getattr(iface, field)
        if value is not None:
            out.append((f"interface.{field}", key, str(int(value))))
    return out


def _range(errors: list[str], field: str, value: int | None, lo: int, hi: int) -> None:
    if value is not None and not lo <= value <= hi:
        errors.append(f"interface.{field}: {value} is out of range ({lo}..{hi})")


def validate_kind(iface: InterfaceConfig, families: set[int], mtu_min_v6: int,
                  errors: list[str]) -> None:
    """The rules of ``type``, ``addressing``, ``ipvlan``, ``macvlan`` and the IPv6 knobs
    (``families``: the IP versions of ``interface.addresses``)."""
    kind = canonical(iface.type, TYPES) if iface.type else PASSTHROUGH
    if kind is None:
        errors.append(f"interface.type: {iface.type!r} is not one of {', '.join(TYPES)}")
    child = kind in (IPVLAN, MACVLAN)
    mode = canonical(iface.addressing, ADDRESSING) if iface.addressing else None
    if iface.addressing and mode is None:
        errors.append(f"interface.addressing: {iface.addressing!r} is not one of "
                      f"{', '.join(ADDRESSING)}")
    mode = mode or (DHCP if iface.dhcp else STATIC)
    if iface.dhcp and iface.addressing and mode != DHCP:
        errors.append(f"interface.dhcp: conflicts with addressing {mode!r} (dhcp is "
                      "deprecated: use addressing: DHCP)")
    if child and iface.hardwareAddr is not None and kind == IPVLAN:
        errors.append("interface.hardwareAddr: not supported with type IPVLAN: an ipvlan "
                      "child uses its parent's hardware address")
    if child and mode == DHCP:
        errors.append(f"interface.addressing: DHCP is not supported with type {kind} (a "
                      "child is addressed statically, by SLAAC, or not at all)")
    if mode == UNNUMBERED:
        if not child:
            errors.append("interface.addressing: 'Unnumbered' is only valid for a child "
                          "(type IPVLAN or MACVLAN)")
        if iface.addresses:
            errors.append("interface.addressing: 'Unnumbered' cannot be set together with "
                          "interface.addresses")
    if mode == SLAAC:
        _slaac_rules(iface, child, kind or PASSTHROUGH, errors)
    if iface.ipvlan is not None:
        ipv_mode = canonical(iface.ipvlan.mode, IPVLAN_MODES)
        if mode == SLAAC and ipv_mode in ("L3", "L3S"):
            errors.append(f"interface.ipvlan.mode: {ipv_mode} passes no multicast to the child, "
                          "so no router advertisement reaches it; addressing 'SLAAC' needs L2")
        if kind != IPVLAN:
            errors.append("interface.ipvlan: only valid with type IPVLAN")
        if iface.ipvlan.mode and canonical(iface.ipvlan.mode, IPVLAN_MODES) is None:
            errors.append(f"interface.ipvlan.mode: {iface.ipvlan.mode!r} is not one of "
                          f"{', '.join(IPVLAN_MODES)}")
        if iface.ipvlan.flag and canonical(iface.ipvlan.flag, IPVLAN_FLAGS) is None:
            errors.append(f"interface.ipvlan.flag: {iface.ipvlan.flag!r} is not one of "
                          f"{', '.join(IPVLAN_FLAGS)}")
    if iface.macvlan is not None:
        if kind != MACVLAN:
            errors.append("interface.macvlan: only valid with type MACVLAN")
        if iface.macvlan.mode and canonical(iface.macvlan.mode, MACVLAN_MODES) is None:
            errors.append(f"interface.macvlan.mode: {iface.macvlan.mode!r} is not one of "
                          f"{', '.join(MACVLAN_MODES)}")
    _range(errors, "acceptRA", iface.acceptRA, 0, 2)
    _range(errors, "dadTransmits", iface.dadTransmits, 0, INT32_MAX)
    _range(errors, "routerSolicitationDelay", iface.routerSolicitationDelay, 0, INT32_MAX)
    _range(errors, "routerSolicitationInterval", iface.routerSolicitationInterval, 1,
           INT32_MAX)
    _range(errors, "addrGenMode", iface.addrGenMode, 0, 3)
    if iface.disableIPv6 and 6 in families:
        errors.append("interface.disableIPv6: IPv6 is disabled but interface.addresses has "
                      "IPv6 addresses")
    if iface.mtu is not None and iface.mtu < mtu_min_v6:
        if mode == SLAAC:
            errors.append(f"interface.addressing: 'SLAAC' needs an mtu of at least "
                          f"{mtu_min_v6}, got {iface.mtu}")
        else:  # below 1280 the kernel removes IPv6 from the interface: nothing to set
            for field in IPV6_FIELDS:
                value = getattr(iface, field)
                if value is not None and not (field == "disableIPv6" and value):
                    errors.append(f"interface.{field}: needs an mtu of at least "
                                  f"{mtu_min_v6} (IPv6), got {iface.mtu}")


def _slaac_rules(iface: InterfaceConfig, child: bool, kind: str, errors: list[str]) -> None:
    if iface.disableIPv6:
        errors.append("interface.disableIPv6: true disables IPv6 and cannot be combined with "
                      "addressing 'SLAAC'")
    if iface.acceptRA == 0:
        errors.append("interface.acceptRA: 0 ignores router advertisements and cannot be "
                      "combined with addressing 'SLAAC'")
    if iface.addrGenMode == 1:
        errors.append("interface.addrGenMode: 1 makes no link-local address, so the interface "
                      "never solicits a router, and cannot be combined with addressing 'SLAAC'")
    elif iface.addrGenMode == 2:
        errors.append("interface.addrGenMode: 2 needs a stable_secret, which a pod's network "
                      "namespace does not have; with addressing 'SLAAC' use 3")
    elif iface.addrGenMode == 0 and child and kind == IPVLAN:
        errors.append("interface.addrGenMode: 0 derives the address from the hardware "
                      "address, which an ipvlan child shares with its parent; with "
                      "addressing 'SLAAC' use 3")
    for n, text in enumerate(iface.addresses):
        if ":" in text:
            errors.append(f"interface.addresses[{n}]: {text!r} is an IPv6 address, which "
                          "addressing 'SLAAC' configures itself; only IPv4 addresses can be "
                          "set with it")
