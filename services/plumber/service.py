"""The plumber on the bus: its endpoints (prepare, unprepare, attach, detach,
container-devices, status) over the checkpoint and the kernel.

Every request runs as its own task in the service's task group
(``typed_handler(concurrent=)``: a NATS subscription delivers its messages one
at a time, and sixteen pods starting together must not queue behind each
other); per-claim and per-pod locks keep two requests about the same thing in
order. Events and claim-status requests go out from background tasks
(notify.py), so an attach reply never waits on the publisher.
"""

from __future__ import annotations

import functools
import logging
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
from anyio.abc import TaskStatus
from nats.aio.client import Client

from schemas import plumber as p
from schemas.inventory import InventorySnapshot
from schemas.netconfig import child_kind
from schemas.subjects import Subjects
from schemas.text import q
from services.common import bus
from services.common.config import Common
from services.common.locks import KeyedLocks
from services.common.logs import fields
from services.plumber import devconf, features, metrics, slowdown
from services.plumber.attach import Attacher
from services.plumber.cdi import CdiSpecs
from services.plumber.checkpoint import Checkpoint
from services.plumber.children import share_key
from services.plumber.devconf import DevconfError
from services.plumber.inventory import Inventory
from services.plumber.model import GONE, PHASES, ClaimPlan
from services.plumber.netops import Rtnl
from services.plumber.notify import Notifier
from services.plumber.plan import HostFacts, PlanError, plan_claim
from services.plumber.provided import Granted, Provided
from services.plumber.rdma import CharDevice, Rdma, RdmaError, detect_mode
from services.plumber.reconcile import reconcile, sweeper
from services.plumber.restore import Host, Restorer
from services.providers.choose import Providers

log = logging.getLogger("knd.plumber")

SERVICE = "plumber"


def _pod_name(pod: p.PodRef) -> str:
    return f"{pod.namespace}/{pod.name} ({pod.uid})" if pod.name else pod.uid


