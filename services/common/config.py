"""Options every service shares, read from flags or ``KND_*`` environment variables.

The DaemonSet and compose set environment variables; people type flags.
"""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DRIVER = "knd.dev"
DEFAULT_STATE_DIR = "/var/lib/knd"


def env(name: str, default: str) -> str:
    return os.environ.get(f"KND_{name}", default)


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node", default=env("NODE", socket.gethostname()),
                   help="node name (pool name, subject prefix) [KND_NODE]")
    p.add_argument("--state-dir", type=Path, default=Path(env("STATE_DIR", DEFAULT_STATE_DIR)),
                   help="where credentials, checkpoints and standalone objects live "
                        "[KND_STATE_DIR]")
    p.add_argument("--bus-creds", type=Path, default=os.environ.get("KND_BUS_CREDS"),
                   help="bus credentials file (default <state-dir>/bus/creds.json) "
                        "[KND_BUS_CREDS]")
    p.add_argument("--driver-name", default=env("DRIVER_NAME", DEFAULT_DRIVER),
                   help="DRA driver name and attribute domain [KND_DRIVER_NAME]")
    p.add_argument("--log-level", default=env("LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-json", action="store_true",
                   default=env("LOG_JSON", "") not in ("", "0", "false"),
                   help="structured JSON logs [KND_LOG_JSON]")


@dataclass(frozen=True)
class Common:
    node: str
    state_dir: Path
    bus_creds: Path
    driver_name: str

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> Common:
        state = Path(a.state_dir)
        return cls(node=a.node, state_dir=state,
                   bus_creds=Path(a.bus_creds) if a.bus_creds else state / "bus" / "creds.json",
                   driver_name=a.driver_name)
