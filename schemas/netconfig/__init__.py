"""The claim configuration: what a ResourceClaim's opaque parameters may say.

It accepts DRANET's ``NetworkConfig`` JSON (``interface``, ``routes``, ``rules``,
``neighbors``, ``ethtool``) so DRANET examples work by changing only the driver
name. The types (types.py), the strict decoder (:func:`decode_config`, decode.py), the
checks that need more than types (:func:`validate`, validate.py: CIDRs, address
families, kernel name rules, ranges) and the class/claim merge (:func:`merge`,
merge.py) live in this one package, and every error starts with its field path
(``interface.mtu``, ``routes[1].gateway``).

What a valid configuration means (all optional; absent = "leave it as it is"):

========================  ==================================================================
field                     rule
========================  ==================================================================
interface.name            1..15 bytes, no ``/``, ``:``, whitespace or NUL, not ``.``/``..``
interface.addresses[i]    ``address/prefix`` (decimal prefix), a host address (not the
                          unspecified, a multicast, or an IPv4 network/broadcast address of a
                          prefix <= 30), no zone, no two with the same address; at most 16
interface.mtu             68..65535; >= 1280 when an IPv6 address is configured
interface.hardwareAddr    6 octets ``aa:bb:cc:dd:ee:ff`` (or ``-``), unicast, not all-zero
interface.dhcp            ``true``: a DHCPv4 lease at attach, in the pod (address, routes,
                          MTU; services.plumber.dhcp); excludes ``addresses``
interface.g[sr]o*MaxSize  1..524280 (``gso/groMaxSize``: IPv6 and BIG TCP; ``...IPv4MaxSize``: IPv4)
interface.arpIgnore       0, 1, 2, 3 or 8 (``net.ipv4.conf.<if>.arp_ignore`` in the pod)
interface.arpAnnounce     0..2 (``net.ipv4.conf.<if>.arp_announce`` in the pod)
interface.vrf.name        required when ``vrf`` is given; an interface name (rules above),
                          not the interface's own pod name
interface.vrf.table       1..4294967295, not 253, 254, 255; absent: derived from the name
                          (:func:`vrf_table`, DRANET's rule); no ``rules`` with a VRF
profile                   any string: a profile for a provider to resolve
routes[i].destination     CIDR without host bits; empty = the default route
routes[i].gateway         an IP of the destination's family; a route needs a destination or
                          a gateway
routes[i].source          an IP of the route's family
routes[i].scope           numeric: 0 universe, 253 link, 254 host; a route via a gateway
                          must be universe
routes[i].table           0..4294967295, not 255 (local); 0 = main
rules[i].priority         0..32766
rules[i].table            required: 1..4294967295, not 255 (local)
rules[i].source/dest...   CIDRs without host bits, of one family
neighbors[i]              ``destination`` an IP and ``hardwareAddr`` a non-zero 6-octet MAC,
                          both required; one entry per destination
ethtool.features/...      names 1..32 chars of ``[A-Za-z0-9_-]``
interface.type            ``Passthrough`` (default), ``IPVLAN``, ``MACVLAN`` (any case); a
                          child keeps the device on the host; IPVLAN: no ``hardwareAddr``;
                          no DHCP for a child
interface.addressing      ``Static`` (default), ``DHCP``, ``SLAAC`` (no IPv6 in
                          ``addresses``, not with ``acceptRA: 0``, ``disableIPv6``,
                          ``addrGenMode`` 1, 2, or 0 on an ipvlan; mtu >= 1280),
                          ``Unnumbered`` (a child, no ``addresses``)
interface.ipvlan          ``mode`` L2 (default), L3, L3S; ``flag`` Bridge (default),
                          Private, VEPA; only with type IPVLAN
interface.macvlan         ``mode`` Bridge (default), Private, VEPA; only with MACVLAN
interface.acceptRA ...    acceptRA 0..2, dadTransmits >= 0, routerSolicitationDelay >= 0,
                          routerSolicitationInterval >= 1, addrGenMode 0..3, disableIPv6;
                          set, they need an mtu >= 1280 (not ``disableIPv6: true``)
sysctls                   ``ipv4.<name>`` / ``ipv6.<name>`` from :data:`SYSCTLS`, value a
                          decimal integer string in the name's range
========================  ==================================================================
"""

from schemas.netconfig.decode import ConfigError, decode_config
from schemas.netconfig.kinds import (
    ADDRESSING,
    IPVLAN,
    MACVLAN,
    PASSTHROUGH,
    SLAAC,
    TYPES,
    UNNUMBERED,
    addressing,
    child_kind,
    defaulted,
    interface_type,
    named_sysctls,
)
from schemas.netconfig.merge import merge
from schemas.netconfig.types import (
    EthtoolConfig,
    InterfaceConfig,
    IPVlanConfig,
    MacvlanConfig,
    NeighborConfig,
    NetworkConfig,
    RouteConfig,
    RuleConfig,
    VRFConfig,
)
from schemas.netconfig.validate import (
    ARP_IGNORE,
    IFNAMSIZ,
    MAX_ADDRESSES,
    MAX_PARAMETERS,
    MTU_MAX,
    MTU_MIN,
    MTU_MIN_IPV6,
    OFFLOAD_MAX,
    SYSCTLS,
    validate,
    vrf_table,
)

__all__ = [
    "ADDRESSING", "ARP_IGNORE", "IFNAMSIZ", "IPVLAN", "MACVLAN", "MAX_ADDRESSES",
    "MAX_PARAMETERS", "MTU_MAX", "MTU_MIN", "MTU_MIN_IPV6", "OFFLOAD_MAX", "PASSTHROUGH",
    "SLAAC", "SYSCTLS", "TYPES", "UNNUMBERED", "ConfigError", "EthtoolConfig",
    "IPVlanConfig", "InterfaceConfig", "MacvlanConfig", "NeighborConfig", "NetworkConfig",
    "RouteConfig", "RuleConfig", "VRFConfig", "addressing", "child_kind", "decode_config",
    "defaulted", "interface_type", "merge", "named_sysctls", "validate", "vrf_table",
]
