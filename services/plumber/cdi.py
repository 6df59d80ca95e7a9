"""CDI spec files: one per prepared claim, so the runtime can inject each
device's character devices (RDMA) and tell the container which interface is
its own.

Files are transient (``/var/run/cdi`` by default), named after the claim UID
(never reused), written atomically (temp file, fsync, rename) and removed at
unprepare. ``cdiVersion`` is 0.5.0, the lowest that has ``hostPath`` in
``deviceNodes`` (the host and container paths differ when ``--dev-root`` is
not ``/dev``). CDI refuses a device without edits, so every device sets one
environment variable naming its interface (or RDMA device) in the pod.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from services.common.files import write_atomic
from services.plumber.model import ClaimPlan
from services.plumber.plan import cdi_kind, cdi_name
from services.plumber.rdma import CharDevice

log = logging.getLogger("knd.plumber.cdi")

CDI_VERSION = "0.5.0"


def env_key(prefix: str, device: str) -> str:
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9]', '_', device).upper()}"


def _node(c: CharDevice) -> dict:
    return {"path": c.path, "hostPath": c.host_path, "type": "c", "major": c.major,
            "minor": c.minor, "fileMode": c.mode, "permissions": "rw"}


class CdiSpecs:
    def __init__(self, root: str | Path, driver: str) -> None:
        self.root = Path(root)
        self.driver = driver
        self.kind = cdi_kind(driver)
        self.prefix = f"{driver}_"

    def path(self, claim_uid: str) -> Path:
        return self.root / f"{self.prefix}{claim_uid}.json"

    def spec(self, plan: ClaimPlan, nodes: dict[str, list[CharDevice]],
             shared: list[CharDevice]) -> dict:
        devices = []
        for d in plan.devices:
            env = []
            if d.pod_ifname:
                env.append(f"{env_key('KND_NET', d.device)}={d.pod_ifname}")
            if d.rdma_device:
                env.append(f"{env_key('KND_RDMA', d.device)}={d.rdma_device}")
            edits: dict = {"env": env}
            if nodes.get(d.device):
                edits["deviceNodes"] = [_node(c) for c in nodes[d.device]]
            devices.append({"name": cdi_name(plan.uid, d.device), "containerEdits": edits})
        spec: dict = {"cdiVersion": CDI_VERSION, "kind": self.kind, "devices": devices}
        if shared and any(nodes.values()):
            spec["containerEdits"] = {"deviceNodes": [_node(c) for c in shared]}
        return spec

    def write(self, plan: ClaimPlan, nodes: dict[str, list[CharDevice]],
              shared: list[CharDevice]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(plan.uid)
        write_atomic(path, json.dumps(self.spec(plan, nodes, shared), indent=2), 0o644)
        return path

    def remove(self, claim_uid: str) -> None:
        try:
            self.path(claim_uid).unlink()
        except FileNotFoundError:
            pass