class Plumber:
    """The endpoints' logic; :func:`serve` wires it to the bus."""

    def __init__(self, common: Common, store: Checkpoint, host: Host, inventory: Inventory,
                 attacher: Attacher, cdi: CdiSpecs, rdma: Rdma, notifier: Notifier, *,
                 inventory_wait: float = 2.0, provided: Provided | None = None) -> None:
        self.node = common.node
        self.driver = common.driver_name
        self.store = store
        self.host = host
        self.inventory = inventory
        self.attacher = attacher
        self.cdi = cdi
        self.rdma = rdma
        self.notifier = notifier
        self.inventory_wait = inventory_wait
        self.provided = provided or Provided(None, None, common.driver_name)
        self._claim_locks = KeyedLocks()

    def gauge(self) -> None:
        counts = self.store.counts()
        for kind in ("claims", *PHASES):
            metrics.CHECKPOINT_ENTRIES.labels(kind).set(counts.get(kind, 0))

    def _lock(self, uid: str) -> AbstractAsyncContextManager[None]:
        return self._claim_locks.hold(uid)

    # ---- prepare / unprepare ---------------------------------------------------------------

    async def prepare(self, req: p.Prepare) -> p.PrepareReply:
        started = time.perf_counter()
        reply = await self._prepare(req)
        seconds = time.perf_counter() - started
        metrics.PREPARE.labels("error" if reply.error else "ok").observe(seconds)
        self.gauge()
        where = fields(claim=req.claim_uid, pod=",".join(x.uid for x in req.pods),
                       device=",".join(d.device for d in req.devices))
        if reply.error:
            log.warning("claim %s/%s (%s) not prepared: %s", req.namespace, req.name,
                        req.claim_uid, reply.error, extra=where)
        else:
            log.info("claim %s/%s (%s) prepared: %s in %.1f ms", req.namespace, req.name,
                     req.claim_uid, ", ".join(d.device for d in reply.devices) or "no device",
                     seconds * 1000, extra=where)
        return reply

    async def _prepare(self, req: p.Prepare) -> p.PrepareReply:
        async with self._lock(req.claim_uid):
            old = self.store.claim(req.claim_uid)
            asked = [(d.request, d.pool, d.device, d.share_id, d.config) for d in req.devices]
            if old is not None:
                have = [(d.request, d.pool, d.device, d.share_id,
                         d.asked if d.provided else d.config) for d in old.devices]
                if have == asked:  # kubelet retrying: same answer, no new rows
                    return await self._again(old, req)
                if any(a.phase != GONE for a in self.store.attachments(claim_uid=old.uid)):
                    return p.PrepareReply(claim_uid=req.claim_uid, error=(
                        "claim_uid: already prepared and attached with other devices"))
            inv = await self.inventory.current(self.inventory_wait)
            granted: list[Granted] = []
            try:
                reply = await self._plan(req, old, inv, granted)
            except BaseException:
                await self.provided.release(granted)
                raise
            if reply.error:
                await self.provided.release(granted)
            return reply

    async def _plan(self, req: p.Prepare, old: ClaimPlan | None, inv: InventorySnapshot | None,
                    granted: list[Granted]) -> p.PrepareReply:
        original = req
        facts = await self._host_facts(req)
        req, errors, given = await self.provided.resolve(req, inv, facts)
        granted += given
        if errors:
            return p.PrepareReply(claim_uid=req.claim_uid, error="; ".join(errors))
        held: dict[str, list[tuple[str, str]]] = {}
        for c in self.store.claims():
            for d in c.devices if c.uid != req.claim_uid else ():
                held.setdefault(d.device, []).append((c.uid, share_key(d.config)))
        try:
            plan = plan_claim(req, node=self.node, driver=self.driver, inventory=inv,
                              host=facts, held=held)
            nodes = self._char_devices(plan)
        except PlanError as exc:
            return p.PrepareReply(claim_uid=req.claim_uid, error="; ".join(exc.errors))
        errs = await self._device_checks(plan)
        if self.rdma.mode == "exclusive":  # DRANET's rule: the RDMA device cannot follow
            errs += [f"devices[{n}].config.interface.type: {q(d.device)} has RDMA device "
                     f"{d.rdma_device}, which the exclusive RDMA netns mode would move into "
                     "one pod: a child of it needs the shared mode"
                     for n, d in enumerate(plan.devices)
                     if d.rdma_device and d.config and child_kind(d.config.interface)]
        if errs:
            return p.PrepareReply(claim_uid=req.claim_uid, error="; ".join(errs))
        if self.provided.active:
            for dev, dr in zip(plan.devices, original.devices, strict=True):
                dev.asked, dev.provided = dr.config, True
        for dev in plan.devices:  # here, not at attach: reading them costs a few ms
            if dev.ifname:
                dev.host_sysctls = await devconf.own_sysctls(self.host.fd, dev.ifname)
                mode = facts.links[dev.ifname].addr_gen_mode
                if mode is not None:  # kept as it is; written back only if it differs
                    dev.host_sysctls["ipv6.addr_gen_mode"] = str(mode)
        self.store.put_claim(plan, replace=old is not None)
        try:  # fsynced: off the loop, where a busy disk would stall every other request
            await anyio.to_thread.run_sync(
                self.cdi.write, plan, nodes, self.rdma.shared_devices() if nodes else [])
        except OSError as exc:
            self.store.drop_claim(plan.uid)
            return p.PrepareReply(claim_uid=req.claim_uid,
                                  error=f"cdi: cannot write the CDI spec: {exc}")
        return p.PrepareReply(claim_uid=plan.uid,
                              devices=[d.prepared() for d in plan.devices])

    async def _device_checks(self, plan: ClaimPlan) -> list[str]:
        """What only the device itself can say, asked while it is at home: the ethtool
        features it has and can change."""
        errs: list[str] = []
        for n, dev in enumerate(plan.devices):  # one per request device, in order
            eth = dev.config.ethtool if dev.config is not None else None
            if dev.ifname and eth is not None and eth.features:
                try:
                    found = await features.check(self.host.fd, dev.ifname, eth.features)
                except DevconfError as exc:
                    found = [str(exc)]
                errs += [f"devices[{n}].config.{e}" for e in found]
        return errs

    async def _again(self, old: ClaimPlan, req: p.Prepare) -> p.PrepareReply:
        known = {x.uid for x in old.pods}
        extra = [x for x in req.pods if x.uid not in known]
        if extra:
            old.pods = [*old.pods, *extra]
            self.store.put_claim(old)
        if not self.cdi.path(old.uid).exists():
            await self._write_cdi(old)
        return p.PrepareReply(claim_uid=old.uid, devices=[d.prepared() for d in old.devices])

    async def _host_facts(self, req: p.Prepare) -> HostFacts:
        async with await self.host.session() as rtnl:
            return await self._facts(rtnl, req)

    async def _facts(self, rtnl: Rtnl, req: p.Prepare) -> HostFacts:
        # one lookup per requested interface: a full link dump costs ~0.3 ms per
        # host interface in pyroute2, which dominated prepare on busy nodes
        facts = HostFacts(uplinks=await rtnl.uplink_indexes())
        for dr in req.devices:
            dev = self.inventory.device(dr.device)
            ifname = dev.attributes.get(f"{self.driver}/ifName") if dev else None
            if not isinstance(ifname, str) or ifname in facts.links:
                continue
            link = await rtnl.link(name=ifname)
            if link is not None:
                facts.links[link.name] = link
                facts.addresses[link.name] = [
                    a.cidr for a in await rtnl.addresses(link.index, link.name) if not a.scope]
                facts.routes[link.name] = await rtnl.routes(link.index)
        return facts

    def _char_devices(self, plan: ClaimPlan) -> dict[str, list[CharDevice]]:
        nodes: dict[str, list[CharDevice]] = {}
        errs = []
        for n, d in enumerate(plan.devices):
            if d.rdma_device:
                try:
                    nodes[d.device] = self.rdma.char_devices(d.rdma_device)
                except RdmaError as exc:
                    errs.append(f"devices[{n}].device: RDMA device {d.rdma_device}: {exc}")
        if errs:
            raise PlanError(errs)
        return nodes

    async def _write_cdi(self, plan: ClaimPlan) -> None:
        try:
            nodes = self._char_devices(plan)
            # fsynced: off the loop, where a busy disk would stall every other request
            await anyio.to_thread.run_sync(
                self.cdi.write, plan, nodes, self.rdma.shared_devices() if nodes else [])
        except (PlanError, OSError) as exc:
            log.error("claim %s: CDI spec not written: %s", plan.uid, exc)

    async def reconcile_cdi(self) -> None:
        """A CDI spec for every prepared claim (one may have died between the checkpoint
        write and the spec write). Unknown spec files are left alone: prepare records the
        claim before writing its spec and unprepare removes the spec before forgetting
        the claim, so none of ours can be orphaned, and another agent's (a test, a
        demo) may share the folder."""
        for plan in self.store.claims():
            if not self.cdi.path(plan.uid).exists():
                await self._write_cdi(plan)

    async def unprepare(self, req: p.Unprepare) -> p.UnprepareReply:
        async with self._lock(req.claim_uid):
            plan = self.store.claim(req.claim_uid)
            where = fields(claim=req.claim_uid,
                           pod=",".join(x.uid for x in plan.pods) if plan else None,
                           device=",".join(d.device for d in plan.devices) if plan else None)
            errors = await self.attacher.detach_claim(req.claim_uid)
            if errors:
                self.gauge()
                log.warning("claim %s not unprepared: %s", req.claim_uid, "; ".join(errors),
                            extra=where)
                return p.UnprepareReply(claim_uid=req.claim_uid, error="; ".join(errors))
            await anyio.to_thread.run_sync(self.cdi.remove, req.claim_uid)  # a busy disk
            if plan is not None:  # DRANET: released once, failures logged, never retried
                await self.provided.release(self.provided.granted(plan))
            self.store.drop_claim(req.claim_uid)
        self.gauge()
        if plan is not None:
            log.info("claim %s unprepared", req.claim_uid, extra=where)
        return p.UnprepareReply(claim_uid=req.claim_uid)

    # ---- attach / detach -------------------------------------------------------------------

    async def attach(self, req: p.Attach) -> p.AttachReply:
        started = time.perf_counter()
        reply = await self.attacher.attach(req)
        metrics.ATTACH.labels("error" if reply.error else "ok").observe(
            time.perf_counter() - started)
        self.gauge()
        return reply

    async def detach(self, req: p.Detach) -> p.DetachReply:
        started = time.perf_counter()
        reply = await self.attacher.detach(req.pod.uid)
        metrics.DETACH.labels("error" if reply.error else "ok").observe(
            time.perf_counter() - started)
        self.gauge()
        if reply.error:
            log.warning("pod %s: detach incomplete: %s", _pod_name(req.pod), reply.error,
                        extra=fields(pod=req.pod.uid, device=",".join(reply.restored)))
        return reply

    async def status(self, _req: p.PlumberStatusGet) -> p.PlumberStatus:
        """The checkpoint as ``knd status`` shows it: claims, and which pod has which device."""
        claims = [p.ClaimView(uid=c.uid, namespace=c.namespace, name=c.name, pods=list(c.pods),
                              devices=[d.device for d in c.devices],
                              published=[d.published for d in c.devices if d.published])
                  for c in self.store.claims()]
        atts = [p.AttachmentView(claim_uid=a.claim_uid, device=a.device, pod_uid=a.pod_uid,
                                 phase=a.phase, interface=a.pod_ifname,
                                 host_interface=a.host.name if a.host else "", netns=a.netns,
                                 ips=list(a.ips), mac=a.mac, reason=a.reason)
                for a in self.store.attachments()]
        return p.PlumberStatus(node=self.node, rdma_mode=self.rdma.mode, claims=claims,
                               attachments=atts)

    async def container_devices(self, req: p.ContainerDevices) -> p.ContainerDevicesReply:
        out: dict[str, CharDevice] = {}
        for plan in self.store.claims_of_pod(req.pod.uid):
            for d in plan.devices:
                if not d.rdma_device:
                    continue
                try:
                    for c in self.rdma.char_devices(d.rdma_device):
                        out.setdefault(c.path, c)
                except RdmaError as exc:
                    return p.ContainerDevicesReply(
                        error=f"device {q(d.device)} of claim {plan.uid}: {exc}")
        if out:
            for c in self.rdma.shared_devices():
                out.setdefault(c.path, c)
        return p.ContainerDevicesReply(devices=[
            p.LinuxDevice(path=c.path, type="c", major=c.major, minor=c.minor, file_mode=c.mode)
            for c in out.values()])


