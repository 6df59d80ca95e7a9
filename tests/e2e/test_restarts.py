"""End to end: devices in pods never leave the ResourceSlice, whatever restarts.

Eight devices go into eight pods through the whole agent; then each service, the
bus and the whole agent are stopped (SIGTERM) and killed (SIGKILL) in turn, and
everything at once, while the slice files are read every 50 ms. Every sample must
hold all eight devices with exactly the attributes they had before they were
claimed (DRANET's "allocated device in ResourceSlice remains unchanged")."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from kndpeers import kubelet
from kndpeers.nri_runtime import FakeRuntime, pod
from tests.e2e.agent import Agent
from tests.e2e.test_claims import Node as ClaimsNode
from tests.helpers.netns import NetNS

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

NODE = "e2e-node"
DEVICES = [f"rs{i}" for i in range(8)]
SERVICES = ("discovery", "publisher", "plumber", "kubelet-gateway", "nats-server")


class Sampler:
    """Reads the slice files every 50 ms and records every departure from ``want``."""

    def __init__(self, agent: Agent, want: dict[str, dict]) -> None:
        self.agent, self.want = agent, want
        self.samples = 0
        self.problems: list[str] = []

    async def run(self) -> None:
        while True:
            devices = self.agent.devices()
            self.samples += 1
            for name, before in self.want.items():
                now = devices.get(name)
                if now is None:
                    self.problems.append(f"sample {self.samples}: {name} missing")
                elif now != before:
                    self.problems.append(f"sample {self.samples}: {name} is {now}, "
                                         f"was {before}")
            await anyio.sleep(0.05)


class Node(ClaimsNode):
    def __init__(self, agent: Agent, runtime: FakeRuntime, ns: NetNS) -> None:
        super().__init__(agent, runtime, ns)
        self.probes = 0
        self.conn = None
        """The runtime's newest plugin connection."""

    async def shake_hands(self) -> None:
        """Wait for the gateway to register with the runtime again, and shake hands."""
        self.conn = await self.runtime.next_plugin(wait=30)
        await self.conn.handshake()

    async def recovered(self, pids: dict[str, int], what: str, sampler: Sampler) -> None:
        """Every service runs again (new pids where they were stopped), and the agent
        works: a new link is published and, once deleted, dropped, which needs the
        plumber's word. No sample may have lacked or changed a claimed device."""
        try:
            await self._recovered(pids)
        except AssertionError:
            log = self.agent.log.read_text(errors="replace").splitlines()
            raise AssertionError(f"not recovered after {what}; agent log:\n"
                                 + "\n".join(log[-60:])) from None
        finally:
            assert not sampler.problems, f"after {what}:\n" + "\n".join(sampler.problems[:10])

    async def _recovered(self, pids: dict[str, int]) -> None:
        await self.until(lambda: all(
            (q := self.agent.children().get(name)) and q != pids.get(name)
            for name in pids), 30, what="services restarted")
        self.probes += 1
        name = f"pr{self.probes}"
        self.ns.veth(name, f"{name}p")
        await self.until(lambda: name in self.agent.devices(), 30, what=f"{name} published")
        self.ns.ip("link", "del", name)
        await self.until(lambda: name not in self.agent.devices(), 30, what=f"{name} dropped")


@pytest.fixture
async def node(node_ns: NetNS, short_dir: Path) -> AsyncIterator[Node]:
    agent = Agent(node_ns, short_dir / "state", node=NODE)
    agent.nri_socket.parent.mkdir(parents=True, exist_ok=True)
    async with FakeRuntime(agent.nri_socket) as runtime:
        agent.start()
        try:
            n = Node(agent, runtime, node_ns)
            await n.shake_hands()
            yield n
        finally:
            agent.stop()


async def test_devices_in_pods_stay_published_unchanged_across_every_restart(
        node: Node, node_ns: NetNS):
    wire = NetNS("knd-wire")  # the veths' far ends, as a NIC's switch would be
    pods = [NetNS("knd-pod") for _ in DEVICES]
    try:
        for i, dev in enumerate(DEVICES):
            node_ns.ip("link", "add", dev, "type", "veth", "peer", "name", f"{dev}w",
                       "netns", wire.name)
            node_ns.ip("addr", "add", f"10.70.{i}.1/24", "dev", dev)
        want = await node.until(lambda: (d := node.agent.devices()) and all(
            "knd.dev/ipv4" in d.get(x, {}).get("attributes", {}) for x in DEVICES) and {
            x: d[x] for x in DEVICES}, what="devices with their addresses")
        sandboxes = []
        for i, dev in enumerate(DEVICES):
            uid = str(uuid.uuid4())
            claim = await node.api.create_claim(kubelet.make_claim(
                f"c{i}", results=[kubelet.result("nic", dev, pool=NODE)],
                config=[kubelet.opaque({"interface": {"name": "net1"}})],
                pods=[(f"p{i}", uid)]))
            resp = await kubelet.prepare(node.dra, "v1", [kubelet.ref(claim)])
            assert not resp.claims[claim["metadata"]["uid"]].error
            sandboxes.append((claim, pod(uid=uid, name=f"p{i}",
                                         netns=f"/var/run/netns/{pods[i].name}")))
        for _, sb in sandboxes:
            await node.conn.run_pod_sandbox(sb)
        for i, p in enumerate(pods):
            assert f"10.70.{i}.1/24" in p.ip("-o", "addr", "show", "dev", "net1")

        sampler = Sampler(node.agent, want)
        async with anyio.create_task_group() as tg:
            tg.start_soon(sampler.run)
            for name in SERVICES:
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    pid = node.agent.children()[name]
                    os.kill(pid, sig)
                    await node.recovered({name: pid}, f"{sig.name} of {name}", sampler)
                    if name == "kubelet-gateway":
                        await node.shake_hands()
            # everything at once, the supervisor staying
            pids = dict(node.agent.children())
            for pid in pids.values():
                os.kill(pid, signal.SIGKILL)
            await node.recovered(pids, "SIGKILL of every service and the bus", sampler)
            await node.shake_hands()
            # the whole agent: stopped, then killed (its children die with it)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                pids = dict(node.agent.children())
                assert node.agent.proc is not None
                node.agent.proc.send_signal(sig)
                node.agent.proc.wait(10)
                await node.until(lambda p=pids: not any(
                    Path(f"/proc/{q}").exists() for q in p.values()), what="children gone")
                node.agent.start()
                await node.recovered(pids, f"{sig.name} of knd up", sampler)
                await node.shake_hands()
            tg.cancel_scope.cancel()
        assert sampler.samples > 100
        assert not sampler.problems, "\n".join(sampler.problems[:20])

        # and the pods still work, then give every device back as it was
        for i, p in enumerate(pods):
            assert f"10.70.{i}.1/24" in p.ip("-o", "addr", "show", "dev", "net1")
        for claim, sb in sandboxes:
            await node.conn.stop_pod_sandbox(sb)
            await node.conn.remove_pod_sandbox(sb)
            resp = await kubelet.unprepare(node.dra, "v1", [kubelet.ref(claim)])
            assert not resp.claims[claim["metadata"]["uid"]].error
        for i, dev in enumerate(DEVICES):
            assert f"10.70.{i}.1/24" in node_ns.ip("-o", "addr", "show", "dev", dev)
    finally:
        for p in pods:
            p.delete()
        wire.delete()

