"""interface.type / addressing / ipvlan / macvlan and the IPv6 knobs: DRANET's rules
with knd's field paths, DRANET's SLAAC defaults, and the sysctls the named fields set."""

from __future__ import annotations

import pytest

from schemas.netconfig import (
    ConfigError,
    InterfaceConfig,
    IPVlanConfig,
    NetworkConfig,
    child_kind,
    decode_config,
    defaulted,
    merge,
    named_sysctls,
)


def errors(interface: dict) -> list[str]:
    try:
        decode_config({"interface": interface})
    except ConfigError as exc:
        return exc.errors
    return []


# DRANET's manifests, as they are: valid
DRANET = [
    {"type": "IPVLAN", "addresses": ["169.254.200.10/24"], "mtu": 1400, "gsoMaxSize": 32768,
     "groMaxSize": 32768, "gsoIPv4MaxSize": 32768, "groIPv4MaxSize": 32768, "arpIgnore": 1,
     "arpAnnounce": 2, "acceptRA": 0},
    {"type": "IPVLAN", "name": "net1", "addresses": ["169.254.201.10/24"]},
    {"name": "dranet-slaac", "addressing": "SLAAC"},
    {"type": "IPVLAN", "addressing": "Unnumbered", "ipvlan": {"mode": "L2", "flag": "Bridge"}},
]


@pytest.mark.parametrize("interface", DRANET)
def test_dranet_configs_are_valid(interface: dict) -> None:
    assert errors(interface) == []


@pytest.mark.parametrize("interface", [
    {"type": "ipvlan", "addressing": "slaac", "ipvlan": {"mode": "l3s", "flag": "vepa"},
     "addresses": ["10.0.0.2/24"]},
    {"type": "Macvlan", "macvlan": {"mode": "private"}, "hardwareAddr": "02:00:00:00:00:09",
     "addresses": ["10.0.0.2/24"]},
    {"type": "passthrough", "addressing": "dhcp"},
    {"dadTransmits": 3, "routerSolicitationDelay": 0, "routerSolicitationInterval": 4,
     "addrGenMode": 2, "disableIPv6": False, "acceptRA": 1},
    {"mtu": 1000, "disableIPv6": True},  # no IPv6 at this MTU: turning it off is no error
])
def test_knd_spellings_and_extensions_are_valid(interface: dict) -> None:
    if interface.get("addressing") == "slaac":  # SLAAC on L3S: see the rule below
        assert any("interface.ipvlan.mode" in e for e in errors(interface))
        return
    assert errors(interface) == []


RULES = [
    ({"type": "VXLAN"}, "interface.type: 'VXLAN' is not one of Passthrough, IPVLAN, MACVLAN"),
    ({"addressing": "Manual"}, "interface.addressing: 'Manual' is not one of"),
    ({"dhcp": True, "addressing": "Static"}, "interface.dhcp: conflicts with addressing"),
    ({"addressing": "DHCP", "addresses": ["10.0.0.2/24"]},
     "interface.addressing: DHCP and interface.addresses are mutually exclusive"),
    ({"type": "IPVLAN", "hardwareAddr": "02:00:00:00:00:01", "addresses": ["10.0.0.2/24"]},
     "interface.hardwareAddr: not supported with type IPVLAN"),
    ({"type": "MACVLAN", "dhcp": True}, "interface.addressing: DHCP is not supported with "
                                        "type MACVLAN"),
    ({"addressing": "Unnumbered"}, "interface.addressing: 'Unnumbered' is only valid for a child"),
    ({"type": "IPVLAN", "addressing": "Unnumbered", "addresses": ["10.0.0.2/24"]},
     "interface.addressing: 'Unnumbered' cannot be set together with interface.addresses"),
    ({"addressing": "SLAAC", "disableIPv6": True}, "interface.disableIPv6: true disables IPv6"),
    ({"addressing": "SLAAC", "acceptRA": 0}, "interface.acceptRA: 0 ignores router"),
    ({"addressing": "SLAAC", "addrGenMode": 1}, "interface.addrGenMode: 1 makes no link-local"),
    ({"addressing": "SLAAC", "addrGenMode": 2}, "interface.addrGenMode: 2 needs a stable_secret"),
    ({"type": "IPVLAN", "addressing": "SLAAC", "addrGenMode": 0},
     "interface.addrGenMode: 0 derives the address from the hardware address"),
    ({"addressing": "SLAAC", "addresses": ["10.0.0.2/24", "2001:db8::2/64"]},
     "interface.addresses[1]: '2001:db8::2/64' is an IPv6 address"),
    ({"addressing": "SLAAC", "mtu": 1200}, "interface.addressing: 'SLAAC' needs an mtu of at "
                                          "least 1280, got 1200"),
    ({"mtu": 1200, "dadTransmits": 1}, "interface.dadTransmits: needs an mtu of at least 1280"),
    ({"ipvlan": {"mode": "L2"}}, "interface.ipvlan: only valid with type IPVLAN"),
    ({"type": "IPVLAN", "addresses": ["10.0.0.2/24"], "ipvlan": {"mode": "L4"}},
     "interface.ipvlan.mode: 'L4' is not one of L2, L3, L3S"),
    ({"type": "IPVLAN", "addresses": ["10.0.0.2/24"], "ipvlan": {"flag": "Hairpin"}},
     "interface.ipvlan.flag: 'Hairpin' is not one of Bridge, Private, VEPA"),
    ({"type": "IPVLAN", "addressing": "SLAAC", "ipvlan": {"mode": "L3"}},
     "interface.ipvlan.mode: L3 passes no multicast"),
    ({"type": "IPVLAN", "macvlan": {"mode": "Bridge"}, "addresses": ["10.0.0.2/24"]},
     "interface.macvlan: only valid with type MACVLAN"),
    ({"type": "MACVLAN", "macvlan": {"mode": "Passthru"}, "addresses": ["10.0.0.2/24"]},
     "interface.macvlan.mode: 'Passthru' is not one of Bridge, Private, VEPA"),
    ({"acceptRA": 3}, "interface.acceptRA: 3 is out of range (0..2)"),
    ({"dadTransmits": -1}, "interface.dadTransmits: -1 is out of range"),
    ({"routerSolicitationDelay": -1}, "interface.routerSolicitationDelay: -1 is out of range"),
    ({"routerSolicitationInterval": 0}, "interface.routerSolicitationInterval: 0 is out of range"),
    ({"addrGenMode": 4}, "interface.addrGenMode: 4 is out of range (0..3)"),
    ({"disableIPv6": True, "addresses": ["2001:db8::2/64"]},
     "interface.disableIPv6: IPv6 is disabled but interface.addresses has IPv6 addresses"),
    ({"acceptRA": "0"}, "interface.acceptRA: expected an integer, got string"),
    ({"ipvlan": {"mode": "L2", "bridge": True}, "type": "IPVLAN"},
     "interface.ipvlan.bridge: unknown field"),
]


