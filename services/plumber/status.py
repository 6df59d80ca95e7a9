"""A claim's ``status.devices`` as the plumber reports it: DRANET's conditions.

DRANET writes, once a pod's device is in place, ``Ready`` (reason
``NetworkDeviceReady``) when the interface was moved and ``NetworkReady``
(reason ``NetworkReady``) when its addresses, routes, rules and neighbours are
in, beside ``networkData``; ``RDMALinkReady`` when an RDMA link device was
moved (exclusive mode); ``Ready`` with reason ``RDMAOnlyDeviceReady`` for an
RDMA device without a network interface. All ``True``, no message. knd
attaches all or nothing, so these come together, and it also says why a
device is not ready (reasons DRANET has none for): ``AttachFailed``,
``DeviceGone``, ``Detached``, and ``RDMALinkMoveFailed`` for its best-effort
RDMA move.
"""

from __future__ import annotations

from collections.abc import Callable

from schemas.claims import ClaimStatus, Condition, DeviceStatus, NetworkData
from services.plumber.model import ATTACHED, GONE, Attachment, ClaimPlan, PlannedDevice

MAX_MESSAGE = 1024
"""Plenty for a person; the API allows 32768."""


def _true(kind: str, reason: str) -> Condition:
    return Condition(type=kind, status="True", reason=reason)


def _not_ready(dev: PlannedDevice, reason: str, message: str = "") -> list[Condition]:
    kinds = ["Ready", "NetworkReady"] if dev.ifname else ["Ready"]
    return [Condition(type=k, status="False", reason=reason, message=message[:MAX_MESSAGE])
            for k in kinds]


def _attached(att: Attachment) -> list[Condition]:
    if att.host is not None:
        conds = [_true("Ready", "NetworkDeviceReady"), _true("NetworkReady", "NetworkReady")]
    else:
        conds = []
    if att.rdma_moved:
        conds.append(_true("RDMALinkReady", "RDMALinkReady"))
    elif att.rdma_error:
        conds.append(Condition(type="RDMALinkReady", status="False",
                               reason="RDMALinkMoveFailed",
                               message=att.rdma_error[:MAX_MESSAGE]))
    if att.host is None:  # DRANET: the char devices make it usable, whatever the mode
        conds.append(_true("Ready", "RDMAOnlyDeviceReady"))
    return conds


def device_status(driver: str, dev: PlannedDevice, att: Attachment | None,
                  error: str = "") -> DeviceStatus:
    data = None
    if att is not None and att.phase == ATTACHED:
        conds = _attached(att)
        if att.host is not None:
            data = NetworkData(interface_name=att.pod_ifname, ips=list(att.ips),
                               hardware_address=att.mac)
    elif att is not None and att.phase == GONE:
        conds = _not_ready(dev, "DeviceGone", att.reason)
    elif error:
        conds = _not_ready(dev, "AttachFailed", error)
    else:
        conds = _not_ready(dev, "Detached")
    return DeviceStatus(driver=driver, pool=dev.pool, device=dev.device,
                        share_id=dev.share_id, conditions=conds, network_data=data)


def claim_status(driver: str, plan: ClaimPlan,
                 attachment: Callable[[str, str], Attachment | None],
                 error: str = "") -> ClaimStatus:
    """``plan``'s devices as they stand; ``error``: why the last attach failed."""
    return ClaimStatus(namespace=plan.namespace, name=plan.name, uid=plan.uid, devices=[
        device_status(driver, d, attachment(plan.uid, d.device), error)
        for d in plan.devices])
