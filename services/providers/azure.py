"""Microsoft Azure: ``azure.dra.net/*`` and per-NIC policy routing from IMDS.

Node-wide attributes (``vmSize``, ``placementGroupId``, ``interconnectGroupId``,
``interconnectSubgroupId``) go on every device. For a NIC that IMDS lists
(matched by MAC; IMDS writes ``000D3AFFBB22``) the device gets DRANET's baseline
configuration: a rule ``from <subnet> lookup 100+i`` and a default route via the
subnet's first address in that table, i being the NIC's position in IMDS.
"""

from __future__ import annotations

import ipaddress

from schemas.inventory import AttrValue
from schemas.netconfig import NetworkConfig, RouteConfig, RuleConfig
from services.discovery.attributes import cut
from services.providers.base import DeviceIds, StaticInstance, normalize_mac
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

    def config(self, ids: DeviceIds) -> NetworkConfig | None:
        if not ids.mac:
            return None
        mac = normalize_mac(ids.mac)
        found = [(n, nic) for n, nic in enumerate(self.interfaces)
                 if normalize_mac(str(nic.get("macAddress", ""))) == mac]
        if not found:
            return None
        n, nic = found[0]
        table = TABLE_BASE + n
        subnets = ((nic.get("ipv4") or {}).get("subnet") or [])
        if not subnets or not isinstance(subnets[0], dict):
            return None
        addr, prefix = str(subnets[0].get("address", "")), str(subnets[0].get("prefix", ""))
        gw = _gateway(addr, prefix)
        if gw is None:
            return None
        return NetworkConfig(rules=[RuleConfig(source=f"{addr}/{prefix}", table=table)],
                             routes=[RouteConfig(destination="0.0.0.0/0", gateway=gw,
                                                 table=table)])


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
