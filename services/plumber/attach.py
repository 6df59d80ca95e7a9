"""Attach and detach: moving a pod's prepared devices in and out of its netns.

Attach is all or nothing for a pod. Everything that can be checked without
changing the kernel is checked first (the netns, interface names free in the
pod, the device still in the host and not an uplink). Then, per device and
concurrently (the moves themselves go one at a time, in order, through the
host's mover: :meth:`Host.move_in` says why; the rest overlaps):

1. record the intent (phase ``attaching`` plus a snapshot of the host
   config) in the checkpoint -- before any kernel change;
2. one RTM_NEWLINK: into the pod netns, renamed, with MTU and MAC, and up;
3. in the pod: GSO/GRO sizes, the VRF (created or joined), a DHCP lease
   (``interface.dhcp``: :mod:`dhcp`), addresses, link-scope routes, gateway routes,
   policy rules, permanent neighbours, ethtool, sysctls;
4. record ``attached``.

Any failure rolls every device of the pod back through :mod:`restore`, the
same code that detach and reconcile use.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import anyio

from schemas.netconfig import SLAAC, NetworkConfig, addressing, child_kind, defaulted
from schemas.plumber import Attach, AttachedInterface, AttachReply, DetachReply
from schemas.text import q
from services.common.locks import KeyedLocks
from services.common.logs import fields
from services.plumber import children, nsfs
from services.plumber.checkpoint import Checkpoint
from services.plumber.devconf import DevconfError
from services.plumber.inventory import Inventory
from services.plumber.metrics import ROLLBACKS
from services.plumber.model import (
    ATTACHED,
    ATTACHING,
    GONE,
    Attachment,
    ClaimPlan,
    PlannedDevice,
)
from services.plumber.netops import KernelError, LinkRec, Rtnl
from services.plumber.podconfig import (
    RuleCopier,
    configure,
    rule_key,
    rule_taken,
)
from services.plumber.rdma import Rdma
from services.plumber.restore import PENDING, RESTORED, Host, Outcome, Restorer
from services.plumber.stops import Stops
from services.plumber.together import together as _together

log = logging.getLogger("knd.plumber.attach")

RETURN_WAIT = 2.0
"""How long a detach waits for a physical device to come back from a dead netns."""
ATTACH_SLOTS = 12
"""Pods attached at once; the others wait their turn in arrival order."""


class AttachError(Exception):
    """Refused before any kernel change; the text names the device and field."""


@dataclass
class Job:
    plan: ClaimPlan
    dev: PlannedDevice
    cfg: NetworkConfig
    att: Attachment
    deadline: float = 0.0
    """The runtime's, as epoch seconds; 0: none."""
    recorded: bool = False
    step: str = ""
    error: str = ""

    @property
    def where(self) -> str:
        return f"device {q(self.dev.device)} of claim {self.plan.uid}"


def _pod(req: Attach) -> str:
    pod = req.pod
    return f"{pod.namespace}/{pod.name} ({pod.uid})" if pod.name else pod.uid


