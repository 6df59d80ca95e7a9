"""DRANET's merge of a provider's configuration under the claim's, table-driven."""

from __future__ import annotations

import pytest

from schemas.netconfig import (
    EthtoolConfig,
    InterfaceConfig,
    NeighborConfig,
    NetworkConfig,
    RouteConfig,
    RuleConfig,
)
from services.providers.merge import merge_provider

R = RouteConfig
CASES = [
    ("no provider config: the claim's as it is",
     NetworkConfig(interface=InterfaceConfig(mtu=9000)), None,
     NetworkConfig(interface=InterfaceConfig(mtu=9000))),
    ("claim scalars win, unset ones inherit",
     NetworkConfig(interface=InterfaceConfig(name="n1")),
     NetworkConfig(interface=InterfaceConfig(name="p", mtu=1450)),
     NetworkConfig(interface=InterfaceConfig(name="n1", mtu=1450))),
    ("addresses add up, each once",
     NetworkConfig(interface=InterfaceConfig(addresses=["10.0.0.2/24", "10.0.1.2/24"])),
     NetworkConfig(interface=InterfaceConfig(addresses=["10.0.1.2/24", "10.0.9.2/24"])),
     NetworkConfig(interface=InterfaceConfig(
         addresses=["10.0.9.2/24", "10.0.0.2/24", "10.0.1.2/24"]))),
    ("one route per (destination, table), the claim's winning",
     NetworkConfig(routes=[R(destination="10.9.0.0/16", gateway="10.0.0.1")]),
     NetworkConfig(routes=[R(destination="10.9.0.0/16", gateway="10.0.0.254"),
                           R(destination="10.9.0.0/16", gateway="10.0.0.254", table=100)]),
     NetworkConfig(routes=[R(destination="10.9.0.0/16", gateway="10.0.0.254", table=100),
                           R(destination="10.9.0.0/16", gateway="10.0.0.1")])),
    ("rules add up, exact repeats once",
     NetworkConfig(rules=[RuleConfig(source="10.0.0.0/24", table=100),
                          RuleConfig(priority=5, table=7)]),
     NetworkConfig(rules=[RuleConfig(source="10.0.0.0/24", table=100)]),
     NetworkConfig(rules=[RuleConfig(source="10.0.0.0/24", table=100),
                          RuleConfig(priority=5, table=7)])),
    ("neighbors once per destination; maps key by key",
     NetworkConfig(neighbors=[NeighborConfig(destination="10.0.0.1",
                                             hardwareAddr="02:00:00:00:00:01")],
                   ethtool=EthtoolConfig(features={"tso": False}), sysctls={"ipv4.rp_filter": "0"}),
     NetworkConfig(neighbors=[NeighborConfig(destination="10.0.0.1",
                                             hardwareAddr="02:00:00:00:00:02")],
                   ethtool=EthtoolConfig(features={"tso": True, "gro": True}),
                   sysctls={"ipv4.rp_filter": "1", "ipv4.arp_ignore": "1"}),
     NetworkConfig(neighbors=[NeighborConfig(destination="10.0.0.1",
                                             hardwareAddr="02:00:00:00:00:01")],
                   ethtool=EthtoolConfig(features={"tso": False, "gro": True}),
                   sysctls={"ipv4.rp_filter": "0", "ipv4.arp_ignore": "1"})),
    ("the claim's profile is kept",
     NetworkConfig(profile="acme.com/blue"), NetworkConfig(interface=InterfaceConfig(mtu=1500)),
     NetworkConfig(profile="acme.com/blue", interface=InterfaceConfig(mtu=1500))),
]


@pytest.mark.parametrize(("claim", "provider", "want"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_merge_provider(claim, provider, want) -> None:
    assert merge_provider(claim, provider) == want
