"""What the NRI plugin does with pod events: the ``PodHandler`` port and its plumber adapter."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from schemas import plumber as p
from services.common.logs import fields
from services.kubelet_gateway.plumber_client import PlumberClient, PlumberError

log = logging.getLogger("knd.nri")


@dataclass(frozen=True)
class PodInfo:
    """A pod sandbox as the runtime describes it."""

    uid: str
    namespace: str
    name: str
    sandbox_id: str
    netns: str = ""
    """Path of the pod's network namespace; empty: the pod uses the host network."""
    labels: dict[str, str] = field(default_factory=dict, compare=False)
    annotations: dict[str, str] = field(default_factory=dict, compare=False)
    ips: tuple[str, ...] = ()
    pid: int = 0

    @property
    def host_network(self) -> bool:
        return not self.netns

    @property
    def ref(self) -> p.PodRef:
        return p.PodRef(uid=self.uid, namespace=self.namespace, name=self.name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name} ({self.uid})"


class PodHandler(Protocol):
    """The work behind the NRI events. Raising fails the runtime's request with the text."""

    async def run_pod(self, pod: PodInfo) -> None:
        """RunPodSandbox of a pod with its own network namespace."""

    async def stop_pod(self, pod: PodInfo) -> None: ...

    async def remove_pod(self, pod: PodInfo) -> None: ...

    async def has_claims(self, pod: PodInfo) -> bool:
        """Whether the pod holds network claims of this driver (asked for host-network pods)."""

    async def container_devices(self, pod: PodInfo,
                                container_name: str) -> list[p.LinuxDevice]:
        """Character devices to add to a container being created (may be empty)."""

    async def sync(self, pods: list[PodInfo]) -> None:
        """The pods alive on the node when the plugin (re)registers."""


ClaimsLookup = Callable[[PodInfo], Awaitable[bool]]


class PlumberPodHandler:
    """Pod events as plumber commands on the bus.

    ``claims_lookup`` answers ``has_claims`` from the gateway's own knowledge (the
    prepared claims reserved for the pod). Without it the plumber is asked with an
    ``Attach`` carrying an empty netns: it cannot attach anything there, so a pod with
    claims gets an error and a pod without any gets an empty reply.
    """

    def __init__(self, client: PlumberClient, *, deadline: float = 1.5,
                 claims_lookup: ClaimsLookup | None = None) -> None:
        self.client = client
        self.deadline = deadline
        self.claims_lookup = claims_lookup
        self.live: dict[str, PodInfo] = {}
        """The pods the runtime reported alive (Synchronize, then RunPodSandbox/Remove)."""

    async def run_pod(self, pod: PodInfo) -> None:
        self.live[pod.uid] = pod
        reply = await self.client.attach(
            p.Attach(pod=pod.ref, sandbox_id=pod.sandbox_id, netns=pod.netns,
                     deadline=time.time() + self.deadline),
            deadline=self.deadline)
        if reply.error:
            raise PlumberError(f"attach for pod {pod}: {reply.error}")
        for itf in reply.interfaces:
            log.info("pod %s: %s is %s in the pod (%.1f ms)", pod, itf.device, itf.interface,
                     reply.latency_ms,
                     extra=fields(claim=itf.claim_uid, pod=pod.uid, device=itf.device))

    async def _detach(self, pod: PodInfo) -> None:
        reply = await self.client.detach(
            p.Detach(pod=pod.ref, sandbox_id=pod.sandbox_id, netns=pod.netns),
            deadline=self.deadline)
        if reply.error:
            raise PlumberError(f"detach for pod {pod}: {reply.error}")
        if reply.restored:
            log.info("pod %s: %s back in the host", pod, ", ".join(reply.restored),
                     extra=fields(pod=pod.uid, device=",".join(reply.restored)))

    async def stop_pod(self, pod: PodInfo) -> None:
        await self._detach(pod)

    async def remove_pod(self, pod: PodInfo) -> None:
        self.live.pop(pod.uid, None)
        await self._detach(pod)

    async def has_claims(self, pod: PodInfo) -> bool:
        if self.claims_lookup is not None:
            return await self.claims_lookup(pod)
        reply = await self.client.attach(
            p.Attach(pod=pod.ref, sandbox_id=pod.sandbox_id, netns=""), deadline=self.deadline)
        return bool(reply.error or reply.interfaces)

    async def container_devices(self, pod: PodInfo,
                                container_name: str) -> list[p.LinuxDevice]:
        reply = await self.client.container_devices(
            p.ContainerDevices(pod=pod.ref, container=container_name), deadline=self.deadline)
        if reply.error:
            raise PlumberError(f"devices for container {container_name} of pod {pod}: "
                               f"{reply.error}")
        return list(reply.devices)

    async def sync(self, pods: list[PodInfo]) -> None:
        self.live = {pod.uid: pod for pod in pods}
        log.info("nri: %d pods alive on the node", len(pods))
