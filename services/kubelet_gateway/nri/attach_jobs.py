"""Attach jobs: a pod's devices keep moving in after RunPodSandbox had to answer.

containerd gives an NRI plugin about 2 s per request and disconnects one that answers
late. Each netns move costs 15-20 ms and the kernel serializes them, so a storm of
pods, a pod with many devices or a slow NIC driver does not fit. RunPodSandbox waits
for the pod's attach only within its budget. When the attach is still going:

- with ``--device-attach-timeout`` > 0 it answers (the pod gets the event
  NetworkDeviceAttachDeferred), the plumber goes on until that deadline, and every
  container created meanwhile gets the barrier hook (barrier.py), which holds it until
  every device is in;
- with 0 it fails the sandbox (NetworkDeviceAttachTimeout); the plumber rolls back
  whatever it attached once the deadline passes.

The plumber attaches a pod all or nothing: an attach that fails gives every device
back. So a container never starts with part of its devices: it waits, or its creation
fails and the kubelet tries again, which starts a new attach until the deadline.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup, TaskStatus
from prometheus_client.metrics import Counter, Gauge

from schemas import plumber as p
from schemas.events import ATTACH_DEFERRED, ATTACH_FAILED, ATTACH_TIMEOUT, Notice
from services.common.logs import fields
from services.kubelet_gateway.nri.barrier import Barrier, Hook
from services.kubelet_gateway.plumber_client import PlumberClient, PlumberError

if TYPE_CHECKING:  # dra.py loads grpc
    from services.kubelet_gateway.dra import ClaimEvents

log = logging.getLogger("knd.nri.attach")

SANDBOXES = Counter("knd_nri_sandbox_attach", "RunPodSandbox answers: attached (all in), "
                    "deferred (answered with the attach going on), rejected (no time, "
                    "--device-attach-timeout=0) or failed", ["result"])
RUNNING = Gauge("knd_nri_attach_jobs_running", "Pods whose attach is under way")

REPLY_GRACE = 5.0
"""Seconds past its deadline to wait for the plumber's answer (its rollback)."""
PROGRESS_WAIT = 0.1
"""Seconds of a request's budget kept to ask the plumber how far the attach got."""
BUDGET_TEXT = ("not enough time left in the NRI request to attach all the network devices; "
               "increase the container runtime NRI plugin_request_timeout")


@dataclass
class Job:
    """One attach of one pod sandbox, running or ended."""

    pod: p.PodRef
    sandbox_id: str
    netns: str
    deadline: float
    """Epoch seconds: the plumber rolls back what is not done by then."""
    done: anyio.Event = field(default_factory=anyio.Event)
    error: str = ""
    gave_up: bool = False
    """The deadline passed and the pod was told (once)."""

    def left(self) -> float:
        return self.deadline - time.time()


