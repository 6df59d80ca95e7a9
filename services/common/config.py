"""What every service shares: its node, state dir, bus credentials and driver name
(:class:`Common`), and where each one serves /metrics. The flags and variables that
set them are in services.common.settings."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

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
    from services.common.address import format_address, parse_address

    where = parse_address(base, METRICS_PORTS["discovery"])
    if where is None:
        return "off"
    host, port = where
    if port == 0:
        return format_address(host, 0)
    return format_address(host, port + METRICS_PORTS[service] - METRICS_PORTS["discovery"])


LOG_LEVELS = ("debug", "info", "warning", "error")


def log_level(text: str) -> str:
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


def bus_creds_path(a: argparse.Namespace) -> Path:
    return Path(a.bus_creds) if a.bus_creds else Path(a.state_dir) / "bus" / "creds.json"