async def serve(nc: Client, common: Common, *, netns: str | None = None,
                sysfs_root: str | Path = "/sys", dev_root: str | Path = "/dev",
                cdi_root: str | Path = "/var/run/cdi", rdma_mode: str = "auto",
                sweep_interval: float = 10.0, inventory_wait: float = 2.0,
                status_timeout: float = 2.0, providers: Providers | None = None,
                task_status: TaskStatus[Plumber] = anyio.TASK_STATUS_IGNORED) -> None:
    """Run the plumber on ``nc`` until cancelled.

    ``netns`` names the netns that stands for the node (default: our own).
    Reconciles the checkpoint with the kernel before the endpoints answer;
    ``task_status`` reports the :class:`Plumber` once they do.
    """
    store = Checkpoint(Path(common.state_dir) / "plumber" / "checkpoint.db")
    host = Host.open(netns)
    svc = sub = None
    try:
        mode = await anyio.to_thread.run_sync(detect_mode, rdma_mode)
        rdma = Rdma(sysfs_root, dev_root, mode)
        subjects = Subjects(common.node)
        inventory = Inventory(nc, common.node)
        sub = await inventory.subscribe()
        async with anyio.create_task_group() as tg:
            notifier = Notifier(nc, common, store, tg, status_timeout)
            restorer = Restorer(store, host, rdma, notifier)
            attacher = Attacher(store, host, restorer, rdma, inventory, common.driver_name)
            attacher.before_move = slowdown.from_environment()
            plumber = Plumber(common, store, host, inventory, attacher,
                              CdiSpecs(cdi_root, common.driver_name), rdma, notifier,
                              inventory_wait=inventory_wait, provided=Provided(
                                  providers.cloud if providers else None,
                                  providers.profile if providers else None,
                                  common.driver_name))
            counts = await reconcile(attacher)
            await plumber.reconcile_cdi()
            plumber.gauge()
            log.info("plumber on %s: checkpoint reconciled %s; RDMA netns mode %s",
                     common.node, counts, mode)
            tg.start_soon(inventory.listen, sub)
            tg.start_soon(inventory.ask_until_known)
            svc = await bus.serve(nc, SERVICE, "moves network interfaces into pods and back")
            group = svc.add_group(name=subjects.plumber_group)
            # one typed() per endpoint: mypy checks each kind against its function
            typed = functools.partial(bus.typed_handler, SERVICE, concurrent=tg)
            for verb, handler in (
                    ("prepare", typed("prepare", p.Prepare, plumber.prepare)),
                    ("unprepare", typed("unprepare", p.Unprepare, plumber.unprepare)),
                    ("attach", typed("attach", p.Attach, plumber.attach)),
                    ("detach", typed("detach", p.Detach, plumber.detach)),
                    ("container-devices", typed("container-devices", p.ContainerDevices,
                                                plumber.container_devices)),
                    ("status", typed("status", p.PlumberStatusGet, plumber.status))):
                await group.add_endpoint(name=verb, handler=handler)
            await bus.flush(nc)
            if sweep_interval > 0:
                tg.start_soon(sweeper, attacher, sweep_interval)
            task_status.started(plumber)
    finally:
        try:
            await bus.stop_service(nc, svc)
            if sub is not None and nc.is_connected:
                with anyio.CancelScope(shield=True), anyio.move_on_after(bus.STOP_SECONDS):
                    await sub.unsubscribe()  # no round trip: only queues the UNSUB
        except Exception as exc:  # the bus may already be gone
            log.debug("unsubscribing: %r", exc)
        finally:
            with anyio.CancelScope(shield=True):
                await host.aclose()
            store.close()
