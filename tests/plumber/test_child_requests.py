"""The request that makes a child carries what iproute2's does for the same child.

This machine's kernel has no ipvlan (CONFIG_IPVLAN), so an ipvlan child cannot be made
here; what can be checked is that knd asks the kernel for one exactly as ``ip link add
... type ipvlan mode M FLAG`` does: both requests are caught on their way (strace) and
decoded, and every attribute but the netns fd's number must agree. The kernel refuses
both alike. macvlan, which this kernel has, is checked the same way.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from services.plumber import children  # noqa: F401  (teaches pyroute2 IFLA_IPVLAN_FLAGS)
from tests.helpers.netns import NetNS

ROOT = Path(__file__).resolve().parents[2]
RTM_NEWLINK = 16

OURS = """
import sys, anyio
from schemas.netconfig import InterfaceConfig, IPVlanConfig, MacvlanConfig, NetworkConfig
from schemas.netconfig import defaulted
from services.plumber import children, nsfs
from services.plumber.netops import Rtnl
kind, mode, flag, host_ns, pod_ns = sys.argv[1:]
block = ({"ipvlan": IPVlanConfig(mode=mode, flag=flag)} if kind == "ipvlan"
         else {"macvlan": MacvlanConfig(mode=mode)})
cfg = defaulted(NetworkConfig(interface=InterfaceConfig(type=kind.upper(), **block)))
async def main():
    pod = nsfs.open_netns(f"/var/run/netns/{pod_ns}")
    async with await Rtnl.open(nsfs.open_netns(f"/var/run/netns/{host_ns}")) as host:
        p0 = await host.link(name="p0")
        try:
            await host.add_link("add", ifname="knd0", link=p0.index, net_ns_fd=pod,
                                **children._link_kwargs(cfg, kind))
        except Exception as exc:
            print(exc)
anyio.run(main)
"""


def newlink_sent(argv: list[str]) -> bytes:
    """The RTM_NEWLINK request ``argv`` sent (one, with NLM_F_CREATE), from strace's dump."""
    res = subprocess.run(["strace", "-f", "-qq", "-e", "trace=sendmsg,sendto", "-e",
                          "write=all", *argv], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    found: list[bytes] = []
    current = bytearray()
    for line in res.stderr.splitlines():
        m = re.match(r"\s*\|\s*([0-9a-f]{5})\s+((?:[0-9a-f]{2}\s+){1,16})", line)
        if m:
            if m.group(1) == "00000" and current:
                found.append(bytes(current))
                current = bytearray()
            current += bytes.fromhex(m.group(2).replace(" ", ""))
    if current:
        found.append(bytes(current))
    made = [b for b in found if int.from_bytes(b[4:6], "little") == RTM_NEWLINK
            and int.from_bytes(b[6:8], "little") & 0x400]
    assert len(made) == 1, (res.stdout, res.stderr[-2000:])
    return made[0]


def attrs(raw: bytes) -> dict:
    """The request's meaning: header flags, link fields and attributes by name; the
    netns fd's number is a process's own."""
    msg = ifinfmsg(raw)
    msg.decode()
    out: dict = {"flags": msg["header"]["flags"], "index": msg["index"],
                 "ifi_flags": msg["flags"], "change": msg["change"]}
    for name, value in msg["attrs"]:
        if name == "IFLA_NET_NS_FD":
            out[name] = "fd"
        elif name == "IFLA_LINKINFO":
            info = dict(value["attrs"])
            data = info.get("IFLA_INFO_DATA")
            out[name] = {"kind": info["IFLA_INFO_KIND"],
                         "data": dict(data["attrs"]) if data is not None else None}
        else:
            out[name] = value
    return out


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
@pytest.mark.parametrize(("kind", "mode", "flag", "ip_args"), [
    ("ipvlan", "L2", "Bridge", ["mode", "l2", "bridge"]),
    ("ipvlan", "L3", "Private", ["mode", "l3", "private"]),
    ("ipvlan", "L3S", "VEPA", ["mode", "l3s", "vepa"]),
    ("macvlan", "Bridge", "", ["mode", "bridge"]),
    ("macvlan", "VEPA", "", ["mode", "vepa"]),
])
def test_a_child_is_asked_for_as_iproute2_asks(kind, mode, flag, ip_args) -> None:
    host, pod = NetNS("knd-rq"), NetNS("knd-rq")
    try:
        host.ip("link", "add", "p0", "type", "veth", "peer", "name", "p1")
        theirs = newlink_sent(["ip", "-n", host.name, "link", "add", "knd0", "link", "p0",
                               "netns", pod.name, "type", kind, *ip_args])
        pod.ip("link", "del", "knd0", check=False)  # macvlan: the kernel made it
        ours = newlink_sent([sys.executable, "-c", OURS, kind, mode, flag or "-",
                             host.name, pod.name])
        assert attrs(ours) == attrs(theirs)
        assert attrs(ours)["IFLA_LINKINFO"]["kind"] == kind
    finally:
        host.delete()
        pod.delete()
