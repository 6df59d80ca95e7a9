"""How every service starts: the one shape of ``knd <service>``.

Each service's ``run(args)`` opens :func:`on_the_bus` and, inside it, starts its
``serve(nc, common, ..., task_status=...)`` with ``tg.start``: ``serve`` reports the
service's object once its endpoints answer, and ``run`` registers the readiness
checks that read it. Tests, the demo and the benchmarks call the same ``serve``
with a bus client of their own.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from nats.aio.client import Client

from services.common import auth, bus
from services.common.config import Common
from services.common.httpserver import Health, serving


@dataclass(frozen=True)
class Wired:
    common: Common
    nc: Client
    health: Health

    async def started(self) -> None:
        """The service serves: give back what starting it freed (imports, first scans),
        which glibc would otherwise keep for the life of the process (~0.6 MB)."""
        import anyio

        from services.common import memory

        await anyio.to_thread.run_sync(memory.give_back)


@asynccontextmanager
async def on_the_bus(args: argparse.Namespace, service: str, role: str,
                     requires: tuple[str, ...] = ()) -> AsyncIterator[Wired]:
    """Serve ``service``'s /metrics, /healthz and /readyz (ready once ``bus`` and each
    of ``requires`` pass) and connect to the bus as ``role`` while the body runs."""
    common = Common.from_args(args)
    health = Health(service, requires=("bus", *requires))
    async with serving(args.metrics_address, health):
        nc = await bus.connect(auth.load(common.bus_creds), role)
        health.check("bus", lambda: nc.is_connected)
        try:
            yield Wired(common, nc, health)
        finally:
            await bus.close(nc)
