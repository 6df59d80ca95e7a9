"""Gateway events: ``knd.<node>.events.claim.prepared|unprepared``, one per claim of a
kubelet ``NodePrepareResources`` / ``NodeUnprepareResources`` call.

(Device events are in ``schemas.inventory`` and ``schemas.plumber``.)
"""

from __future__ import annotations

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


class Notice(Message):
    """``knd.<node>.events.notice``: something a user should see with ``kubectl describe``;
    the publisher writes it as a Kubernetes Event on the object."""

    node: str
    kind: str
    """``Pod`` or ``ResourceClaim``."""
    namespace: str
    name: str
    uid: str
    reason: str
    """CamelCase, DRANET's names where they exist (NetworkDeviceAttachDeferred...)."""
    message: str
    type: str = "Warning"
    """``Normal`` or ``Warning``."""
