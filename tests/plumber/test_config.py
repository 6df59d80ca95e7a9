"""The rest of a claim's config: rules, neighbours, ethtool, sysctls, GSO; and the
events and claim status an attach produces."""

from __future__ import annotations

import json
import subprocess

import anyio
import pytest

from schemas.base import decode, encode
from schemas.claims import ClaimStatus, ClaimStatusReply
from schemas.netconfig import (
    EthtoolConfig,
    InterfaceConfig,
    NeighborConfig,
    NetworkConfig,
    RouteConfig,
    RuleConfig,
)
from schemas.plumber import DeviceAttached, DeviceDetached, DeviceFailed
from schemas.subjects import Subjects
from services.common import bus as busmod
from services.plumber import devconf, nsfs
from tests.plumber import netstate
from tests.plumber.conftest import NODE, Env, netdev, uid

pytestmark = pytest.mark.anyio

FEATURE = "tx-checksum-ip-generic"


def sysctl(ns: str, key: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-n", key], capture_output=True,
                          text=True, check=True).stdout.strip()


async def feature(ns_path: str, ifname: str) -> bool:
    fd = nsfs.open_netns(ns_path)
    try:
        return (await devconf.feature_values(fd, ifname, [FEATURE]))[FEATURE]
    finally:
        import os
        os.close(fd)


async def test_rules_neighbours_ethtool_sysctls(env: Env, plumber) -> None:
    env.node.veth("xa0", "xb0")
    env.node.ip("addr", "add", "10.50.0.1/24", "dev", "xb0")
    await env.inventory([netdev("dev-x", "xa0")])
    pod = env.pod()
    node_path = f"/var/run/netns/{env.node.name}"
    assert await feature(node_path, "xa0") is True
    host_before, pod_before = netstate.snapshot(env.node.name), netstate.snapshot(pod.name)
    cfg = NetworkConfig(
        interface=InterfaceConfig(name="data0", addresses=["10.50.0.2/24",
                                                          "2001:db8:50::2/64"],
                                  gsoMaxSize=32000, forwarding=True),
        routes=[RouteConfig(destination="10.51.0.0/16", gateway="10.50.0.1", table=100)],
        rules=[RuleConfig(priority=100, source="10.50.0.2/32", table=100)],
        neighbors=[NeighborConfig(destination="10.50.0.9", hardwareAddr="02:00:00:00:50:09")],
        ethtool=EthtoolConfig(features={FEATURE: False}),
        sysctls={"ipv4.arp_ignore": "1", "ipv4.arp_announce": "2", "ipv6.accept_ra": "0"})
    claim, pod_uid = uid(), uid("pod")
    assert (await env.prepare(claim, [("dev-x", cfg)], [pod_uid])).error == ""
    rep = await env.attach(pod_uid, pod)
    assert rep.error == "", rep.error
    ns = pod.name
    rules = json.loads(pod.ip("-j", "rule", "show"))
    assert {"priority": 100, "src": "10.50.0.2", "table": "100"}.items() <= next(
        r for r in rules if r.get("priority") == 100).items()
    assert "10.51.0.0/16 via 10.50.0.1" in pod.ip("route", "show", "table", "100")
    assert "10.50.0.9 lladdr 02:00:00:00:50:09 PERMANENT" in pod.ip("neigh", "show", "dev",
                                                                      "data0")
    assert "2001:db8:50::2/64" in pod.ip("-6", "addr", "show", "data0")
    assert sysctl(ns, "net.ipv4.conf.data0.arp_ignore") == "1"
    assert sysctl(ns, "net.ipv4.conf.data0.arp_announce") == "2"
    assert sysctl(ns, "net.ipv6.conf.data0.accept_ra") == "0"
    assert sysctl(ns, "net.ipv4.conf.data0.forwarding") == "1"
    assert sysctl(ns, "net.ipv6.conf.data0.forwarding") == "1"
    assert "gso_max_size 32000" in pod.ip("-d", "link", "show", "data0")
    assert await feature(f"/var/run/netns/{ns}", "data0") is False
    assert (await env.detach(pod_uid)).restored == ["dev-x"]
    netstate.assert_same(env.node.name, host_before)
    assert netstate.snapshot(pod.name) == pod_before  # our rule left with the device
    assert await feature(node_path, "xa0") is True


