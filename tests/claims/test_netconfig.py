"""The claim configuration: strict decoding, every validation rule, merge precedence."""

from __future__ import annotations

import json

import msgspec
import pytest

from schemas.netconfig import (
    MAX_PARAMETERS,
    SYSCTLS,
    ConfigError,
    EthtoolConfig,
    InterfaceConfig,
    NetworkConfig,
    RouteConfig,
    VRFConfig,
    decode_config,
    merge,
    validate,
    vrf_table,
)

# A DRANET-style configuration that uses every section; valid as it is.
FULL = {
    "interface": {"name": "net1", "addresses": ["10.1.0.5/24", "2001:db8::5/64"], "mtu": 9000,
                  "hardwareAddr": "02:00:00:aa:bb:cc", "gsoMaxSize": 65536,
                  "groMaxSize": 524280, "gsoIPv4MaxSize": 65536, "groIPv4MaxSize": 65536,
                  "disableEbpfPrograms": True, "forwarding": False, "dhcp": False},
    "routes": [{"destination": "10.2.0.0/16", "gateway": "10.1.0.1"},
               {"destination": "10.1.0.0/24", "scope": 253},
               {"gateway": "fe80::1", "table": 100},
               {"destination": "192.0.2.7/32", "scope": 254, "source": "10.1.0.5"}],
    "rules": [{"priority": 100, "source": "10.1.0.5/32", "table": 100},
              {"destination": "2001:db8:1::/48", "table": 254}],
    "neighbors": [{"destination": "10.1.0.1", "hardwareAddr": "02:00:00:00:00:01"},
                  {"destination": "fe80::1", "hardwareAddr": "33-33-00-00-00-01"}],
    "ethtool": {"features": {"rx-gro-hw": True, "tx-checksumming": False},
                "privateFlags": {"rx_cqe_compress": True}},
    "sysctls": {"ipv4.arp_ignore": "1", "ipv4.rp_filter": "2", "ipv6.accept_ra": "0",
                "ipv6.keep_addr_on_down": "-1"},
}


def iface(**fields: object) -> dict:
    return {"interface": fields}


def test_full_example_is_valid_and_round_trips() -> None:
    cfg = decode_config(FULL)
    assert validate(cfg) == []
    assert cfg.interface.mtu == 9000 and cfg.routes[1].scope == 253
    assert cfg.ethtool is not None and cfg.ethtool.features["rx-gro-hw"] is True
    # the JSON shape is DRANET's: re-encoding gives back what came in
    assert json.loads(msgspec.json.encode(cfg)) == FULL
    assert decode_config(json.dumps(FULL).encode()) == cfg
    assert decode_config(b"{}") == NetworkConfig()


