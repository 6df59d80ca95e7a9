"""Inventory messages: what discovery knows about the node's devices."""

from __future__ import annotations

from schemas.base import Message, Strict

AttrValue = bool | int | str
"""A device attribute value. bool is listed first so JSON true/false stay bools."""


class Device(Strict, kw_only=True):
    """One allocatable device, already shaped like a ResourceSlice device.

    ``attributes`` keys are fully qualified (``knd.dev/ifName``,
    ``resource.kubernetes.io/pcieRoot``); ``capacity`` values are quantities.
    """

    name: str
    attributes: dict[str, AttrValue] = {}
    capacity: dict[str, str] = {}
    shared: bool = False
    """Published with ``allowMultipleAllocations`` (KEP-5075): several claims may hold
    it at once, each for an ipvlan or macvlan child (discovery's ``--shared-devices``)."""


class InventorySnapshot(Message):
    """The node's whole inventory. Published on ``inventory.snapshot`` and
    returned by ``inventory.get``.

    ``epoch`` identifies one run of discovery (ns since the Unix epoch at its
    start) and ``seq`` counts snapshots within it, so a consumer can keep the
    newest of two snapshots that arrive out of order (a reply and a publish).
    """

    node: str
    epoch: int
    seq: int
    devices: list[Device]
    taken_at: float
    """Unix time of the rescan that produced this snapshot."""
    trigger_at: float = 0.0
    """Unix time of the earliest kernel event this snapshot answers (0: none)."""


class InventoryGet(Message):
    """Request for the current snapshot."""


class DeviceEvent(Message):
    """``events.device.added|removed|changed``: one device's life in the inventory."""

    node: str
    device: str
    kind: str
    attributes: dict[str, AttrValue] = {}


class SlicePublished(Message):
    """``events.slice.published``: the pool converged on a new inventory."""

    node: str
    pool: str
    generation: int
    slices: int
    devices: int
    writes: int
    latency_ms: float
    """From the first kernel event behind the snapshot to the last API write."""
    dropped: list[str] = []
    """Devices left out because the API server would reject them, with why."""
