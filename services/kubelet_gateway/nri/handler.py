"""What the NRI plugin does with pod events: the ``PodHandler`` port and its plumber adapter."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from schemas import plumber as p
from services.common.logs import fields
from services.kubelet_gateway.nri.attach_jobs import AttachJobs
from services.kubelet_gateway.nri.barrier import Hook
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


@dataclass(frozen=True)
class ContainerSetup:
    """What a container being created gets: device nodes, and the barrier hook while
    its pod's devices are still being attached."""

    devices: list[p.LinuxDevice] = field(default_factory=list)
    hook: Hook | None = None


class PodHandler(Protocol):
    """The work behind the NRI events. Raising fails the runtime's request with the text."""

    async def run_pod(self, pod: PodInfo, budget: float) -> None:
        """RunPodSandbox of a pod with its own network namespace; answer within
        ``budget`` seconds."""

    async def stop_pod(self, pod: PodInfo) -> None: ...

    async def remove_pod(self, pod: PodInfo) -> None: ...

    async def has_claims(self, pod: PodInfo) -> bool:
        """Whether the pod holds network claims of this driver (asked for host-network pods)."""

    async def create_container(self, pod: PodInfo, container_name: str,
                               budget: float) -> ContainerSetup:
        """What the container gets (answer within ``budget`` seconds)."""

    async def sync(self, pods: list[PodInfo]) -> None:
        """The pods alive on the node when the plugin (re)registers."""


ClaimsLookup = Callable[[PodInfo], Awaitable[bool]]


class PlumberPodHandler:
    """Pod events as plumber commands on the bus; the attach runs as a job
    (:class:`AttachJobs`) that may outlive RunPodSandbox.

    ``claims_lookup`` answers ``has_claims`` from the gateway's own knowledge (the
    prepared claims reserved for the pod). Without it the plumber is asked with an
    ``Attach`` carrying an empty netns: it cannot attach anything there, so a pod with
    claims gets an error and a pod without any gets an empty reply.
    """

    def __init__(self, client: PlumberClient, jobs: AttachJobs, *, deadline: float = 1.5,
                 claims_lookup: ClaimsLookup | None = None) -> None:
        self.client = client
        self.jobs = jobs
        self.deadline = deadline
        self.claims_lookup = claims_lookup
        self.live: dict[str, PodInfo] = {}
        """The pods the runtime reported alive (Synchronize, then RunPodSandbox/Remove)."""

    async def run_pod(self, pod: PodInfo, budget: float) -> None:
        self.live[pod.uid] = pod
        await self.jobs.run_pod(pod.ref, pod.sandbox_id, pod.netns, budget)

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
        # a deferred attach still under way stops moving devices as soon as the plumber
        # sees this detach (services/plumber/stops.py), rolls back, then the detach runs
        await self._detach(pod)

    async def remove_pod(self, pod: PodInfo) -> None:
        self.live.pop(pod.uid, None)
        self.jobs.forget(pod.uid)
        await self._detach(pod)

    async def has_claims(self, pod: PodInfo) -> bool:
        if self.claims_lookup is not None:
            return await self.claims_lookup(pod)
        reply = await self.client.attach(
            p.Attach(pod=pod.ref, sandbox_id=pod.sandbox_id, netns=""), deadline=self.deadline)
        return bool(reply.error or reply.interfaces)

    async def create_container(self, pod: PodInfo, container_name: str,
                               budget: float) -> ContainerSetup:
        started = time.monotonic()
        reply = await self.client.container_devices(
            p.ContainerDevices(pod=pod.ref, container=container_name), deadline=budget)
        if reply.error:
            raise PlumberError(f"devices for container {container_name} of pod {pod}: "
                               f"{reply.error}")
        hook = await self.jobs.container(pod.ref, pod.sandbox_id, pod.netns, container_name,
                                         budget - (time.monotonic() - started))
        return ContainerSetup(list(reply.devices), hook)

    async def sync(self, pods: list[PodInfo]) -> None:
        self.live = {pod.uid: pod for pod in pods}
        self.jobs.keep_only(set(self.live))
        log.info("nri: %d pods alive on the node", len(pods))
