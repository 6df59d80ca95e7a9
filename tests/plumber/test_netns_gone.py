"""A pod netns deleted while its devices are in it: virtual devices die with it and
are recorded as gone; the host keeps everything else."""

from __future__ import annotations

import anyio
import pytest

from schemas.netconfig import InterfaceConfig, NetworkConfig
from services.plumber.model import GONE
from services.plumber.reconcile import sweep_once
from tests.plumber import netstate
from tests.plumber.conftest import Env, netdev, uid

pytestmark = pytest.mark.anyio


def macvlan_device(env: Env) -> None:
    env.node.veth("ga0", "gb0")
    env.node.ip("link", "add", "gm0", "link", "ga0", "type", "macvlan", "mode", "bridge")
    env.node.ip("addr", "add", "10.70.0.2/24", "dev", "gm0")
    env.node.ip("link", "set", "gm0", "up")


async def test_macvlan_dies_with_pod_netns(env: Env, plumber) -> None:
    macvlan_device(env)
    await env.inventory([netdev("dev-g", "gm0", type="macvlan")])
    before = netstate.snapshot(env.node.name)
    pod = env.pod()
    claim, pod_uid = uid(), uid("pod")
    assert (await env.prepare(claim, [("dev-g", None)], [pod_uid])).error == ""
    assert (await env.attach(pod_uid, pod)).error == ""
    pod.delete()
    rep = await env.detach(pod_uid)
    assert rep.error == "" and rep.restored == []
    [att] = plumber.store.attachments()
    assert att.phase == GONE and att.reason == (
        "detach: the pod's network namespace was deleted and virtual device \"gm0\" with it")
    # the lower device and everything else of the host are untouched; only gm0 is gone
    expected = netstate.snapshot(env.node.name)
    for part in ("links", "addresses", "sysctls"):
        before[part].pop("gm0")
    before["routes"] = [r for r in before["routes"] if '"gm0"' not in r]
    assert expected == before, netstate.diff(before, expected)
    assert (await env.detach(pod_uid)).error == ""  # idempotent
    again = await env.attach(pod_uid, env.pod())
    assert "destroyed with an earlier pod network namespace" in again.error
    assert (await env.unprepare(claim)).error == ""
    assert plumber.store.attachments() == [] and plumber.store.claims() == []


async def test_veth_dies_with_pod_netns(env: Env, plumber) -> None:
    """Deleting one end of a veth deletes its peer too: both are gone afterwards."""
    env.node.veth("va9", "vb9")
    await env.inventory([netdev("dev-v", "va9")])
    pod = env.pod()
    claim, pod_uid = uid(), uid("pod")
    cfg = NetworkConfig(interface=InterfaceConfig(name="eth1", addresses=["10.71.0.2/24"]))
    assert (await env.prepare(claim, [("dev-v", cfg)], [pod_uid])).error == ""
    assert (await env.attach(pod_uid, pod)).error == ""
    pod.delete()
    rep = await env.detach(pod_uid)
    assert rep.error == "" and rep.restored == []
    assert plumber.store.attachments()[0].phase == GONE
    # the kernel cleans a deleted netns up asynchronously; the peer goes a moment later
    with anyio.fail_after(5):
        while "vb9" in netstate.links(env.node.name):
            await anyio.sleep(0.02)
    assert not {"va9", "eth1"} & netstate.links(env.node.name).keys()
    assert (await env.unprepare(claim)).error == ""


async def test_sweeper_notices_a_vanished_netns(env: Env) -> None:
    macvlan_device(env)
    async with env.running(sweep_interval=0.05) as pl:
        await env.inventory([netdev("dev-g", "gm0", type="macvlan")])
        pod = env.pod()
        claim, pod_uid = uid(), uid("pod")
        assert (await env.prepare(claim, [("dev-g", None)], [pod_uid])).error == ""
        assert (await env.attach(pod_uid, pod)).error == ""
        pod.delete()
        with anyio.fail_after(5):
            while [a.phase for a in pl.store.attachments()] != [GONE]:
                await anyio.sleep(0.02)


async def test_the_sweeper_says_once_what_happened(env: Env, plumber) -> None:
    macvlan_device(env)
    await env.inventory([netdev("dev-g", "gm0", type="macvlan")])
    claim, pod_uid = uid(), uid("pod")
    pod = env.pod()
    assert (await env.prepare(claim, [("dev-g", None)], [pod_uid])).error == ""
    assert (await env.attach(pod_uid, pod)).error == ""
    pod.delete()
    assert await sweep_once(plumber.attacher) == 1
    [att] = plumber.store.attachments()
    message = "the pod's network namespace was deleted and virtual device \"gm0\" with it"
    assert att.phase == GONE and att.reason == message
    plan = plumber.store.claim(claim)
    [device] = plumber.notifier.status_of(plan).devices
    assert device.conditions[0].reason == "DeviceGone"
    assert device.conditions[0].message == message
    assert (await env.unprepare(claim)).error == ""
