"""ipvlan and macvlan children: made in the pod from a parent that stays on the host,
configured, rolled back, deleted, shared by several claims, kept across a restart;
with real links in throwaway netns. This kernel may lack ipvlan (CONFIG_IPVLAN): the
ipvlan tests then check the clean refusal instead, and run in full where it has it."""

from __future__ import annotations

import ipaddress
import subprocess

import anyio
import pytest

from schemas.netconfig import (
    InterfaceConfig,
    IPVlanConfig,
    MacvlanConfig,
    NetworkConfig,
    RouteConfig,
)
from services.plumber.checkpoint import Checkpoint
from services.plumber.model import ATTACHED
from tests.helpers.netns import NetNS
from tests.helpers.ra import Router
from tests.plumber import netstate
from tests.plumber.conftest import Env, netdev, uid
from tests.plumber.test_attach import ip_json, ping

pytestmark = pytest.mark.anyio


def kernel_has(kind: str) -> bool:
    probe = NetNS("knd-probe")
    try:
        probe.veth("p0", "p1", up=False)
        res = subprocess.run(probe.exec_argv(["ip", "link", "add", "link", "p0", "name", "c0",
                                              "type", kind]), capture_output=True)
        return res.returncode == 0
    finally:
        probe.delete()


HAS_IPVLAN = kernel_has("ipvlan")


def parent(env: Env, dev: str, peer: str, net: str) -> None:
    """Parent ``dev`` on the host, with config of its own that must stay as it is, and
    ``peer`` at <net>.1 at the far end of the wire."""
    env.node.veth(dev, peer)
    env.node.ip("addr", "add", f"{net}.1/24", "dev", peer)
    env.node.ip("addr", "add", "192.0.2.70/24", "dev", dev)
    env.node.ip("route", "add", "198.51.100.0/24", "via", "192.0.2.1", "dev", dev)


def child_cfg(kind: str, net: str, host: int = 2, **extra: object) -> NetworkConfig:
    blocks: dict = {}
    if kind == "IPVLAN":
        blocks["ipvlan"] = IPVlanConfig(mode=str(extra.pop("mode", "L2")))
    elif "mode" in extra:
        blocks["macvlan"] = MacvlanConfig(mode=str(extra.pop("mode")))
    return NetworkConfig(interface=InterfaceConfig(
        type=kind, name="net1", addresses=[f"{net}.{host}/24"], **blocks, **extra))


def link(ns: str, name: str) -> dict:
    return ip_json(ns, "-d", "addr", "show", name)[0]


def sysctl(ns: NetNS, path: str) -> str:
    return subprocess.run(ns.exec_argv(["cat", f"/proc/sys/net/{path}"]), capture_output=True,
                          text=True, check=True).stdout.strip()


def in_proc(ns: NetNS, path: str) -> bool:
    return subprocess.run(ns.exec_argv(["test", "-e", f"/proc/{path}"])).returncode == 0


