"""What moves with an interface besides its addresses, as DRANET does it: the host's
permanent neighbours of the interface, its routes in every table (not the local one),
and the host's policy rules that look those tables up; with or without configured
addresses. All of it comes back to the host on the way home."""

from __future__ import annotations

import json

import pytest

from schemas.netconfig import EthtoolConfig, InterfaceConfig, NetworkConfig, RuleConfig
from tests.helpers.netns import ip
from tests.plumber import netstate
from tests.plumber.conftest import Env, netdev, uid

pytestmark = pytest.mark.anyio

NEIGH4 = ("10.70.0.9", "02:00:00:00:70:09")
NEIGH6 = ("2001:db8:70::9", "02:00:00:00:70:06")
WITH_ADDRESSES = NetworkConfig(interface=InterfaceConfig(name="net1",
                                                         addresses=["10.70.0.5/24"]))


def pbr_device(env: Env, dev: str = "ha0", peer: str = "hb0") -> None:
    """veth ``dev`` with a host address, two permanent neighbours, a route in table 100,
    a rule to table 100 and, as a control, a rule to table 200 (no route of ``dev``)."""
    env.node.veth(dev, peer)
    env.node.ip("addr", "add", "10.70.0.1/24", "dev", peer)
    env.node.ip("addr", "add", "10.70.0.2/24", "dev", dev)
    env.node.ip("-6", "addr", "add", "2001:db8:70::2/64", "dev", dev, "nodad")
    env.node.ip("neigh", "add", NEIGH4[0], "lladdr", NEIGH4[1], "dev", dev, "nud", "permanent")
    env.node.ip("-6", "neigh", "add", NEIGH6[0], "lladdr", NEIGH6[1], "dev", dev, "nud",
                "permanent")
    env.node.ip("route", "add", "10.71.0.0/24", "via", "10.70.0.1", "dev", dev, "table", "100")
    env.node.ip("rule", "add", "from", "10.72.0.0/24", "lookup", "100", "priority", "500")
    env.node.ip("rule", "add", "to", "10.73.0.0/24", "lookup", "100", "priority", "501")
    env.node.ip("rule", "add", "from", "10.74.0.0/24", "lookup", "200", "priority", "502")


def rules(ns: str) -> set[tuple]:
    out = set()
    for r in json.loads(ip("-j", "rule", "show", netns=ns) or "[]"):
        out.add((r["priority"], r.get("src", ""), r.get("dst", ""), r.get("table")))
    return out


def assert_moved(pod: str, ifname: str) -> None:
    neigh = ip("neigh", "show", "nud", "permanent", netns=pod)
    for dst, mac in (NEIGH4, NEIGH6):
        assert f"{dst} dev {ifname} lladdr {mac} PERMANENT" in neigh, neigh
    table = ip("route", "show", "table", "100", netns=pod)
    assert f"10.71.0.0/24 via 10.70.0.1 dev {ifname}" in table, table
    got = rules(pod)
    assert {(500, "10.72.0.0", "", "100"), (501, "all", "10.73.0.0", "100")} <= got, got
    assert not any(r[3] == "200" for r in got), got  # no route of the device there


@pytest.mark.parametrize("cfg", [None, WITH_ADDRESSES], ids=["host addresses",
                                                            "configured addresses"])
async def test_neighbours_routes_and_rules_move_and_come_back(env: Env, plumber,
                                                              cfg: NetworkConfig | None) -> None:
    pbr_device(env)
    await env.inventory([netdev("dev-h", "ha0")])
    pod = env.pod()
    host_before, pod_before = netstate.snapshot(env.node.name), netstate.snapshot(pod.name)
    claim, pod_uid = uid(), uid("pod")
    assert (await env.prepare(claim, [("dev-h", cfg)], [pod_uid])).error == ""
    rep = await env.attach(pod_uid, pod)
    assert rep.error == "", rep.error
    ifname = rep.interfaces[0].interface
    assert_moved(pod.name, ifname)
    # the host kept its rules (they name no interface) and lost the device's neighbours
    assert (500, "10.72.0.0", "", "100") in rules(env.node.name)
    assert "10.70.0.9" not in ip("neigh", "show", netns=env.node.name)
    assert (await env.detach(pod_uid)).restored == ["dev-h"]
    netstate.assert_same(env.node.name, host_before)  # neighbours, table 100 and rules
    assert netstate.snapshot(pod.name) == pod_before  # the copied rules left with it
    assert (await env.unprepare(claim)).error == ""


