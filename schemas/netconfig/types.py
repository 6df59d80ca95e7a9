"""The claim configuration's types: DRANET's ``NetworkConfig`` (pkg/apis/types.go),
field by field, as JSON names them. What each field may hold is in validate.py."""

from __future__ import annotations

import msgspec

from schemas.base import Strict


class VRFConfig(Strict):
    name: str = ""
    """The VRF device in the pod: created (with ``table``) or joined when it exists."""
    table: int | None = None
    """Absent: :func:`vrf_table` of the name, so devices naming one VRF share its table."""


class IPVlanConfig(Strict):
    """``interface.ipvlan``: how an ``IPVLAN`` child shares its parent (DRANET's block)."""

    mode: str = ""
    """``L2`` (DRANET's only one and the default), knd also ``L3``, ``L3S``."""
    flag: str = ""
    """``Bridge`` (DRANET's only one and the default), knd also ``Private``, ``VEPA``."""


class MacvlanConfig(Strict):
    """``interface.macvlan`` (knd extension): how a ``MACVLAN`` child shares its parent."""

    mode: str = ""
    """``Bridge`` (the default), ``Private`` or ``VEPA``."""


class InterfaceConfig(Strict):
    # field names are DRANET's JSON names (camelCase), kept verbatim for compatibility
    name: str = ""
    """Name inside the pod (<= 15 chars, no '/'); default: the host name of the interface."""
    addresses: list[str] = []
    """CIDRs. None given: the host's global addresses and routes move with the interface."""
    mtu: int | None = None
    hardwareAddr: str | None = None
    dhcp: bool | None = None
    gsoMaxSize: int | None = None
    groMaxSize: int | None = None
    gsoIPv4MaxSize: int | None = None
    groIPv4MaxSize: int | None = None
    disableEbpfPrograms: bool | None = None
    forwarding: bool | None = None
    arpIgnore: int | None = None
    arpAnnounce: int | None = None
    vrf: VRFConfig | None = None
    type: str = ""
    """``Passthrough`` (default: the device moves into the pod), ``IPVLAN`` or, a knd
    extension, ``MACVLAN`` (a child of the device is made in the pod; the device stays
    on the host, and several claims may hold it). Matched without regard to case."""
    addressing: str = ""
    """``Static`` (default), ``DHCP``, ``SLAAC`` (IPv6 from router advertisements) or
    ``Unnumbered`` (a child with no address at all)."""
    ipvlan: IPVlanConfig | None = None
    macvlan: MacvlanConfig | None = None
    acceptRA: int | None = None
    """0..2: ``net.ipv6.conf.<if>.accept_ra`` in the pod."""
    dadTransmits: int | None = None
    routerSolicitationDelay: int | None = None
    routerSolicitationInterval: int | None = None
    disableIPv6: bool | None = None
    addrGenMode: int | None = None
    """0..3: ``net.ipv6.conf.<if>.addr_gen_mode`` (3: random)."""


class RouteConfig(Strict):
    destination: str = ""
    gateway: str = ""
    source: str = ""
    scope: int = 0
    """0 universe, 253 link, 254 host. Link-scope routes are applied first."""
    table: int = 0


class RuleConfig(Strict):
    priority: int = 0
    source: str = ""
    destination: str = ""
    table: int = 0


class NeighborConfig(Strict):
    destination: str = ""
    hardwareAddr: str = ""


class EthtoolConfig(Strict):
    features: dict[str, bool] = {}
    privateFlags: dict[str, bool] = {}


class NetworkConfig(Strict):
    profile: str = ""
    """DRANET's provider profile name, resolved at prepare by the profile provider
    (``--profile-provider webhook``: services.providers)."""
    interface: InterfaceConfig = msgspec.field(default_factory=InterfaceConfig)
    routes: list[RouteConfig] = []
    rules: list[RuleConfig] = []
    neighbors: list[NeighborConfig] = []
    ethtool: EthtoolConfig | None = None
    sysctls: dict[str, str] = {}
    """knd extension: per-interface sysctls in the pod, keyed ``<family>.<name>``:
    {"ipv4.arp_ignore": "1"} sets net.ipv4.conf.<ifname>.arp_ignore and
    {"ipv6.accept_ra": "0"} net.ipv6.conf.<ifname>.accept_ra (ARP/ND behaviour of
    multi-homed pods). Only the names of :data:`SYSCTLS` are accepted."""