async def test_macvlan_child_is_made_configured_and_deleted(env: Env, plumber) -> None:
    parent(env, "mp0", "mq0", "10.70.0")
    await env.inventory([netdev("dev-m", "mp0")])
    pod = env.pod()
    host_before, pod_before = netstate.snapshot(env.node.name), netstate.snapshot(pod.name)
    claim, pod_uid = uid(), uid("pod")
    cfg = child_cfg("MACVLAN", "10.70.0", mode="private", mtu=1400, gsoMaxSize=32768,
                    groMaxSize=32768, arpIgnore=1, arpAnnounce=2, acceptRA=0)
    cfg.routes = [RouteConfig(destination="10.71.0.0/16", gateway="10.70.0.1")]
    assert (await env.prepare(claim, [("dev-m", cfg)], [pod_uid])).error == ""
    att = await env.attach(pod_uid, pod)
    assert att.error == "", att.error
    got = link(pod.name, "net1")
    assert got["linkinfo"]["info_kind"] == "macvlan"
    assert got["linkinfo"]["info_data"]["mode"] == "private"
    assert got["mtu"] == 1400 and got["gso_max_size"] == 32768 and got["gro_max_size"] == 32768
    # the parent's own addresses and routes stay home: a child inherits nothing
    assert [a["local"] for a in got["addr_info"] if a["family"] == "inet"] == ["10.70.0.2"]
    assert att.interfaces[0].ips == ["10.70.0.2/24"] and att.interfaces[0].mac == got["address"]
    assert "198.51.100.0/24" not in {r["dst"] for r in ip_json(pod.name, "route", "show")}
    assert ("10.71.0.0/16", "10.70.0.1") in {(r["dst"], r.get("gateway"))
                                             for r in ip_json(pod.name, "route", "show")}
    assert (sysctl(pod, "ipv4/conf/net1/arp_ignore"), sysctl(pod, "ipv4/conf/net1/arp_announce"),
            sysctl(pod, "ipv6/conf/net1/accept_ra")) == ("1", "2", "0")
    assert sysctl(pod, "ipv6/conf/default/accept_ra") != "0"
    assert ping(pod.name, "10.70.0.1")
    netstate.assert_same(env.node.name, host_before)  # the parent was never touched
    det = await env.detach(pod_uid)
    assert det.error == "" and det.restored == ["dev-m"]
    assert netstate.snapshot(pod.name) == pod_before
    netstate.assert_same(env.node.name, host_before)
    assert (await env.unprepare(claim)).error == ""
    assert (await env.detach(pod_uid)).error == ""  # idempotent


@pytest.mark.parametrize("mode", ["L2", "L3"])
async def test_ipvlan_child(env: Env, plumber, mode: str) -> None:
    parent(env, "ip0", "iq0", "10.72.0")
    await env.inventory([netdev("dev-i", "ip0")])
    pod = env.pod()
    host_before, pod_before = netstate.snapshot(env.node.name), netstate.snapshot(pod.name)
    claim, pod_uid = uid(), uid("pod")
    cfg = child_cfg("IPVLAN", "10.72.0", mode=mode, mtu=1400)
    assert (await env.prepare(claim, [("dev-i", cfg)], [pod_uid])).error == ""
    att = await env.attach(pod_uid, pod)
    if not HAS_IPVLAN:  # refused cleanly: the field and the reason, nothing left behind
        assert "config.interface.type" in att.error and "CONFIG_IPVLAN" in att.error, att.error
        assert "rolled back" in att.error
        assert netstate.snapshot(pod.name) == pod_before
        netstate.assert_same(env.node.name, host_before)
        assert plumber.store.attachments(pod_uid=pod_uid) == []
        assert (await env.unprepare(claim)).error == ""
        return
    assert att.error == "", att.error
    got = link(pod.name, "net1")
    assert got["linkinfo"]["info_kind"] == "ipvlan"
    assert got["linkinfo"]["info_data"]["mode"] == mode.lower()
    assert got["mtu"] == 1400 and got["address"] == netstate.links(env.node.name)["ip0"]["address"]
    assert ping(pod.name, "10.72.0.1")
    netstate.assert_same(env.node.name, host_before)
    assert (await env.detach(pod_uid)).restored == ["dev-i"]
    assert netstate.snapshot(pod.name) == pod_before
    assert (await env.unprepare(claim)).error == ""


async def test_failed_child_is_deleted_and_the_parent_left_as_it_was(env: Env, plumber) -> None:
    parent(env, "fp0", "fq0", "10.73.0")
    env.node.ip("link", "set", "fp0", "down")  # the attach brings it up, the rollback down
    await env.inventory([netdev("dev-f", "fp0")])
    pod = env.pod()
    host_before, pod_before = netstate.snapshot(env.node.name), netstate.snapshot(pod.name)
    claim, pod_uid = uid(), uid("pod")
    cfg = child_cfg("MACVLAN", "10.73.0", acceptRA=1)
    # valid, but the kernel refuses it once the child exists: no address reaches 10.9.9.9
    cfg.routes = [RouteConfig(destination="10.74.0.0/16", gateway="10.9.9.9")]
    assert (await env.prepare(claim, [("dev-f", cfg)], [pod_uid])).error == ""
    att = await env.attach(pod_uid, pod)
    assert "config.routes[0]" in att.error and "rolled back" in att.error, att.error
    assert netstate.snapshot(pod.name) == pod_before  # no half-made child
    netstate.assert_same(env.node.name, host_before)  # parent down again, config as it was
    assert plumber.store.attachments(pod_uid=pod_uid) == []
    assert (await env.unprepare(claim)).error == ""


