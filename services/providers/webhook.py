"""A webhook provider ("bring your own provider"), speaking DRANET's contract.

``GET /health`` answers the capabilities ``{"cloudProvider": bool,
"profileProvider": bool}``; a cloud provider answers ``POST /GetDeviceAttributes``
and ``POST /GetDeviceConfig`` with the device's identifiers
(``{"name", "mac_address", "pci_address"}``) as body; a profile provider answers
``POST /GetProfileConfig`` and ``POST /ReleaseProfileConfig`` with
``{"device": ..., "claim_uid": ..., "config": <NetworkConfig>}``. Configurations
come back as DRANET ``NetworkConfig`` JSON and are checked like a claim's, with
errors naming the webhook and the field.
"""

from __future__ import annotations

from typing import Any

import msgspec

from schemas.inventory import AttrValue
from schemas.netconfig import ConfigError, NetworkConfig, decode_config
from services.providers.attrs import decode_attributes
from services.providers.base import NO_HOST, DeviceIds, HostSide
from services.providers.http import Client, ProviderError, Target

HEALTH = "/health"
GET_DEVICE_ATTRIBUTES = "/GetDeviceAttributes"
GET_DEVICE_CONFIG = "/GetDeviceConfig"
GET_PROFILE_CONFIG = "/GetProfileConfig"
RELEASE_PROFILE_CONFIG = "/ReleaseProfileConfig"


class Webhook:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.client = Client(Target.parse(url, "--webhook-url"), f"webhook {url}", timeout)
        self.name = self.client.name
        self.cloud_provider = False
        self.profile_provider = False

    async def health(self) -> None:
        """Read the capabilities; raises ProviderError when they cannot be read."""
        caps = await self.client.json("GET", HEALTH)
        where = f"{self.name} GET {HEALTH}"
        if not isinstance(caps, dict):
            raise ProviderError(where, f"expected an object of capabilities, got {caps!r:.80}")
        for field in ("cloudProvider", "profileProvider"):
            value = caps.get(field, False)
            if not isinstance(value, bool):
                raise ProviderError(where, f"{field}: expected true or false, got {value!r:.80}")
        self.cloud_provider = caps.get("cloudProvider", False)
        self.profile_provider = caps.get("profileProvider", False)

    async def close(self) -> None:
        await self.client.close()

    def _config(self, raw: Any, path: str) -> NetworkConfig | None:
        if raw is None:
            return None
        try:
            return decode_config(raw, "config")
        except ConfigError as exc:
            raise ProviderError(f"{self.name} POST {path}", "; ".join(exc.errors)) from None

    async def device_attributes(self, ids: DeviceIds) -> tuple[dict[str, AttrValue], list[str]]:
        raw = await self.client.json("POST", GET_DEVICE_ATTRIBUTES, body=ids.wire())
        return decode_attributes(raw, f"{self.name} POST {GET_DEVICE_ATTRIBUTES}")

    async def device_config(self, ids: DeviceIds, host: HostSide = NO_HOST
                            ) -> NetworkConfig | None:
        # the webhook contract sends the identifiers only; ``host`` is for clouds
        raw = await self.client.json("POST", GET_DEVICE_CONFIG, body=ids.wire())
        return self._config(raw, GET_DEVICE_CONFIG)

    def _profile_body(self, ids: DeviceIds, claim_uid: str,
                      config: NetworkConfig | None) -> dict[str, Any]:
        body: dict[str, Any] = {"device": ids.wire(), "claim_uid": claim_uid}
        if config is not None:
            body["config"] = msgspec.to_builtins(config)
        return body

    async def profile_config(self, ids: DeviceIds, claim_uid: str,
                             config: NetworkConfig) -> NetworkConfig | None:
        raw = await self.client.json("POST", GET_PROFILE_CONFIG,
                                     body=self._profile_body(ids, claim_uid, config))
        return self._config(raw, GET_PROFILE_CONFIG)

    async def release_profile_config(self, ids: DeviceIds, claim_uid: str,
                                     config: NetworkConfig | None) -> None:
        await self.client.json("POST", RELEASE_PROFILE_CONFIG,
                               body=self._profile_body(ids, claim_uid, config))
