"""kubelet_gateway: the kubelet DRA gRPC plugin and the container runtime's NRI plugin.

``knd kubelet-gateway`` flags and entry point; the wiring is in service.py.
"""

from __future__ import annotations

import argparse
import os

from services.common.config import env
from services.common.usage import env_flag


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubelet-root", "--kubelet-root-dir",
                   default=env("KUBELET_ROOT", "/var/lib/kubelet"),
                   help="kubelet's root dir: sockets go in plugins/ and plugins_registry/ "
                        "(--kubelet-root-dir: DRANET's name) [KND_KUBELET_ROOT]")
    p.add_argument("--nri-socket", default=env("NRI_SOCKET", "/var/run/nri/nri.sock"),
                   help="the container runtime's NRI socket [KND_NRI_SOCKET]")
    p.add_argument("--nri-index", default=env("NRI_INDEX", "10"),
                   help="two-digit NRI plugin index (ordering among plugins) [KND_NRI_INDEX]")
    p.add_argument("--standalone", action="store_true", default=env_flag("STANDALONE"),
                   help="read ResourceClaims from <state-dir>/api files [KND_STANDALONE]")
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"),
                   help="kubeconfig (default: in-cluster) [KUBECONFIG]")
    p.add_argument("--api-timeout", type=float, default=env("API_TIMEOUT", "10"),
                   help="seconds for one API call [KND_API_TIMEOUT]")
    p.add_argument("--plumber-timeout", type=float, default=env("PLUMBER_TIMEOUT", "40"),
                   help="seconds to wait for the plumber on prepare/unprepare "
                        "[KND_PLUMBER_TIMEOUT]")


async def run(args: argparse.Namespace) -> None:
    from services.kubelet_gateway.service import run_gateway

    await run_gateway(args)