async def test_child_config_is_checked_against_the_parent_at_prepare(env: Env, plumber) -> None:
    parent(env, "cp0", "cq0", "10.75.0")
    env.node.ip("link", "add", "br-c", "type", "bridge")
    env.node.veth("cp1", "cq1")
    env.node.ip("link", "set", "cp1", "master", "br-c")
    await env.inventory([netdev("dev-c", "cp0"), netdev("dev-b", "cp1")])
    before = netstate.snapshot(env.node.name)
    cases = [
        ("dev-c", child_cfg("MACVLAN", "10.75.0", mtu=1600), "config.interface.mtu",
         "above the MTU of the parent cp0 (1500)"),
        ("dev-c", NetworkConfig(interface=InterfaceConfig(type="ipvlan")),
         "config.interface.addresses", "SLAAC or Unnumbered"),
        ("dev-b", child_cfg("MACVLAN", "10.75.0"), "config.interface.type",
         "cp1 is a port of another interface"),
        ("dev-c", NetworkConfig(interface=InterfaceConfig(
            type="IPVLAN", addressing="SLAAC", ipvlan=IPVlanConfig(mode="L3"))),
         "config.interface.ipvlan.mode", "needs L2"),
    ]
    for dev, cfg, field, why in cases:
        rep = await env.prepare(uid(), [(dev, cfg)], [uid("pod")])
        assert f"devices[0].{field}: " in rep.error and why in rep.error, rep.error
    netstate.assert_same(env.node.name, before)
    assert plumber.store.claims() == []


async def test_two_claims_share_one_parent_at_once(env: Env, plumber) -> None:
    parent(env, "sp0", "sq0", "10.76.0")
    await env.inventory([netdev("dev-s", "sp0")])
    host_before = netstate.snapshot(env.node.name)
    pods = [env.pod(), env.pod()]
    runs = [(uid(), uid("pod"), pods[i], i + 2) for i in range(2)]
    for claim, pod_uid, _, host in runs:
        rep = await env.prepare(claim, [("dev-s", child_cfg("MACVLAN", "10.76.0", host))],
                                [pod_uid])
        assert rep.error == "", rep.error
    replies: dict = {}

    async def attach(pod_uid: str, ns: NetNS) -> None:
        replies[pod_uid] = await env.attach(pod_uid, ns)

    async with anyio.create_task_group() as tg:  # both pods start together
        for _, pod_uid, ns, _ in runs:
            tg.start_soon(attach, pod_uid, ns)
    assert [replies[r[1]].error for r in runs] == ["", ""]
    for _, _, ns, _ in runs:
        assert ping(ns.name, "10.76.0.1")
        assert link(ns.name, "net1")["linkinfo"]["info_kind"] == "macvlan"
    assert ping(runs[0][2].name, "10.76.0.3")  # bridge mode: children reach each other
    assert (await env.detach(runs[0][1])).restored == ["dev-s"]
    assert ping(runs[1][2].name, "10.76.0.1")  # the other child is untouched
    assert (await env.detach(runs[1][1])).restored == ["dev-s"]
    for claim, *_ in runs:
        assert (await env.unprepare(claim)).error == ""
    netstate.assert_same(env.node.name, host_before)


