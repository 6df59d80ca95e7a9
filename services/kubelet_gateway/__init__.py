"""kubelet_gateway: the kubelet DRA gRPC plugin and the container runtime's NRI plugin.

``knd kubelet-gateway``'s entry point (its flags are in services.common.settings); the
wiring is in service.py.
"""

from __future__ import annotations

import argparse


async def run(args: argparse.Namespace) -> None:
    from services.kubelet_gateway.service import run_gateway

    await run_gateway(args)