# (id, parameters, the error's field path, a fragment of its reason)
RULES = [
    # interface.name: kernel IFNAMSIZ rules
    ("name-long", iface(name="a" * 16), "interface.name", "longer than 15 bytes"),
    ("name-long-utf8", iface(name="é" * 8), "interface.name", "longer than 15 bytes"),
    ("name-slash", iface(name="a/b"), "interface.name", "'/'"),
    ("name-colon", iface(name="eth0:1"), "interface.name", "':'"),
    ("name-space", iface(name="a b"), "interface.name", "' '"),
    ("name-tab", iface(name="a\tb"), "interface.name", "'\\t'"),
    ("name-dot", iface(name="."), "interface.name", "not a valid interface name"),
    ("name-dotdot", iface(name=".."), "interface.name", "not a valid interface name"),
    # interface.addresses
    ("addr-no-prefix", iface(addresses=["10.0.0.5"]), "interface.addresses[0]", "not a CIDR"),
    ("addr-garbage", iface(addresses=["10.0.0.300/24"]), "interface.addresses[0]", "not a CIDR"),
    ("addr-netmask", iface(addresses=["10.0.0.5/255.255.255.0"]), "interface.addresses[0]",
     "prefix length"),
    ("addr-prefix-range", iface(addresses=["10.0.0.5/33"]), "interface.addresses[0]",
     "not a CIDR"),
    ("addr-network", iface(addresses=["10.0.0.0/24"]), "interface.addresses[0]",
     "network address"),
    ("addr-broadcast", iface(addresses=["10.0.0.255/24"]), "interface.addresses[0]",
     "broadcast address"),
    ("addr-unspecified", iface(addresses=["::/0"]), "interface.addresses[0]", "not a host"),
    ("addr-multicast", iface(addresses=["224.0.0.1/4"]), "interface.addresses[0]",
     "not a host"),
    ("addr-zone", iface(addresses=["fe80::1%eth0/64"]), "interface.addresses[0]", "zone"),
    ("addr-duplicate", iface(addresses=["10.0.0.5/24", "10.0.0.6/24", "10.0.0.5/16"]),
     "interface.addresses[2]", "already in interface.addresses[0]"),
    ("addr-too-many", iface(addresses=[f"10.0.0.{i}/24" for i in range(1, 18)]),
     "interface.addresses", "more than the 16"),
    # interface.mtu
    ("mtu-low", iface(mtu=67), "interface.mtu", "out of range (68..65535)"),
    ("mtu-high", iface(mtu=65536), "interface.mtu", "out of range"),
    ("mtu-ipv6", iface(mtu=1279, addresses=["2001:db8::1/64"]), "interface.mtu",
     "minimum for IPv6"),
    # interface.hardwareAddr
    ("mac-short", iface(hardwareAddr="02:00:00:00:00"), "interface.hardwareAddr",
     "not a MAC address"),
    ("mac-mixed-sep", iface(hardwareAddr="02:00-00:00:00:01"), "interface.hardwareAddr",
     "not a MAC address"),
    ("mac-8-octets", iface(hardwareAddr="02:00:00:00:00:00:00:01"), "interface.hardwareAddr",
     "not a MAC address"),
    ("mac-multicast", iface(hardwareAddr="01:00:5e:00:00:01"), "interface.hardwareAddr",
     "multicast"),
    ("mac-broadcast", iface(hardwareAddr="ff:ff:ff:ff:ff:ff"), "interface.hardwareAddr",
     "multicast"),
    ("mac-zero", iface(hardwareAddr="00:00:00:00:00:00"), "interface.hardwareAddr",
     "all-zero"),
    # interface.dhcp
    ("dhcp-and-addresses", iface(dhcp=True, addresses=["10.0.0.5/24"]), "interface.dhcp",
     "mutually exclusive"),
    # offload sizes
    ("gso-zero", iface(gsoMaxSize=0), "interface.gsoMaxSize", "out of range (1..524280)"),
    ("gro-big", iface(groMaxSize=524281), "interface.groMaxSize", "out of range"),
    ("gso4-negative", iface(gsoIPv4MaxSize=-1), "interface.gsoIPv4MaxSize", "out of range"),
    ("gro4-big", iface(groIPv4MaxSize=1 << 40), "interface.groIPv4MaxSize", "out of range"),
    # routes
    ("route-empty", {"routes": [{}]}, "routes[0].destination", "required when there is no"),
    ("route-dest-host-bits", {"routes": [{"destination": "10.1.2.3/16"}]},
     "routes[0].destination", "host bits set (the network is 10.1.0.0/16)"),
    ("route-dest-not-cidr", {"routes": [{"destination": "10.1.0.0"}]},
     "routes[0].destination", "not a CIDR"),
    ("route-gw-family", {"routes": [{"destination": "10.0.0.0/8", "gateway": "fe80::1"}]},
     "routes[0].gateway", "is IPv6 but the route is IPv4"),
    ("route-gw-cidr", {"routes": [{"gateway": "10.0.0.1/24"}]}, "routes[0].gateway",
     "is a CIDR"),
    ("route-gw-garbage", {"routes": [{"gateway": "gateway"}]}, "routes[0].gateway",
     "not an IP address"),
    ("route-gw-multicast", {"routes": [{"gateway": "ff02::1"}]}, "routes[0].gateway",
     "not a unicast"),
    ("route-src-family", {"routes": [{"gateway": "10.0.0.1", "source": "2001:db8::1"}]},
     "routes[0].source", "is IPv6 but the route is IPv4"),
    ("route-scope-unknown", {"routes": [{"destination": "10.0.0.0/8", "scope": 200}]},
     "routes[0].scope", "not one of 0 (universe), 253 (link), 254 (host)"),
    ("route-gw-scope-link", {"routes": [{"gateway": "10.0.0.1", "scope": 253}]},
     "routes[0].scope", "via a gateway must have scope universe"),
    ("route-gw-scope-host", {"routes": [{"gateway": "10.0.0.1", "scope": 254}]},
     "routes[0].scope", "not host (254)"),
    ("route-table-local", {"routes": [{"gateway": "10.0.0.1", "table": 255}]},
     "routes[0].table", "local table"),
    ("route-table-negative", {"routes": [{"gateway": "10.0.0.1", "table": -1}]},
     "routes[0].table", "out of range (0..4294967295)"),
    ("route-table-big", {"routes": [{"gateway": "10.0.0.1", "table": 2**32}]},
     "routes[0].table", "out of range"),
    # rules
    ("rule-table-missing", {"rules": [{"priority": 10}]}, "rules[0].table", "required"),
    ("rule-table-local", {"rules": [{"table": 255}]}, "rules[0].table", "local table"),
    ("rule-table-big", {"rules": [{"table": 2**32}]}, "rules[0].table", "out of range"),
    ("rule-priority-high", {"rules": [{"priority": 32767, "table": 5}]}, "rules[0].priority",
     "out of range (0..32766)"),
    ("rule-priority-negative", {"rules": [{"priority": -1, "table": 5}]}, "rules[0].priority",
     "out of range"),
    ("rule-source", {"rules": [{"source": "10.0.0.5", "table": 5}]}, "rules[0].source",
     "not a CIDR"),
    ("rule-destination", {"rules": [{"destination": "10.0.0.5/8", "table": 5}]},
     "rules[0].destination", "host bits set"),
    ("rule-family", {"rules": [{"source": "10.0.0.0/8", "destination": "::/0", "table": 5}]},
     "rules[0].destination", "IPv6 but rules[0].source is IPv4"),
    # neighbors
    ("neigh-no-destination", {"neighbors": [{"hardwareAddr": "02:00:00:00:00:01"}]},
     "neighbors[0].destination", "required"),
    ("neigh-no-mac", {"neighbors": [{"destination": "10.0.0.1"}]}, "neighbors[0].hardwareAddr",
     "required"),
    ("neigh-bad-ip", {"neighbors": [{"destination": "10.0.0.0/24",
                                     "hardwareAddr": "02:00:00:00:00:01"}]},
     "neighbors[0].destination", "is a CIDR"),
    ("neigh-bad-mac", {"neighbors": [{"destination": "10.0.0.1", "hardwareAddr": "nope"}]},
     "neighbors[0].hardwareAddr", "not a MAC address"),
    ("neigh-zero-mac", {"neighbors": [{"destination": "10.0.0.1",
                                       "hardwareAddr": "00:00:00:00:00:00"}]},
     "neighbors[0].hardwareAddr", "all-zero"),
    ("neigh-duplicate", {"neighbors": [
        {"destination": "10.0.0.1", "hardwareAddr": "02:00:00:00:00:01"},
        {"destination": "10.0.0.1", "hardwareAddr": "02:00:00:00:00:02"}]},
     "neighbors[1].destination", "already in neighbors[0]"),
    # ethtool
    ("ethtool-empty-name", {"ethtool": {"features": {"": True}}}, "ethtool.features[]",
     "1..32 characters"),
    ("ethtool-long-name", {"ethtool": {"features": {"a" * 33: True}}},
     f"ethtool.features[{'a' * 33}]", "1..32 characters"),
    ("ethtool-charset", {"ethtool": {"privateFlags": {"rx cqe": True}}},
     "ethtool.privateFlags[rx cqe]", "A-Z a-z 0-9 _ -"),
    # sysctls
    ("sysctl-bare", {"sysctls": {"arp_ignore": "1"}}, "sysctls[arp_ignore]",
     "did you mean ipv4.arp_ignore?"),
    ("sysctl-bare-both", {"sysctls": {"forwarding": "1"}}, "sysctls[forwarding]",
     "ipv4.forwarding or ipv6.forwarding"),
    ("sysctl-unknown", {"sysctls": {"ipv4.tcp_mem": "1"}}, "sysctls[ipv4.tcp_mem]",
     "not an allowed sysctl"),
    ("sysctl-family", {"sysctls": {"ipv6.arp_ignore": "1"}}, "sysctls[ipv6.arp_ignore]",
     "not an allowed sysctl"),
    ("sysctl-path", {"sysctls": {"net.ipv4.conf.all.arp_ignore": "1"}},
     "sysctls[net.ipv4.conf.all.arp_ignore]", "not an allowed sysctl"),
    ("sysctl-value", {"sysctls": {"ipv4.arp_ignore": "yes"}}, "sysctls[ipv4.arp_ignore]",
     "not an integer"),
    ("sysctl-value-space", {"sysctls": {"ipv4.arp_ignore": " 1"}}, "sysctls[ipv4.arp_ignore]",
     "not an integer"),
    ("sysctl-range", {"sysctls": {"ipv4.rp_filter": "3"}}, "sysctls[ipv4.rp_filter]",
     "out of range (0..2)"),
    ("sysctl-disable-ipv6", {"sysctls": {"ipv6.disable_ipv6": "1"},
                             "interface": {"addresses": ["2001:db8::1/64"]}},
     "sysctls[ipv6.disable_ipv6]", "IPv6 is disabled"),
]


