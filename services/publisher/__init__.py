"""publisher: the only writer of the node's ResourceSlices (``knd publisher``).

Its entry point is here (its flags are in services.common.settings); the work is in
service.py, the API calls in services.common.api.
"""

from __future__ import annotations

import argparse
import functools


async def run(args: argparse.Namespace) -> None:
    """``knd publisher``: run until cancelled (the CLI's runner cancels on SIGTERM).
    Ready once the pool was written (API or standalone files) since start."""
    # here, not at the top: `knd --help` and `knd up` load this package for its name only
    import anyio

    from services.common.api import open_api
    from services.common.wiring import on_the_bus
    from services.publisher.service import SERVICE, Publisher, serve

    async with on_the_bus(args, SERVICE, SERVICE, requires=("synced",)) as on:
        api = open_api(standalone=args.standalone, state_dir=on.common.state_dir,
                       kubeconfig=args.kubeconfig, timeout=args.api_timeout)
        try:
            async with anyio.create_task_group() as tg:
                pub: Publisher = await tg.start(functools.partial(
                    serve, on.nc, on.common, api, api_timeout=args.api_timeout,
                    resync_interval=args.pool_resync_interval))
                on.health.check("synced", lambda: pub.status.synced)
                on.health.info("generation", lambda: pub.status.generation)
                on.health.info("last_error", lambda: pub.status.last_error)
                await on.started()
        finally:
            with anyio.CancelScope(shield=True):
                await api.aclose()
