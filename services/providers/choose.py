"""Which providers this node has: the cloud (told or detected) and the profile provider.

As DRANET: an unset hint probes every cloud's metadata service (GCE, AWS, Azure,
OKE, Alibaba, then the webhook if one is given), here all at once and within
``--metadata-timeout``; a cloud whose metadata cannot be read is logged and left
out, the node still works without its attributes. A webhook that was asked for
is different: if it cannot be reached, or its ``/health`` says it lacks a
capability asked of it, the service refuses to start, in one line.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import ModuleType

import anyio

from services.common.runner import Refused
from services.providers import Settings, alibaba, aws, azure, gce, oke
from services.providers.base import CloudInstance
from services.providers.http import Client, ProviderError, Target
from services.providers.webhook import Webhook

log = logging.getLogger("knd.providers")

CLOUDS: dict[str, ModuleType] = {"GCE": gce, "AWS": aws, "AZURE": azure, "OKE": oke,
                                 "ALIBABA": alibaba}
"""In DRANET's order of detection."""


@dataclass
class Providers:
    cloud: CloudInstance | None = None
    profile: Webhook | None = None
    _clients: list[Client | Webhook] = field(default_factory=list)

    async def aclose(self) -> None:
        for c in self._clients:
            await c.close()


def _client(settings: Settings, hint: str, timeout: float) -> Client:
    url = settings.metadata_url or CLOUDS[hint].DEFAULT_URL
    return Client(Target.parse(url, "--metadata-url"), f"{hint} metadata {url}", timeout)


async def detect(settings: Settings) -> str:
    """The cloud this node runs on, or NONE."""
    found: dict[str, bool] = {}

    async def probe(hint: str) -> None:
        client = _client(settings, hint, settings.metadata_timeout)
        try:
            found[hint] = await CLOUDS[hint].detect(client)
        except ProviderError as exc:
            log.debug("not %s: %s", hint, exc)
        finally:
            await client.close()

    with anyio.move_on_after(settings.metadata_timeout):
        async with anyio.create_task_group() as tg:
            for hint in CLOUDS:
                tg.start_soon(probe, hint)
    return next((hint for hint in CLOUDS if found.get(hint)), "NONE")


async def _cloud(settings: Settings, hint: str) -> CloudInstance | None:
    """The cloud's instance, read with retries (a metadata server can be late at boot)."""
    client = _client(settings, hint, settings.metadata_timeout)
    module = CLOUDS[hint]
    last: Exception | None = None
    try:
        with anyio.move_on_after(3 * settings.metadata_timeout):
            while True:
                try:
                    if module in (alibaba, aws):
                        return await module.fetch(client, settings.sysfs_root)
                    return await module.fetch(client)
                except ProviderError as exc:
                    last = exc
                    await anyio.sleep(1.0)
    finally:
        await client.close()
    log.warning("cloud provider %s: metadata not read, publishing no %s attributes: %s",
                hint, hint, last)
    return None


async def _webhook(settings: Settings) -> Webhook:
    hook = Webhook(settings.webhook_url, settings.webhook_timeout)
    try:
        await hook.health()
    except ProviderError as exc:
        await hook.close()
        raise Refused(f"webhook provider: {exc}") from None
    return hook


@asynccontextmanager
async def providers_open(settings: Settings) -> AsyncIterator[Providers]:
    """:func:`open_providers` for the life of the body, closed after."""
    found = await open_providers(settings)
    try:
        yield found
    finally:
        await found.aclose()


async def open_providers(settings: Settings) -> Providers:
    """Raises :class:`Refused` (one line) for a webhook that cannot do what is asked."""
    out = Providers()
    hint = settings.hint
    if not hint:
        hint = await detect(settings)
        if hint == "NONE" and settings.webhook_url:
            hint = "webhook"
        log.info("cloud provider detected: %s", hint)
    hook: Webhook | None = None
    try:
        if hint == "webhook" or settings.profile == "webhook":
            hook = await _webhook(settings)
            out._clients.append(hook)
        if hint == "webhook":
            assert hook is not None
            if not hook.cloud_provider:
                if settings.hint == "webhook":
                    raise Refused(f"--cloud-provider-hint=webhook: {hook.name} says "
                                  "cloudProvider: false in GET /health")
            else:
                out.cloud = hook
        elif hint in CLOUDS:
            out.cloud = await _cloud(settings, hint)
        if settings.profile == "webhook":
            assert hook is not None
            if not hook.profile_provider:
                raise Refused(f"--profile-provider=webhook: {hook.name} says "
                              "profileProvider: false in GET /health")
            out.profile = hook
        elif settings.profile == "cloud" and hook is not None and hook.profile_provider \
                and out.cloud is hook:
            out.profile = hook  # DRANET: a webhook cloud is also its own profile provider
    except BaseException:
        await out.aclose()
        raise
    return out
