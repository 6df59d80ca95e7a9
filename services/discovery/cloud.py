"""Cloud or webhook attributes on the scanned devices, before the filter sees them.

Asked once per device identity (interface name, MAC, PCI address) and kept
until the periodic resync, so the rescans of a busy node do not call a webhook
for every netlink event; a device that comes back with the same identity gets
its attributes from memory. A provider that fails costs only its attributes:
the device is published with discovery's own, and the failure is logged.
"""

from __future__ import annotations

import logging

import anyio

from schemas.inventory import AttrValue, Device
from services.providers.attrs import merge_into
from services.providers.base import CloudInstance, DeviceIds
from services.providers.http import ProviderError

log = logging.getLogger("knd.discovery.cloud")

CONCURRENCY = 8
"""Requests to the provider in flight at once during one rescan."""


class CloudAttributes:
    def __init__(self, cloud: CloudInstance, driver: str) -> None:
        self.cloud = cloud
        self.driver = driver
        self._cache: dict[DeviceIds, dict[str, AttrValue]] = {}
        self._limit = anyio.Semaphore(CONCURRENCY)

    async def _ask(self, ids: DeviceIds) -> None:
        async with self._limit:
            try:
                attrs, errors = await self.cloud.device_attributes(ids)
            except ProviderError as exc:
                log.warning("device %s: no provider attributes: %s", ids.name, exc)
                attrs, errors = {}, []
        for err in errors:
            log.warning("device %s: attribute left out: %s", ids.name, err)
        self._cache[ids] = attrs

    async def decorate(self, devices: list[Device], fresh: bool = False) -> list[Device]:
        """``devices`` with the provider's attributes; ``fresh`` asks again for all."""
        if fresh:
            self._cache.clear()
        ids = {d.name: DeviceIds.of(d, self.driver) for d in devices}
        wanted = {i for i in ids.values() if (i.name or i.mac or i.pci_address)
                  and i not in self._cache}
        if wanted:
            async with anyio.create_task_group() as tg:
                for i in wanted:
                    tg.start_soon(self._ask, i)
        live = set(ids.values())
        for gone in [k for k in self._cache if k not in live]:
            del self._cache[gone]
        return [merge_into(d, self._cache.get(ids[d.name], {}), self.cloud.name)
                for d in devices]
