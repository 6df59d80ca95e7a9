"""Device and slice builders shared by the publisher tests."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from schemas.inventory import Device
from services.common import bus as busmod
from services.common.api import ApiPort
from services.common.config import Common
from services.publisher.service import Publisher, serve
from tests.conftest import NODE

DRIVER = "knd.dev"


def device(i: int, **attrs: Any) -> Device:
    """A realistic inventory device ``eth<i>`` with a few attributes."""
    base: dict[str, Any] = {
        f"{DRIVER}/ifName": f"eth{i}",
        f"{DRIVER}/mtu": 1500,
        f"{DRIVER}/rdma": i % 2 == 0,
        "resource.kubernetes.io/pcieRoot": f"pci0000:{i % 4:02x}",
    }
    base.update(attrs)
    return Device(name=f"eth{i}", attributes=base, capacity={f"{DRIVER}/bandwidth": "10G"})


def devices(n: int, start: int = 0) -> list[Device]:
    return [device(i) for i in range(start, start + n)]


def slice_devices(obj: dict) -> list[str]:
    return [d["name"] for d in obj["spec"].get("devices") or []]


def pool_state(slices: list[dict]) -> tuple[set[int], set[int], int]:
    """(generations, counts, number of slices) of a list of slices."""
    gens = {s["spec"]["pool"]["generation"] for s in slices}
    counts = {s["spec"]["pool"]["resourceSliceCount"] for s in slices}
    return gens, counts, len(slices)


def common(tmp_path: Path) -> Common:
    return Common(node=NODE, state_dir=tmp_path, bus_creds=tmp_path / "unused.json",
                  driver_name=DRIVER)


@asynccontextmanager
async def running_publisher(bus, api: ApiPort, tmp_path: Path, **kw: Any
                            ) -> AsyncIterator[Publisher]:
    """The publisher service on the real bus, as user "publisher" (``kw``: ``serve``'s)."""
    nc = await busmod.connect(bus, "publisher")
    try:
        async with anyio.create_task_group() as tg:
            pub = await tg.start(functools.partial(serve, nc, common(tmp_path), api, **kw))
            try:
                yield pub
            finally:
                tg.cancel_scope.cancel()
    finally:
        await busmod.close(nc)
