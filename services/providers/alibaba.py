"""Alibaba Cloud ECS: ``alibaba.dra.net/instanceType`` and ``erdma`` (token-protected IMDS).

``erdma`` marks the PCI functions behind an ``erdma*`` RDMA device, read from sysfs.
"""

from __future__ import annotations

import os
from pathlib import Path

from schemas.inventory import AttrValue
from services.discovery.attributes import cut
from services.providers.base import DeviceIds, StaticInstance
from services.providers.http import Client

DEFAULT_URL = "http://100.100.100.200"
PREFIX = "alibaba.dra.net"
TOKEN_HEADER = "X-aliyun-ecs-metadata-token"


async def detect(client: Client) -> bool:
    status, _ = await client.request("GET", "/latest/meta-data/instance-id",
                                     headers=await client.session_token(TOKEN_HEADER))
    return status == 200


def erdma_functions(sysfs_root: str | Path) -> set[str]:
    root = Path(sysfs_root) / "class" / "infiniband"
    out: set[str] = set()
    try:
        names = [n for n in os.listdir(root) if n.startswith("erdma")]
    except OSError:
        return out
    for name in names:
        try:
            out.add(Path(os.readlink(root / name / "device")).name)
        except OSError:
            continue
    return out


class AlibabaInstance(StaticInstance):
    def __init__(self, instance_type: str, erdma: set[str]) -> None:
        self.name = "ALIBABA"
        self.instance_type = instance_type
        self.erdma = erdma

    def attributes(self, ids: DeviceIds) -> dict[str, AttrValue]:
        out: dict[str, AttrValue] = {}
        if self.instance_type:
            out[f"{PREFIX}/instanceType"] = cut(self.instance_type)
        if ids.pci_address and ids.pci_address in self.erdma:
            out[f"{PREFIX}/erdma"] = True
        return out


async def fetch(client: Client, sysfs_root: str | Path = "/sys") -> AlibabaInstance:
    kind = await client.text("GET", "/latest/meta-data/instance/instance-type",
                             headers=await client.session_token(TOKEN_HEADER))
    return AlibabaInstance(kind, erdma_functions(sysfs_root))