@pytest.mark.parametrize(("params", "path", "why"), [r[1:] for r in RULES],
                         ids=[r[0] for r in RULES])
def test_rule(params: dict, path: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        decode_config(params, "config[3].opaque.parameters")
    errors = info.value.errors
    wanted = f"config[3].opaque.parameters.{path}: "
    assert any(e.startswith(wanted) and why in e for e in errors), errors
    assert all(e.startswith("config[3].opaque.parameters.") for e in errors), errors
    # validate() reports the same problems with paths relative to the configuration
    rel = validate(msgspec.convert(params, NetworkConfig))
    assert any(e.startswith(f"{path}: ") and why in e for e in rel), rel
    assert str(info.value) == "; ".join(errors)


VALID_EDGES = [
    iface(name="a" * 15), iface(name="é" * 7), iface(name=""), iface(mtu=68), iface(mtu=65535),
    iface(mtu=1280, addresses=["2001:db8::1/64"]), iface(mtu=576, addresses=["10.0.0.1/24"]),
    iface(addresses=["10.0.0.0/31", "10.0.0.7/32", "2001:db8::/64", "10.0.0.5/24",
                     "10.9.0.5/24"]),
    iface(hardwareAddr="02-00-00-00-00-01"), iface(dhcp=False, addresses=["10.0.0.5/24"]),
    iface(dhcp=True, name="net1", mtu=1400, hardwareAddr="02:00:00:00:00:02"),
    iface(gsoMaxSize=1, groMaxSize=524280),
    {"routes": [{"destination": "0.0.0.0/0", "scope": 253}, {"gateway": "10.0.0.1"},
                {"destination": "10.0.0.0/8", "table": 2**32 - 1}]},
    {"rules": [{"priority": 32766, "table": 1}, {"source": "::/0", "table": 254}]},
    {"ethtool": {"features": {"a" * 32: True}}},
    {"sysctls": {f"{fam}.{name}": str(lo) for fam in SYSCTLS
                 for name, (lo, _) in SYSCTLS[fam].items()}},
    {"sysctls": {f"{fam}.{name}": str(hi) for fam in SYSCTLS
                 for name, (_, hi) in SYSCTLS[fam].items()}},
]


@pytest.mark.parametrize("params", VALID_EDGES)
def test_valid_edges(params: dict) -> None:
    decode_config(params)


def test_several_errors_at_once() -> None:
    params = {"interface": {"name": "x" * 20, "addresses": ["10.0.0.5/24", "bad"], "mtu": 10},
              "routes": [{"gateway": "10.0.0.1", "scope": 253}, {"destination": "1.2.3.4/8"}],
              "sysctls": {"ipv4.rp_filter": "9"}}
    with pytest.raises(ConfigError) as info:
        decode_config(params)
    paths = [e.split(": ", 1)[0] for e in info.value.errors]
    assert paths == ["interface.name", "interface.addresses[1]", "interface.mtu",
                     "routes[0].scope", "routes[1].destination", "sysctls[ipv4.rp_filter]"]


def test_unknown_fields_and_wrong_types_name_their_path() -> None:
    params = {"interface": {"nme": "net1", "mtu": "1500"},
              "routes": [{"destination": "10.0.0.0/8"}, {"gw": "10.0.0.1", "scope": True}],
              "ethtool": {"features": {"tso": "on"}}, "sysctls": {"ipv4.arp_ignore": 1},
              "extra": {}}
    with pytest.raises(ConfigError) as info:
        decode_config(params, "config[1].opaque.parameters")
    assert info.value.errors == [
        "config[1].opaque.parameters.interface.nme: unknown field",
        "config[1].opaque.parameters.interface.mtu: expected an integer, got string",
        "config[1].opaque.parameters.routes[1].gw: unknown field",
        "config[1].opaque.parameters.routes[1].scope: expected an integer, got boolean",
        "config[1].opaque.parameters.ethtool.features[tso]: expected a boolean, got string",
        "config[1].opaque.parameters.sysctls[ipv4.arp_ignore]: expected a string, got integer",
        "config[1].opaque.parameters.extra: unknown field",
    ]


@pytest.mark.parametrize(("params", "error"), [
    (b"[1, 2]", "p: expected an object, got array"),
    (b"{", "p: not valid JSON"),
    (b'{"interface": null}', "p.interface: expected an object, got null"),
    (b'{"routes": {"destination": "10.0.0.0/8"}}', "p.routes: expected an array, got object"),
    (b'{"interface": {"mtu": 1500.0}}', "p.interface.mtu: expected an integer, got number"),
    (b'{"interface": {"addresses": "10.0.0.1/24"}}',
     "p.interface.addresses: expected an array, got string"),
    (b'{"interface": {"addresses": [1]}}', "p.interface.addresses[0]: expected a string"),
    ('{"interface": {"nme": "x"}}', "p.interface.nme: unknown field"),
])
def test_structure_errors(params: bytes | str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        decode_config(params, "p")
    assert info.value.errors[0].startswith(error), info.value.errors


def test_nulls_mean_unset() -> None:
    cfg = decode_config(b'{"ethtool": null, "interface": {"mtu": null, "dhcp": null}}')
    assert cfg == NetworkConfig()


def test_size_limit() -> None:
    # compact JSON of exactly MAX_PARAMETERS bytes passes; one more byte does not
    head = b'{"interface":{"name":"n","hardwareAddr":"'
    filler = MAX_PARAMETERS - len(head) - len(b'"}}')
    edge = head + b"x" * filler + b'"}}'
    assert len(edge) == MAX_PARAMETERS
    with pytest.raises(ConfigError) as info:  # reaches validation: the size was fine
        decode_config(edge, "p")
    assert info.value.errors[0].startswith("p.interface.hardwareAddr: ")
    with pytest.raises(ConfigError) as info:
        decode_config(head + b"x" * (filler + 1) + b'"}}', "p")
    assert info.value.errors == [f"p: {MAX_PARAMETERS + 1} bytes, more than the "
                                 f"{MAX_PARAMETERS} allowed"]
    big = {"sysctls": {f"ipv4.k{i}": "1" for i in range(1000)}}  # a dict is measured too
    with pytest.raises(ConfigError, match="more than the 10240 allowed"):
        decode_config(big, "p")


# ---- merge -----------------------------------------------------------------------------


def cfg(params: dict) -> NetworkConfig:
    return decode_config(params)


def test_merge_later_overrides_field_by_field() -> None:
    cls = cfg({"interface": {"name": "net1", "mtu": 1500, "addresses": ["10.0.0.5/24",
                                                                       "10.0.0.6/24"]},
               "routes": [{"destination": "10.1.0.0/16", "gateway": "10.0.0.1"}],
               "rules": [{"priority": 10, "table": 100}],
               "ethtool": {"features": {"rx-gro-hw": True, "tso": True},
                           "privateFlags": {"a": True}},
               "sysctls": {"ipv4.arp_ignore": "1", "ipv4.rp_filter": "2"}})
    claim = cfg({"interface": {"mtu": 9000, "addresses": ["10.0.0.7/24"]},
                 "routes": [{"gateway": "10.0.0.254"}],
                 "ethtool": {"features": {"tso": False}},
                 "sysctls": {"ipv4.rp_filter": "0"}})
    got = merge([cls, claim])
    assert got.interface == InterfaceConfig(name="net1", mtu=9000, addresses=["10.0.0.7/24"])
    assert got.routes == [RouteConfig(gateway="10.0.0.254")]  # lists replace as a whole
    assert got.rules == cls.rules  # unset in the claim: inherited
    assert got.ethtool == EthtoolConfig(features={"rx-gro-hw": True, "tso": False},
                                        privateFlags={"a": True})
    assert got.sysctls == {"ipv4.arp_ignore": "1", "ipv4.rp_filter": "0"}
    # the other order: the class config wins
    back = merge([claim, cls])
    assert back.interface.mtu == 1500 and back.routes == cls.routes
    assert back.sysctls["ipv4.rp_filter"] == "2"
    assert back.ethtool is not None and back.ethtool.features["tso"] is True


def test_merge_does_not_modify_inputs_and_handles_edges() -> None:
    a = cfg({"interface": {"addresses": ["10.0.0.5/24"]}, "sysctls": {"ipv4.arp_ignore": "1"}})
    b = cfg({"interface": {"dhcp": False, "name": "x"}})
    before = msgspec.json.encode(a), msgspec.json.encode(b)
    got = merge([a, b])
    got.interface.addresses.append("10.0.0.9/24")
    got.sysctls["ipv4.rp_filter"] = "1"
    assert (msgspec.json.encode(a), msgspec.json.encode(b)) == before
    assert got.interface.dhcp is False  # False is a value, not "unset"
    assert merge([]) == NetworkConfig()
    assert merge([a]) == a
    assert merge([a, NetworkConfig()]) == a  # an empty config changes nothing
    assert merge([NetworkConfig(), cfg({"ethtool": {}})]).ethtool == EthtoolConfig()


def test_merged_config_can_break_a_cross_field_rule() -> None:
    """Each config is valid alone; the merge is not: callers validate the merge too."""
    cls = cfg({"interface": {"addresses": ["2001:db8::1/64"]}})
    claim = cfg({"interface": {"mtu": 1000}})
    assert validate(merge([cls, claim])) == [
        "interface.mtu: 1000 is below 1280, the minimum for IPv6 (interface.addresses has an "
        "IPv6 address)"]


# ---- DRANET's newer fields: profile, arpIgnore/arpAnnounce, vrf ----------------------

DRANET_FIELDS = {
    "profile": "gold",
    "interface": {"name": "net1", "arpIgnore": 8, "arpAnnounce": 2, "forwarding": True,
                  "gsoIPv4MaxSize": 131072, "groIPv4MaxSize": 131072,
                  "vrf": {"name": "vrf-blue", "table": 1001}},
    "routes": [{"destination": "10.9.0.0/16", "gateway": "10.1.0.1", "table": 100}],
}


def test_dranet_fields_decode_and_round_trip() -> None:
    got = decode_config(DRANET_FIELDS)
    assert got.profile == "gold"
    assert (got.interface.arpIgnore, got.interface.arpAnnounce) == (8, 2)
    assert got.interface.vrf == VRFConfig(name="vrf-blue", table=1001)
    assert json.loads(msgspec.json.encode(got)) == DRANET_FIELDS
    for ok in (0, 1, 2, 3, 8):
        assert decode_config(iface(arpIgnore=ok)).interface.arpIgnore == ok
    for ok in (0, 1, 2):
        assert decode_config(iface(arpAnnounce=ok)).interface.arpAnnounce == ok
    assert decode_config({"interface": {"vrf": {"name": "v"}}}).interface.vrf == VRFConfig(
        name="v")


NEW_RULES = [
    ("arp-ignore-4", iface(arpIgnore=4), "interface.arpIgnore", "not one of 0, 1, 2, 3, 8"),
    ("arp-ignore-negative", iface(arpIgnore=-1), "interface.arpIgnore", "not one of"),
    ("arp-ignore-9", iface(arpIgnore=9), "interface.arpIgnore", "not one of"),
    ("arp-announce-3", iface(arpAnnounce=3), "interface.arpAnnounce", "out of range (0..2)"),
    ("arp-announce-negative", iface(arpAnnounce=-1), "interface.arpAnnounce", "out of range"),
    ("vrf-no-name", iface(vrf={"table": 10}), "interface.vrf.name", "required"),
    ("vrf-bad-name", iface(vrf={"name": "a/b"}), "interface.vrf.name", "'/'"),
    ("vrf-long-name", iface(vrf={"name": "v" * 16}), "interface.vrf.name", "longer than 15"),
    ("vrf-name-is-interface", iface(name="net1", vrf={"name": "net1"}), "interface.vrf.name",
     "also interface.name"),
    ("vrf-table-zero", iface(vrf={"name": "v", "table": 0}), "interface.vrf.table",
     "out of range"),
    ("vrf-table-negative", iface(vrf={"name": "v", "table": -5}), "interface.vrf.table",
     "out of range"),
    ("vrf-table-main", iface(vrf={"name": "v", "table": 254}), "interface.vrf.table",
     "reserved"),
    ("vrf-table-default", iface(vrf={"name": "v", "table": 253}), "interface.vrf.table",
     "reserved"),
    ("vrf-table-local", iface(vrf={"name": "v", "table": 255}), "interface.vrf.table",
     "reserved"),
    ("vrf-table-big", iface(vrf={"name": "v", "table": 2**32}), "interface.vrf.table",
     "out of range"),
    ("vrf-with-rules", {"interface": {"vrf": {"name": "v"}}, "rules": [{"table": 5}]},
     "rules", "not supported with interface.vrf"),
    ("vrf-unknown-field", iface(vrf={"name": "v", "tabel": 5}), "interface.vrf.tabel",
     "unknown field"),
    ("vrf-table-type", iface(vrf={"name": "v", "table": "5"}), "interface.vrf.table",
     "expected an integer"),
    ("profile-type", {"profile": 5}, "profile", "expected a string"),
    ("arp-type", iface(arpIgnore="1"), "interface.arpIgnore", "expected an integer"),
]


@pytest.mark.parametrize("params,field,why", [r[1:] for r in NEW_RULES],
                         ids=[r[0] for r in NEW_RULES])
def test_dranet_field_rules(params: dict, field: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        decode_config(params, path="config[0].opaque.parameters")
    hits = [e for e in err.value.errors if e.startswith(f"config[0].opaque.parameters.{field}:")]
    assert hits and why in hits[0], err.value.errors


def test_vrf_table_default_is_dranets() -> None:
    """DRANET's default: FNV-1a (32 bits) of the name, mod 1000, plus 1000. Vectors: FNV-1a
    32 of "a" is 0xe40c292c and of "foobar" 0xbf9cf968 (the FNV reference values)."""
    assert vrf_table(VRFConfig(name="a")) == 0xE40C292C % 1000 + 1000
    assert vrf_table(VRFConfig(name="foobar")) == 0xBF9CF968 % 1000 + 1000
    assert vrf_table(VRFConfig(name="foobar", table=7)) == 7
    assert all(1000 <= vrf_table(VRFConfig(name=f"v{i}")) < 2000 for i in range(200))


def test_merge_profile_and_vrf() -> None:
    cls = cfg({"profile": "class", "interface": {"arpIgnore": 1, "vrf": {"name": "a",
                                                                        "table": 10}}})
    claim = cfg({"interface": {"arpAnnounce": 2, "vrf": {"name": "b"}}})
    got = merge([cls, claim])
    assert got.profile == "class"  # unset in the claim: inherited
    assert (got.interface.arpIgnore, got.interface.arpAnnounce) == (1, 2)
    assert got.interface.vrf == VRFConfig(name="b")  # name and table replaced together
    assert merge([cls, cfg({"profile": "claim"})]).profile == "claim"
    got.interface.vrf.name = "changed"  # type: ignore[union-attr]
    assert cls.interface.vrf == VRFConfig(name="a", table=10)
