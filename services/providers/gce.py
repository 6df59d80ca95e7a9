"""Google Compute Engine: ``gce.dra.net/*`` from the metadata server.

Read once at start (``Metadata-Flavor: Google``): the machine type, the physical
host topology ``/block/subblock/host`` when the VM has one, and each vNIC's
network and alias ranges, matched to a device by MAC. Same names and values as
DRANET's GCE provider.
"""

from __future__ import annotations

import logging
import re

from schemas.inventory import AttrValue
from services.discovery.attributes import cut, join_cut
from services.providers.base import DeviceIds, StaticInstance, normalize_mac
from services.providers.http import Client, ProviderError

log = logging.getLogger("knd.providers.gce")

DEFAULT_URL = "http://metadata.google.internal"
PREFIX = "gce.dra.net"
HEADERS = {"Metadata-Flavor": "Google"}
API = "/computeMetadata/v1/"
_NETWORK = re.compile(r"^projects/(\d+)/networks/(\S+)$")


async def detect(client: Client) -> bool:
    status, _ = await client.request("GET", API + "instance/name", headers=HEADERS)
    return status == 200


class GceInstance(StaticInstance):
    def __init__(self, machine_type: str, interfaces: list[dict], topology: str) -> None:
        self.name = "GCE"
        self.machine_type = machine_type
        self.interfaces = {normalize_mac(str(i.get("mac", ""))): i for i in interfaces
                           if isinstance(i, dict)}
        self.topology = topology

    def attributes(self, ids: DeviceIds) -> dict[str, AttrValue]:
        out: dict[str, AttrValue] = {f"{PREFIX}/machineType": cut(self.machine_type)}
        parts = self.topology.lstrip("/").split("/", 2) if self.topology else []
        if len(parts) == 3:
            for key, value in zip(("block", "subBlock", "host"), parts, strict=True):
                out[f"{PREFIX}/{key}"] = cut(value)
        nic = self.interfaces.get(normalize_mac(ids.mac)) if ids.mac else None
        if nic is None:
            return out
        aliases = [a for a in nic.get("ipAliases") or [] if isinstance(a, str)]
        if aliases:
            out[f"{PREFIX}/ipAliases"] = join_cut(aliases)
        m = _NETWORK.match(str(nic.get("network", "")))
        if m:
            out[f"{PREFIX}/networkName"] = cut(m.group(2))
            out[f"{PREFIX}/networkProjectNumber"] = int(m.group(1))
        else:
            log.warning("GCE network %r of %s does not parse", nic.get("network"), ids.mac)
        return out


async def fetch(client: Client) -> GceInstance:
    machine = await client.text("GET", API + "instance/machine-type", headers=HEADERS)
    nics = await client.json("GET", API + "instance/network-interfaces/?recursive=true&alt=json",
                             headers=HEADERS)
    if not isinstance(nics, list):
        raise ProviderError(client.name, "network-interfaces: expected a list")
    try:  # not every VM has a physical host; that is normal
        topology = await client.text("GET", API + "instance/attributes/physical_host",
                                     headers=HEADERS)
    except ProviderError as exc:
        log.info("no physical host topology on this GCE VM: %s", exc)
        topology = ""
    # "projects/<number>/machineTypes/<type>": the type is the last part
    return GceInstance(machine.rsplit("/", 1)[-1], nics, topology)
