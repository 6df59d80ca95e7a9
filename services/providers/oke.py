"""Oracle Cloud (OKE): ``oke.dra.net/*`` RDMA topology from the OCI IMDS v2 host document.

Node-wide, on every device. OCIDs are ~90 characters, over the 64-byte limit:
as DRANET does, an attribute carries the OCID's unique suffix (after the last
``.``, at most 60 characters).
"""

from __future__ import annotations

from schemas.inventory import AttrValue
from services.discovery.attributes import cut
from services.providers.base import DeviceIds, StaticInstance
from services.providers.http import Client, ProviderError

DEFAULT_URL = "http://169.254.169.254"
PREFIX = "oke.dra.net"
HEADERS = {"Authorization": "Bearer Oracle"}


async def detect(client: Client) -> bool:
    status, _ = await client.request("GET", "/opc/v2/instance/", headers=HEADERS)
    return status == 200


def ocid_suffix(value: str, field: str) -> str:
    if not value:
        return ""
    if "ocid" not in value or "." not in value:
        raise ProviderError("OKE", f"rdmaTopologyData.{field}: {value!r:.80} is not an OCID")
    return value.rsplit(".", 1)[1][-60:]


class OkeInstance(StaticInstance):
    def __init__(self, values: dict[str, str]) -> None:
        self.name = "OKE"
        self.values = values

    def attributes(self, ids: DeviceIds) -> dict[str, AttrValue]:
        return {f"{PREFIX}/{k}": cut(v) for k, v in self.values.items() if v}


async def fetch(client: Client) -> OkeInstance:
    host = await client.json("GET", "/opc/v2/host/", headers=HEADERS)
    if not isinstance(host, dict):
        raise ProviderError(client.name, "host: expected an object")
    topo = host.get("rdmaTopologyData")
    rack = str(host.get("rackId") or "")
    if not isinstance(topo, dict):  # shapes without a GPU fabric (H100...)
        return OkeInstance({"networkBlockId": str(host.get("networkBlockId") or ""),
                            "rackId": rack})
    return OkeInstance({
        "hpcIslandId": ocid_suffix(str(topo.get("customerHPCIslandId") or ""),
                                   "customerHPCIslandId"),
        "networkBlockId": ocid_suffix(str(topo.get("customerNetworkBlock") or ""),
                                      "customerNetworkBlock"),
        "localBlockId": ocid_suffix(str(topo.get("customerLocalBlock") or ""),
                                    "customerLocalBlock"),
        "rackId": rack,
        "gpuMemoryFabricId": ocid_suffix(str(topo.get("customerGpuMemoryFabric") or ""),
                                         "customerGpuMemoryFabric"),
    })
