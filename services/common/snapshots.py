"""Which of two inventory snapshots is newer.

Discovery numbers its snapshots (epoch = one run of discovery, seq within it).
A reply to ``inventory.get`` and a publish can cross on the bus, and discovery
may restart (seq starts again, and its clock may even go back), so: within one
run the higher seq wins; a run not seen before wins whatever its numbers; a run
already left behind never comes back.
"""

from __future__ import annotations

import logging
from collections import deque

from schemas.inventory import InventorySnapshot

log = logging.getLogger("knd.snapshots")


class NewestSnapshot:
    def __init__(self, node: str, remember: int = 32) -> None:
        self.node = node
        self.latest: InventorySnapshot | None = None
        self._old_epochs: deque[int] = deque(maxlen=remember)

    def offer(self, snap: InventorySnapshot) -> bool:
        """Keep ``snap`` if it is newer than the one we have; True when kept."""
        if snap.node != self.node:
            log.warning("ignored an inventory of node %r on %s's subject", snap.node, self.node)
            return False
        cur = self.latest
        if cur is not None:
            if snap.epoch == cur.epoch:
                if snap.seq <= cur.seq:
                    return False
            elif snap.epoch in self._old_epochs:
                return False
            else:
                self._old_epochs.append(cur.epoch)
        self.latest = snap
        return True
