"""Prepare -> attach -> detach -> unprepare with real veth pairs in real netns."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from schemas import plumber as p
from schemas.netconfig import InterfaceConfig, NetworkConfig, RouteConfig
from tests.plumber import netstate
from tests.plumber.conftest import Env, netdev, uid

pytestmark = pytest.mark.anyio


def ping(ns: str, addr: str) -> bool:
    res = subprocess.run(["ip", "netns", "exec", ns, "ping", "-c1", "-W1", addr],
                         capture_output=True)
    return res.returncode == 0


def host_pair(env: Env, dev: str, peer: str, net: str) -> None:
    """veth ``dev`` (to be given to a pod) and ``peer`` (stays in the host as <net>.1)."""
    env.node.veth(dev, peer)
    env.node.ip("addr", "add", f"{net}.1/24", "dev", peer)


def ip_json(ns: str, *args: str) -> list[dict]:
    return json.loads(subprocess.run(["ip", "-n", ns, "-j", *args], capture_output=True,
                                     text=True, check=True).stdout or "[]")


async def test_roundtrip_with_config(env: Env, plumber) -> None:
    host_pair(env, "pa0", "pb0", "10.1.0")
    # the device's own host config, which must come back intact
    env.node.ip("addr", "add", "192.0.2.10/24", "dev", "pa0")
    # onlink: it moves into the pod too, where no configured address reaches 192.0.2.1
    env.node.ip("route", "add", "198.51.100.0/24", "via", "192.0.2.1", "dev", "pa0", "onlink")
    env.node.ip("link", "set", "pa0", "mtu", "1450")
    for key, value in (("ipv4/conf/pa0/rp_filter", "2"), ("ipv4/conf/pa0/arp_ignore", "1"),
                       ("ipv6/conf/pa0/accept_ra", "0"),  # the node's own tuning of pa0
                       ("ipv6/conf/pa0/addr_gen_mode", "0")):  # node default: 1
        env.node.ip("netns", "exec", env.node.name, "sh", "-c",
                    f"echo {value} > /proc/sys/net/{key}")
    await env.inventory([netdev("dev-a", "pa0")])
    pod = env.pod()
    host_before, pod_before = netstate.snapshot(env.node.name), netstate.snapshot(pod.name)

    claim, pod_uid = uid(), uid("pod")
    cfg = NetworkConfig(
        interface=InterfaceConfig(name="net1", addresses=["10.1.0.2/24"], mtu=1400,
                                  hardwareAddr="02:aa:bb:cc:dd:01"),
        routes=[RouteConfig(destination="10.3.0.0/16", gateway="10.1.0.1"),
                RouteConfig(destination="10.2.0.0/16", scope=253)])
    rep = await env.prepare(claim, [("dev-a", cfg)], [pod_uid])
    assert rep.error == "", rep.error
    assert [d.device for d in rep.devices] == ["dev-a"]
    assert rep.devices[0].cdi_ids == [f"knd.dev/net={claim}-dev-a"]
    spec = json.loads((env.cdi_root / f"knd.dev_{claim}.json").read_text())
    assert spec["kind"] == "knd.dev/net" and spec["devices"][0]["name"] == f"{claim}-dev-a"

    att = await env.attach(pod_uid, pod)
    assert att.error == "", att.error
    assert [(i.device, i.interface, i.ips, i.mac) for i in att.interfaces] == [
        ("dev-a", "net1", ["10.1.0.2/24"], "02:aa:bb:cc:dd:01")]
    link = ip_json(pod.name, "addr", "show", "net1")[0]
    assert link["mtu"] == 1400 and link["address"] == "02:aa:bb:cc:dd:01"
    assert ("10.1.0.2", 24) in [(a["local"], a["prefixlen"]) for a in link["addr_info"]]
    got = {(r["dst"], r.get("gateway")) for r in ip_json(pod.name, "route", "show")}
    assert {("10.3.0.0/16", "10.1.0.1"), ("10.2.0.0/16", None)} <= got
    assert "pa0" not in netstate.links(env.node.name)
    assert ping(pod.name, "10.1.0.1")

    det = await env.detach(pod_uid)
    assert det.error == "" and det.restored == ["dev-a"]
    assert host_before["sysctls"]["pa0"]["ipv4.rp_filter"] == "2"
    netstate.assert_same(env.node.name, host_before)  # sysctls of pa0 included
    assert netstate.snapshot(pod.name) == pod_before

    assert (await env.unprepare(claim)).error == ""
    assert not (env.cdi_root / f"knd.dev_{claim}.json").exists()
    assert plumber.store.counts() == {"claims": 0}
    # idempotent: a second detach and unprepare are no-ops
    assert (await env.detach(pod_uid)).error == ""
    assert (await env.unprepare(claim)).error == ""


async def test_host_addresses_and_routes_move_by_default(env: Env, plumber) -> None:
    host_pair(env, "pa1", "pb1", "10.4.0")
    env.node.ip("addr", "add", "10.4.0.2/24", "dev", "pa1")
    env.node.ip("route", "add", "10.5.0.0/16", "via", "10.4.0.1", "dev", "pa1")
    await env.inventory([netdev("dev-b", "pa1")])
    pod = env.pod()
    host_before = netstate.snapshot(env.node.name)
    claim, pod_uid = uid(), uid("pod")
    assert (await env.prepare(claim, [("dev-b", None)], [pod_uid])).error == ""
    att = await env.attach(pod_uid, pod)
    assert att.error == "", att.error
    assert att.interfaces[0].interface == "pa1" and att.interfaces[0].ips == ["10.4.0.2/24"]
    got = {(r["dst"], r.get("gateway")) for r in ip_json(pod.name, "route", "show")}
    assert ("10.5.0.0/16", "10.4.0.1") in got
    assert ping(pod.name, "10.4.0.1")
    assert (await env.detach(pod_uid)).restored == ["dev-b"]
    netstate.assert_same(env.node.name, host_before)
    assert (await env.unprepare(claim)).error == ""


async def test_unprepare_of_an_attached_claim_detaches_first(env: Env, plumber) -> None:
    host_pair(env, "ua0", "ub0", "10.6.0")
    env.node.ip("addr", "add", "10.6.0.2/24", "dev", "ua0")
    await env.inventory([netdev("dev-u", "ua0")])
    before = netstate.snapshot(env.node.name)
    claim, pod_uid = uid(), uid("pod")
    cfg = NetworkConfig(interface=InterfaceConfig(name="u1", mtu=1300))
    assert (await env.prepare(claim, [("dev-u", cfg)], [pod_uid])).error == ""
    assert (await env.attach(pod_uid, env.pod())).error == ""
    # the claim is gone from the API; kubelet unprepares from what it remembers
    assert (await env.unprepare(claim)).error == ""
    netstate.assert_same(env.node.name, before)
    assert plumber.store.counts() == {"claims": 0}


async def test_attach_finishing_after_the_runtime_deadline_is_rolled_back(env: Env,
                                                                          plumber) -> None:
    host_pair(env, "dl0", "dl0p", "10.9.0")
    await env.inventory([netdev("dev-dl", "dl0")])
    pod = env.pod()
    host_before, pod_before = netstate.snapshot(env.node.name), netstate.snapshot(pod.name)
    claim, pod_uid = uid(), uid("pod")
    cfg = NetworkConfig(interface=InterfaceConfig(name="net1", addresses=["10.9.0.2/24"]))
    assert (await env.prepare(claim, [("dev-dl", cfg)], [pod_uid])).error == ""
    late = p.Attach(pod=p.PodRef(uid=pod_uid), sandbox_id="sb",
                    netns=f"/var/run/netns/{pod.name}", deadline=time.time() - 1)
    rep = await env.ask("attach", late, p.AttachReply)
    assert "deadline" in rep.error and not rep.interfaces
    assert netstate.wait_equal(env.node.name, host_before) == host_before
    assert netstate.snapshot(pod.name) == pod_before
    # the runtime retries with a fresh deadline: the device attaches normally
    att = await env.attach(pod_uid, pod)
    assert att.error == "" and [i.interface for i in att.interfaces] == ["net1"]
