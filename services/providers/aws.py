"""Amazon EC2: detection, the instance identity through IMDSv2, and the EFA device groups
of Trainium instances (``resource.aws.com/devicegroup*_id``, as DRANET publishes them).

An adapter gets groups when the instance is a Neuron one (Trainium/Inferentia, from the
identity document), the adapter is bound to the ``efa`` driver, and the instance type
(the DMI product name, as AWS's lookup library reads it; the identity document's when
that is unreadable) is one whose wiring ``services.providers.neuron`` knows.
"""

from __future__ import annotations

import os
from pathlib import Path

from schemas.inventory import AttrValue
from services.providers import neuron
from services.providers.base import DeviceIds, StaticInstance
from services.providers.http import Client, ProviderError

DEFAULT_URL = "http://169.254.169.254"
IDENTITY = "/latest/dynamic/instance-identity/document"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
PRODUCT_NAME = "devices/virtual/dmi/id/product_name"


async def detect(client: Client) -> bool:
    token = await client.session_token(TOKEN_HEADER)
    status, _ = await client.request("GET", IDENTITY, headers=token)
    return status == 200


class AwsInstance(StaticInstance):
    def __init__(self, instance_type: str, sysfs_root: str | Path = "/sys") -> None:
        self.name = "AWS"
        self.instance_type = instance_type
        self.sysfs = Path(sysfs_root)
        self.table: tuple[str, ...] = ()
        if neuron.is_neuron_type(instance_type):
            self.table = neuron.table_for(self._product_name() or instance_type)

    def _product_name(self) -> str:
        try:
            return (self.sysfs / PRODUCT_NAME).read_text().strip()
        except (OSError, UnicodeDecodeError):
            return ""

    def _is_efa(self, pci_address: str) -> bool:
        try:
            driver = os.readlink(self.sysfs / "bus/pci/devices" / pci_address / "driver")
        except OSError:
            return False
        return os.path.basename(driver) == "efa"

    def attributes(self, ids: DeviceIds) -> dict[str, AttrValue]:
        if not self.table or not ids.pci_address or not self._is_efa(ids.pci_address):
            return {}
        return dict(neuron.device_groups(self.table, ids.pci_address))


async def fetch(client: Client, sysfs_root: str | Path = "/sys") -> AwsInstance:
    doc = await client.json("GET", IDENTITY, headers=await client.session_token(TOKEN_HEADER))
    if not isinstance(doc, dict):
        raise ProviderError(client.name, "instance identity: expected an object")
    return AwsInstance(str(doc.get("instanceType") or ""), sysfs_root)
