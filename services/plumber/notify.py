"""What the plumber tells others: device events, and claim status for the publisher
to write, each sent from a background task so that no reply waits on them."""

from __future__ import annotations

import logging

import nats.errors
from anyio.abc import TaskGroup
from nats.aio.client import Client

from schemas.base import Message, decode, encode
from schemas.claims import ClaimStatus, ClaimStatusReply
from schemas.plumber import DeviceAttached, DeviceDetached, DeviceFailed
from schemas.subjects import Subjects
from services.common.config import Common
from services.plumber.checkpoint import Checkpoint
from services.plumber.model import Attachment, ClaimPlan
from services.plumber.status import claim_status

log = logging.getLogger("knd.plumber")


class Notifier:
    """Events and claim-status requests, sent from background tasks."""

    def __init__(self, nc: Client, common: Common, store: Checkpoint, tg: TaskGroup,
                 status_timeout: float) -> None:
        self.nc = nc
        self.node = common.node
        self.driver = common.driver_name
        self.subjects = Subjects(common.node)
        self.store = store
        self.tg = tg
        self.status_timeout = status_timeout

    def _publish(self, kind: str, msg: Message) -> None:
        async def send() -> None:
            try:
                await self.nc.publish(self.subjects.event(kind), encode(msg))
            except nats.errors.Error as exc:
                log.warning("event %s not sent: %r", kind, exc)
        self.tg.start_soon(send)

    def attached(self, att: Attachment, latency_ms: float) -> None:
        self._publish("device.attached", DeviceAttached(
            node=self.node, pod_uid=att.pod_uid, claim_uid=att.claim_uid, device=att.device,
            interface=att.pod_ifname, netns=att.netns, ips=list(att.ips), mac=att.mac,
            latency_ms=latency_ms))

    def _pod(self, att: Attachment) -> tuple[str, str]:
        """The pod's namespace and name, from the claim's reservation in the checkpoint
        ("", "" once the claim is gone): the publisher needs them for a Kubernetes Event."""
        plan = self.store.claim(att.claim_uid)
        for pod in plan.pods if plan is not None else ():
            if pod.uid == att.pod_uid:
                return pod.namespace, pod.name
        return "", ""

    def detached(self, att: Attachment, reason: str, interface: str, gone: bool) -> None:
        ns, name = self._pod(att)
        self._publish("device.detached", DeviceDetached(
            node=self.node, pod_uid=att.pod_uid, claim_uid=att.claim_uid, device=att.device,
            interface=interface, reason=reason, gone=gone, pod_namespace=ns, pod_name=name))

    def failed(self, att: Attachment, step: str, error: str, rolled_back: bool) -> None:
        ns, name = self._pod(att)
        self._publish("device.failed", DeviceFailed(
            node=self.node, pod_uid=att.pod_uid, claim_uid=att.claim_uid, device=att.device,
            step=step, error=error, rolled_back=rolled_back, pod_namespace=ns, pod_name=name))

    def status_of(self, plan: ClaimPlan, error: str = "") -> ClaimStatus:
        return claim_status(self.driver, plan, self.store.attachment, error)

    def claims_changed(self, claim_uids: set[str], error: str = "") -> None:
        for uid in sorted(claim_uids):
            plan = self.store.claim(uid)
            if plan is not None:
                self.tg.start_soon(self._send_status, self.status_of(plan, error))

    async def _send_status(self, msg: ClaimStatus) -> None:
        try:
            reply = await self.nc.request(self.subjects.claim_status, encode(msg),
                                          timeout=self.status_timeout)
            answer = decode(reply.data, ClaimStatusReply)
            if answer.error:
                log.warning("claim %s status not written: %s", msg.uid, answer.error)
        except Exception as exc:  # the publisher may be down; it is only a status
            log.info("claim %s status not written: %r", msg.uid, exc)
