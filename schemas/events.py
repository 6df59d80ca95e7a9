"""Gateway events: ``knd.<node>.events.claim.prepared|unprepared``, one per claim of a
kubelet ``NodePrepareResources`` / ``NodeUnprepareResources`` call; and
``knd.<node>.events.notice``: something a user should see with kubectl.

(Device events are in ``schemas.inventory`` and ``schemas.plumber``.)
"""

from __future__ import annotations

from typing import Literal

from schemas.base import Message


class ClaimPrepared(Message):
    node: str
    claim_uid: str
    namespace: str = ""
    name: str = ""
    devices: list[str] = []
    """This driver's devices of the claim, prepared (empty on error)."""
    error: str = ""
    """Empty: prepared; otherwise what kubelet was told."""
    latency_ms: float = 0.0
    """From the gateway receiving the call to the claim's answer."""


class ClaimUnprepared(Message):
    node: str
    claim_uid: str
    namespace: str = ""
    name: str = ""
    error: str = ""
    latency_ms: float = 0.0


# Kubernetes Event reasons knd writes (``kubectl get events --field-selector reason=...``);
# DRANET's names where DRANET has one.
ATTACH_DEFERRED = "NetworkDeviceAttachDeferred"
"""Pod: the runtime's NRI deadline passed with devices still attaching; containers wait."""
ATTACH_TIMEOUT = "NetworkDeviceAttachTimeout"
"""Pod: the same, and the sandbox is failed instead (no deferral configured)."""
ATTACH_FAILED = "NetworkDeviceAttachFailed"
"""Pod: a device was not attached (and was rolled back), or the deferred attach gave up."""
CREATE_FAILED = "NetworkDeviceCreateFailed"
"""Pod: a child device (e.g. IPVLAN) was not created or configured."""
RDMA_FAILED = "RDMADeviceAttachFailed"
"""Pod: the RDMA link device was not moved; the network device is attached without it."""
RESTORE_FAILED = "NetworkDeviceRestoreFailed"
"""Pod: a device did not go back to the node (retried in the background), or was
deleted inside the pod (knd's own reason: DRANET only logs this)."""
CLAIM_PREPARE_FAILED = "ClaimPrepareFailed"
"""ResourceClaim: kubelet's NodePrepareResources failed for the claim."""


class Notice(Message):
    """``knd.<node>.events.notice``: the publisher writes it as a Kubernetes Event on the
    object (``kubectl describe pod``), rate limited and deduplicated as client-go does.

    Rules the publisher checks (a Notice that breaks one is logged, counted and
    dropped): ``namespace`` a DNS label, ``name`` a DNS subdomain, ``uid`` and
    ``reason`` not empty, ``reason`` at most 128 characters of letters and digits
    (CamelCase, DRANET's names where they exist: NetworkDeviceAttachDeferred...);
    ``message`` is made one line (control characters escaped) and cut to 1024 bytes."""

    node: str
    kind: Literal["Pod", "ResourceClaim"]
    namespace: str
    name: str
    uid: str
    type: Literal["Warning", "Normal"]
    reason: str
    message: str