async def test_a_rule_already_in_the_pod_is_left_there(env: Env, plumber) -> None:
    pbr_device(env)
    await env.inventory([netdev("dev-h", "ha0")])
    pod = env.pod()
    pod.ip("rule", "add", "from", "10.72.0.0/24", "lookup", "100", "priority", "500")
    pod_before = netstate.snapshot(pod.name)
    claim, pod_uid = uid(), uid("pod")
    assert (await env.prepare(claim, [("dev-h", WITH_ADDRESSES)], [pod_uid])).error == ""
    assert (await env.attach(pod_uid, pod)).error == ""
    assert_moved(pod.name, "net1")
    assert (await env.detach(pod_uid)).restored == ["dev-h"]
    assert netstate.snapshot(pod.name) == pod_before  # not ours: still there


async def test_a_config_rule_like_a_host_rule_is_added_once(env: Env, plumber) -> None:
    pbr_device(env)
    await env.inventory([netdev("dev-h", "ha0")])
    pod = env.pod()
    pod_before = netstate.snapshot(pod.name)
    cfg = NetworkConfig(interface=InterfaceConfig(addresses=["10.70.0.5/24"]),
                        rules=[RuleConfig(priority=500, source="10.72.0.0/24", table=100)])
    claim, pod_uid = uid(), uid("pod")
    assert (await env.prepare(claim, [("dev-h", cfg)], [pod_uid])).error == ""
    rep = await env.attach(pod_uid, pod)
    assert rep.error == "", rep.error
    assert_moved(pod.name, "ha0")
    assert (await env.detach(pod_uid)).restored == ["dev-h"]
    assert netstate.snapshot(pod.name) == pod_before


async def test_a_failure_after_them_rolls_everything_back(env: Env, plumber) -> None:
    pbr_device(env)
    await env.inventory([netdev("dev-h", "ha0")])
    pod = env.pod()
    host_before, pod_before = netstate.snapshot(env.node.name), netstate.snapshot(pod.name)
    # a late step of an attach fails (private flags are only known to the driver in
    # the pod): neighbours, routes and rules are in by then
    bad = NetworkConfig(interface=InterfaceConfig(addresses=["10.70.0.5/24"]),
                        ethtool=EthtoolConfig(privateFlags={"no-such-flag": True}))
    claim, pod_uid = uid(), uid("pod")
    assert (await env.prepare(claim, [("dev-h", bad)], [pod_uid])).error == ""
    rep = await env.attach(pod_uid, pod)
    assert "rolled back" in rep.error and "no-such-flag" in rep.error, rep.error
    netstate.assert_same(env.node.name, host_before)
    assert netstate.snapshot(pod.name) == pod_before


async def test_a_host_route_the_pod_cannot_take_fails_prepare(env: Env, plumber) -> None:
    """With configured addresses in another subnet, the host route's gateway is out of
    reach in the pod: DRANET fails the pod when it starts; knd refuses the claim at
    prepare, the device still at home, and names the route."""
    pbr_device(env)
    env.node.ip("route", "add", "10.75.0.0/24", "dev", "ha0", "src", "10.70.0.2", "table",
                "101")
    await env.inventory([netdev("dev-h", "ha0")])
    host_before = netstate.snapshot(env.node.name)
    cfg = NetworkConfig(interface=InterfaceConfig(addresses=["10.79.0.5/24"]))
    rep = await env.prepare(uid(), [("dev-h", cfg)], [uid("pod")])
    assert rep.error == (
        "devices[0].config.interface.addresses: host route 10.71.0.0/24 (table 100) via "
        "10.70.0.1 of ha0 moves with the interface, but no configured address reaches its "
        "gateway; devices[0].config.interface.addresses: host route 10.75.0.0/24 (table 101) "
        "of ha0 moves with the interface, but its source 10.70.0.2 is not a configured "
        "address"), rep.error
    assert netstate.snapshot(env.node.name) == host_before
    # a configured address in the gateway's subnet (and the source) is enough
    cfg = NetworkConfig(interface=InterfaceConfig(addresses=["10.70.0.2/24"]))
    assert (await env.prepare(uid(), [("dev-h", cfg)], [uid("pod")])).error == ""


async def test_restart_finds_it_home_and_restores_them(env: Env) -> None:
    """Moved back by someone else while the plumber was down: the start-up reconcile
    puts the neighbours and the table-100 route back."""
    pbr_device(env)
    pod = env.pod()
    claim, pod_uid = uid(), uid("pod")
    host_before = netstate.snapshot(env.node.name)
    async with env.running():
        await env.inventory([netdev("dev-h", "ha0")])
        assert (await env.prepare(claim, [("dev-h", WITH_ADDRESSES)], [pod_uid])).error == ""
        assert (await env.attach(pod_uid, pod)).error == ""
    pod.ip("link", "set", "net1", "netns", env.node.name)
    async with env.running() as pl:
        assert pl.store.attachments() == []
        netstate.assert_same(env.node.name, host_before)
