"""The discovery service in-process, on the real bus, watching a throwaway node netns."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from prometheus_client import REGISTRY

from schemas.base import decode, encode
from schemas.events import ClaimPrepared, ClaimUnprepared
from schemas.inventory import InventoryGet, InventorySnapshot
from schemas.subjects import Subjects
from services.common import bus as busmod
from services.discovery.filter import DeviceFilter, default_expression
from services.discovery.service import Discovery, Scanner, Tuning
from services.kernel.sysfs import Sysfs
from tests.conftest import NODE
from tests.helpers.netns import NetNS, ip
from tests.helpers.plumber import StatusOnlyPlumber
from tests.helpers.wait import until

pytestmark = pytest.mark.anyio


class Running:
    def __init__(self) -> None:
        self.snapshots: list[InventorySnapshot] = []
        self.discovery: Discovery | None = None
        self.plumber = StatusOnlyPlumber(NODE)

    def names(self) -> set[str]:
        return {d.name for d in self.snapshots[-1].devices} if self.snapshots else set()

    async def until(self, pred, limit: float = 5.0) -> None:
        await until(pred, limit)

    def attr(self, name: str, key: str) -> object:
        """Attribute ``key`` of device ``name`` in the newest snapshot (None: not there)."""
        for d in self.snapshots[-1].devices if self.snapshots else ():
            if d.name == name:
                return d.attributes.get(f"knd.dev/{key}")
        return None


@pytest.fixture
async def running(bus, node_ns, tmp_path: Path) -> AsyncIterator[Running]:
    """discovery (filter: publish all) on node_ns; a plumber-user listener collects snapshots;
    a stand-in plumber answers which claims it holds."""
    state = Running()
    await state.plumber.start(bus)
    nc = await busmod.connect(bus, "discovery")
    listener = await busmod.connect(bus, "plumber")

    async def collect(msg) -> None:
        state.snapshots.append(decode(msg.data, InventorySnapshot))

    await listener.subscribe(Subjects(NODE).inventory_snapshot, cb=collect)
    await busmod.flush(listener)
    scanner = Scanner("knd.dev", Sysfs(tmp_path / "empty-sysfs"), DeviceFilter("true"),
                      node_ns.name)
    state.discovery = Discovery(nc, NODE, scanner, node_ns.name, Tuning(resync=3600))
    async with anyio.create_task_group() as tg:
        tg.start_soon(state.discovery.run)
        await state.until(lambda: state.snapshots)
        yield state
        tg.cancel_scope.cancel()
    await busmod.close(listener)
    await busmod.close(nc)
    await state.plumber.close()


async def test_new_link_is_published_and_get_answers(running: Running, node_ns, bus):
    node_ns.veth("sv-a", "sv-b")
    await running.until(lambda: {"sv-a", "sv-b"} <= running.names())
    last = running.snapshots[-1]
    assert last.trigger_at > 0 and last.taken_at >= last.trigger_at
    client = await busmod.connect(bus, "publisher")
    reply = await client.request(Subjects(NODE).inventory_get, encode(InventoryGet()), timeout=2)
    got = decode(reply.data, InventorySnapshot)
    assert (got.epoch, got.seq) == (last.epoch, last.seq) and got.devices == last.devices
    await busmod.close(client)
    node_ns.ip("link", "del", "sv-a")
    await running.until(lambda: not ({"sv-a", "sv-b"} & running.names()))


async def test_burst_is_coalesced(running: Running, node_ns):
    before = len(running.snapshots)
    node_ns.batch([f"link add bu{i}a type veth peer name bu{i}b" for i in range(100)])
    await running.until(lambda: len(running.names()) == 200)
    published = len(running.snapshots) - before
    assert 1 <= published <= 10, published


async def test_unchanged_inventory_publishes_nothing(running: Running, node_ns):
    _no_ipv6(node_ns)  # no late autoconf addresses: the links settle once both are up
    node_ns.veth("nc-a", "nc-b")
    await running.until(lambda: "nc-a" in running.names())
    node_ns.ip("link", "set", "nc-a", "up")
    node_ns.ip("link", "set", "nc-b", "up")
    await running.until(lambda: running.attr("nc-a", "state") == running.attr("nc-b", "state")
                        == "up")
    count = len(running.snapshots)
    rescans = _counter("knd_discovery_rescans_total")
    # a route that changes no device attribute: a rescan, but no new snapshot
    node_ns.ip("route", "add", "192.0.2.0/24", "dev", "nc-a")
    await running.until(lambda: _counter("knd_discovery_rescans_total") > rescans)
    # then a change that is published: rescans run one at a time, in order, so once its
    # snapshot is here, the route's rescan has published whatever it was going to
    node_ns.ip("link", "set", "nc-b", "mtu", "1400")
    await running.until(lambda: running.attr("nc-b", "mtu") == 1400)
    assert len(running.snapshots) == count + 1


async def test_default_route_uplink_is_hidden_and_returns(running: Running, node_ns):
    node_ns.veth("up-a", "up-b")
    node_ns.ip("addr", "add", "192.0.2.2/24", "dev", "up-a")
    await running.until(lambda: "up-a" in running.names())
    node_ns.ip("route", "add", "default", "via", "192.0.2.1", "dev", "up-a")
    await running.until(lambda: "up-a" not in running.names() and "up-b" in running.names())
    node_ns.ip("route", "del", "default")
    await running.until(lambda: "up-a" in running.names())


async def test_default_filter_hides_veth(bus, node_ns, tmp_path: Path):
    nc = await busmod.connect(bus, "discovery")
    node_ns.veth("df-a", "df-b")
    node_ns.ip("link", "add", "df-mv", "link", "df-b", "type", "macvlan")
    scanner = Scanner("knd.dev", Sysfs(tmp_path), DeviceFilter(default_expression("knd.dev")),
                      node_ns.name)
    d = Discovery(nc, NODE, scanner, node_ns.name)
    plumber = await StatusOnlyPlumber(NODE).start(bus)
    async with anyio.create_task_group() as tg:
        tg.start_soon(d.run)
        await until(lambda: d.snapshot is not None, 5)
        assert [x.name for x in d.snapshot.devices] == ["df-mv"]
        tg.cancel_scope.cancel()
    await busmod.close(nc)
    await plumber.close()


async def test_claimed_device_stays_published_while_in_a_pod(running: Running, node_ns, bus):
    node_ns.veth("cl-a", "cl-b")
    node_ns.veth("un-a", "un-b")
    await running.until(lambda: {"cl-a", "un-a"} <= running.names())
    gw = await busmod.connect(bus, "gateway")
    s = Subjects(NODE)
    running.plumber.hold("c1", ["cl-a"])  # the plumber's checkpoint first, then the event
    await gw.publish(s.event("claim.prepared"), encode(ClaimPrepared(
        node=NODE, claim_uid="c1", devices=["cl-a"])))
    await busmod.flush(gw)
    await running.until(lambda: "cl-a" in running.discovery.claimed.pinned())  # before the move
    pod = NetNS("knd-pod")
    try:
        node_ns.ip("link", "set", "cl-a", "netns", pod.name)  # the plumber's move
        node_ns.ip("link", "set", "un-a", "netns", pod.name)  # an unclaimed one
        await running.until(lambda: "un-a" not in running.names())
        assert "cl-a" in running.names()  # claimed: still the node's, still published
        running.plumber.claims.clear()
        await gw.publish(s.event("claim.unprepared"), encode(ClaimUnprepared(
            node=NODE, claim_uid="c1")))
        await busmod.flush(gw)
        await running.until(lambda: "cl-a" not in running.names())
    finally:
        pod.delete()
        await busmod.close(gw)


async def test_restarted_discovery_keeps_a_claimed_device_that_is_in_a_pod(
        bus, node_ns, tmp_path: Path):
    """A discovery that starts while a claimed device is in a pod has never seen it:
    it publishes it as the plumber's checkpoint says it was published at prepare."""
    from schemas.inventory import Device

    s = Subjects(NODE)
    away = Device(name="rs-a", attributes={"knd.dev/ifName": "rs-a", "knd.dev/mtu": 9000})
    plumber = await StatusOnlyPlumber(NODE).start(bus)
    plumber.hold("c1", ["rs-a"], [away])
    node_ns.veth("rs-x", "rs-y")
    nc = await busmod.connect(bus, "discovery")
    gw = await busmod.connect(bus, "gateway")
    scanner = Scanner("knd.dev", Sysfs(tmp_path / "empty-sysfs"), DeviceFilter("true"),
                      node_ns.name)
    d = Discovery(nc, NODE, scanner, node_ns.name, Tuning(resync=3600))
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(d.run)
            await until(lambda: d.snapshot is not None, 5)
            assert d.snapshot is not None
            assert {x.name for x in d.snapshot.devices} == {"rs-a", "rs-x", "rs-y"}
            assert away in d.snapshot.devices
            plumber.claims.clear()
            await gw.publish(s.event("claim.unprepared"), encode(ClaimUnprepared(
                node=NODE, claim_uid="c1")))
            await until(lambda: "rs-a" not in {x.name for x in d.snapshot.devices}, 5)
            tg.cancel_scope.cancel()
    finally:
        for c in (gw, nc):
            await busmod.close(c)
        await plumber.close()


