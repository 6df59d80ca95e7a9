"""The claim configuration: what a ResourceClaim's opaque parameters may say.

It accepts DRANET's ``NetworkConfig`` JSON (``interface``, ``routes``, ``rules``,
``neighbors``, ``ethtool``) so DRANET examples work by changing only the driver
name. Types only; the checks that need more than types (CIDRs, families, name
rules) live in ``services/kubelet_gateway/netconfig.py`` beside the decoder, so
that every error names its field path (``interface.mtu``, ``routes[1].gateway``).
"""

from __future__ import annotations

import msgspec


class _Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    pass


class InterfaceConfig(_Strict):
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


class RouteConfig(_Strict):
    destination: str = ""
    gateway: str = ""
    source: str = ""
    scope: int = 0
    """0 universe, 253 link, 254 host. Link-scope routes are applied first."""
    table: int = 0


class RuleConfig(_Strict):
    priority: int = 0
    source: str = ""
    destination: str = ""
    table: int = 0


class NeighborConfig(_Strict):
    destination: str = ""
    hardwareAddr: str = ""


class EthtoolConfig(_Strict):
    features: dict[str, bool] = {}
    privateFlags: dict[str, bool] = {}


class NetworkConfig(_Strict):
    interface: InterfaceConfig = msgspec.field(default_factory=InterfaceConfig)
    routes: list[RouteConfig] = []
    rules: list[RuleConfig] = []
    neighbors: list[NeighborConfig] = []
    ethtool: EthtoolConfig | None = None
    sysctls: dict[str, str] = {}
    """knd extension: per-interface sysctls in the pod, e.g. {"arp_ignore": "1"} sets
    net.ipv4.conf.<ifname>.arp_ignore (ARP/ND behaviour of multi-homed pods)."""
