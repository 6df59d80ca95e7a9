"""Provider configuration merged into a claim's, at prepare, before anything is planned.

For each device: the cloud's (or webhook's) baseline configuration
(``GetDeviceConfig``) goes under the claim's; then, when the result names a
``profile``, the profile provider's answer (``GetProfileConfig``) goes under
that. The merged configuration is what the plumber validates against the device
and applies, so a provider's bad value fails prepare with the field's name while
the device is still at home. A profile granted to a claim that then fails to
prepare is released at once (``ReleaseProfileConfig``), as it is at unprepare:
best effort, logged, never blocking.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

import anyio
import msgspec

from schemas.inventory import Device, InventorySnapshot
from schemas.netconfig import NetworkConfig
from schemas.plumber import Prepare
from schemas.text import q
from services.plumber.model import RT_TABLE_MAIN, ClaimPlan
from services.plumber.plan import HostFacts
from services.providers.base import NO_HOST, CloudInstance, DeviceIds, HostSide
from services.providers.http import ProviderError
from services.providers.merge import merge_provider
from services.providers.webhook import Webhook

log = logging.getLogger("knd.plumber.provided")


@dataclass(frozen=True)
class Granted:
    """A profile a provider gave a claim's device: what to release if prepare fails."""

    ids: DeviceIds
    claim_uid: str
    config: NetworkConfig


def host_side(dev: Device, driver: str, facts: HostFacts) -> HostSide:
    """The device's IPv6 default gateway in the host's main table, from its routes."""
    ifname = dev.attributes.get(f"{driver}/ifName")
    routes = facts.routes.get(ifname, []) if isinstance(ifname, str) else []
    gw = next((r.gateway for r in routes if r.family == socket.AF_INET6 and r.dst == "::/0"
               and r.table == RT_TABLE_MAIN and r.gateway), "")
    return HostSide(ipv6_gateway=gw)


class Provided:
    def __init__(self, cloud: CloudInstance | None, profile: Webhook | None,
                 driver: str) -> None:
        self.cloud = cloud
        self.profile = profile
        self.driver = driver

    @property
    def active(self) -> bool:
        return self.cloud is not None or self.profile is not None

    async def resolve(self, req: Prepare, inv: InventorySnapshot | None,
                      facts: HostFacts | None = None
                      ) -> tuple[Prepare, list[str], list[Granted]]:
        """(``req`` with merged configs, errors naming each device's field, profiles granted).

        Devices are resolved one after another, each with its own error: a claim
        of eight NICs against a slow webhook waits eight times its answer, but the
        webhook sees the claim's devices in order, as DRANET sends them."""
        by_name = {d.name: d for d in inv.devices} if inv is not None else {}
        errors: list[str] = []
        granted: list[Granted] = []
        devices = []
        for n, dr in enumerate(req.devices):
            dev = by_name.get(dr.device)
            if dev is None:  # the plan says why, with the device's field
                devices.append(dr)
                continue
            host = host_side(dev, self.driver, facts) if facts is not None else NO_HOST
            cfg, errs, grant = await self._one(dr.device, dev, dr.config, req.claim_uid, host)
            errors += [f"devices[{n}].config{e}" for e in errs]
            if grant is not None:
                granted.append(grant)
            devices.append(msgspec.structs.replace(dr, config=cfg))
        return msgspec.structs.replace(req, devices=devices), errors, granted

    async def _one(self, name: str, dev: Device, asked: NetworkConfig | None, uid: str,
                   host: HostSide) -> tuple[NetworkConfig | None, list[str], Granted | None]:
        ids = DeviceIds.of(dev, self.driver, name=name)
        cfg = asked
        if self.cloud is not None:
            try:
                base = await self.cloud.device_config(ids, host)
            except ProviderError as exc:
                return asked, [f": baseline configuration from {exc}"], None
            if base is not None:
                cfg = merge_provider(cfg or NetworkConfig(), base)
        profile = getattr(cfg, "profile", "") if cfg is not None else ""
        if not profile:
            return cfg, [], None
        assert cfg is not None
        if self.profile is None:
            return cfg, [f".profile: {q(profile)}: no profile provider on this node "
                         "(--profile-provider webhook --webhook-url ...)"], None
        try:
            given = await self.profile.profile_config(ids, uid, cfg)
        except ProviderError as exc:
            return cfg, [f".profile: {q(profile)}: {exc}"], None
        merged = merge_provider(cfg, given)
        return merged, [], Granted(ids, uid, merged)

    async def release(self, granted: list[Granted]) -> None:
        """Give the profiles back; failures are logged (the provider reclaims leaks)."""
        if self.profile is None:
            return
        for g in granted:
            with anyio.CancelScope(shield=True):
                try:
                    await self.profile.release_profile_config(g.ids, g.claim_uid, g.config)
                except ProviderError as exc:
                    log.error("claim %s device %s: profile %s not released: %s", g.claim_uid,
                              g.ids.name, q(g.config.profile), exc)

    def granted(self, plan: ClaimPlan) -> list[Granted]:
        """The profiles a prepared claim holds, from its checkpointed plan."""
        out = []
        for d in plan.devices:
            if d.config is not None and d.config.profile:
                dev = d.published or Device(name=d.device)
                out.append(Granted(DeviceIds.of(dev, self.driver, name=d.device), plan.uid,
                                   d.config))
        return out