def _counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def _no_ipv6(ns: NetNS) -> None:
    for key in ("all", "default"):
        ip("netns", "exec", ns.name, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")


async def test_moving_a_claimed_device_causes_no_rescan(running: Running, node_ns, bus):
    """The plumber's moves of claimed devices change nothing published: no rescan
    (each would dump the whole node while the moves need RTNL)."""
    _no_ipv6(node_ns)  # no late IPv6 autoconf events on the other links
    node_ns.veth("mv-a", "mv-b")
    node_ns.veth("st-a", "st-b")
    node_ns.ip("addr", "add", "192.0.2.1/24", "dev", "mv-a")
    await running.until(lambda: {"mv-a", "mv-b", "st-a"} <= running.names())
    gw = await busmod.connect(bus, "gateway")
    s = Subjects(NODE)
    pod, peer = NetNS("knd-pod"), NetNS("knd-peer")
    try:
        running.plumber.hold("c1", ["mv-a", "mv-b"])
        await gw.publish(s.event("claim.prepared"), encode(ClaimPrepared(
            node=NODE, claim_uid="c1", devices=["mv-a", "mv-b"])))
        await busmod.flush(gw)
        await running.until(lambda: {"mv-a", "mv-b"} <= running.discovery.claimed.pinned())
        rescans = _counter("knd_discovery_rescans_total")
        skipped = _counter("knd_discovery_netlink_events_skipped_total")
        node_ns.ip("link", "set", "mv-a", "netns", pod.name)  # both ends of the pair, so
        node_ns.ip("link", "set", "mv-b", "netns", peer.name)  # no unclaimed link changes
        await running.until(
            lambda: _counter("knd_discovery_netlink_events_skipped_total") > skipped)
        # netlink delivers in order: once an unclaimed link's change is rescanned, every
        # event of the moves before it was either skipped or rescanned too
        node_ns.ip("link", "set", "st-a", "mtu", "1400")  # an unclaimed one: rescanned
        await running.until(lambda: running.attr("st-a", "mtu") == 1400)
        assert _counter("knd_discovery_rescans_total") == rescans + 1
        assert {"mv-a", "mv-b"} <= running.names()
    finally:
        pod.delete()
        peer.delete()
        await busmod.close(gw)


def test_once_prints_what_would_be_published(node_ns, tmp_path, capsys):
    """``knd discovery --once``: one scan of the node, as JSON, no bus; a virtio-net
    interface carries its PCI function's place in the tree."""
    from services.cli import main as cli_main
    from tests.helpers.sysfs_tree import SysfsTree

    tree = SysfsTree(tmp_path / "sys")
    tree.virtio_nic("0000:00:03.0", root="pci0000:00", ifname="eth0", index=2)
    node_ns.veth("eth0", "veth-once")
    node_ns.ip("addr", "add", "192.0.2.2/24", "dev", "veth-once")
    node_ns.ip("route", "add", "default", "via", "192.0.2.1")
    with pytest.raises(SystemExit) as done:
        cli_main(["discovery", "--once", "--netns", node_ns.name, "--filter", "true",
                  "--sysfs-root", str(tree.root), "--node", "n1", "--driver-name", "x.dev"])
    assert done.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["node"], doc["driver"]) == ("n1", "x.dev")
    by_if = {d["attributes"]["x.dev/ifName"]: d for d in doc["devices"]}
    assert doc["uplinks"] == ["veth-once"]
    assert set(by_if) == {"eth0"}
    eth0 = by_if["eth0"]["attributes"]
    assert eth0["resource.kubernetes.io/pcieRoot"] == "pci0000:00"
    assert eth0["x.dev/pciAddress"] == "0000:00:03.0"


