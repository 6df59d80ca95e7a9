"""``interface.dhcp``: a lease from a real dnsmasq, asked for from inside the pod.

The node's device is a veth whose peer lives in a "server" netns of the test's own,
where dnsmasq serves DHCP (address range, router, classless static routes, MTU).
``--no-ping``: dnsmasq otherwise pings an address for 3 s before offering it, longer
than a runtime gives a pod's start (see the README's DHCP note).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from schemas import plumber as p
from schemas.base import decode, encode
from schemas.claims import ClaimStatus, ClaimStatusReply
from schemas.netconfig import InterfaceConfig, NetworkConfig, RouteConfig
from schemas.subjects import Subjects
from services.common import bus as busmod
from services.plumber import dhcp
from tests.conftest import NODE
from tests.helpers.netns import NetNS
from tests.plumber import netstate
from tests.plumber.conftest import Env, netdev, uid

pytestmark = pytest.mark.anyio

DNSMASQ = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
NET = "10.80.0"
RANGE = [f"{NET}.{n}" for n in range(50, 60)]


def ip_json(ns: str, *args: str) -> list[dict]:
    return json.loads(subprocess.run(["ip", "-n", ns, "-j", *args], capture_output=True,
                                     text=True, check=True).stdout or "[]")


def ping(ns: NetNS, addr: str) -> bool:
    return subprocess.run(ns.exec_argv(["ping", "-c1", "-W1", addr]),
                          capture_output=True).returncode == 0


def listening(ns: NetNS, port: int) -> bool:
    """Some UDP socket is bound to ``port`` in ``ns``."""
    return bool(subprocess.run(ns.exec_argv(["ss", "-Hlun", f"sport = :{port}"]),
                               capture_output=True, text=True).stdout.strip())


@pytest.fixture
def server(env: Env) -> Iterator[NetNS]:
    ns = NetNS(prefix="knd-dhcp")
    try:
        yield ns
    finally:
        ns.delete()


def wire(env: Env, server: NetNS, dev: str) -> None:
    """Node veth ``dev``, its peer ``srv0`` (10.80.0.1/24) in the server netns."""
    env.node.ip("link", "add", dev, "type", "veth", "peer", "name", "srv0", "netns",
                server.name)
    env.node.ip("link", "set", dev, "up")
    server.ip("addr", "add", f"{NET}.1/24", "dev", "srv0")
    server.ip("link", "set", "srv0", "up")


@contextmanager
def dnsmasq(server: NetNS, tmp: Path) -> Iterator[Path]:
    """dnsmasq serving DHCP on srv0 until the block ends (stopped even when it fails);
    yields its lease file."""
    if DNSMASQ is None:
        pytest.fail("dnsmasq is missing: scripts/bootstrap.sh installs dnsmasq-base")
    leases = tmp / "dnsmasq.leases"
    log = (tmp / "dnsmasq.log").open("wb")
    proc = subprocess.Popen(server.exec_argv([
        DNSMASQ, "--no-daemon", "--port=0", "--conf-file=/dev/null", "--user=root",
        "--interface=srv0", "--bind-interfaces", "--no-ping", "--log-dhcp",
        "--log-facility=-", f"--dhcp-leasefile={leases}", f"--pid-file={tmp}/dnsmasq.pid",
        f"--dhcp-range={RANGE[0]},{RANGE[-1]},255.255.255.0,12h",
        f"--dhcp-option=option:router,{NET}.1",
        f"--dhcp-option=option:classless-static-route,10.81.0.0/16,{NET}.254,"
        f"0.0.0.0/0,{NET}.1",
        "--dhcp-option=option:mtu,1400"]), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not listening(server, 67):
            assert proc.poll() is None, (tmp / "dnsmasq.log").read_text()
            assert time.monotonic() < deadline, "dnsmasq did not start listening"
            time.sleep(0.02)
        yield leases
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def attach(env: Env, pod_uid: str, pod: NetNS, budget: float = 0.0) -> p.AttachReply:
    return await env.ask("attach", p.Attach(
        pod=p.PodRef(uid=pod_uid), sandbox_id=f"sb-{pod_uid}",
        netns=f"/var/run/netns/{pod.name}", deadline=time.time() + budget if budget else 0),
        p.AttachReply)


async def test_lease_configures_the_pod_and_detach_restores_the_host(
        env: Env, plumber, server: NetNS, tmp_path: Path) -> None:
    wire(env, server, "dh0")
    env.node.ip("addr", "add", "192.0.2.7/24", "dev", "dh0")  # the host's own: stays home
    env.node.ip("link", "set", "dh0", "mtu", "1450")
    await env.inventory([netdev("dev-d", "dh0")])
    pod = env.pod()
    host_before, pod_before = netstate.snapshot(env.node.name), netstate.snapshot(pod.name)
    publisher = await busmod.connect(env.creds, "publisher")
    statuses: list[ClaimStatus] = []

    async def on_status(msg) -> None:
        statuses.append(decode(msg.data, ClaimStatus))
        await msg.respond(encode(ClaimStatusReply()))

    await publisher.subscribe(Subjects(NODE).claim_status, cb=on_status)
    await busmod.flush(publisher)
    try:
        with dnsmasq(server, tmp_path) as leases:
            claim, pod_uid = uid(), uid("pod")
            cfg = NetworkConfig(interface=InterfaceConfig(name="net1", dhcp=True))
            assert (await env.prepare(claim, [("dev-d", cfg)], [pod_uid])).error == ""
            rep = await attach(env, pod_uid, pod, budget=1.5)  # the gateway's NRI budget
            assert rep.error == "", rep.error
            [got] = rep.interfaces
            link = ip_json(pod.name, "addr", "show", "net1")[0]
            leased = [(a["local"], a["prefixlen"]) for a in link["addr_info"]
                      if a["family"] == "inet"]
            assert len(leased) == 1 and leased[0][0] in RANGE and leased[0][1] == 24, leased
            addr = f"{leased[0][0]}/24"
            assert got.ips == [addr] and got.interface == "net1"
            # the server's record: this address for the pod's MAC
            assert f"{link['address']} {leased[0][0]}" in leases.read_text()
            assert link["mtu"] == 1400  # option 26
            routes = {(r["dst"], r.get("gateway"), r.get("protocol"))
                      for r in ip_json(pod.name, "-4", "route", "show", "dev", "net1")}
            assert {("default", f"{NET}.1", "dhcp"),
                    ("10.81.0.0/16", f"{NET}.254", "dhcp")} <= routes, routes
            assert ping(pod, f"{NET}.1")
            with anyio.fail_after(5):
                while not any(s.devices[0].network_data for s in statuses):
                    await anyio.sleep(0.01)
            data = next(s for s in statuses if s.devices[0].network_data).devices[0]
            assert data.network_data.ips == [addr]
            assert data.network_data.interface_name == "net1"

            det = await env.detach(pod_uid)
            assert det.error == "" and det.restored == ["dev-d"]
            netstate.assert_same(env.node.name, host_before)
            assert netstate.snapshot(pod.name) == pod_before
            assert (await env.unprepare(claim)).error == ""
    finally:
        await busmod.close(publisher)


async def test_claim_settings_win_over_the_lease(env: Env, plumber, server: NetNS,
                                                 tmp_path: Path) -> None:
    wire(env, server, "dh1")
    await env.inventory([netdev("dev-d1", "dh1")])
    pod = env.pod()
    with dnsmasq(server, tmp_path):
        claim, pod_uid = uid(), uid("pod")
        cfg = NetworkConfig(interface=InterfaceConfig(dhcp=True, mtu=1300),
                            routes=[RouteConfig(destination="10.81.0.0/16",
                                                gateway=f"{NET}.253")])
        assert (await env.prepare(claim, [("dev-d1", cfg)], [pod_uid])).error == ""
        rep = await attach(env, pod_uid, pod)
        assert rep.error == "", rep.error
        assert ip_json(pod.name, "link", "show", "dh1")[0]["mtu"] == 1300
        routes = {(r["dst"], r.get("gateway"))
                  for r in ip_json(pod.name, "-4", "route", "show", "dev", "dh1")}
        assert ("10.81.0.0/16", f"{NET}.253") in routes
        assert ("10.81.0.0/16", f"{NET}.254") not in routes
        assert ("default", f"{NET}.1") in routes
        assert (await env.detach(pod_uid)).restored == ["dev-d1"]


async def test_the_pods_own_default_route_stays(env: Env, plumber, server: NetNS,
                                                tmp_path: Path) -> None:
    """A pod has a default route through its primary network already: the lease's is
    not added over it (and does not fail the pod), its other routes are."""
    wire(env, server, "dh4")
    await env.inventory([netdev("dev-d4", "dh4")])
    pod = env.pod()
    pod.veth("eth0", "cni0")
    pod.ip("addr", "add", "10.244.1.5/24", "dev", "eth0")
    pod.ip("route", "add", "default", "via", "10.244.1.1", "dev", "eth0")
    with dnsmasq(server, tmp_path):
        claim, pod_uid = uid(), uid("pod")
        cfg = NetworkConfig(interface=InterfaceConfig(name="net1", dhcp=True))
        assert (await env.prepare(claim, [("dev-d4", cfg)], [pod_uid])).error == ""
        rep = await attach(env, pod_uid, pod)
        assert rep.error == "", rep.error
        routes = {(r["dst"], r.get("gateway"), r.get("dev"))
                  for r in ip_json(pod.name, "-4", "route", "show")}
        assert ("default", "10.244.1.1", "eth0") in routes
        assert ("default", f"{NET}.1", "net1") not in routes
        assert ("10.81.0.0/16", f"{NET}.254", "net1") in routes
        assert (await env.detach(pod_uid)).restored == ["dev-d4"]
        assert ("default", "10.244.1.1", "eth0") in {
            (r["dst"], r.get("gateway"), r.get("dev"))
            for r in ip_json(pod.name, "-4", "route", "show")}


async def test_cancelled_exchange_stops_and_frees_its_port(env: Env, server: NetNS) -> None:
    wire(env, server, "dh5")  # nobody answers
    fd = os.open(f"/var/run/netns/{env.node.name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        mac = ip_json(env.node.name, "link", "show", "dh5")[0]["address"]
        started = time.monotonic()
        with anyio.move_on_after(0.3) as scope:
            await dhcp.acquire(fd, "dh5", mac, within=dhcp.TIMEOUT)
        assert scope.cancelled_caught and time.monotonic() - started < dhcp.TIMEOUT
        assert not listening(env.node, 68)
    finally:
        os.close(fd)


async def test_silent_server_fails_within_the_deadline_and_rolls_back(
        env: Env, plumber, server: NetNS) -> None:
    wire(env, server, "dh2")  # nobody serves DHCP behind it
    env.node.ip("addr", "add", "192.0.2.8/24", "dev", "dh2")
    await env.inventory([netdev("dev-d2", "dh2")])
    pod = env.pod()
    host_before, pod_before = netstate.snapshot(env.node.name), netstate.snapshot(pod.name)
    claim, pod_uid = uid(), uid("pod")
    cfg = NetworkConfig(interface=InterfaceConfig(name="net1", dhcp=True))
    assert (await env.prepare(claim, [("dev-d2", cfg)], [pod_uid])).error == ""
    budget = 1.0
    started = time.time()
    rep = await attach(env, pod_uid, pod, budget=budget)
    assert time.time() < started + budget, "the attach outlived the runtime's deadline"
    assert "rolled back" in rep.error and "interface.dhcp" in rep.error, rep.error
    assert "no lease on net1" in rep.error and "DHCPOFFER" in rep.error, rep.error
    netstate.assert_same(env.node.name, host_before)
    assert netstate.snapshot(pod.name) == pod_before
    assert plumber.store.attachments(pod_uid=pod_uid) == []
    assert (await env.unprepare(claim)).error == ""


async def test_dhcp_and_addresses_are_refused_at_prepare(env: Env, plumber) -> None:
    env.node.veth("dh3", "dp3")
    await env.inventory([netdev("dev-d3", "dh3")])
    bad = NetworkConfig(interface=InterfaceConfig(dhcp=True, addresses=["10.0.0.5/24"]))
    rep = await env.prepare(uid(), [("dev-d3", bad)], [uid("pod")])
    assert "interface.dhcp" in rep.error and "mutually exclusive" in rep.error, rep.error


# ---- the codec, against hand-made server messages ---------------------------------------


def reply(kind: int, options: bytes, yiaddr: str = "10.9.0.5") -> dhcp.Reply:
    head = dhcp.HEADER.pack(dhcp.BOOTREPLY, 1, 6, 0, 7, 0, 0, bytes(4),
                            socket.inet_aton(yiaddr), bytes(4), bytes(4), b"\x02" * 6,
                            bytes(64), bytes(128), dhcp.MAGIC)
    got = dhcp.decode(head + bytes([53, 1, kind]) + options + b"\xff")
    assert got is not None
    return got


def test_router_is_the_default_route_without_classless_routes() -> None:
    lease = dhcp.lease_of(reply(dhcp.ACK, bytes([1, 4, 255, 255, 0, 0, 3, 8, 10, 9, 0, 1,
                                                 10, 9, 0, 2])))
    assert str(lease.address) == "10.9.0.5/16"
    assert [(r.dst, r.gateway) for r in lease.routes()] == [("0.0.0.0/0", "10.9.0.1")]


def test_classless_routes_replace_the_router_and_may_be_on_link() -> None:
    # 10.20/16 on the link (gateway 0.0.0.0), 0/0 via 10.9.0.9; option 3 is ignored
    opt121 = bytes([16, 10, 20, 0, 0, 0, 0, 0, 10, 9, 0, 9])
    lease = dhcp.lease_of(reply(dhcp.ACK, bytes([3, 4, 10, 9, 0, 1, 121, len(opt121)])
                                + opt121 + bytes([26, 2]) + struct.pack("!H", 9000)))
    assert [(r.dst, r.gateway, r.scope) for r in lease.routes()] == [
        ("10.20.0.0/16", "", 253), ("0.0.0.0/0", "10.9.0.9", 0)]
    assert lease.mtu == 9000
    assert str(lease.address) == "10.9.0.5/8"  # no mask: the address class's


def test_bad_leases_are_errors() -> None:
    with pytest.raises(dhcp.DhcpError, match="option 121"):
        dhcp.lease_of(reply(dhcp.ACK, bytes([121, 3, 33, 10, 0])))
    with pytest.raises(dhcp.DhcpError, match="no usable address"):
        dhcp.lease_of(reply(dhcp.ACK, b"", yiaddr="0.0.0.0"))
    with pytest.raises(dhcp.DhcpError, match="subnet mask"):
        dhcp.lease_of(reply(dhcp.ACK, bytes([1, 4, 255, 0, 255, 0])))
