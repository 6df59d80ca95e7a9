"""plumber: moves allocated interfaces into pods and gives them back (``knd plumber``).

The only service that changes the host network. Its entry point is here (its flags
are in services.common.settings);
the bus wiring is in service.py; the kernel is touched only by netops (rtnetlink),
nsfs (namespaces), devconf (sysctls, ethtool) and rdma (RDMA netlink, /dev).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
from collections.abc import AsyncIterator

import anyio

from services import providers
from services.common import agentlock, auth, bus
from services.common.config import Common
from services.common.httpserver import Health, serving
from services.common.privileges import PLUMBER_NEEDS, missing_capabilities
from services.plumber.service import serve
from services.providers.choose import Providers, open_providers

log = logging.getLogger("knd.plumber")


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


__all__ = ["run", "serve"]