class AttachJobs:
    """The pods' attach jobs: started by RunPodSandbox (or, after a restart of the
    gateway, by a container's creation), kept until RemovePodSandbox."""

    def __init__(self, client: PlumberClient, *, attach_timeout: float = 30.0,
                 barrier: Barrier | None = None, events: ClaimEvents | None = None) -> None:
        self.client = client
        self.attach_timeout = attach_timeout
        self.barrier = barrier
        self.events = events
        """Where the pod's Notices go (the gateway's bus events)."""
        self.jobs: dict[str, Job] = {}
        self._tg: TaskGroup | None = None

    async def run(self, *, task_status: TaskStatus[AttachJobs] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Hold the jobs' tasks until cancelled (the gateway's lifetime)."""
        if self.barrier is not None:
            self.barrier.reset()
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started(self)
            await anyio.sleep_forever()

    def _start(self, pod: p.PodRef, sandbox_id: str, netns: str, deadline: float) -> Job:
        assert self._tg is not None, "AttachJobs.run is not running"
        job = Job(pod, sandbox_id, netns, deadline)
        self.jobs[pod.uid] = job
        self._tg.start_soon(self._attach, job)
        return job

    async def _attach(self, job: Job) -> None:
        req = p.Attach(pod=job.pod, sandbox_id=job.sandbox_id, netns=job.netns,
                       deadline=job.deadline)
        RUNNING.inc()
        try:
            reply = await self.client.attach(req, deadline=max(0.001, job.left()) + REPLY_GRACE)
            job.error = reply.error
            for itf in reply.interfaces:
                log.info("pod %s: %s is %s in the pod (%.1f ms)", _name(job.pod), itf.device,
                         itf.interface, reply.latency_ms,
                         extra=fields(claim=itf.claim_uid, pod=job.pod.uid, device=itf.device))
        except PlumberError as exc:
            job.error = str(exc)
        finally:
            RUNNING.dec()
            job.done.set()
            # a job a new sandbox replaced (or RemovePodSandbox dropped) releases nobody
            if self.barrier is not None and self.jobs.get(job.pod.uid) is job:
                self.barrier.release(job.pod.uid, job.error)

    async def _status(self) -> p.PlumberStatus | None:
        """The plumber's view of its claims and attachments (None: no answer in time)."""
        try:
            return await self.client.status(p.PlumberStatusGet(), deadline=PROGRESS_WAIT * 0.8)
        except PlumberError:
            return None

    async def _progress(self, uid: str) -> str:
        st = await self._status()
        return progress(st, uid) if st is not None else ""

    # ---- RunPodSandbox ------------------------------------------------------------------

    async def run_pod(self, pod: p.PodRef, sandbox_id: str, netns: str, budget: float) -> None:
        """Attach the pod's devices; raises when the sandbox must fail."""
        old = self.jobs.pop(pod.uid, None)
        if old is not None and self.barrier is not None:
            self.barrier.clear(pod.uid)  # a new sandbox: a new netns, a new attach
        job = self._start(pod, sandbox_id, netns, self._deadline(budget))
        with anyio.move_on_after(max(0.0, budget - PROGRESS_WAIT)):
            await job.done.wait()
        if job.done.is_set():
            SANDBOXES.labels("failed" if job.error else "attached").inc()
            if job.error:
                raise PlumberError(f"attach for pod {_name(pod)}: {job.error}")
            return
        if self.attach_timeout and self.barrier is not None:
            self.barrier.pending(pod.uid)  # before any await: the job's end releases it
        got = await self._progress(pod.uid)
        attached = f"attached {got} network devices" if got else "the network devices"
        where = fields(pod=pod.uid)
        if not self.attach_timeout:
            SANDBOXES.labels("rejected").inc()
            await self._notice(pod, ATTACH_TIMEOUT,
                         f"{attached} to pod {_name(pod)} within the container runtime NRI "
                         "request timeout; failing the sandbox so the pod does not start "
                         "with missing devices. Increase the container runtime NRI "
                         "plugin_request_timeout")
            log.warning("pod %s: %s within the NRI request; failing the sandbox (the "
                        "attach is rolled back)", _name(pod), attached, extra=where)
            raise PlumberError(f"{attached}: {BUDGET_TEXT}")
        SANDBOXES.labels("deferred").inc()
        await self._notice(pod, ATTACH_DEFERRED,
                     f"{attached} to pod {_name(pod)} within the container runtime NRI "
                     "request timeout; the attach continues and the pod's containers wait "
                     f"for it, up to {self.attach_timeout:g}s. Increase the container "
                     "runtime NRI plugin_request_timeout to attach all devices at sandbox "
                     "creation")
        log.info("pod %s: RunPodSandbox answers with the attach in progress (%s, "
                 "deadline in %.1f s)", _name(pod), got or "?", job.left(), extra=where)

    # ---- CreateContainer ----------------------------------------------------------------

    async def container(self, pod: p.PodRef, sandbox_id: str, netns: str, container: str,
                        budget: float) -> Hook | None:
        """What a container being created must wait for: None (nothing, the devices are
        in), the barrier hook, or an error that fails its creation."""
        if not netns:
            return None  # host network: no devices were moved
        job = self.jobs.get(pod.uid)
        if job is None:
            # the gateway restarted since the sandbox ran: the plumber knows what is
            # attached (an attach of an attached pod answers at once)
            job = self._start(pod, sandbox_id, netns, self._deadline(budget))
        elif job.done.is_set() and job.error and job.left() > 0:
            log.info("pod %s: retrying the attach (%s)", _name(pod), job.error,
                     extra=fields(pod=pod.uid))
            job = self._start(pod, sandbox_id, netns, job.deadline)
        with anyio.move_on_after(max(0.0, budget - PROGRESS_WAIT)):
            await job.done.wait()
        if job.done.is_set():
            if not job.error:
                return None
            if job.left() <= 0 and not job.gave_up:
                job.gave_up = True
                await self._notice(pod, ATTACH_FAILED,
                             f"gave up attaching network devices to pod {_name(pod)} after "
                             f"{self.attach_timeout:g}s: {job.error}. The sandbox stays and "
                             "the kubelet keeps retrying; delete the pod to start over")
            raise PlumberError(f"network devices of pod {_name(pod)}: {job.error}")
        if self.barrier is None:
            got = await self._progress(pod.uid)
            raise PlumberError(f"network devices of pod {_name(pod)}: {got or 'not all'} "
                               f"attached, the kubelet will retry: {BUDGET_TEXT}")
        self.barrier.pending(pod.uid)  # before any await: the job's end releases it
        st = await self._status()
        log.info("pod %s: container %s waits for the network devices (hook, %.1f s left)",
                 _name(pod), container, job.left(), extra=fields(pod=pod.uid))
        return self.barrier.hook(uid=pod.uid, namespace=pod.namespace, name=pod.name,
                                 container=container, netns=netns, deadline_in=job.left(),
                                 devices=pod_devices(st, pod.uid) if st is not None else "")

    # ---- StopPodSandbox / RemovePodSandbox ----------------------------------------------

    def keep_only(self, uids: set[str]) -> None:
        """The runtime's list of live pods (Synchronize): forget the jobs of the others
        (a RemovePodSandbox this gateway missed)."""
        for uid in [u for u in self.jobs if u not in uids]:
            self.forget(uid)

    def forget(self, uid: str) -> None:
        self.jobs.pop(uid, None)
        if self.barrier is not None:
            self.barrier.clear(uid)

    def _deadline(self, budget: float) -> float:
        """A new job's: the attach timeout from now, or with none the request's budget."""
        return time.time() + (self.attach_timeout or budget)

    async def _notice(self, pod: p.PodRef, reason: str, message: str) -> None:
        if self.events is not None:
            await self.events.publish("notice", Notice(
                node=self.events.node, kind="Pod", namespace=pod.namespace, name=pod.name,
                uid=pod.uid, type="Warning", reason=reason, message=message))


