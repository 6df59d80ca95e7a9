"""plumber: moves allocated interfaces into pods and gives them back (``knd plumber``).

The only service that changes the host network. Its entry point is here (its flags
are in services.common.settings);
the bus wiring is in service.py; the kernel is touched only by netops (rtnetlink),
nsfs (namespaces), devconf (sysctls, ethtool) and rdma (RDMA netlink, /dev).
"""

from __future__ import annotations

import argparse
import functools
import logging

log = logging.getLogger("knd.plumber")


async def run(args: argparse.Namespace) -> None:
    """``knd plumber``: run until cancelled (the CLI's runner cancels on SIGTERM).

    Ready (``/readyz``) once connected to the bus and the checkpoint is reconciled."""
    # here, not at the top: `knd --help` and `knd up` load this package for its name only
    import anyio

    from services.common import memory

    memory.one_arena()  # before any thread allocates: see services.common.memory

    from services import providers
    from services.common import agentlock
    from services.common.config import Common
    from services.common.privileges import PLUMBER_NEEDS, missing_capabilities
    from services.common.wiring import on_the_bus
    from services.plumber.service import serve
    from services.providers.choose import providers_open

    # the checkpoint is this state dir's; a second plumber on it would undo our work
    with agentlock.held(agentlock.state_lock(Common.from_args(args).state_dir), "knd plumber"):
        async with on_the_bus(args, "plumber", "plumber",
                              requires=("reconciled", "privileges")) as on:
            # It still runs without them (unprepare of nothing, status): but it cannot
            # move an interface, and "ready" must not say it can.
            missing = missing_capabilities(PLUMBER_NEEDS)
            on.health.check("privileges", lambda: not missing,
                            reason=f"lacks {', '.join(missing)}: cannot move interfaces "
                                   "into pods; run it as root or grant it these capabilities")
            if missing:
                log.error("plumber lacks %s: not ready, it cannot move interfaces into pods; "
                          "run it as root or grant it these capabilities", ", ".join(missing))
            async with providers_open(providers.Settings.from_args(args)) as found, \
                    anyio.create_task_group() as tg:
                await tg.start(functools.partial(
                    serve, on.nc, on.common, netns=args.netns, sysfs_root=args.sysfs_root,
                    dev_root=args.dev_root, cdi_root=args.cdi_root,
                    rdma_mode=args.rdma_netns_mode, sweep_interval=args.sweep_interval,
                    providers=found))
                on.health.check("reconciled", lambda: True)
                await on.started()


__all__ = ["run"]
