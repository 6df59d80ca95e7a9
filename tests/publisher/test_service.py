"""The publisher service end to end: real bus (per-service users), real HTTP API server."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from prometheus_client import REGISTRY

from schemas.base import decode, encode
from schemas.inventory import InventoryGet, InventorySnapshot, SlicePublished
from schemas.publisher import PublisherStatus, StatusGet
from schemas.subjects import Subjects
from services.common import bus as busmod
from services.common import settings
from services.common.api.files import FileApi
from services.common.api.kube import KubeApi
from services.publisher import run
from services.publisher.service import Publisher
from services.publisher.slices import slice_name
from tests.conftest import NODE
from tests.helpers.wait import until
from tests.publisher.helpers import DRIVER, common, devices, running_publisher, slice_devices

pytestmark = pytest.mark.anyio
S = Subjects(NODE)


def snapshot(n: int, seq: int = 1, epoch: int = 1, start: int = 0,
             trigger_at: float = 0.0) -> InventorySnapshot:
    return InventorySnapshot(node=NODE, epoch=epoch, seq=seq, devices=devices(n, start),
                             taken_at=time.time(), trigger_at=trigger_at)



def published(srv) -> set[str]:
    return {d for o in srv.objects("resourceslices") for d in slice_devices(o)}


def publisher(bus, api, tmp_path: Path, **kw):
    return running_publisher(bus, api, tmp_path, **kw)

@asynccontextmanager
async def events(bus) -> AsyncIterator[list[SlicePublished]]:
    """SlicePublished events, as an observer sees them."""
    nc = await busmod.connect(bus, "observer")
    got: list[SlicePublished] = []

    async def on_msg(msg) -> None:
        got.append(decode(msg.data, SlicePublished))

    await nc.subscribe(S.event("slice.published"), cb=on_msg)
    await busmod.flush(nc)
    try:
        yield got
    finally:
        await nc.close()


@asynccontextmanager
async def discovery(bus) -> AsyncIterator[Callable]:
    """A publish function speaking as the discovery user."""
    nc = await busmod.connect(bus, "discovery")

    async def publish(payload: InventorySnapshot | bytes) -> None:
        await nc.publish(S.inventory_snapshot,
                         payload if isinstance(payload, bytes) else encode(payload))
        await busmod.flush(nc)

    try:
        yield publish
    finally:
        await nc.close()


async def status(bus) -> PublisherStatus:
    nc = await busmod.connect(bus, "admin")  # knd status's user
    try:
        reply = await nc.request(f"{S.publisher_group}.status", encode(StatusGet()), timeout=2)
        return decode(reply.data, PublisherStatus)
    finally:
        await nc.close()


async def test_snapshot_is_published_and_announced(bus, kube_api, kube, tmp_path):
    async with events(bus) as got, publisher(bus, kube, tmp_path), discovery(bus) as pub:
        trigger = time.time() - 0.05
        await pub(snapshot(300, seq=4, trigger_at=trigger))
        await until(lambda: len(got) == 1)
        ev = got[0]
        assert (ev.node, ev.pool, ev.generation, ev.slices, ev.devices, ev.writes) == \
            (NODE, NODE, 0, 3, 300, 3)
        assert 50 <= ev.latency_ms < 5000 and ev.dropped == []
        assert published(kube_api) == {f"eth{i}" for i in range(300)}
        st = await status(bus)
        assert st.synced and (st.seq, st.devices, st.slices, st.rdma) == (4, 300, 3, 150)
        assert not st.pending and st.last_error == ""


async def test_publisher_started_before_discovery_converges(bus, kube_api, kube, tmp_path,
                                                            caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG, "knd.publisher")
    asked = 0

    async def get(_: InventoryGet) -> InventorySnapshot:
        nonlocal asked
        asked += 1
        return snapshot(5, seq=9)

    async with publisher(bus, kube, tmp_path):
        await until(lambda: any(r.getMessage().startswith("inventory.get: ")
                                for r in caplog.records), 5,
                    "the publisher to ask while nobody answers")
        assert kube_api.objects("resourceslices") == []
        nc = await busmod.connect(bus, "discovery")
        svc = await busmod.serve(nc, "discovery", "fake inventory")
        group = svc.add_group(name=S.inventory_group)
        await group.add_endpoint(name="get", handler=busmod.typed_handler(
            "discovery", "get", InventoryGet, get))
        try:
            await until(lambda: published(kube_api) == {f"eth{i}" for i in range(5)})
            assert asked == 1
        finally:
            await svc.stop()
            await nc.close()


def _bus_drops() -> float:
    return REGISTRY.get_sample_value("knd_bus_dropped_messages_total",
                                     {"service": "publisher",
                                      "subject": S.inventory_snapshot}) or 0.0


async def test_malformed_snapshots_are_dropped_and_counted(bus, kube_api, kube, tmp_path):
    before = _bus_drops()
    async with publisher(bus, kube, tmp_path), discovery(bus) as pub:
        await pub(b"not json")
        await pub(b'{"v":1,"node":"x","epoch":1,"seq":1,"devices":[],"taken_at":1,"bogus":1}')
        await pub(b'{"v":1,"node":"x"}')
        await until(lambda: _bus_drops() == before + 3)
        await pub(snapshot(2))
        await until(lambda: published(kube_api) == {"eth0", "eth1"})


async def test_bursts_collapse_into_one_sync_of_the_newest(bus, kube_api, kube, tmp_path):
    kube_api.inject("create", "resourceslices", delay=0.5)  # the first sync is slow
    async with events(bus) as got, publisher(bus, kube, tmp_path), discovery(bus) as pub:
        await pub(snapshot(1, seq=1))
        await until(lambda: any(v == "get" for v, _, _ in kube_api.requests))
        for seq in range(2, 21):
            await pub(snapshot(seq, seq=seq))
        await until(lambda: published(kube_api) == {f"eth{i}" for i in range(20)})
        await until(lambda: len(got) == 2)
        assert (await status(bus)).seq == 20
        # one more snapshot: its event comes after any the burst still had in it
        await pub(snapshot(21, seq=21))
        await until(lambda: len(got) == 3)
        assert [e.devices for e in got] == [1, 20, 21]


async def test_old_snapshots_lose_and_a_new_epoch_wins(tmp_path):
    pub = Publisher(None, common(tmp_path), FileApi(tmp_path))  # type: ignore[arg-type]
    assert pub.offer(snapshot(1, seq=5, epoch=100))
    assert not pub.offer(snapshot(1, seq=4, epoch=100))
    assert not pub.offer(snapshot(1, seq=5, epoch=100))
    assert pub.offer(snapshot(2, seq=1, epoch=50))  # discovery restarted (clock went back)
    assert not pub.offer(snapshot(1, seq=9, epoch=100))  # a late message of the old run
    assert pub.offer(snapshot(3, seq=2, epoch=50))
    assert pub.offer(snapshot(4, seq=1, epoch=200))
    assert not pub.offer(InventorySnapshot(node="other", epoch=300, seq=1, devices=[],
                                           taken_at=0.0))
    assert pub.latest is not None and (pub.latest.epoch, pub.latest.seq) == (200, 1)


async def test_api_errors_back_off_and_nothing_published_is_lost(bus, kube_api, kube,
                                                                  tmp_path):
    first = {f"eth{i}" for i in range(128)}
    async with events(bus) as got, publisher(bus, kube, tmp_path), discovery(bus) as pub:
        await pub(snapshot(128, seq=1))
        await until(lambda: len(got) == 1)
        kube_api.inject("*", "resourceslices", status=500, times=4)
        lost: list[set[str]] = []

        async def watch() -> None:
            while True:
                now = published(kube_api)
                if not first <= now:
                    lost.append(now)
                await anyio.sleep(0.002)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await pub(snapshot(200, seq=2))  # a second slice: generation bump
            await until(lambda: len(got) == 2)
            tg.cancel_scope.cancel()
        assert lost == []
        assert sum(1 for *_, code in kube_api.requests if code == 500) == 4
        assert published(kube_api) == {f"eth{i}" for i in range(200)}
        assert got[1].generation == 1 and got[1].slices == 2
        st = await status(bus)
        assert st.synced and st.last_error == "" and st.devices == 200


async def test_hanging_api_is_cut_by_the_timeout(bus, kube_api, kubeconfig, tmp_path):
    api = KubeApi(kubeconfig=kubeconfig, timeout=0.3)
    try:
        async with events(bus) as got, publisher(bus, api, tmp_path, api_timeout=0.3), \
                discovery(bus) as pub:
            await pub(snapshot(3, seq=1))
            await until(lambda: len(got) == 1)
            kube_api.inject("update", "resourceslices", delay=60)
            start = time.monotonic()
            await pub(snapshot(4, seq=2))
            await until(lambda: len(got) == 2, limit=5)
            assert time.monotonic() - start < 3
            assert published(kube_api) == {f"eth{i}" for i in range(4)}
    finally:
        await api.aclose()


async def test_invalid_device_is_reported_in_the_event(bus, kube_api, kube, tmp_path):
    snap = snapshot(3)
    snap.devices[1].attributes[f"{DRIVER}/alias"] = "z" * 65
    async with events(bus) as got, publisher(bus, kube, tmp_path), discovery(bus) as pub:
        await pub(snap)
        await until(lambda: len(got) == 1)
        assert got[0].devices == 2 and len(got[0].dropped) == 1
        assert got[0].dropped[0].startswith(f'devices[eth1].attributes["{DRIVER}/alias"]')
        assert published(kube_api) == {"eth0", "eth2"}
        assert (await status(bus)).dropped == got[0].dropped


async def test_cli_standalone_writes_json_files(bus, bus_state, tmp_path):
    parser = argparse.ArgumentParser()
    settings.add_to(parser, "publisher")
    args = parser.parse_args(["--node", NODE, "--state-dir", str(tmp_path), "--bus-creds",
                              str(bus_state / "bus" / "creds.json"), "--driver-name", DRIVER,
                              "--standalone"])
    folder = tmp_path / "api" / "resourceslices"
    async with discovery(bus) as pub, anyio.create_task_group() as tg:
        tg.start_soon(run, args)
        expected = {f"{slice_name(NODE, DRIVER, i)}.json" for i in range(2)}
        with anyio.fail_after(5):
            while {p.name for p in folder.glob("*.json")} != expected:
                await pub(snapshot(129))  # until the publisher is up and has seen it
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