@pytest.mark.parametrize(("interface", "why"), RULES, ids=[w.split(":")[0] + f"-{n}"
                                                          for n, (_, w) in enumerate(RULES)])
def test_rule(interface: dict, why: str) -> None:
    got = errors(interface)
    assert any(e.startswith(why) for e in got), got


def test_slaac_defaults_are_dranets() -> None:
    cfg = decode_config({"interface": {"addressing": "SLAAC"}})
    i = defaulted(cfg).interface
    assert (i.acceptRA, i.disableIPv6, i.addrGenMode, i.dadTransmits,
            i.routerSolicitationDelay, i.routerSolicitationInterval) == (2, False, None, 0, 0, 1)
    # a passthrough device with its own MAC keeps DAD; a child gets a random address
    i = defaulted(decode_config({"interface": {"addressing": "SLAAC",
                                               "hardwareAddr": "02:00:00:00:00:07"}})).interface
    assert i.dadTransmits is None
    i = defaulted(decode_config({"interface": {"type": "IPVLAN", "addressing": "SLAAC",
                                               "acceptRA": 1}})).interface
    assert (i.acceptRA, i.addrGenMode, i.dadTransmits) == (1, 3, 0)  # set values stay
    assert i.ipvlan == IPVlanConfig(mode="L2", flag="Bridge")
    assert cfg.interface.acceptRA is None  # the input is not changed


def test_dhcp_and_addressing_fold_into_each_other() -> None:
    assert defaulted(decode_config({"interface": {"addressing": "dhcp"}})).interface.dhcp
    assert child_kind(InterfaceConfig(type="macvlan")) == "macvlan"
    assert child_kind(InterfaceConfig()) == child_kind(InterfaceConfig(type="Passthrough")) == ""


def test_named_sysctls_in_dranets_order_after_forwarding() -> None:
    i = InterfaceConfig(forwarding=True, arpIgnore=1, arpAnnounce=2, acceptRA=0,
                        dadTransmits=0, routerSolicitationDelay=0, routerSolicitationInterval=1,
                        disableIPv6=False, addrGenMode=3)
    assert [k for _, k, _ in named_sysctls(i)] == [
        "ipv4.forwarding", "ipv6.forwarding", "ipv4.arp_ignore", "ipv4.arp_announce",
        "ipv6.addr_gen_mode", "ipv6.dad_transmits", "ipv6.router_solicitation_delay",
        "ipv6.router_solicitation_interval", "ipv6.accept_ra", "ipv6.disable_ipv6"]
    assert named_sysctls(i)[-1] == ("interface.disableIPv6", "ipv6.disable_ipv6", "0")


def test_merge_takes_the_child_blocks_whole() -> None:
    base = NetworkConfig(interface=InterfaceConfig(type="IPVLAN",
                                                   ipvlan=IPVlanConfig(mode="L3")))
    claim = NetworkConfig(interface=InterfaceConfig(ipvlan=IPVlanConfig(flag="Private"),
                                                    acceptRA=1))
    got = merge([base, claim]).interface
    assert (got.type, got.ipvlan, got.acceptRA) == ("IPVLAN", IPVlanConfig(flag="Private"), 1)
    assert base.interface.ipvlan == IPVlanConfig(mode="L3")