class Attacher:
    def __init__(self, store: Checkpoint, host: Host, restorer: Restorer, rdma: Rdma,
                 inventory: Inventory | None = None, driver: str = "knd.dev") -> None:
        self.store = store
        self.host = host
        self.restorer = restorer
        self.notify = restorer.notify
        self.rdma = rdma
        self.inventory = inventory
        self.driver = driver
        self._locks = KeyedLocks()
        self.moves = 0
        """Attaches and detaches finished, for the sweeper's memory trim."""
        # Pods are attached in arrival order, a dozen at a time: enough that the next
        # pods' checks overlap the moves in the kernel, few enough that the pods
        # under way finish first. In the 32-pod x 2-device storm on 2 cores, 12 (and
        # 8, 16) attached all 64 in time, 12 the soonest; 6 and 3 left 2 to 10 past
        # the deadline (checks no longer overlapped), 32 left 14 (all in lockstep).
        self._slots = anyio.Semaphore(ATTACH_SLOTS)
        self.before_move: Callable[[Callable[[], bool]], Awaitable[None]] | None = None
        """Only in tests (services.plumber.slowdown): a slow device driver."""
        self.stops = Stops()
        """Pods with a detach waiting: their attach moves no further device."""

    def lock(self, pod_uid: str) -> AbstractAsyncContextManager[None]:
        """One attach/detach at a time per pod; different pods run concurrently."""
        return self._locks.hold(pod_uid)

    def _current_ifname(self, dev: PlannedDevice, where: str) -> str:
        """The device's interface now. Discovery's inventory is the authority once
        known (a renamed interface, a device gone from the node); before that, the
        name recorded at prepare."""
        if self.inventory is None or self.inventory.latest is None:
            return dev.ifname
        rec = self.inventory.device(dev.device)
        if rec is None:
            raise AttachError(f"{where}: no longer in this node's inventory")
        name = rec.attributes.get(f"{self.driver}/ifName")
        return name if isinstance(name, str) and name else dev.ifname

    # ---- attach ----------------------------------------------------------------------------

    async def attach(self, req: Attach) -> AttachReply:
        started = time.perf_counter()
        async with self.lock(req.pod.uid):
            wanted = [(p, d) for p in self.store.claims_of_pod(req.pod.uid) for d in p.devices]
            if not wanted:
                return AttachReply()
            async with self._slots:
                try:
                    return await self._attach(req, wanted, started)
                finally:
                    self.moves += 1

    async def _attach(self, req: Attach, wanted: list[tuple[ClaimPlan, PlannedDevice]],
                      started: float) -> AttachReply:
        if 0 < req.deadline < time.time():
            return AttachReply(error="attach not started: the runtime's deadline passed while "
                                     "it waited behind other pods")
        try:
            fd = nsfs.open_netns(req.netns)
        except nsfs.NetnsError as exc:
            return AttachReply(error=f"netns: {exc}")
        try:
            nsid = nsfs.fd_id(fd)
            if nsid in (self.host.id, self.host.own):
                return AttachReply(error=f"netns: {q(req.netns)} is the node's own network "
                                         "namespace")
            done, todo = await self._sort(wanted, req.pod.uid, nsid)
            jobs: list[Job] = []
            if todo:
                host_s, pod_s = await _together(self.host.session(), Rtnl.open(fd))
                async with host_s as host, pod_s as pod:
                    jobs = await self._precheck(todo, req, host, pod, nsid)
                    async with anyio.create_task_group() as tg:
                        for job in jobs:
                            tg.start_soon(self._attach_one, job, host, pod, fd)
                    late = bool(jobs) and 0 < req.deadline < time.time()
                    if late:
                        # the runtime gave up on this RunPodSandbox and will tear the
                        # sandbox down: keep the node as the runtime believes it is
                        for job in jobs:
                            job.error = job.error or (
                                "attach finished after the runtime's deadline")
                            job.step = job.step or "deadline"
                    if any(j.error for j in jobs):
                        with anyio.CancelScope(shield=True):
                            return await self._rollback(jobs)
        except AttachError as exc:
            return AttachReply(error=str(exc))
        finally:
            os.close(fd)
        ms = (time.perf_counter() - started) * 1000.0
        for job in jobs:
            self.notify.attached(job.att, ms)
            a = job.att
            log.info("pod %s: device %s of claim %s attached as %s (%s) in %.1f ms",
                     _pod(req), a.device, a.claim_uid, a.pod_ifname or "-",
                     ", ".join(a.ips) or "no address", ms,
                     extra=fields(claim=a.claim_uid, pod=a.pod_uid, device=a.device))
        if jobs:
            self.notify.claims_changed({j.plan.uid for j in jobs})
        atts = done + [j.att for j in jobs]
        return AttachReply(latency_ms=ms, interfaces=[
            AttachedInterface(claim_uid=a.claim_uid, device=a.device, interface=a.pod_ifname,
                              ips=list(a.ips), mac=a.mac) for a in atts])

    async def _sort(self, wanted: list[tuple[ClaimPlan, PlannedDevice]], pod_uid: str,
                    nsid: nsfs.NsId) -> tuple[list[Attachment], list]:
        """Split into already attached here and still to do; undo stale earlier attaches."""
        done: list[Attachment] = []
        todo: list[tuple[ClaimPlan, PlannedDevice]] = []
        for plan, dev in wanted:
            where = f"device {q(dev.device)} of claim {plan.uid}"
            att = self.store.attachment(plan.uid, dev.device)
            if att is None:
                todo.append((plan, dev))
                continue
            if att.phase == GONE:
                raise AttachError(f"{where}: destroyed with an earlier pod network namespace")
            if att.pod_uid != pod_uid:
                raise AttachError(f"{where}: attached to pod {att.pod_uid}")
            if att.phase == ATTACHED and (att.ns_dev, att.ns_ino) == (nsid.dev, nsid.ino):
                done.append(att)
                continue
            out = await self.restorer.restore(att, "reattach")
            if out.result != RESTORED:
                raise AttachError(f"{where}: an earlier attach could not be undone: "
                                  f"{out.error or out.result}")
            todo.append((plan, dev))
        return done, todo

    async def _precheck(self, todo: list[tuple[ClaimPlan, PlannedDevice]], req: Attach,
                        host: Rtnl, pod: Rtnl, nsid: nsfs.NsId) -> list[Job]:
        uplinks, pod_links = await _together(host.uplink_indexes(), pod.links())
        taken = {link.name: "the pod" for link in pod_links}
        pod_rules: set[tuple] | None = None
        copier = RuleCopier(host, pod, [r for _, d in todo if d.config
                                         for r in d.config.rules])
        jobs = []
        for plan, dev in todo:
            where = f"device {q(dev.device)} of claim {plan.uid}"
            cfg = defaulted(dev.config or NetworkConfig())
            kind = child_kind(cfg.interface)
            snap, pod_ifname, host_rules = None, "", []
            ifname = self._current_ifname(dev, where)
            if dev.ifname:
                link = await host.link(name=ifname)
                if link is None:
                    raise AttachError(f"{where}: interface {q(ifname)} is not in the host "
                                      "network namespace")
                if link.index in uplinks:
                    raise AttachError(f"{where}: {ifname} carries the node's default route")
                pod_ifname = cfg.interface.name or ifname
                if pod_ifname in taken:
                    raise AttachError(f"{where}: config.interface.name: {q(pod_ifname)} is "
                                      f"already used by {taken[pod_ifname]}")
                taken[pod_ifname] = where
                if kind:  # the parent stays: nothing of it moves, nothing comes back
                    snap = children.child_snapshot(link)
                else:
                    snap = await host.snapshot(link)
                    snap.sysctls = dict(dev.host_sysctls)
                    host_rules = await copier.rules_for(snap, where)
            if cfg.rules:
                if pod_rules is None:
                    pod_rules = {rule_key(r) for r in await pod.rules()}
                for n, rule in enumerate(cfg.rules):
                    if rule_taken(rule, pod_rules):
                        raise AttachError(f"{where}: config.rules[{n}]: already in the pod "
                                          "network namespace")
            att = Attachment(
                claim_uid=plan.uid, device=dev.device, pod_uid=req.pod.uid, phase=ATTACHING,
                netns=req.netns, ns_dev=nsid.dev, ns_ino=nsid.ino, sandbox_id=req.sandbox_id,
                host=snap, pod_ifname=pod_ifname, rules=list(cfg.rules), host_rules=host_rules,
                rdma_device=dev.rdma_device, child=kind if snap else "",
                temp_name=children.temp_name() if kind and snap else "",
                mac=cfg.interface.hardwareAddr or (snap.mac if snap else ""))
            jobs.append(Job(plan, dev, cfg, att, deadline=req.deadline))
        return jobs

    async def _move_in(self, job: Job, pod: Rtnl, fd: int) -> LinkRec:
        att, iface = job.att, job.cfg.interface
        assert att.host is not None
        # up in the same request: in a storm each request of its own waits for the
        # move RTNL is busy with
        # SLAAC: down, for its sysctls to be set before it solicits a router (configure)
        await self.host.move_in(att.host.index, fd, name=att.pod_ifname, mtu=iface.mtu or 0,
                                mac=iface.hardwareAddr or "",
                                up=addressing(iface) != SLAAC)
        link = await pod.link(name=att.pod_ifname)
        if link is None:
            raise KernelError("move", errno.ENODEV,
                              f"{att.pod_ifname} is not in the pod after the move")
        return link

    async def _attach_one(self, job: Job, host: Rtnl, pod: Rtnl, fd: int) -> None:
        att = job.att
        try:
            self.store.put_attachment(att)  # the intent, before the first kernel change
            job.recorded = True
            if att.host is not None:
                if self.before_move is not None:
                    await self.before_move(
                        lambda: not self.stops.why_not(att.pod_uid, job.deadline))
                why = self.stops.why_not(att.pod_uid, job.deadline)
                if why:
                    raise KernelError(why[0], why[1], why[2])
                link = await (children.create(host, pod, fd, job.cfg, att, self.store)
                              if att.child else self._move_in(job, pod, fd))
                att.pod_index, att.mac = link.index, link.mac
                await configure(job.cfg, job.att, job.deadline, pod, fd, link, self.store)
            if att.rdma_device and self.rdma.mode == "exclusive" and not att.child:
                try:
                    await self.rdma.move(att.rdma_device, self.host.fd, fd)
                    att.rdma_moved = True
                except Exception as exc:  # best effort (documented): the netdev works anyway
                    att.rdma_error = f"RDMA device {att.rdma_device} not moved: {exc}"
                    log.warning("%s: RDMA device %s not moved to the pod: %s", job.where,
                                att.rdma_device, exc)
                    # not rolled back: the attach goes on; the user sees it on the pod
                    self.notify.failed(att, "rdma", att.rdma_error, rolled_back=False)
            att.phase = ATTACHED
            self.store.put_attachment(att)
        except KernelError as exc:
            job.step, job.error = exc.step, str(exc)
        except DevconfError as exc:
            job.step, job.error = f"config.{exc.field}", f"config.{exc}"
        except OSError as exc:
            job.step, job.error = "attach", f"attach: {exc}"
        except Exception as exc:  # a bug must still roll back, not leave a half-moved device
            log.exception("%s: attach failed", job.where)
            job.step, job.error = "attach", f"internal error: {exc!r}"

    async def _rollback(self, jobs: list[Job]) -> AttachReply:
        ROLLBACKS.inc()
        outs: dict[int, Outcome] = {}

        async def undo(i: int, job: Job) -> None:
            outs[i] = await self.restorer.restore(job.att, "rollback")

        async with anyio.create_task_group() as tg:
            for i, job in enumerate(jobs):
                if job.recorded:
                    tg.start_soon(undo, i, job)
        errors = [f"{j.where}: {j.error}" for j in jobs if j.error]
        stuck = [f"{jobs[i].where}: {o.error}" for i, o in outs.items() if o.result == PENDING]
        for job in jobs:
            if job.error:
                self.notify.failed(job.att, job.step, job.error, rolled_back=not stuck)
                log.warning("pod %s: device %s of claim %s not attached (%s): %s; %s",
                            job.att.pod_uid, job.att.device, job.att.claim_uid, job.step,
                            job.error, "rollback incomplete" if stuck else "rolled back",
                            extra=fields(claim=job.att.claim_uid, pod=job.att.pod_uid,
                                         device=job.att.device))
        self.notify.claims_changed({j.plan.uid for j in jobs}, error="; ".join(errors))
        text = "attach failed and was rolled back: " + "; ".join(errors)
        if stuck:
            text += "; rollback incomplete (retried in the background): " + "; ".join(stuck)
        return AttachReply(error=text)

    # ---- detach ----------------------------------------------------------------------------

    async def _give_back(self, atts: list[Attachment], reason: str) -> dict[str, Outcome]:
        outs: dict[str, Outcome] = {}

        async def one(att: Attachment) -> None:
            deadline = time.monotonic() + RETURN_WAIT
            while True:
                out = await self.restorer.restore(att, reason)
                # a physical device leaves a dead netns a moment after the netns goes
                if not out.waiting or time.monotonic() > deadline:
                    break
                await anyio.sleep(0.05)
            outs[f"{att.claim_uid}/{att.device}"] = out

        async with anyio.create_task_group() as tg:
            for att in atts:
                tg.start_soon(one, att)
        return outs

    async def detach(self, pod_uid: str, reason: str = "detach") -> DetachReply:
        # an attach of this pod still under way (deferred past RunPodSandbox) moves no
        # further device: it rolls back, and this detach gets the lock sooner
        async with self.stops.announced(pod_uid), self.lock(pod_uid):
            atts = [a for a in self.store.attachments(pod_uid=pod_uid) if a.phase != GONE]
            if not atts:
                return DetachReply()
            with anyio.CancelScope(shield=True):
                async with self._slots:  # in arrival order, as attaches (see __init__)
                    outs = await self._give_back(atts, reason)
                self.moves += 1
        self.notify.claims_changed({a.claim_uid for a in atts})
        for a in atts:
            out = outs[f"{a.claim_uid}/{a.device}"]
            where = fields(claim=a.claim_uid, pod=pod_uid, device=a.device)
            if out.result == PENDING:
                log.warning("pod %s: device %s of claim %s not restored yet: %s", pod_uid,
                            a.device, a.claim_uid, out.error, extra=where)
            else:
                log.info("pod %s: device %s of claim %s detached: %s%s", pod_uid, a.device,
                         a.claim_uid, out.result,
                         f" as {out.interface}" if out.interface else "", extra=where)
        restored = sorted(a.device for a in atts
                          if outs[f"{a.claim_uid}/{a.device}"].result == RESTORED)
        errors = [f"device {q(a.device)} of claim {a.claim_uid}: {o.error}" for a in atts
                  if (o := outs[f"{a.claim_uid}/{a.device}"]).result == PENDING]
        return DetachReply(restored=restored, error="; ".join(errors))

    async def detach_claim(self, claim_uid: str, reason: str = "unprepare") -> list[str]:
        """Give back every device of a claim, whatever pod has it; returns errors."""
        errors: list[str] = []
        atts = [a for a in self.store.attachments(claim_uid=claim_uid) if a.phase != GONE]
        for pod_uid in sorted({a.pod_uid for a in atts}):
            async with self.lock(pod_uid):
                mine = [a for a in self.store.attachments(claim_uid=claim_uid, pod_uid=pod_uid)
                        if a.phase != GONE]
                with anyio.CancelScope(shield=True):
                    outs = await self._give_back(mine, reason)
            errors += [f"device {q(k.split('/', 1)[1])}: {o.error}" for k, o in outs.items()
                       if o.result == PENDING]
        return errors
