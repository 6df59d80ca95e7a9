"""DRANET's link knobs: IPv4 GSO/GRO max sizes (IFLA_GSO_IPV4_MAX_SIZE 63,
IFLA_GRO_IPV4_MAX_SIZE 64) and arpIgnore/arpAnnounce, applied in the pod and given
back at home."""

from __future__ import annotations

import os
import re
import struct
import subprocess

import pytest

from schemas.netconfig import InterfaceConfig, NetworkConfig
from services.plumber import nsfs
from tests.plumber import netstate
from tests.plumber.conftest import Env, netdev, uid
from tests.plumber.test_config import sysctl

pytestmark = pytest.mark.anyio

RTM_GETLINK, RTM_NEWLINK, NLM_F_REQUEST = 18, 16, 1


async def link_attrs(ns: str, ifname: str) -> dict[int, bytes]:
    """The link's top-level netlink attributes, read with a bare RTM_GETLINK and decoded
    here, by attribute number: independent of pyroute2's map and of iproute2's version."""
    fd = nsfs.open_netns(f"/var/run/netns/{ns}")
    try:
        sock = await nsfs.netlink_socket(fd)
    finally:
        os.close(fd)
    try:
        name = _nla(3, ifname.encode() + b"\0")
        body = struct.pack("=BxHiII", 0, 0, 0, 0, 0) + name
        sock.send(struct.pack("=IHHII", 16 + len(body), RTM_GETLINK, NLM_F_REQUEST, 1, 0) + body)
        reply = sock.recv(65536)
    finally:
        sock.close()
    size, kind = struct.unpack_from("=IH", reply)
    assert kind == RTM_NEWLINK, f"no link {ifname} in {ns}"
    attrs, pos = {}, 32
    while pos + 4 <= size:
        alen, atype = struct.unpack_from("=HH", reply, pos)
        attrs[atype & 0x3FFF] = reply[pos + 4:pos + alen]
        pos += (alen + 3) & ~3
    return attrs


def _nla(kind: int, payload: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(payload), kind) + payload + bytes(-(4 + len(payload)) % 4)


def u32(attrs: dict[int, bytes], kind: int) -> int:
    return struct.unpack("=I", attrs[kind])[0]


async def test_ipv4_offload_sizes_and_arp(env: Env, plumber) -> None:
    env.node.veth("ka0", "kb0")
    env.node.ip("addr", "add", "10.57.0.2/24", "dev", "ka0")
    await env.inventory([netdev("dev-k", "ka0")])
    pod = env.pod()
    host_before = netstate.snapshot(env.node.name)
    home = await link_attrs(env.node.name, "ka0")
    assert (u32(home, 63), u32(home, 64)) == (65536, 65536)
    cfg = NetworkConfig(interface=InterfaceConfig(
        name="net1", gsoIPv4MaxSize=32000, groIPv4MaxSize=30000, arpIgnore=2, arpAnnounce=1))
    claim, pod_uid = uid(), uid("pod")
    assert (await env.prepare(claim, [("dev-k", cfg)], [pod_uid])).error == ""
    rep = await env.attach(pod_uid, pod)
    assert rep.error == "", rep.error
    got = await link_attrs(pod.name, "net1")
    assert (u32(got, 63), u32(got, 64)) == (32000, 30000)
    assert sysctl(pod.name, "net.ipv4.conf.net1.arp_ignore") == "2"
    assert sysctl(pod.name, "net.ipv4.conf.net1.arp_announce") == "1"
    shown = pod.ip("-d", "link", "show", "net1")
    if "gso_ipv4_max_size" in shown or _iproute2_at_least(6, 3):  # 6.1 does not print it
        assert "gso_ipv4_max_size 32000" in shown and "gro_ipv4_max_size 30000" in shown
    assert (await env.detach(pod_uid)).restored == ["dev-k"]
    netstate.assert_same(env.node.name, host_before)
    back = await link_attrs(env.node.name, "ka0")
    assert (u32(back, 63), u32(back, 64)) == (65536, 65536)


def _iproute2_at_least(major: int, minor: int) -> bool:
    out = subprocess.run(["ip", "-V"], capture_output=True, text=True).stdout
    m = re.search(r"iproute2-(\d+)\.(\d+)", out)
    return bool(m) and (int(m[1]), int(m[2])) >= (major, minor)  # type: ignore[index]
