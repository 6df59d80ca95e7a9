"""What every provider offers: attributes for a device, and configuration for a claim.

The device is named to a provider as DRANET names it (``DeviceIdentifiers``):
``{"name", "mac_address", "pci_address"}``, the two latter left out when empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from schemas.inventory import AttrValue, Device
from schemas.netconfig import NetworkConfig


@dataclass(frozen=True)
class DeviceIds:
    name: str
    mac: str = ""
    pci_address: str = ""

    @classmethod
    def of(cls, device: Device, driver: str, name: str | None = None) -> DeviceIds:
        """The identifiers of ``device``; ``name`` defaults to its interface name (what
        DRANET sends when it asks for attributes; for configuration it sends the
        device's name)."""
        def attr(key: str) -> str:
            value = device.attributes.get(f"{driver}/{key}")
            return value if isinstance(value, str) else ""

        return cls(name=attr("ifName") if name is None else name, mac=attr("mac"),
                   pci_address=attr("pciAddress"))

    def wire(self) -> dict[str, str]:
        out = {"name": self.name}
        if self.mac:
            out["mac_address"] = self.mac
        if self.pci_address:
            out["pci_address"] = self.pci_address
        return out


@dataclass(frozen=True)
class HostSide:
    """What the plumber read of the device in the node's netns, for a cloud whose
    configuration builds on it (Azure routes IPv6 through the host's gateway)."""

    ipv6_gateway: str = ""
    """The gateway of the device's IPv6 default route in the main table, if any."""


NO_HOST = HostSide()


def normalize_mac(mac: str) -> str:
    """Lower case without separators: clouds write ``0011AAFFBB22`` or ``00-11-...``."""
    return mac.lower().replace(":", "").replace("-", "")


class CloudInstance(Protocol):
    """The node's cloud (or a webhook in its place): facts about its devices."""

    name: str
    """How logs and errors name it: ``GCE``, ``webhook unix:///run/x.sock``."""

    async def device_attributes(self, ids: DeviceIds) -> tuple[dict[str, AttrValue], list[str]]:
        """(attributes, errors): errors name each attribute left out and why."""
        ...

    async def device_config(self, ids: DeviceIds, host: HostSide = NO_HOST
                            ) -> NetworkConfig | None:
        """Configuration the infrastructure needs on this device (None: none).
        Raises ProviderError when the provider fails."""
        ...


class StaticInstance:
    """A cloud whose metadata was read once at start: answers from memory."""

    name = "cloud"

    def attributes(self, ids: DeviceIds) -> dict[str, AttrValue]:
        return {}

    def config(self, ids: DeviceIds, host: HostSide) -> NetworkConfig | None:
        return None

    async def device_attributes(self, ids: DeviceIds) -> tuple[dict[str, AttrValue], list[str]]:
        return self.attributes(ids), []

    async def device_config(self, ids: DeviceIds, host: HostSide = NO_HOST
                            ) -> NetworkConfig | None:
        return self.config(ids, host)
