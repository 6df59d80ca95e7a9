"""kubelet_gateway: the kubelet DRA gRPC plugin and the container runtime's NRI plugin.

``knd kubelet-gateway``'s entry point (its flags are in services.common.settings); the
wiring is in service.py.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.kubelet_gateway.nri.barrier import Barrier


async def run(args: argparse.Namespace) -> None:
    """``knd kubelet-gateway``: ready once on the bus with kubelet's DRA socket there."""
    import anyio

    from services.common import agentlock
    from services.common.api import open_api
    from services.common.config import Common
    from services.common.wiring import on_the_bus
    from services.kubelet_gateway.service import SERVICE, serve

    common = Common.from_args(args)
    # the sockets are ours to replace or remove only while we hold this
    with agentlock.held(agentlock.kubelet_lock(args.kubelet_root, common.driver_name),
                        "knd kubelet-gateway"):
        async with on_the_bus(args, SERVICE, "gateway", requires=("dra_socket",)) as on:
            api = open_api(standalone=args.standalone, state_dir=common.state_dir,
                           kubeconfig=args.kubeconfig, timeout=args.api_timeout)
            try:
                async with anyio.create_task_group() as tg:
                    gw = await tg.start(functools.partial(
                        serve, on.nc, common, api, kubelet_root=Path(args.kubelet_root),
                        nri_socket=Path(args.nri_socket), nri_index=args.nri_index,
                        plumber_timeout=args.plumber_timeout,
                        device_attach_timeout=args.device_attach_timeout,
                        barrier=_barrier(args, common.state_dir)))
                    on.health.check("dra_socket", lambda: gw.grpc.dra_socket.is_socket())
                    on.health.info("kubelet_registered", lambda: gw.grpc.registration.registered)
                    on.health.info("nri_connected", lambda: gw.nri.connected)
                    await on.started()
            finally:
                with anyio.CancelScope(shield=True):
                    await api.aclose()


def _barrier(args: argparse.Namespace, state_dir: Path) -> Barrier | None:
    from services.kubelet_gateway.nri.barrier import Barrier

    if not args.hook_shell:
        return None
    return Barrier(args.hook_dir or state_dir / "attach", args.hook_shell)