async def _discovery(bus, node_ns, tmp_path: Path) -> tuple[Discovery, object]:
    nc = await busmod.connect(bus, "discovery")
    scanner = Scanner("knd.dev", Sysfs(tmp_path / "empty-sysfs"), DeviceFilter("true"),
                      node_ns.name)
    return Discovery(nc, NODE, scanner, node_ns.name, Tuning(resync=3600)), nc


async def test_nothing_is_published_before_the_plumber_answers(bus, node_ns, tmp_path: Path):
    """A discovery that starts while the plumber is down (both restarting) cannot know
    which devices are in pods: it publishes nothing, and ``inventory.get`` says why,
    until the plumber answers; then the device in a pod is in the first snapshot."""
    from schemas.base import ErrorReply
    from schemas.inventory import Device

    node_ns.veth("wp-a", "wp-b")
    away = Device(name="wp-pod", attributes={"knd.dev/ifName": "wp-pod"})
    plumber = await StatusOnlyPlumber(NODE).start(bus)
    plumber.answering = False
    plumber.hold("c1", ["wp-pod"], [away])
    d, nc = await _discovery(bus, node_ns, tmp_path)
    asker = await busmod.connect(bus, "publisher")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(d.run)
            await until(lambda: plumber.asked >= 3, 5)
            reply = await asker.request(Subjects(NODE).inventory_get,
                                        encode(InventoryGet()), timeout=3)
            err = decode(reply.data, ErrorReply)
            assert err.code == "unavailable" and "plumber" in err.error
            assert d.snapshot is None
            plumber.answering = True
            await until(lambda: d.snapshot is not None, 5)
            assert {x.name for x in d.snapshot.devices} == {"wp-a", "wp-b", "wp-pod"}
            assert away in d.snapshot.devices
            tg.cancel_scope.cancel()
    finally:
        await busmod.close(asker)
        await busmod.close(nc)
        await plumber.close()


