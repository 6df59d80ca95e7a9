"""Options every service shares, read from flags or ``KND_*`` environment variables.

The DaemonSet and compose set environment variables; people type flags.
"""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from services.common import features
from services.common.usage import address, env_flag

DEFAULT_DRIVER = "knd.dev"
DEFAULT_STATE_DIR = "/var/lib/knd"

METRICS_PORTS = {"discovery": 9501, "publisher": 9502, "plumber": 9503, "kubelet-gateway": 9504}
"""Each service's default HTTP port (``/metrics``, ``/healthz``, ``/readyz``) on 127.0.0.1;
``knd up`` takes discovery's as the base of all four."""


def metrics_default(service: str) -> str:
    """The default ``--metrics-address`` of ``service`` (``up``: the base address)."""
    return f"127.0.0.1:{METRICS_PORTS.get(service, METRICS_PORTS['discovery'])}"


def metrics_address(base: str, service: str) -> str:
    """``service``'s address when ``knd up --metrics-address`` is ``base``: the host of
    ``base`` and its port plus the service's offset (discovery +0 ... gateway +3)."""
    from services.common.httpserver import format_address, parse_address

    where = parse_address(base, METRICS_PORTS["discovery"])
    if where is None:
        return "off"
    host, port = where
    if port == 0:
        return format_address(host, 0)
    return format_address(host, port + METRICS_PORTS[service] - METRICS_PORTS["discovery"])


def env(name: str, default: str) -> str:
    return os.environ.get(f"KND_{name}", default)


def add_common(p: argparse.ArgumentParser, service: str | None = None) -> None:
    """The shared flags; ``service`` (default: the sub-command, from ``p.prog``) picks the
    default of ``--metrics-address``."""
    service = service or p.prog.split()[-1]
    p.add_argument("--node", "--hostname-override", default=env("NODE", socket.gethostname()),
                   help="node name (pool name, subject prefix); --hostname-override is "
                        "DRANET's name [KND_NODE]")
    p.add_argument("--state-dir", type=Path, default=Path(env("STATE_DIR", DEFAULT_STATE_DIR)),
                   help="where credentials, checkpoints and standalone objects live "
                        "[KND_STATE_DIR]")
    p.add_argument("--bus-creds", type=Path, default=os.environ.get("KND_BUS_CREDS"),
                   help="bus credentials file (default <state-dir>/bus/creds.json) "
                        "[KND_BUS_CREDS]")
    p.add_argument("--driver-name", default=env("DRIVER_NAME", DEFAULT_DRIVER),
                   help="DRA driver name and attribute domain [KND_DRIVER_NAME]")
    p.add_argument("--log-level", default=env("LOG_LEVEL", "info"), type=_log_level,
                   help="debug, info, warning or error (default info) [KND_LOG_LEVEL]")
    p.add_argument("--log-json", action="store_true", default=env_flag("LOG_JSON"),
                   help="structured JSON logs [KND_LOG_JSON]")
    p.add_argument("--metrics-address", "--bind-address", type=address,
                   default=env("METRICS_ADDRESS", metrics_default(service)),
                   help="host:port of /metrics, /healthz and /readyz; \"off\" serves none; "
                        "for `knd up`, discovery's, the others at +1..+3 "
                        f"(default {metrics_default(service)}); --bind-address is DRANET's "
                        "name [KND_METRICS_ADDRESS]")
    features.add_argument(p)


LOG_LEVELS = ("debug", "info", "warning", "error")


def _log_level(text: str) -> str:
    """``type=`` rather than ``choices=``: argparse checks choices only on the command
    line, and a ``KND_LOG_LEVEL`` typo would reach ``logging`` as a traceback."""
    if text.lower() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r}: expected one of {', '.join(LOG_LEVELS)}")
    return text.lower()


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


def add_bus_client(p: argparse.ArgumentParser) -> None:
    """The flags of a tool that reads the bus credentials (``knd events``, ``knd status``)."""
    p.add_argument("--state-dir", type=Path, default=Path(env("STATE_DIR", DEFAULT_STATE_DIR)),
                   help="the agent's state directory [KND_STATE_DIR]")
    p.add_argument("--bus-creds", type=Path, default=os.environ.get("KND_BUS_CREDS"),
                   help="bus credentials file (default <state-dir>/bus/creds.json) "
                        "[KND_BUS_CREDS]")


def bus_creds_path(a: argparse.Namespace) -> Path:
    return Path(a.bus_creds) if a.bus_creds else Path(a.state_dir) / "bus" / "creds.json"
