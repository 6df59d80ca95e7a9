"""The bus refuses strangers and keeps each service to its own subjects."""

from __future__ import annotations

import json
import os
import stat

import nats
import pytest
from nats.errors import NoServersError

from schemas.base import ErrorReply, decode, encode
from schemas.inventory import InventoryGet, InventorySnapshot
from schemas.subjects import Subjects
from services.common import bus as busmod
from tests.conftest import NODE
from tests.helpers.wait import until

pytestmark = pytest.mark.anyio


async def test_unauthenticated_client_is_refused(bus):
    with pytest.raises((NoServersError, nats.errors.Error, OSError)):
        await busmod.open_client(bus.url, max_reconnect_attempts=0, allow_reconnect=False,
                           connect_timeout=1)


async def test_wrong_password_is_refused(bus):
    with pytest.raises((NoServersError, nats.errors.Error, OSError)):
        await busmod.open_client(bus.url, user="discovery", password="nope",
                           max_reconnect_attempts=0, allow_reconnect=False, connect_timeout=1)


async def test_credentials_file_is_private(bus, bus_state):
    for name in ("creds.json", "nats.conf"):
        mode = stat.S_IMODE(os.stat(bus_state / "bus" / name).st_mode)
        assert mode == 0o600, (name, oct(mode))
    conf = json.loads((bus_state / "bus" / "nats.conf").read_text())
    assert conf["host"] == "127.0.0.1"


async def test_publisher_cannot_publish_inventory(bus):
    s = Subjects(NODE)
    watcher = await busmod.connect(bus, "discovery")  # may subscribe to nothing on snapshot
    reader = await busmod.connect(bus, "plumber")  # plumber may read snapshots
    got: list[bytes] = []

    async def collect(m) -> None:
        got.append(m.data)

    sub = await reader.subscribe(s.inventory_snapshot, cb=collect)
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    user, pw = bus.user("publisher")
    pub = await busmod.open_client(bus.url, user=user, password=pw, error_cb=on_error,
                             inbox_prefix=b"_INBOX_publisher")
    forged = InventorySnapshot(node=NODE, epoch=1, seq=1, devices=[], taken_at=0.0)
    await pub.publish(s.inventory_snapshot, encode(forged))
    await busmod.flush(pub)
    # the server says so once it has refused the message: it was routed nowhere
    await until(lambda: any("permissions violation" in str(e).lower() for e in errors), 5,
                "the publisher's refusal")
    # the same message from discovery's user is delivered, and only that one
    await watcher.publish(s.inventory_snapshot, encode(forged))
    await busmod.flush(watcher)
    await until(lambda: got, 5, "discovery's snapshot")
    assert len(got) == 1
    await sub.unsubscribe()
    for nc in (watcher, reader, pub):
        await nc.close()


async def test_observer_may_only_subscribe_to_events(bus):
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    user, pw = bus.user("observer")
    obs = await busmod.open_client(bus.url, user=user, password=pw, error_cb=on_error)
    await obs.subscribe(f"knd.{Subjects(NODE).root.split('.')[1]}.inventory.snapshot")
    await busmod.flush(obs)
    await until(lambda: any("permissions violation" in str(e).lower() for e in errors), 5,
                "the observer's refused subscription")
    errors.clear()
    await obs.subscribe(Subjects(NODE).event("device.added"))
    await obs.publish(Subjects(NODE).event("device.added"), b"{}")
    await busmod.flush(obs)
    # the server answers in order: once the publish is refused, the subscription before
    # it would have been refused already too
    await until(lambda: any("publish" in str(e).lower() for e in errors), 5,
                "the observer's refused publish")
    assert len(errors) == 1, errors
    await obs.close()


async def test_malformed_request_gets_error_reply_and_service_lives(bus):
    s = Subjects(NODE)
    nc = await busmod.connect(bus, "discovery")
    svc = await busmod.serve(nc, "discovery", "test")

    async def get(_: InventoryGet) -> InventorySnapshot:
        return InventorySnapshot(node=NODE, epoch=1, seq=2, devices=[], taken_at=1.0)

    group = svc.add_group(name=s.inventory_group)
    await group.add_endpoint(name="get", handler=busmod.typed_handler(
        "discovery", "get", InventoryGet, get))
    client = await busmod.connect(bus, "publisher")
    bad = await client.request(s.inventory_get, b'{"v":1,"bogus":3}', timeout=2)
    err = decode(bad.data, ErrorReply)
    assert "bogus" in err.error
    bad2 = await client.request(s.inventory_get, b"not json", timeout=2)
    assert decode(bad2.data, ErrorReply).error
    ok = await client.request(s.inventory_get, encode(InventoryGet()), timeout=2)
    assert decode(ok.data, InventorySnapshot).seq == 2
    await svc.stop()
    await nc.close()
    await client.close()