async def test_claimed_device_is_published_as_before_the_claim(running: Running, node_ns,
                                                                 bus):
    """DRANET's "allocated device in ResourceSlice remains unchanged": whatever happens
    to a claimed device at home or in its pod, its published attributes stay as they
    were before the claim, until it is unprepared."""
    node_ns.veth("fz-a", "fz-b")
    await running.until(lambda: "fz-a" in running.names())
    before = next(d for d in running.snapshots[-1].devices if d.name == "fz-a")
    gw = await busmod.connect(bus, "gateway")
    s = Subjects(NODE)
    pod = NetNS("knd-pod")
    try:
        running.plumber.hold("c1", ["fz-a"])
        await gw.publish(s.event("claim.prepared"), encode(ClaimPrepared(
            node=NODE, claim_uid="c1", devices=["fz-a"])))
        await busmod.flush(gw)
        await running.until(lambda: "fz-a" in running.discovery.claimed.pinned())
        node_ns.ip("link", "set", "fz-a", "mtu", "9000")
        node_ns.ip("link", "set", "fz-b", "up")
        node_ns.ip("link", "set", "fz-a", "up")  # state: down -> up at home
        node_ns.ip("link", "set", "fz-b", "mtu", "1400")  # an unclaimed change: rescanned
        await running.until(lambda: any(
            d.name == "fz-b" and d.attributes["knd.dev/mtu"] == 1400
            for d in running.snapshots[-1].devices))
        now = next(d for d in running.snapshots[-1].devices if d.name == "fz-a")
        assert now == before
        node_ns.ip("link", "set", "fz-a", "netns", pod.name)
        node_ns.ip("link", "set", "fz-b", "mtu", "1300")
        await running.until(lambda: any(
            d.name == "fz-b" and d.attributes["knd.dev/mtu"] == 1300
            for d in running.snapshots[-1].devices))
        assert next(d for d in running.snapshots[-1].devices if d.name == "fz-a") == before
        pod.ip("link", "set", "fz-a", "netns", node_ns.name)
        running.plumber.claims.clear()
        await gw.publish(s.event("claim.unprepared"), encode(ClaimUnprepared(
            node=NODE, claim_uid="c1")))
        await busmod.flush(gw)
        # unprepared: the live device again (its MTU is 9000 now)
        await running.until(lambda: any(
            d.name == "fz-a" and d.attributes["knd.dev/mtu"] == 9000
            for d in running.snapshots[-1].devices))
    finally:
        pod.delete()
        await busmod.close(gw)


