"""Each bad input gets an error that names the field, and changes nothing."""

from __future__ import annotations

import pytest

from schemas.netconfig import InterfaceConfig, NetworkConfig, RouteConfig
from tests.plumber import netstate
from tests.plumber.conftest import Env, netdev, uid

pytestmark = pytest.mark.anyio


@pytest.fixture
async def ready(env: Env, plumber):
    env.node.veth("qa0", "qb0")
    env.node.ip("addr", "add", "10.7.0.2/24", "dev", "qa0")
    env.node.ip("addr", "add", "10.7.0.1/24", "dev", "qb0")
    await env.inventory([netdev("dev-q", "qa0"), netdev("dev-ghost", "nosuch0")])
    return env


def cfg(**iface) -> NetworkConfig:
    return NetworkConfig(interface=InterfaceConfig(**iface))


PREPARE_CASES = [
    ("unknown device", "dev-nope", None, None, 'devices[0].device: "dev-nope" is not in '
                                                "this node's inventory"),
    ("other pool", "dev-q", None, "node-b", 'devices[0].pool: "node-b" is not this node'),
    ("interface not in host", "dev-ghost", None, None, "devices[0].device: interface"),
    ("mtu below 68", "dev-q", cfg(mtu=60), None, "devices[0].config.interface.mtu"),
    ("bad address", "dev-q", cfg(addresses=["10.0.0.300/24"]), None,
     "devices[0].config.interface.addresses[0]"),
    ("bad name", "dev-q", cfg(name="a/b"), None, "devices[0].config.interface.name"),
    ("gateway of the wrong family", "dev-q",
     NetworkConfig(interface=InterfaceConfig(addresses=["10.8.0.2/24"]),
                   routes=[RouteConfig(destination="2001:db8::/64", gateway="10.8.0.1")]),
     None, "devices[0].config.routes[0].gateway"),
    ("gateway family without address", "dev-q",
     NetworkConfig(interface=InterfaceConfig(addresses=["10.8.0.2/24"]),
                   routes=[RouteConfig(gateway="2001:db8::1")]),
     None, "devices[0].config.routes[0].gateway: IPv6 gateway"),
    ("unsafe sysctl key", "dev-q", NetworkConfig(sysctls={"../../x": "1"}), None,
     "devices[0].config.sysctls[../../x]"),
]


@pytest.mark.parametrize("device,config,pool,expected",
                         [c[1:] for c in PREPARE_CASES], ids=[c[0] for c in PREPARE_CASES])
async def test_prepare_rejects(ready: Env, device, config, pool, expected) -> None:
    env = ready
    before = netstate.snapshot(env.node.name)
    claim = uid()
    kw = {"pool": pool} if pool else {}
    rep = await env.prepare(claim, [(device, config)], [uid("pod")], **kw)
    assert expected in rep.error, rep.error
    assert rep.devices == []
    assert env.plumber.store.claims() == []
    assert not (env.cdi_root / f"knd.dev_{claim}.json").exists()
    assert netstate.snapshot(env.node.name) == before


async def test_prepare_rejects_uplink(ready: Env) -> None:
    env = ready
    env.node.ip("route", "add", "default", "via", "10.7.0.1", "dev", "qa0")
    before = netstate.snapshot(env.node.name)
    rep = await env.prepare(uid(), [("dev-q", None)], [uid("pod")])
    assert "devices[0].device" in rep.error and "default route" in rep.error, rep.error
    assert netstate.snapshot(env.node.name) == before


async def test_prepare_rejects_device_of_another_claim(ready: Env) -> None:
    env = ready
    first = uid()
    assert (await env.prepare(first, [("dev-q", None)], [uid("pod")])).error == ""
    rep = await env.prepare(uid(), [("dev-q", None)], [uid("pod")])
    assert f'devices[0].device: "dev-q" is already prepared for claim {first}' in rep.error


@pytest.mark.parametrize("what", ["missing", "regular file", "host netns", "own netns",
                                  "char device", "name taken"])
