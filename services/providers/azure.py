"""Microsoft Azure: ``azure.dra.net/*`` and per-NIC policy routing from IMDS.

Node-wide attributes (``vmSize``, ``placementGroupId``, ``interconnectGroupId``,
``interconnectSubgroupId``) go on every device. For a NIC that IMDS lists
(matched by MAC; IMDS writes ``000D3AFFBB22``) the device gets DRANET's baseline
configuration: a rule ``from <subnet> lookup 100+i`` and a default route via the
subnet's first address in that table, i being the NIC's position in IMDS. When IMDS
gives the NIC a global IPv6 address and the host has an IPv6 default route through
it, the same for IPv6: ``from <address>/128 lookup 100+i`` and ``::/0`` via that
route's gateway.
"""

from __future__ import annotations

import ipaddress

from schemas.inventory import AttrValue
from schemas.netconfig import NetworkConfig, RouteConfig, RuleConfig
from services.discovery.attributes import cut
from services.providers.base import DeviceIds, HostSide, StaticInstance, normalize_mac
from services.providers.http import Client, ProviderError

DEFAULT_URL = "http://169.254.169.254"
PREFIX = "azure.dra.net"
HEADERS = {"Metadata": "true"}
API_VERSION = "2025-11-11"
TABLE_BASE = 100
COMPUTE = {"vmSize": "vmSize", "placementGroupId": "placementGroupId",
           "interconnectGroupId": "interconnectGroupId",
           "interconnectSubgroupId": "interconnectSubgroupId"}


def _path(what: str, fmt: str = "json") -> str:
    return f"/metadata/instance{what}?api-version={API_VERSION}&format={fmt}"


async def detect(client: Client) -> bool:
    status, _ = await client.request("GET", _path("", "text"), headers=HEADERS)
    return status == 200


def _gateway(address: str, prefix: str) -> str | None:
    """The subnet's first address, if ``address/prefix`` is an IPv4 network base."""
    try:
        net = ipaddress.IPv4Network(f"{address}/{prefix}")
    except ValueError:
        return None
    return str(net.network_address + 1) if net.num_addresses > 1 else None


class AzureInstance(StaticInstance):
    def __init__(self, compute: dict, interfaces: list[dict]) -> None:
        self.name = "AZURE"
        self.compute = {attr: str(compute.get(key) or "") for key, attr in COMPUTE.items()}
        self.interfaces = [i for i in interfaces if isinstance(i, dict)]

    def attributes(self, ids: DeviceIds) -> dict[str, AttrValue]:
        return {f"{PREFIX}/{k}": cut(v) for k, v in self.compute.items() if v}

    def config(self, ids: DeviceIds, host: HostSide) -> NetworkConfig | None:
        if not ids.mac:
            return None
        mac = normalize_mac(ids.mac)
        found = [(n, nic) for n, nic in enumerate(self.interfaces)
                 if normalize_mac(str(nic.get("macAddress", ""))) == mac]
        if not found:
            return None
        n, nic = found[0]
        table = TABLE_BASE + n
        rules: list[RuleConfig] = []
        routes: list[RouteConfig] = []
        subnets = _list(nic, "ipv4", "subnet")
        if subnets:
            addr, prefix = str(subnets[0].get("address", "")), str(subnets[0].get("prefix", ""))
            gw = _gateway(addr, prefix)
            if gw is not None:
                rules.append(RuleConfig(source=f"{addr}/{prefix}", table=table))
                routes.append(RouteConfig(destination="0.0.0.0/0", gateway=gw, table=table))
        v6 = _list(nic, "ipv6", "ipAddress")
        addr6 = str(v6[0].get("privateIpAddress", "")) if v6 else ""
        if host.ipv6_gateway and _global_v6(addr6):
            rules.append(RuleConfig(source=f"{addr6}/128", table=table))
            routes.append(RouteConfig(destination="::/0", gateway=host.ipv6_gateway, table=table))
        if not rules and not routes:
            return None
        return NetworkConfig(rules=rules, routes=routes)


def _list(nic: dict, family: str, key: str) -> list[dict]:
    """``nic[family][key]`` when it is a list whose first entry is an object, else []."""
    found = (nic.get(family) or {}).get(key) if isinstance(nic.get(family), dict) else None
    return found if isinstance(found, list) and found and isinstance(found[0], dict) else []


def _global_v6(text: str) -> bool:
    try:
        return not ipaddress.IPv6Address(text).is_link_local
    except ValueError:
        return False


async def fetch(client: Client) -> AzureInstance:
    compute = await client.json("GET", _path("/compute"), headers=HEADERS)
    if not isinstance(compute, dict):
        raise ProviderError(client.name, "compute: expected an object")
    try:
        network = await client.json("GET", _path("/network"), headers=HEADERS)
        nics = network.get("interface") if isinstance(network, dict) else None
    except ProviderError:
        nics = None  # attributes still work without the NICs
    return AzureInstance(compute, nics if isinstance(nics, list) else [])
