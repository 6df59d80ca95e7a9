"""Which bus events a user should see with kubectl, and how they read as Kubernetes Events.

The gateway says so itself (``events.notice``, a :class:`Notice`); the plumber's device
failures and the gateway's failed prepares are translated here, with DRANET's reasons
and wording where DRANET has them (schemas.events lists the reasons).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from nats.aio.subscription import Subscription

from schemas import events as reasons
from schemas.base import Message
from schemas.events import ClaimPrepared, Notice
from schemas.plumber import DeviceDetached, DeviceFailed
from schemas.subjects import Subjects
from services.common import bus
from services.publisher import metrics
from services.publisher.events import EventRecorder, Involved, Occurrence

log = logging.getLogger("knd.publisher.events")

SERVICE = "publisher"


def from_notice(n: Notice) -> Occurrence:
    return Occurrence(Involved(n.kind, n.namespace, n.name, n.uid), n.type, n.reason,
                      n.message)


def _pod(m: DeviceFailed | DeviceDetached) -> Involved:
    return Involved("Pod", m.pod_namespace, m.pod_name, m.pod_uid)


def from_device_failed(m: DeviceFailed) -> Occurrence:
    pod = f"{m.pod_namespace}/{m.pod_name}"
    if m.step == "restore":
        return Occurrence(_pod(m), "Warning", reasons.RESTORE_FAILED,
                          f"failed to give network device {m.device} of pod {pod} back to "
                          f"the node: {m.error}; retrying in the background")
    if m.step == "rdma":
        return Occurrence(_pod(m), "Warning", reasons.RDMA_FAILED,
                          f"failed to attach the RDMA device of network device {m.device} "
                          f"to pod {pod}: {m.error}; the network device is attached "
                          "without it")
    create = m.step == "create" or m.step.startswith("create.")
    message = (f"failed to create subinterface on network device {m.device} for pod {pod}: "
               if create else f"failed to attach network device {m.device} to pod {pod}: ")
    message += m.error
    if not m.rolled_back:
        message += "; the rollback is incomplete and is retried in the background"
    return Occurrence(_pod(m), "Warning",
                      reasons.CREATE_FAILED if create else reasons.ATTACH_FAILED, message)


def from_device_detached(m: DeviceDetached) -> Occurrence | None:
    """Only a device that is lost to the node: a virtual device deleted inside a live pod.
    (One that died with its pod's netns is the normal end of a virtual device.)"""
    if not (m.gone and m.reason == "device-deleted"):
        return None
    return Occurrence(_pod(m), "Warning", reasons.RESTORE_FAILED,
                      f"network device {m.device} was deleted inside pod "
                      f"{m.pod_namespace}/{m.pod_name}; it cannot be given back to the node")


def from_claim_prepared(m: ClaimPrepared) -> Occurrence | None:
    if not m.error:
        return None
    return Occurrence(Involved("ResourceClaim", m.namespace, m.name, m.claim_uid), "Warning",
                      reasons.CLAIM_PREPARE_FAILED, m.error)


Translate = Callable[[Message], Occurrence | None]


def sources(subjects: Subjects) -> dict[str, tuple[type[Message], Translate]]:
    """Subject -> (schema, translation) of every bus event that may become an Event."""
    table: dict[str, tuple[type[Message], Callable]] = {
        subjects.notice: (Notice, from_notice),
        subjects.event("device.failed"): (DeviceFailed, from_device_failed),
        subjects.event("device.detached"): (DeviceDetached, from_device_detached),
        subjects.event("claim.prepared"): (ClaimPrepared, from_claim_prepared),
    }
    return table


async def listen(sub: Subscription, schema: type[Message], translate: Translate,
                 recorder: EventRecorder) -> None:
    """Record what arrives on ``sub``; a malformed message is dropped and counted by the
    bus layer, one about a pod whose name is not known is counted as ``no-object``."""
    async for msg in sub.messages:
        decoded = bus.decode_or_count(SERVICE, msg.subject, msg.data, schema)
        occ = translate(decoded) if decoded is not None else None
        if occ is None:
            continue
        if not isinstance(decoded, Notice) and not (occ.obj.name and occ.obj.namespace):
            # the plumber lost the claim (and its pod) before it reported: nothing to
            # write the event on; the plumber's log has it (a Notice must name its object:
            # the recorder refuses one that does not, naming the field)
            metrics.EVENTS_WRITTEN.labels(occ.reason, "no-object").inc()
            log.info("event %s on %s %s not written: its name is not known", occ.reason,
                     occ.obj.kind, occ.obj.uid)
            continue
        recorder.record(occ)