async def test_passthrough_and_other_children_are_refused_on_a_shared_parent(
        env: Env, plumber) -> None:
    parent(env, "xp0", "xq0", "10.77.0")
    await env.inventory([netdev("dev-x", "xp0")])
    first = uid()
    assert (await env.prepare(first, [("dev-x", child_cfg("IPVLAN", "10.77.0"))],
                              [uid("pod")])).error == ""
    refused = [
        (None, "devices[0].device", f"already prepared for claim {first}"),
        (child_cfg("MACVLAN", "10.77.0", 3), "devices[0].config.interface.type",
         'cannot share "dev-x" with the ipvlan L2 Bridge children'),
        (child_cfg("IPVLAN", "10.77.0", 3, mode="L3"), "devices[0].config.interface.type",
         f"of claim {first}"),
    ]
    for cfg, field, why in refused:
        rep = await env.prepare(uid(), [("dev-x", cfg)], [uid("pod")])
        assert rep.error.startswith(f"{field}: ") and why in rep.error, rep.error
    second = uid()  # the same kind, mode and flag share it
    assert (await env.prepare(second, [("dev-x", child_cfg("ipvlan", "10.77.0", 3))],
                              [uid("pod")])).error == ""
    for c in (first, second):
        assert (await env.unprepare(c)).error == ""
    alone = uid()  # and a passthrough claim keeps its device to itself
    assert (await env.prepare(alone, [("dev-x", None)], [uid("pod")])).error == ""
    rep = await env.prepare(uid(), [("dev-x", child_cfg("MACVLAN", "10.77.0"))], [uid("pod")])
    assert rep.error.startswith("devices[0].device: ") and alone in rep.error, rep.error
    assert "moves it into its pod" in rep.error


async def test_restart_keeps_a_live_child_and_forgets_a_dead_one(env: Env) -> None:
    parent(env, "rp0", "rq0", "10.78.0")
    env.node.ip("link", "set", "rp0", "down")
    await env.inventory([netdev("dev-r", "rp0")])
    host_before = netstate.snapshot(env.node.name)
    runs = [(uid(), uid("pod"), env.pod(), i + 2) for i in range(2)]
    async with env.running():
        for claim, pod_uid, ns, host in runs:
            cfg = child_cfg("MACVLAN", "10.78.0", host)
            assert (await env.prepare(claim, [("dev-r", cfg)], [pod_uid])).error == ""
            assert (await env.attach(pod_uid, ns)).error == ""
    kept = netstate.snapshot(runs[0][2].name)
    runs[1][2].delete()  # one pod went away while the plumber was down
    async with env.running() as pl:
        assert netstate.snapshot(runs[0][2].name) == kept  # nothing restored onto the parent
        assert [a.phase for a in pl.store.attachments()] == [ATTACHED]
        assert netstate.links(env.node.name)["rp0"]["up"]  # still a child on it
        assert ping(runs[0][2].name, "10.78.0.1")
        assert (await env.detach(runs[0][1])).restored == ["dev-r"]
        assert "net1" not in netstate.links(runs[0][2].name)
        for claim, *_ in runs:
            assert (await env.unprepare(claim)).error == ""
    netstate.assert_same(env.node.name, host_before)  # the last child took the parent down


@pytest.mark.parametrize("kind", ["MACVLAN", "Passthrough"])
async def test_slaac_from_a_real_router_advertisement(env: Env, plumber, kind: str) -> None:
    env.node.veth("lp0", "lq0")
    await env.inventory([netdev("dev-l", "lp0")])
    pod = env.pod()
    claim, pod_uid = uid(), uid("pod")
    cfg = NetworkConfig(interface=InterfaceConfig(type=kind, name="net1", addressing="slaac"),
                        routes=[RouteConfig(destination="2001:db8:7a::/64",
                                            gateway="2001:db8:79::1")])
    assert (await env.prepare(claim, [("dev-l", cfg)], [pod_uid])).error == ""
    with Router(env.node.name, "lq0", "2001:db8:79::/64"):
        att = await env.attach(pod_uid, pod)
    assert att.error == "", att.error
    assert len(att.interfaces[0].ips) == 1, att.interfaces[0].ips
    (ip6,) = att.interfaces[0].ips
    assert ipaddress.ip_interface(ip6).network == ipaddress.ip_network("2001:db8:79::/64")
    shown = [a for a in link(pod.name, "net1")["addr_info"] if a["family"] == "inet6"
             and a["scope"] == "global"]
    assert [f"{a['local']}/{a['prefixlen']}" for a in shown] == [ip6]
    assert (sysctl(pod, "ipv6/conf/net1/accept_ra"),
            sysctl(pod, "ipv6/conf/net1/router_solicitation_delay")) == ("2", "0")
    # a gateway in the advertised prefix: the route went in once the address was there
    assert ("2001:db8:7a::/64", "2001:db8:79::1") in {
        (r["dst"], r.get("gateway")) for r in ip_json(pod.name, "-6", "route", "show")}
    if kind == "MACVLAN":  # DRANET's SLAAC default for a child: a random address, no DAD
        assert sysctl(pod, "ipv6/conf/net1/addr_gen_mode") == "3"
    assert (await env.detach(pod_uid)).error == ""
    assert (await env.unprepare(claim)).error == ""


