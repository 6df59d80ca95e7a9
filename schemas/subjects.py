"""Subject names of the bus: ``knd.<node>.<area>.<verb>``.

Node names are DNS subdomains and may contain dots, which NATS reads as token
separators; dots become underscores, which a node name cannot contain, so the
mapping is one to one.
"""

from __future__ import annotations

PREFIX = "knd"


def node_token(node: str) -> str:
    if not node or any(c in node for c in " *>\t\r\n_"):
        raise ValueError(f"node name {node!r} cannot be used in a bus subject")
    return node.replace(".", "_")


class Subjects:
    """All subjects of one node."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.root = f"{PREFIX}.{node_token(node)}"

    @property
    def inventory_snapshot(self) -> str:
        return f"{self.root}.inventory.snapshot"

    @property
    def inventory_get(self) -> str:
        return f"{self.root}.inventory.get"

    @property
    def inventory_group(self) -> str:
        return f"{self.root}.inventory"

    @property
    def publisher_group(self) -> str:
        return f"{self.root}.publisher"

    @property
    def plumber_group(self) -> str:
        return f"{self.root}.plumber"

    def plumber(self, verb: str) -> str:
        """``prepare``, ``unprepare``, ``attach``, ``detach``, ``container-devices``."""
        return f"{self.root}.plumber.{verb}"

    @property
    def claim_status(self) -> str:
        return f"{self.root}.publisher.claim-status"

    @property
    def events(self) -> str:
        return f"{self.root}.events"

    def event(self, kind: str) -> str:
        """``kind`` like ``device.added`` or ``slice.published``."""
        return f"{self.root}.events.{kind}"

    @property
    def notice(self) -> str:
        """Something a user should see (``schemas.events.Notice``): the publisher writes
        it as a Kubernetes Event."""
        return self.event("notice")
