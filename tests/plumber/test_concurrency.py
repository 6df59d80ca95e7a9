"""Several devices and pods at once, and kubelet retries."""

from __future__ import annotations

import errno
import os

import anyio
import anyio.lowlevel
import pytest

from schemas.netconfig import InterfaceConfig, NetworkConfig
from tests.helpers.wait import until
from tests.plumber import netstate
from tests.plumber.conftest import Env, netdev, uid
from tests.plumber.test_attach import ping

pytestmark = pytest.mark.anyio


async def test_two_devices_in_one_pod(env: Env, plumber) -> None:
    for i in (0, 1):
        env.node.veth(f"ta{i}", f"tb{i}")
        env.node.ip("addr", "add", f"10.20.{i}.1/24", "dev", f"tb{i}")
    await env.inventory([netdev("dev-t0", "ta0"), netdev("dev-t1", "ta1")])
    pod = env.pod()
    before = netstate.snapshot(env.node.name)
    claim, pod_uid = uid(), uid("pod")
    configs = [NetworkConfig(interface=InterfaceConfig(name=f"net{i}",
                                                       addresses=[f"10.20.{i}.2/24"]))
               for i in (0, 1)]
    rep = await env.prepare(claim, [("dev-t0", configs[0]), ("dev-t1", configs[1])], [pod_uid])
    assert rep.error == ""
    att = await env.attach(pod_uid, pod)
    assert att.error == "", att.error
    assert sorted(i.interface for i in att.interfaces) == ["net0", "net1"]
    assert ping(pod.name, "10.20.0.1") and ping(pod.name, "10.20.1.1")
    again = await env.attach(pod_uid, pod)  # the runtime retrying the hook: same answer
    assert again.error == "" and sorted(i.interface for i in again.interfaces) == ["net0",
                                                                                   "net1"]
    det = await env.detach(pod_uid)
    assert det.restored == ["dev-t0", "dev-t1"]
    netstate.assert_same(env.node.name, before)


async def test_two_devices_same_pod_name_rejected(env: Env, plumber) -> None:
    env.node.veth("da0", "db0")
    env.node.veth("da1", "db1")
    await env.inventory([netdev("dev-d0", "da0"), netdev("dev-d1", "da1")])
    same = NetworkConfig(interface=InterfaceConfig(name="net0"))
    rep = await env.prepare(uid(), [("dev-d0", same), ("dev-d1", same)], [uid("pod")])
    assert 'devices[1].config.interface.name: "net0" is also the name of devices[0]' in rep.error


async def test_sixteen_pods_at_once(env: Env, plumber) -> None:
    n = 16
    env.node.batch([f"link add ca{i} type veth peer name cb{i}" for i in range(n)]
                   + [f"link set cb{i} up" for i in range(n)]
                   + [f"addr add 10.30.{i}.1/24 dev cb{i}" for i in range(n)])
    await env.inventory([netdev(f"dev-c{i}", f"ca{i}") for i in range(n)])
    before = netstate.snapshot(env.node.name)
    pods = [env.pod() for _ in range(n)]
    claims = [uid() for _ in range(n)]
    pod_uids = [uid("pod") for _ in range(n)]
    for i in range(n):
        cfg = NetworkConfig(interface=InterfaceConfig(name="eth1",
                                                      addresses=[f"10.30.{i}.2/24"]))
        assert (await env.prepare(claims[i], [(f"dev-c{i}", cfg)], [pod_uids[i]])).error == ""
    replies: dict[int, object] = {}

    async def attach(i: int) -> None:
        replies[i] = await env.attach(pod_uids[i], pods[i])

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(attach, i)
    assert all(r.error == "" for r in replies.values()), [r.error for r in replies.values()]
    for i in range(n):
        assert "eth1" in netstate.links(pods[i].name)
    assert ping(pods[3].name, "10.30.3.1") and ping(pods[15].name, "10.30.15.1")
    latencies = sorted(r.latency_ms for r in replies.values())
    print(f"16 concurrent attaches: p50 {latencies[n // 2]:.1f} ms, max {latencies[-1]:.1f} ms")

    async def detach(i: int) -> None:
        rep = await env.detach(pod_uids[i])
        assert rep.restored == [f"dev-c{i}"], rep

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(detach, i)
    netstate.assert_same(env.node.name, before)


