"""ethtool features by ``ethtool -K``'s names: the same bits as ethtool itself changes,
checked against the device at prepare, applied in the pod, given back at home."""

from __future__ import annotations

import subprocess

import pytest

from schemas.netconfig import EthtoolConfig, InterfaceConfig, NetworkConfig
from services.plumber import devconf, features, nsfs
from tests.helpers.netns import NetNS
from tests.plumber import netstate
from tests.plumber.conftest import Env, netdev, uid

pytestmark = pytest.mark.anyio


def ethtool_k(ns: str, ifname: str) -> dict[str, str]:
    """``ethtool -k`` as {name: "on" | "off" | "on [fixed]" ...}, legacy names included."""
    out = subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-k", ifname],
                         capture_output=True, text=True, check=True).stdout
    rows = [line.strip().split(": ", 1) for line in out.splitlines()[1:] if ": " in line]
    return {k: v for k, v in rows}


def ethtool_set(ns: str, ifname: str, wanted: dict[str, bool]) -> None:
    """``ethtool -K``; its exit status is not ours to judge (1 when nothing changed)."""
    subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-K", ifname,
                    *[x for n, v in wanted.items() for x in (n, "on" if v else "off")]],
                   capture_output=True, check=False)


async def apply(ns: str, ifname: str, wanted: dict[str, bool]) -> None:
    fd = nsfs.open_netns(f"/var/run/netns/{ns}")
    try:
        await devconf.set_features(fd, ifname, await features.kernel_bits(fd, ifname, wanted))
    finally:
        import os
        os.close(fd)


# (names, value): each as a claim would write it, and as ethtool -K is told
SAME_AS_ETHTOOL = [
    (["tcp-segmentation-offload"], False), (["tso"], False),
    (["tx-checksumming"], False), (["tx"], False), (["tx-checksumming"], True),
    (["scatter-gather"], False), (["sg"], False),
    (["generic-segmentation-offload"], False), (["generic-receive-offload"], True),
    (["rx-vlan-offload"], False), (["txvlan"], False), (["rx-checksumming"], False),
    (["tx-udp_tnl-segmentation"], False), (["rx-gro-list"], True),
    (["scatter-gather", "tcp-segmentation-offload"], True),
]


@pytest.mark.parametrize("names,on", SAME_AS_ETHTOOL,
                         ids=["+".join(n) + ("=on" if v else "=off") for n, v in SAME_AS_ETHTOOL])
async def test_names_change_what_ethtool_changes(names: list[str], on: bool) -> None:
    """Two fresh veths; ``ethtool -K`` on one, knd on the other: ``ethtool -k`` then shows
    the same on both, the legacy lines and every kernel bit under them."""
    ns = NetNS(prefix="knd-eth")
    try:
        ns.veth("ea", "eb")
        ns.veth("ka", "kb")
        if on:  # start from "off" so that turning on changes something
            for dev in ("ea", "ka"):
                ethtool_set(ns.name, dev, dict.fromkeys(names, False))
        before = ethtool_k(ns.name, "ka")
        ethtool_set(ns.name, "ea", dict.fromkeys(names, on))
        await apply(ns.name, "ka", dict.fromkeys(names, on))
        theirs, ours = ethtool_k(ns.name, "ea"), ethtool_k(ns.name, "ka")
        assert ours == theirs
        assert ours != before  # something changed: the comparison says something
    finally:
        ns.delete()


@pytest.mark.parametrize("name,on,why", [
    ("no-such-feature", True, "has no such feature"),
    ("large-receive-offload", True, "fixed to off"),  # veth has no LRO
    ("lro", True, "fixed to off"),
    ("tx-checksum-ipv4", True, "fixed to off"),
])
async def test_prepare_refuses_what_the_device_cannot_do(env: Env, plumber, name: str,
                                                         on: bool, why: str) -> None:
    env.node.veth("fa0", "fb0")
    await env.inventory([netdev("dev-f", "fa0")])
    host_before = netstate.snapshot(env.node.name)
    features_before = ethtool_k(env.node.name, "fa0")
    cfg = NetworkConfig(ethtool=EthtoolConfig(features={"rx-gro-list": True, name: on}))
    claim, pod_uid = uid(), uid("pod")
    rep = await env.prepare(claim, [("dev-f", cfg)], [pod_uid])
    assert f"devices[0].config.ethtool.features[{name}]: " in rep.error, rep.error
    assert why in rep.error and "rx-gro-list" not in rep.error, rep.error
    assert rep.devices == [] and plumber.store.claim(claim) is None
    netstate.assert_same(env.node.name, host_before)
    assert ethtool_k(env.node.name, "fa0") == features_before


async def test_fixed_feature_already_as_asked_is_accepted(env: Env, plumber) -> None:
    """``ethtool -K <veth> lro off`` succeeds (there is nothing to change): so does a claim."""
    env.node.veth("ga0", "gb0")
    await env.inventory([netdev("dev-g", "ga0")])
    cfg = NetworkConfig(ethtool=EthtoolConfig(features={"large-receive-offload": False}))
    rep = await env.prepare(uid(), [("dev-g", cfg)], [uid("pod")])
    assert rep.error == ""


async def test_attach_applies_legacy_names_and_restores_every_bit(env: Env, plumber) -> None:
    env.node.veth("ha0", "hb0")
    env.node.ip("addr", "add", "10.56.0.2/24", "dev", "ha0")
    await env.inventory([netdev("dev-h", "ha0")])
    pod = env.pod()
    host_before = netstate.snapshot(env.node.name)
    features_before = ethtool_k(env.node.name, "ha0")
    assert features_before["tcp-segmentation-offload"] == "on"
    assert features_before["generic-receive-offload"] == "off"
    cfg = NetworkConfig(
        interface=InterfaceConfig(name="net1"),
        ethtool=EthtoolConfig(features={"tcp-segmentation-offload": False,
                                        "generic-receive-offload": True,
                                        "tx-checksumming": False, "rxvlan": False}))
    claim, pod_uid = uid(), uid("pod")
    assert (await env.prepare(claim, [("dev-h", cfg)], [pod_uid])).error == ""
    rep = await env.attach(pod_uid, pod)
    assert rep.error == "", rep.error
    got = ethtool_k(pod.name, "net1")
    assert got["tcp-segmentation-offload"] == "off"
    assert got["tx-tcp-segmentation"] == got["tx-tcp6-segmentation"] == "off"
    assert got["generic-receive-offload"] == "on"
    assert got["tx-checksumming"] == "off" and got["tx-checksum-ip-generic"] == "off"
    assert got["rx-vlan-offload"] == "off"
    assert (await env.detach(pod_uid)).restored == ["dev-h"]
    netstate.assert_same(env.node.name, host_before)
    # every bit, the ones the kernel turned off along with tx-checksumming too
    assert ethtool_k(env.node.name, "ha0") == features_before
