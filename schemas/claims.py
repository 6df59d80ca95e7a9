"""``knd.<node>.publisher.claim-status``: the plumber asks the publisher (the only API
writer) to record a claim's per-device status (KEP-4817 ``status.devices``)."""

from __future__ import annotations

from schemas.base import Message, Strict


class Condition(Strict):
    type: str
    status: str
    """"True", "False" or "Unknown"."""
    reason: str = ""
    message: str = ""


class NetworkData(Strict):
    interface_name: str = ""
    ips: list[str] = []
    hardware_address: str = ""


class DeviceStatus(Strict):
    driver: str
    pool: str
    device: str
    share_id: str = ""
    conditions: list[Condition] = []
    network_data: NetworkData | None = None


class ClaimStatus(Message):
    namespace: str
    name: str
    uid: str
    devices: list[DeviceStatus]
    """Replaces this driver's entries of ``status.devices``; empty clears them."""


class ClaimStatusReply(Message):
    error: str = ""
