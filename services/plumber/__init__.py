"""plumber: moves allocated interfaces into pods and gives them back (``knd plumber``).

The only service that changes the host network. Flags and entry point here;
the bus wiring is in service.py; the kernel is touched only by netops (rtnetlink),
nsfs (namespaces), devconf (sysctls, ethtool) and rdma (RDMA netlink, /dev).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator

import anyio

from services import providers
from services.common import agentlock, auth, bus
from services.common.config import Common, env
from services.common.httpserver import Health, serving
from services.common.privileges import PLUMBER_NEEDS, missing_capabilities
from services.plumber.service import serve
from services.providers.choose import Providers, open_providers

log = logging.getLogger("knd.plumber")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--netns", default=os.environ.get("KND_NETNS"),
                   help="treat this named network namespace as the node instead of our own "
                        "(tests, demos) [KND_NETNS]")
    p.add_argument("--sysfs-root", default=env("SYSFS_ROOT", "/sys"),
                   help="sysfs to map RDMA char devices from [KND_SYSFS_ROOT]")
    p.add_argument("--dev-root", default=env("DEV_ROOT", "/dev"),
                   help="where the RDMA device nodes live (infiniband/uverbsN...) "
                        "[KND_DEV_ROOT]")
    p.add_argument("--cdi-root", default=env("CDI_ROOT", "/var/run/cdi"),
                   help="folder for the per-claim CDI spec files [KND_CDI_ROOT]")
    p.add_argument("--rdma-netns-mode", default=env("RDMA_NETNS_MODE", "auto"),
                   choices=["auto", "shared", "exclusive"],
                   help="RDMA subsystem netns mode; auto asks `rdma system show` "
                        "[KND_RDMA_NETNS_MODE]")
    providers.add_arguments(p)
    p.add_argument("--sweep-interval", type=float, default=env("SWEEP_INTERVAL", "10"),
                   help="seconds between checks for vanished pod netns (0: never) "
                        "[KND_SWEEP_INTERVAL]")


async def run(args: argparse.Namespace) -> None:
    """``knd plumber``: run until cancelled (the CLI's runner cancels on SIGTERM).

    Ready (``/readyz``) once connected to the bus and the checkpoint is reconciled."""
    common = Common.from_args(args)
    # the checkpoint is this state dir's; a second plumber on it would undo our work
    with agentlock.held(agentlock.state_lock(common.state_dir), "knd plumber"):
        await _run(args, common)


async def _run(args: argparse.Namespace, common: Common) -> None:
    health = Health("plumber", requires=("bus", "reconciled", "privileges"))
    # It still runs without them (unprepare of nothing, status): but it cannot move an
    # interface, and "ready" must not say it can.
    missing = missing_capabilities(PLUMBER_NEEDS)
    health.check("privileges", lambda: not missing,
                 reason=f"lacks {', '.join(missing)}: cannot move interfaces into pods; run "
                        "it as root or grant it these capabilities")
    if missing:
        log.error("plumber lacks %s: not ready, it cannot move interfaces into pods; run it "
                  "as root or grant it these capabilities", ", ".join(missing))
    async with serving(args.metrics_address, health), _providers(args) as found:
        nc = await bus.connect(auth.load(common.bus_creds), "plumber")
        health.check("bus", lambda: nc.is_connected)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(functools.partial(
                    serve, nc, common, netns=args.netns, sysfs_root=args.sysfs_root,
                    dev_root=args.dev_root, cdi_root=args.cdi_root,
                    rdma_mode=args.rdma_netns_mode, sweep_interval=args.sweep_interval,
                    providers=found))
                health.check("reconciled", lambda: True)
        finally:
            await bus.close(nc)


@contextlib.asynccontextmanager
async def _providers(args: argparse.Namespace) -> AsyncIterator[Providers]:
    found = await open_providers(providers.Settings.from_args(args))
    try:
        yield found
    finally:
        await found.aclose()


__all__ = ["add_arguments", "run", "serve"]
