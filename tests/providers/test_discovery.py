"""Discovery in-process on the real bus, watching a throwaway node netns, with a webhook
cloud provider of the test's own on a unix socket: provider attributes are merged into
the published devices, the filter sees them, the ResourceSlice limits hold, and a failing
or lying webhook costs only its own attributes."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from aiohttp import web

from schemas.base import decode
from schemas.inventory import InventorySnapshot
from schemas.limits import MAX_ATTRIBUTES_AND_CAPACITIES
from schemas.subjects import Subjects
from services.common import bus as busmod
from services.discovery.cloud import CloudAttributes
from services.discovery.filter import DeviceFilter
from services.discovery.service import Discovery, Scanner, Tuning
from services.kernel.sysfs import Sysfs
from services.providers import Settings
from services.providers.choose import open_providers
from tests.conftest import NODE
from tests.helpers.plumber import StatusOnlyPlumber
from tests.providers.servers import serve

pytestmark = pytest.mark.anyio

MANY = {f"acme.com/a{n:02d}": {"int": n} for n in range(40)}


async def attributes(request: web.Request) -> web.StreamResponse:
    name = (await request.json()).get("name")
    if name == "wa0":
        return web.json_response({"acme.com/rail": {"int": 1},
                                  "knd.dev/ifName": {"string": "eth-hijack"},
                                  "acme.com/long": {"string": "y" * 70}})
    if name == "wbad":
        return web.Response(status=500, text="boom")
    if name == "wa1":
        return web.json_response({"acme.com/hide": {"bool": True}})
    if name == "wmany":
        return web.json_response(MANY)
    return web.json_response({})


async def test_webhook_attributes_are_published_filtered_and_bounded(
        bus, node_ns, tmp_path: Path, caplog) -> None:
    for a, b in (("wa0", "wa1"), ("wbad", "wbad1"), ("wmany", "wmany1")):
        node_ns.veth(a, b)
    routes = {("GET", "/health"): {"cloudProvider": True, "profileProvider": False},
              ("POST", "/GetDeviceAttributes"): attributes}
    snapshots: list[InventorySnapshot] = []
    plumber = StatusOnlyPlumber(NODE)
    await plumber.start(bus)
    nc = await busmod.connect(bus, "discovery")
    listener = await busmod.connect(bus, "plumber")

    async def collect(msg) -> None:
        snapshots.append(decode(msg.data, InventorySnapshot))

    await listener.subscribe(Subjects(NODE).inventory_snapshot, cb=collect)
    async with serve(routes, unix=tmp_path / "hook.sock") as hook:
        found = await open_providers(Settings(hint="webhook", webhook_url=hook.url))
        assert found.cloud is not None
        # the filter selects on a provider attribute: it runs after the merge
        flt = DeviceFilter('!("acme.com/hide" in attributes)')
        scanner = Scanner("knd.dev", Sysfs(tmp_path / "empty-sysfs"), flt, node_ns.name)
        discovery = Discovery(nc, NODE, scanner, node_ns.name, Tuning(resync=3600),
                              cloud=CloudAttributes(found.cloud, "knd.dev"))
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(discovery.run)
                with anyio.fail_after(10):
                    while not snapshots:
                        await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
        finally:
            await found.aclose()
    await busmod.close(listener)
    await busmod.close(nc)
    await plumber.close()
    devices = {d.attributes["knd.dev/ifName"]: d for d in snapshots[-1].devices}
    wa0 = devices["wa0"].attributes
    assert wa0["acme.com/rail"] == 1
    assert wa0["knd.dev/ifName"] == "wa0"  # discovery's own value is kept
    assert "acme.com/long" not in wa0      # over 64 bytes: left out, the device stays
    assert set(devices) >= {"wa0", "wbad", "wbad1", "wmany", "wmany1"}
    assert "wa1" not in devices
    assert not any(k.startswith("acme.com/") for k in devices["wbad"].attributes)
    many = devices["wmany"].attributes
    assert len(many) == MAX_ATTRIBUTES_AND_CAPACITIES
    assert many["knd.dev/ifName"] == "wmany"
    assert f"webhook {hook.url} POST /GetDeviceAttributes: HTTP 500: boom" in caplog.text
    assert "acme.com/long.string: 70 bytes" in caplog.text
    asked = sorted(b["name"] for b in hook.bodies("/GetDeviceAttributes"))
    assert asked == ["wa0", "wa1", "wbad", "wbad1", "wmany", "wmany1"]  # once each