async def test_lost_claim_event_the_plumber_still_keeps_the_device(running: Running,
                                                                     node_ns):
    """The claim event was lost (a bus restart): the device vanishes into its pod, and
    discovery asks the plumber before dropping it, which says it is claimed."""
    node_ns.veth("le-a", "le-b")
    await running.until(lambda: "le-a" in running.names())
    before = next(d for d in running.snapshots[-1].devices if d.name == "le-a")
    running.plumber.hold("c1", ["le-a"])
    pod = NetNS("knd-pod")
    try:
        count = len(running.snapshots)
        node_ns.ip("link", "set", "le-a", "netns", pod.name)
        await running.until(lambda: len(running.snapshots) > count)  # le-b's state changed
        node_ns.ip("link", "set", "le-b", "mtu", "1400")  # rescans run in order: after this
        await running.until(lambda: running.attr("le-b", "mtu") == 1400)  # one, all are in
        for snap in running.snapshots[count:]:
            assert before in snap.devices
    finally:
        pod.delete()


async def test_vanished_device_is_held_while_the_plumber_is_silent(running: Running, node_ns):
    """A device gone from the host while the plumber does not answer may be in a pod:
    it stays published until the plumber says no claim holds it."""
    node_ns.veth("hd-a", "hd-b")
    await running.until(lambda: "hd-a" in running.names())
    running.plumber.answering = False
    asked = running.plumber.asked
    node_ns.ip("link", "del", "hd-a")
    await running.until(lambda: running.plumber.asked >= asked + 2)  # asked, and again
    assert {"hd-a", "hd-b"} <= running.names()
    assert REGISTRY.get_sample_value("knd_discovery_held_devices") == 2
    running.plumber.answering = True
    await running.until(lambda: not ({"hd-a", "hd-b"} & running.names()), limit=10)
    assert REGISTRY.get_sample_value("knd_discovery_held_devices") == 0