def progress(st: p.PlumberStatus, uid: str) -> str:
    """``k/n``: the pod's devices attached of all its claims' ("" when it has none)."""
    total = sum(len(c.devices) for c in st.claims if any(x.uid == uid for x in c.pods))
    done = sum(1 for a in st.attachments if a.pod_uid == uid and a.phase == "attached")
    return f"{done}/{total}" if total else ""


def pod_devices(st: p.PlumberStatus, uid: str) -> str:
    """The pod's devices as JSON for the hook's ``KND_DEVICES`` (DRANET's
    ``DRANET_DEVICES``): name, claim, the host interface, and the name in the pod once
    attached; sorted by name."""
    inside = {(a.claim_uid, a.device): a.interface for a in st.attachments
              if a.pod_uid == uid}
    out = []
    for c in st.claims:
        if not any(x.uid == uid for x in c.pods):
            continue
        published = {d.name: d for d in c.published}
        for name in c.devices:
            attrs = published[name].attributes if name in published else {}
            host = {key: attrs[f] for f, key in ((_attr(attrs, "ifName"), "name"),
                                                 (_attr(attrs, "mac"), "mac_address"),
                                                 (_attr(attrs, "pciAddress"), "pci_address"))
                    if f and isinstance(attrs.get(f), str)}
            entry: dict = {"name": name, "claim": {"namespace": c.namespace, "name": c.name},
                           "host": host}
            if inside.get((c.uid, name)):
                entry["interface"] = inside[(c.uid, name)]
            out.append(entry)
    return json.dumps(sorted(out, key=lambda e: e["name"]), separators=(",", ":"))


def _attr(attrs: dict, ident: str) -> str:
    """The qualified name of the driver's attribute ``ident`` (``<driver>/ifName``)."""
    return next((k for k in attrs if k.rpartition("/")[2] == ident and "/" in k), "")


def _name(pod: p.PodRef) -> str:
    return f"{pod.namespace}/{pod.name}" if pod.name else pod.uid
