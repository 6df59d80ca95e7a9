"""What ``knd claim explain`` reads from the cluster when its files hold no
ResourceSlice or DeviceClass: every slice, class, claim (for the devices they hold)
and node (for their labels), read only, a page at a time."""

from __future__ import annotations

from typing import Any

RESOURCES = ("resourceslices", "deviceclasses", "resourceclaims", "nodes")


async def read_cluster(kubeconfig: str | None, call_timeout: float) -> list[tuple[str, Any]]:
    """(where, object) for every object of :data:`RESOURCES`; raises the API port's
    errors (services.common.api.port) when the cluster cannot be read."""
    from services.common.api.kube import KubeApi

    api = KubeApi(kubeconfig=kubeconfig, timeout=call_timeout)
    try:
        out: list[tuple[str, Any]] = []
        for resource in RESOURCES:
            out += [(f"cluster {resource}", obj) for obj in await api.list_all(resource)]
        return out
    finally:
        await api.aclose()