async def test_attach_rejects(ready: Env, what: str) -> None:
    env = ready
    pod = env.pod()
    claim, pod_uid = uid(), uid("pod")
    name = "qa0"
    if what == "name taken":
        pod.ip("link", "add", "qa0", "type", "veth", "peer", "name", "qz0")
    assert (await env.prepare(claim, [("dev-q", None)], [pod_uid])).error == ""
    path = {"missing": f"{env.tmp}/no-such-netns",
            "regular file": str(env.tmp / "plain"),
            "host netns": f"/var/run/netns/{env.node.name}",
            "own netns": "/proc/self/ns/net",
            "char device": "/dev/null",
            "name taken": f"/var/run/netns/{pod.name}"}[what]
    (env.tmp / "plain").write_text("not a netns")
    host_before, pod_before = netstate.snapshot(env.node.name), netstate.snapshot(pod.name)
    rep = await env.attach(pod_uid, path)
    expected = {"missing": "does not exist", "regular file": "is not a network namespace",
                "host netns": "the node's own network namespace",
                "own netns": "the node's own network namespace",
                "char device": "is not a network namespace",
                "name taken": f'config.interface.name: "{name}" is already used'}[what]
    assert expected in rep.error, rep.error
    assert rep.interfaces == []
    assert netstate.snapshot(env.node.name) == host_before
    assert netstate.snapshot(pod.name) == pod_before
    assert env.plumber.store.attachments() == []


async def test_attach_failure_midway_rolls_back(ready: Env) -> None:
    """The kernel refuses the second route (unreachable gateway) after the move."""
    from prometheus_client import REGISTRY

    env = ready
    env.node.ip("route", "add", "198.51.100.0/24", "dev", "qa0")  # moves into the pod too
    pod = env.pod()
    claim, pod_uid = uid(), uid("pod")
    config = NetworkConfig(
        interface=InterfaceConfig(name="eth9", addresses=["10.9.0.2/24"], mtu=1300,
                                  hardwareAddr="02:00:00:00:09:02"),
        routes=[RouteConfig(destination="10.10.0.0/16", gateway="10.9.0.1"),
                RouteConfig(destination="10.11.0.0/16", gateway="10.99.0.1")])
    assert (await env.prepare(claim, [("dev-q", config)], [pod_uid])).error == ""
    host_before, pod_before = netstate.snapshot(env.node.name), netstate.snapshot(pod.name)
    rollbacks = REGISTRY.get_sample_value("knd_plumber_rollbacks_total") or 0
    rep = await env.attach(pod_uid, pod)
    assert "rolled back" in rep.error and "config.routes[1]" in rep.error, rep.error
    assert "incomplete" not in rep.error
    netstate.assert_same(env.node.name, host_before)
    assert netstate.snapshot(pod.name) == pod_before
    assert env.plumber.store.attachments() == []
    assert REGISTRY.get_sample_value("knd_plumber_rollbacks_total") == rollbacks + 1
    # the claim stays prepared: a later attach with a fixed network could work
    assert [c.uid for c in env.plumber.store.claims()] == [claim]


async def test_attach_rejects_device_gone_from_inventory(ready: Env) -> None:
    env = ready
    claim, pod_uid = uid(), uid("pod")
    assert (await env.prepare(claim, [("dev-q", None)], [pod_uid])).error == ""
    await env.inventory([netdev("dev-ghost", "nosuch0")])
    pod = env.pod()
    before = netstate.snapshot(env.node.name)
    rep = await env.attach(pod_uid, pod)
    assert "device \"dev-q\"" in rep.error and "no longer in this node's inventory" in rep.error
    assert netstate.snapshot(env.node.name) == before


async def test_pod_without_devices_and_malformed_requests(ready: Env) -> None:
    from schemas.base import ErrorReply, decode
    from schemas.subjects import Subjects
    from tests.plumber.conftest import NODE

    env = ready
    # NRI calls attach for every pod: one without claims gets an empty answer at once
    rep = await env.attach(uid("pod"), "/no/such/netns")
    assert rep.error == "" and rep.interfaces == []
    reply = await env.gw.request(Subjects(NODE).plumber("attach"), b'{"pod": 5}', timeout=5)
    err = decode(reply.data, ErrorReply)
    assert "invalid Attach" in err.error