async def test_slaac_without_a_router_fails_and_rolls_back(env: Env, plumber) -> None:
    env.node.veth("np0", "nq0")
    await env.inventory([netdev("dev-n", "np0")])
    pod = env.pod()
    host_before, pod_before = netstate.snapshot(env.node.name), netstate.snapshot(pod.name)
    claim, pod_uid = uid(), uid("pod")
    cfg = NetworkConfig(interface=InterfaceConfig(name="net1", addressing="SLAAC"))
    assert (await env.prepare(claim, [("dev-n", cfg)], [pod_uid])).error == ""
    att = await env.attach(pod_uid, pod)
    assert "config.interface.addressing: SLAAC: net1 has no autoconfigured" in att.error
    assert "rolled back" in att.error
    assert netstate.snapshot(pod.name) == pod_before
    netstate.assert_same(env.node.name, host_before)
    assert (await env.unprepare(claim)).error == ""


async def test_crash_right_after_the_child_was_made_is_undone_on_start(env: Env) -> None:
    """The plumber died between creating the child and renaming it (its row says
    ``attaching``, the child still has its temporary name): the next start deletes it
    and takes the parent it brought up down again."""
    parent(env, "kp0", "kq0", "10.80.0")
    env.node.ip("link", "set", "kp0", "down")
    await env.inventory([netdev("dev-k", "kp0")])
    host_before = netstate.snapshot(env.node.name)
    pod = env.pod()
    pod_before = netstate.snapshot(pod.name)
    claim, pod_uid = uid(), uid("pod")
    async with env.running() as pl:
        assert (await env.prepare(claim, [("dev-k", child_cfg("MACVLAN", "10.80.0"))],
                                  [pod_uid])).error == ""
        assert (await env.attach(pod_uid, pod)).error == ""
        (att,) = pl.store.attachments()
    # what the kernel and the checkpoint hold at that point of an attach
    pod.ip("link", "set", "net1", "down")
    pod.ip("addr", "flush", "dev", "net1")
    pod.ip("link", "set", "net1", "name", att.temp_name)
    att.phase = "attaching"
    store = Checkpoint(env.common.state_dir / "plumber" / "checkpoint.db")
    store.put_attachment(att)
    store.close()
    assert att.temp_name in netstate.links(pod.name)
    async with env.running() as pl:
        assert pl.store.attachments() == []
        assert netstate.snapshot(pod.name) == pod_before
        netstate.assert_same(env.node.name, host_before)
        assert (await env.unprepare(claim)).error == ""


async def test_ipv6_off_on_a_link_without_ipv6_is_no_error(env: Env, plumber) -> None:
    """Below an MTU of 1280 the kernel takes IPv6 off the interface (no ipv6 sysctls at
    all): ``disableIPv6: true`` asks for what is already so (DRANET's rule)."""
    env.node.veth("vp0", "vq0")
    await env.inventory([netdev("dev-v", "vp0")])
    pod = env.pod()
    claim, pod_uid = uid(), uid("pod")
    cfg = child_cfg("MACVLAN", "10.81.0", mtu=1200, disableIPv6=True)
    assert (await env.prepare(claim, [("dev-v", cfg)], [pod_uid])).error == ""
    att = await env.attach(pod_uid, pod)
    assert att.error == "", att.error
    assert link(pod.name, "net1")["mtu"] == 1200
    assert not in_proc(pod, "sys/net/ipv6/conf/net1")
    assert (await env.detach(pod_uid)).error == ""
