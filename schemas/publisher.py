"""Publisher request/reply messages: ``knd.<node>.publisher.status``."""

from __future__ import annotations

from schemas.base import Message


class StatusGet(Message):
    """Request for the publisher's last sync result."""


class PublisherStatus(Message):
    """The reply to ``publisher.status``: what the pool looks like after the last sync."""

    node: str
    pool: str
    driver: str
    synced: bool = False
    """True once a sync succeeded since start."""
    epoch: int = 0
    seq: int = 0
    """The inventory snapshot (discovery run, sequence) the last sync published."""
    generation: int = 0
    slices: int = 0
    devices: int = 0
    rdma: int = 0
    writes: int = 0
    """API writes done by the last sync."""
    dropped: list[str] = []
    last_sync_at: float = 0.0
    """Unix time of the last successful sync (0: none yet)."""
    last_error: str = ""
    """The last sync failure, cleared by a success."""
    pending: bool = False
    """A newer snapshot than the published one waits (syncing or backing off)."""
