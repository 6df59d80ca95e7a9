"""interface.vrf: the requests are iproute2's, byte for byte; on a kernel without VRF
support (this one: no CONFIG_NET_VRF) the attach fails naming the field and everything
is rolled back. The VRF itself was not run against a VRF kernel here."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from schemas.netconfig import InterfaceConfig, NetworkConfig, RouteConfig, VRFConfig
from services.plumber import nsfs, vrf
from services.plumber.netops import KernelError
from tests.helpers.netns import NetNS
from tests.plumber import netstate
from tests.plumber.conftest import Env, netdev, uid

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).parent / "fixtures"


def captured(name: str) -> bytes:
    """A request iproute2 6.1 sent, as ``strace -e trace=sendmsg -e write=3`` dumped it,
    its sequence number zeroed (it is the time of day): ``iproute2-6.1-vrf-add.hex`` is
    ``ip link add vrf-x type vrf table 10``, ``iproute2-6.1-master.hex`` is ``ip link
    set dev a master vrf-x`` with ``a`` link 3 and ``vrf-x`` link 6."""
    raw = bytearray(bytes.fromhex((FIXTURES / name).read_text()))
    raw[8:12] = bytes(4)
    return bytes(raw)


def kernel_has_vrf() -> bool:
    ns = NetNS(prefix="knd-vrfq")
    try:
        return ns.ip("link", "add", "v0", "type", "vrf", "table", "10", check=False) == "" \
            and "vrf" in ns.ip("-d", "link", "show", "v0", check=False)
    finally:
        ns.delete()


def test_requests_are_iproute2s() -> None:
    assert vrf.add_request("vrf-x", 10) == captured("iproute2-6.1-vrf-add.hex")
    assert vrf.master_request(3, 6) == captured("iproute2-6.1-master.hex")
    # the parts that vary are where they should be
    assert vrf.add_request("vrf-blue", 1234) != vrf.add_request("vrf-x", 10)
    assert vrf.master_request(3, 7)[-4:] == (7).to_bytes(4, "little")


async def test_requests_go_to_the_kernel() -> None:
    """The master request enslaves (to a bridge: the request does not name the master's
    kind); the VRF request gets the kernel's own answer back as a KernelError."""
    ns = NetNS(prefix="knd-vrfr")
    fd = nsfs.open_netns(f"/var/run/netns/{ns.name}")
    try:
        ns.veth("p0", "p1")
        ns.ip("link", "add", "br-x", "type", "bridge")
        index = int(ns.ip("-o", "link", "show", "p0").split(":")[0])
        master = int(ns.ip("-o", "link", "show", "br-x").split(":")[0])
        await vrf.send(fd, "step", vrf.master_request(index, master, seq=5))
        assert "master br-x" in ns.ip("link", "show", "p0")
        if not kernel_has_vrf():
            with pytest.raises(KernelError) as err:
                await vrf.send(fd, "config.interface.vrf", vrf.add_request("vrf-x", 10, 6))
            assert err.value.code == errno.EOPNOTSUPP
            assert str(err.value).startswith("config.interface.vrf: ")
    finally:
        os.close(fd)
        ns.delete()


@pytest.mark.skipif(kernel_has_vrf(), reason="this kernel has VRF support")
async def test_attach_without_kernel_vrf_fails_and_rolls_back(env: Env, plumber) -> None:
    env.node.veth("va0", "vb0")
    env.node.ip("addr", "add", "10.58.0.2/24", "dev", "va0")
    env.node.veth("wa0", "wb0")
    await env.inventory([netdev("dev-v", "va0"), netdev("dev-w", "wa0")])
    pod = env.pod()
    host_before, pod_before = netstate.snapshot(env.node.name), netstate.snapshot(pod.name)
    with_vrf = NetworkConfig(
        interface=InterfaceConfig(name="net1", vrf=VRFConfig(name="vrf-blue")),
        routes=[RouteConfig(destination="10.59.0.0/16", gateway="10.58.0.1")])
    plain = NetworkConfig(interface=InterfaceConfig(name="net2", addresses=["10.60.0.2/24"]))
    claim, pod_uid = uid(), uid("pod")
    rep = await env.prepare(claim, [("dev-v", with_vrf)], [pod_uid])
    assert rep.error == ""
    other = uid()
    assert (await env.prepare(other, [("dev-w", plain)], [pod_uid])).error == ""
    rep = await env.attach(pod_uid, pod)
    assert "rolled back" in rep.error and "config.interface.vrf: " in rep.error, rep.error
    assert "no VRF support" in rep.error and "'vrf-blue'" in rep.error
    netstate.assert_same(env.node.name, host_before)  # both devices home, as they were
    assert netstate.snapshot(pod.name) == pod_before  # no VRF, no link left in the pod
    assert plumber.store.attachments(pod_uid=pod_uid) == []


async def test_a_non_vrf_device_of_that_name_is_refused(env: Env, plumber) -> None:
    env.node.veth("ua0", "ub0")
    await env.inventory([netdev("dev-u", "ua0")])
    pod = env.pod()
    pod.ip("link", "add", "vrf-red", "type", "bridge")
    host_before, pod_before = netstate.snapshot(env.node.name), netstate.snapshot(pod.name)
    cfg = NetworkConfig(interface=InterfaceConfig(vrf=VRFConfig(name="vrf-red", table=10)))
    claim, pod_uid = uid(), uid("pod")
    assert (await env.prepare(claim, [("dev-u", cfg)], [pod_uid])).error == ""
    rep = await env.attach(pod_uid, pod)
    assert "config.interface.vrf: 'vrf-red' is a bridge device in the pod, not a VRF" \
        in rep.error, rep.error
    netstate.assert_same(env.node.name, host_before)
    assert netstate.snapshot(pod.name) == pod_before  # the pod's bridge is not ours to delete


def test_fixture_matches_what_iproute2_sends_now() -> None:
    """The fixture is still what this machine's iproute2 sends (when strace is here)."""
    if subprocess.run(["sh", "-c", "command -v strace"], capture_output=True).returncode:
        pytest.skip("strace is not installed")
    ns = NetNS(prefix="knd-vrfs")
    try:
        out = subprocess.run(["ip", "netns", "exec", ns.name, "strace", "-e", "trace=sendmsg",
                              "-e", "write=3", "ip", "link", "add", "vrf-x", "type", "vrf",
                              "table", "10"], capture_output=True, text=True).stderr
    finally:
        ns.delete()
    dump = "".join(line[10:59] for line in out.splitlines() if line.startswith(" | "))
    raw = bytearray(bytes.fromhex(dump))
    raw[8:12] = bytes(4)
    assert bytes(raw) == vrf.add_request("vrf-x", 10)
