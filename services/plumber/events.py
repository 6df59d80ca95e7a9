"""Events the plumber publishes on ``events.device.attached|detached|failed``.

Defined here until they move to ``schemas/`` (the bus contract): observers
(``knd events``) decode them as plain JSON in the meantime.
"""

from __future__ import annotations

from schemas.base import Message


class DeviceAttached(Message):
    node: str
    pod_uid: str
    claim_uid: str
    device: str
    interface: str
    """Name inside the pod."""
    netns: str
    ips: list[str] = []
    mac: str = ""
    latency_ms: float = 0.0


class DeviceDetached(Message):
    node: str
    pod_uid: str
    claim_uid: str
    device: str
    interface: str
    """Name in the host after the detach ("" when the device is gone)."""
    reason: str
    """``detach``, ``unprepare``, ``rollback``, ``reconcile``, ``netns-gone``..."""
    gone: bool = False
    """A virtual device destroyed with its pod netns: nothing came back."""


class DeviceFailed(Message):
    node: str
    pod_uid: str
    claim_uid: str
    device: str
    step: str
    error: str
    rolled_back: bool = True