@pytest.mark.parametrize("bad,field", [
    # (an unknown ethtool feature fails at prepare: tests/plumber/test_ethtool.py)
    (NetworkConfig(ethtool=EthtoolConfig(privateFlags={"no-such-flag": True})),
     "config.ethtool.privateFlags[no-such-flag]"),
    # valid for the schema, refused by the kernel: an IPv6 MTU above the link's
    (NetworkConfig(sysctls={"ipv6.mtu": "65535"}), "config.sysctls[ipv6.mtu]"),
], ids=["private flag", "sysctl"])
async def test_device_settings_that_fail_roll_back(env: Env, plumber, bad, field) -> None:
    env.node.veth("ya0", "yb0")
    env.node.ip("addr", "add", "10.52.0.2/24", "dev", "ya0")
    await env.inventory([netdev("dev-y", "ya0")])
    pod = env.pod()
    host_before, pod_before = netstate.snapshot(env.node.name), netstate.snapshot(pod.name)
    claim, pod_uid = uid(), uid("pod")
    assert (await env.prepare(claim, [("dev-y", bad)], [pod_uid])).error == ""
    rep = await env.attach(pod_uid, pod)
    assert "rolled back" in rep.error and field in rep.error, rep.error
    netstate.assert_same(env.node.name, host_before)
    assert netstate.snapshot(pod.name) == pod_before


async def test_events_and_claim_status(env: Env, plumber) -> None:
    """attached/failed/detached events, and a claim-status request to a stand-in
    publisher that answers as the real one would."""
    env.node.veth("ea0", "eb0")
    await env.inventory([netdev("dev-e", "ea0")])
    subjects = Subjects(NODE)
    observer = await busmod.connect(env.creds, "observer")
    publisher = await busmod.connect(env.creds, "publisher")
    events: list[tuple[str, bytes]] = []
    statuses: list[ClaimStatus] = []

    async def on_event(msg) -> None:
        events.append((msg.subject, msg.data))

    async def on_status(msg) -> None:
        statuses.append(decode(msg.data, ClaimStatus))
        await msg.respond(encode(ClaimStatusReply()))

    for kind in ("device.attached", "device.detached", "device.failed"):
        await observer.subscribe(subjects.event(kind), cb=on_event)
    await publisher.subscribe(subjects.claim_status, cb=on_status)
    await busmod.flush(observer)
    await busmod.flush(publisher)
    try:
        pod = env.pod()
        claim, pod_uid = uid(), uid("pod")
        bad = NetworkConfig(interface=InterfaceConfig(addresses=["10.53.0.2/24"]),
                            routes=[RouteConfig(destination="10.54.0.0/16",
                                                gateway="10.99.0.1")])
        assert (await env.prepare(claim, [("dev-e", bad)], [pod_uid])).error == ""
        assert "rolled back" in (await env.attach(pod_uid, pod)).error
        with anyio.fail_after(5):
            while not any(s.endswith("device.failed") for s, _ in events) or not statuses:
                await anyio.sleep(0.01)
        failed = decode(next(d for s, d in events if s.endswith("device.failed")), DeviceFailed)
        assert failed.step == "config.routes[0]" and failed.rolled_back
        # the pod by name too, from the claim's reservation: the publisher writes an
        # Event on it
        assert (failed.pod_namespace, failed.pod_name) == ("default", f"pod-{pod_uid}")
        assert statuses[-1].devices[0].conditions[0].reason == "AttachFailed"
        assert (await env.unprepare(claim)).error == ""

        claim, pod_uid = uid(), uid("pod")
        good = NetworkConfig(interface=InterfaceConfig(name="e1", addresses=["10.53.0.2/24"]))
        assert (await env.prepare(claim, [("dev-e", good)], [pod_uid])).error == ""
        events.clear()
        statuses.clear()
        assert (await env.attach(pod_uid, pod)).error == ""
        with anyio.fail_after(5):
            while not any(s.endswith("device.attached") for s, _ in events) or not statuses:
                await anyio.sleep(0.01)
        attached = decode(next(d for s, d in events if s.endswith("device.attached")),
                          DeviceAttached)
        assert (attached.claim_uid, attached.device, attached.interface) == (claim, "dev-e",
                                                                              "e1")
        st = statuses[-1]
        assert st.uid == claim and st.name == f"n-{claim}"
        dev = st.devices[0]
        assert (dev.driver, dev.pool, dev.device) == ("knd.dev", NODE, "dev-e")
        assert dev.conditions[0].type == "Ready" and dev.conditions[0].status == "True"
        assert dev.network_data.interface_name == "e1"
        assert dev.network_data.ips == ["10.53.0.2/24"] and dev.network_data.hardware_address

        statuses.clear()
        assert (await env.detach(pod_uid)).restored == ["dev-e"]
        with anyio.fail_after(5):
            while not any(s.endswith("device.detached") for s, _ in events) or not statuses:
                await anyio.sleep(0.01)
        detached = decode(next(d for s, d in events if s.endswith("device.detached")),
                          DeviceDetached)
        assert (detached.interface, detached.reason, detached.gone) == ("ea0", "detach", False)
        assert (detached.pod_namespace, detached.pod_name) == ("default", f"pod-{pod_uid}")
        assert statuses[-1].devices[0].conditions[0].status == "False"
    finally:
        await busmod.close(observer)
        await busmod.close(publisher)
