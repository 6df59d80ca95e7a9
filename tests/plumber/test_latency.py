"""Attach/detach latency of one device (an address and two routes), against
``ip -batch`` doing the same kernel operations, measured in the same run."""

from __future__ import annotations

import statistics
import subprocess
import time

import pytest

from schemas.netconfig import InterfaceConfig, NetworkConfig, RouteConfig
from tests.plumber import netstate
from tests.plumber.conftest import Env, netdev, uid

pytestmark = pytest.mark.anyio

ROUNDS = 15


def batch(ns: str, lines: list[str]) -> None:
    subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n", text=True,
                   check=True, capture_output=True)


def ip_batch_round(host: str, pod: str) -> tuple[float, float]:
    """The same operations as one plumber attach and detach, done by iproute2."""
    t0 = time.perf_counter()
    batch(host, [f"link set la0 down netns {pod} name net1 mtu 1400 address 02:00:00:00:00:42"])
    batch(pod, ["addr add 10.40.0.2/24 dev net1", "link set net1 up",
                "route add 10.41.0.0/16 dev net1 scope link",
                "route add 10.42.0.0/16 via 10.40.0.1 dev net1"])
    t1 = time.perf_counter()
    batch(pod, ["link set net1 down netns " + host + " name la0 mtu 1500"])
    batch(host, ["addr add 192.0.2.40/24 dev la0", "link set la0 up",
                 "route add 198.51.100.0/24 via 192.0.2.1 dev la0 onlink"])
    t2 = time.perf_counter()
    return (t1 - t0) * 1000, (t2 - t1) * 1000


async def test_attach_latency_vs_ip_batch(env: Env, plumber) -> None:
    env.node.veth("la0", "lb0")
    env.node.ip("addr", "add", "10.40.0.1/24", "dev", "lb0")
    env.node.ip("addr", "add", "192.0.2.40/24", "dev", "la0")
    env.node.ip("route", "add", "198.51.100.0/24", "via", "192.0.2.1", "dev", "la0", "onlink")
    await env.inventory([netdev("dev-l", "la0")])
    cfg = NetworkConfig(
        interface=InterfaceConfig(name="net1", addresses=["10.40.0.2/24"], mtu=1400,
                                  hardwareAddr="02:00:00:00:00:42"),
        routes=[RouteConfig(destination="10.41.0.0/16", scope=253),
                RouteConfig(destination="10.42.0.0/16", gateway="10.40.0.1")])
    mac = netstate.links(env.node.name)["la0"]["address"]
    attach_ms, detach_ms, server_ms, batch_in, batch_out = [], [], [], [], []
    for _ in range(ROUNDS):
        pod = env.pod()
        claim, pod_uid = uid(), uid("pod")
        assert (await env.prepare(claim, [("dev-l", cfg)], [pod_uid])).error == ""
        t0 = time.perf_counter()
        rep = await env.attach(pod_uid, pod)
        t1 = time.perf_counter()
        assert rep.error == "", rep.error
        det = await env.detach(pod_uid)
        t2 = time.perf_counter()
        assert det.restored == ["dev-l"]
        assert (await env.unprepare(claim)).error == ""
        attach_ms.append((t1 - t0) * 1000)
        server_ms.append(rep.latency_ms)
        detach_ms.append((t2 - t1) * 1000)
        a, d = ip_batch_round(env.node.name, pod.name)
        env.node.ip("link", "set", "la0", "address", mac)
        batch_in.append(a)
        batch_out.append(d)
    med = statistics.median
    print(f"\nattach p50 {med(attach_ms):.1f} ms over the bus ({med(server_ms):.1f} ms in the "
          f"plumber), detach p50 {med(detach_ms):.1f} ms; ip -batch: in {med(batch_in):.1f} ms,"
          f" out {med(batch_out):.1f} ms")
    # loose bounds: the point is the printout; these only catch a pathological slowdown
    assert med(attach_ms) < 10 * med(batch_in) + 50
    assert med(detach_ms) < 10 * med(batch_out) + 50