async def test_prepare_is_idempotent(env: Env, plumber) -> None:
    env.node.veth("ia0", "ib0")
    await env.inventory([netdev("dev-i", "ia0")])
    claim, pod_uid = uid(), uid("pod")
    first = await env.prepare(claim, [("dev-i", None)], [pod_uid])
    second = await env.prepare(claim, [("dev-i", None)], [pod_uid])
    assert first.error == "" and first == second
    assert len(plumber.store.claims()) == 1
    assert len(list(env.cdi_root.iterdir())) == 1
    # a retry that adds a pod (a shared claim reserved for one more pod) records it
    other = uid("pod")
    third = await env.prepare(claim, [("dev-i", None)], [pod_uid, other])
    assert third == first
    assert [x.uid for x in plumber.store.claim(claim).pods] == [pod_uid, other]


async def test_device_cannot_be_in_two_pods(env: Env, plumber) -> None:
    env.node.veth("sa0", "sb0")
    await env.inventory([netdev("dev-s", "sa0")])
    claim, a, b = uid(), uid("pod"), uid("pod")
    assert (await env.prepare(claim, [("dev-s", None)], [a, b])).error == ""
    assert (await env.attach(a, env.pod())).error == ""
    rep = await env.attach(b, env.pod())
    assert f"attached to pod {a}" in rep.error
    assert (await env.detach(a)).restored == ["dev-s"]


async def test_moves_into_pods_go_one_at_a_time_in_the_order_asked(node_ns) -> None:
    """``Host.move_in``: every move through one socket on its own thread, back to back,
    finished in the order asked; a refused move names the kernel's reason and leaves
    the mover working."""
    from services.plumber import nsfs
    from services.plumber.netops import KernelError
    from services.plumber.restore import Host
    from tests.helpers.netns import NetNS

    names = [f"mo{i}" for i in range(8)]
    for name in names:
        node_ns.ip("link", "add", name, "type", "veth", "peer", "name", f"{name}p")
    index = {line.split(":")[1].strip().split("@")[0]: int(line.split(":")[0])
             for line in node_ns.ip("-o", "link", "show").splitlines()}
    pod = NetNS("knd-pod")
    host = Host.open(node_ns.name)
    fd = nsfs.open_netns(f"/var/run/netns/{pod.name}")
    done: list[str] = []
    try:
        async def move(name: str) -> None:
            await host.move_in(index[name], fd, name=f"in-{name}", mtu=1400)
            done.append(name)

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(move, name)
                await anyio.lowlevel.checkpoint()  # each asks before the next starts
        assert done == names
        inside = pod.ip("-o", "link", "show")
        assert all(f"in-{name}@" in inside and "mtu 1400" in inside for name in names)
        with pytest.raises(KernelError) as refused:  # no such interface (any more)
            await host.move_in(index["mo0"], fd, name="again")
        assert refused.value.step == "move" and refused.value.code == errno.ENODEV
        await host.move_in(index["mo1p"], fd, name="in-mo1p")  # the mover still works
        assert "in-mo1p@" in pod.ip("-o", "link", "show")
    finally:
        os.close(fd)
        host.close()
        pod.delete()


async def test_together_unwraps_one_error_and_closes_what_it_opened(node_ns) -> None:
    """The attach opens its host and pod sockets at once: when one fails, the caller
    sees that error itself (not a group) and the other socket is closed."""
    from services.plumber import nsfs
    from services.plumber.attach import _together
    from services.plumber.netops import KernelError, Rtnl

    fd = nsfs.open_netns(f"/var/run/netns/{node_ns.name}")
    opened: list[Rtnl] = []

    async def refused() -> None:
        await until(lambda: opened, 5, "the other socket")  # fails after it is open
        raise KernelError("links", errno.EPERM, "no")

    async def open_one() -> Rtnl:
        rt = await Rtnl.open(fd)
        opened.append(rt)
        return rt

    try:
        with pytest.raises(KernelError):
            await _together(open_one(), refused())
        [rt] = opened
        assert not rt._loop._thread.is_alive()  # closed: its thread has ended
        async def value(v: object) -> object:
            await anyio.lowlevel.checkpoint()
            return v

        assert await _together(value("x"), value(2)) == ("x", 2)
    finally:
        os.close(fd)
