"""Crash safety: whatever point the plumber dies at, its next start leaves every
device fully configured in its pod or back in the host as it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from schemas import plumber as p
from schemas.netconfig import InterfaceConfig, NetworkConfig, RouteConfig
from services.plumber.attach import Attacher
from services.plumber.checkpoint import Checkpoint
from services.plumber.model import ATTACHED, ATTACHING
from services.plumber.netops import Rtnl
from services.plumber.rdma import Rdma
from services.plumber.restore import Host, Restorer
from tests.plumber import netstate
from tests.plumber.conftest import NODE, Env, netdev, uid

pytestmark = pytest.mark.anyio

CFG = NetworkConfig(
    interface=InterfaceConfig(name="net1", addresses=["10.60.0.2/24"], mtu=1400,
                              hardwareAddr="02:00:00:00:60:02"),
    routes=[RouteConfig(destination="10.61.0.0/16", gateway="10.60.0.1")])


class NoNotify:
    def attached(self, *a) -> None: ...
    def detached(self, *a) -> None: ...
    def failed(self, *a) -> None: ...
    def claims_changed(self, *a, **k) -> None: ...


def host_device(env: Env) -> None:
    env.node.veth("ra0", "rb0")
    env.node.ip("addr", "add", "10.60.0.1/24", "dev", "rb0")
    env.node.ip("addr", "add", "192.0.2.60/24", "dev", "ra0")
    env.node.ip("route", "add", "198.51.100.0/24", "via", "192.0.2.1", "dev", "ra0",
                "onlink")  # it moves into the pod too, where no address reaches 192.0.2.1


async def half_attach(env: Env, pod_uid: str, pod_ns: str, *, move: bool) -> None:
    """The plumber's own attach steps, stopped where a crash would stop them:
    after the checkpoint record, and optionally after the move and one address."""
    store = Checkpoint(env.common.state_dir / "plumber" / "checkpoint.db")
    host = Host.open(env.node.name)
    try:
        attacher = Attacher(store, host, Restorer(store, host, Rdma("/x", "/x", "shared"),
                                                  NoNotify()), Rdma("/x", "/x", "shared"))
        plan = store.claims_of_pod(pod_uid)[0]
        req = p.Attach(pod=p.PodRef(uid=pod_uid), sandbox_id="sb",
                       netns=f"/var/run/netns/{pod_ns}")
        fd = os.open(req.netns, os.O_RDONLY)
        from services.plumber import nsfs
        async with await host.session() as hr, await Rtnl.open(fd) as pod:
            [job] = await attacher._precheck([(plan, plan.devices[0])], req, hr, pod,
                                             nsfs.fd_id(fd))
            store.put_attachment(job.att)
            if move:
                await hr.move(job.att.host.index, fd, name="net1", mtu=1400)
                link = await pod.link(name="net1")
                from services.plumber.podconfig import config_address
                await pod.add_address("x", link.index, config_address("10.60.0.2/24"))
        os.close(fd)
    finally:
        host.close()
        store.close()


@pytest.mark.parametrize("move", [False, True], ids=["before the move", "after the move"])
async def test_crash_mid_attach_rolls_back_on_start(env: Env, move: bool) -> None:
    host_device(env)
    pod = env.pod()
    claim, pod_uid = uid(), uid("pod")
    async with env.running():
        await env.inventory([netdev("dev-r", "ra0")])
        host_before, pod_before = netstate.snapshot(env.node.name), netstate.snapshot(pod.name)
        assert (await env.prepare(claim, [("dev-r", CFG)], [pod_uid])).error == ""
    await half_attach(env, pod_uid, pod.name, move=move)
    assert ("ra0" in netstate.links(env.node.name)) is not move
    async with env.running() as pl:  # a fresh plumber on the same state dir
        assert pl.store.attachments() == []
        netstate.assert_same(env.node.name, host_before)
        assert netstate.snapshot(pod.name) == pod_before
        # and the claim still works
        rep = await env.attach(pod_uid, pod)
        assert rep.error == "", rep.error
        assert (await env.detach(pod_uid)).restored == ["dev-r"]
        netstate.assert_same(env.node.name, host_before)


async def test_restart_keeps_attached_devices(env: Env) -> None:
    host_device(env)
    pod = env.pod()
    claim, pod_uid = uid(), uid("pod")
    host_before = netstate.snapshot(env.node.name)
    async with env.running():
        await env.inventory([netdev("dev-r", "ra0")])
        assert (await env.prepare(claim, [("dev-r", CFG)], [pod_uid])).error == ""
        assert (await env.attach(pod_uid, pod)).error == ""
    in_pod = netstate.snapshot(pod.name)
    async with env.running() as pl:
        assert [a.phase for a in pl.store.attachments()] == [ATTACHED]
        assert netstate.snapshot(pod.name) == in_pod
        again = await env.attach(pod_uid, pod)  # idempotent after a restart too
        assert again.error == "" and again.interfaces[0].interface == "net1"
        assert (await env.detach(pod_uid)).restored == ["dev-r"]
    netstate.assert_same(env.node.name, host_before)


async def test_device_found_in_host_under_its_pod_name(env: Env) -> None:
    """Moved back by someone else while the plumber was down: name and config restored."""
    host_device(env)
    pod = env.pod()
    claim, pod_uid = uid(), uid("pod")
    host_before = netstate.snapshot(env.node.name)
    async with env.running():
        await env.inventory([netdev("dev-r", "ra0")])
        assert (await env.prepare(claim, [("dev-r", CFG)], [pod_uid])).error == ""
        assert (await env.attach(pod_uid, pod)).error == ""
    pod.ip("link", "set", "net1", "netns", env.node.name)
    assert "net1" in netstate.links(env.node.name)
    async with env.running() as pl:
        assert pl.store.attachments() == []
        netstate.assert_same(env.node.name, host_before)


async def test_sigkill_during_attaches(env: Env, bus_state: Path) -> None:
    """``knd plumber`` killed with SIGKILL while attaching six pods; a new plumber
    finds each device either complete in its pod or back in the host."""
    n = 6
    env.node.batch([f"link add ka{i} type veth peer name kb{i}" for i in range(n)]
                   + [f"link set ka{i} up" for i in range(n)]
                   + [f"link set kb{i} up" for i in range(n)]
                   + [f"addr add 10.62.{i}.1/24 dev kb{i}" for i in range(n)]
                   + [f"addr add 192.0.2.{i + 1}/24 dev ka{i}" for i in range(n)])
    env.devices = [netdev(f"dev-k{i}", f"ka{i}") for i in range(n)]
    host_before = netstate.snapshot(env.node.name)
    pods = [env.pod() for _ in range(n)]
    claims, pod_uids = [uid() for _ in range(n)], [uid("pod") for _ in range(n)]
    argv = [sys.executable, "-m", "services.cli", "plumber", "--node", NODE,
            "--state-dir", str(env.common.state_dir),
            "--bus-creds", str(bus_state / "bus" / "creds.json"),
            "--netns", env.node.name, "--cdi-root", str(env.cdi_root),
            "--sysfs-root", str(env.tmp / "sysfs"), "--dev-root", str(env.tmp / "dev"),
            "--rdma-netns-mode", "shared", "--sweep-interval", "0", "--log-level", "warning"]
    proc = start(argv)
    try:
        with anyio.fail_after(20):
            while True:
                try:
                    rep = await env.prepare(claims[0], [("dev-k0", _cfg(0))], [pod_uids[0]])
                    break
                except Exception:
                    await anyio.sleep(0.1)
        assert rep.error == "", rep.error
        for i in range(1, n):
            assert (await env.prepare(claims[i], [(f"dev-k{i}", _cfg(i))],
                                      [pod_uids[i]])).error == ""

        async def attach(i: int) -> None:
            try:
                await env.attach(pod_uids[i], pods[i])
            except Exception:
                return  # killed before it answered

        host = Host.open(env.node.name)
        try:
            async with await host.session() as rtnl, anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(attach, i)
                # kill as soon as the first device has left the host: it is half way
                # through its pod config, and the others have not moved yet (RTNL
                # serialises the moves)
                with anyio.fail_after(10):
                    while all([await rtnl.link(name=f"ka{i}") for i in range(n)]):
                        await anyio.lowlevel.checkpoint()
                proc.send_signal(signal.SIGKILL)
                moved = [i for i in range(n) if not await rtnl.link(name=f"ka{i}")]
                await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
        finally:
            host.close()
    finally:
        proc.kill()
        proc.wait()
    async with env.running() as pl:
        phases = {}
        for i in range(n):
            att = pl.store.attachment(claims[i], f"dev-k{i}")
            phases[i] = att.phase if att else None
            if att is not None:
                assert att.phase == ATTACHED
                links = netstate.links(pods[i].name)
                assert links["net1"]["mtu"] == 1400
                assert ("inet", f"10.62.{i}.2", 24, "global", f"10.62.{i}.255",
                        "net1") in netstate.addresses(pods[i].name)["net1"]
            else:
                assert f"ka{i}" in netstate.links(env.node.name)
                assert netstate.links(pods[i].name).keys() == {"lo"}
        print("moved when killed:", moved, "after restart:", phases)
        assert moved
        assert ATTACHING not in phases.values()
        for i in range(n):
            assert (await env.detach(pod_uids[i])).error == ""
        netstate.assert_same(env.node.name, host_before)


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=Path(__file__).parents[2])


def _cfg(i: int) -> NetworkConfig:
    return NetworkConfig(interface=InterfaceConfig(name="net1", addresses=[f"10.62.{i}.2/24"],
                                                   mtu=1400),
                         routes=[RouteConfig(destination="10.63.0.0/16",
                                             gateway=f"10.62.{i}.1")])
