"""End to end: a claim through the whole agent, with kubelet and the runtime played
over the real sockets, in a throwaway node netns and pod netns."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from kndpeers import kubelet
from kndpeers.nri_runtime import FakeRuntime, PluginConn, pod
from services.common.api.files import FileApi
from tests.e2e.agent import Agent
from tests.helpers.netns import NetNS
from tests.helpers.wait import until

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

NODE = "e2e-node"


def addrs(ns: NetNS, dev: str) -> set[str]:
    info = json.loads(ns.ip("-j", "addr", "show", "dev", dev))[0]
    return {f"{a['local']}/{a['prefixlen']}" for a in info["addr_info"] if a["scope"] == "global"}


def link(ns: NetNS, dev: str) -> dict:
    return json.loads(ns.ip("-j", "link", "show", "dev", dev))[0]


class Node:
    def __init__(self, agent: Agent, runtime: FakeRuntime, ns: NetNS) -> None:
        self.agent, self.runtime, self.ns = agent, runtime, ns
        self.api = FileApi(agent.state_dir)
        self.dra = f"unix://{agent.kubelet_root}/plugins/knd.dev/dra.sock"
        self.plugin: PluginConn | None = None

    async def until(self, probe, seconds: float = 20.0, what: str = ""):
        return await until(probe, seconds, what)

    async def claim(self, name: str, device: str, params: dict, pod_uid: str) -> dict:
        await self.until(lambda: device in self.agent.devices())
        return await self.api.create_claim(kubelet.make_claim(
            name, results=[kubelet.result("nic", device, pool=NODE)],
            config=[kubelet.opaque(params)], pods=[("p", pod_uid)]))


@pytest.fixture
async def node(node_ns: NetNS, short_dir: Path) -> AsyncIterator[Node]:
    agent = Agent(node_ns, short_dir / "state", node=NODE)
    agent.nri_socket.parent.mkdir(parents=True, exist_ok=True)
    async with FakeRuntime(agent.nri_socket) as runtime:
        agent.start()
        try:
            n = Node(agent, runtime, node_ns)
            n.plugin = await runtime.next_plugin(wait=30)
            await n.plugin.handshake()
            yield n
        finally:
            code = agent.stop()
            assert code == 0, agent.log.read_text()


async def test_claim_attach_ping_detach_restores(node: Node, node_ns: NetNS):
    node_ns.veth("c0", "c0p")
    node_ns.ip("addr", "add", "10.61.0.5/24", "dev", "c0")
    node_ns.ip("addr", "add", "10.60.0.1/24", "dev", "c0p")
    before = link(node_ns, "c0")
    pod_ns = NetNS("knd-pod")
    try:
        uid = str(uuid.uuid4())
        claim = await node.claim("c", "c0", {
            "interface": {"name": "net1", "addresses": ["10.60.0.2/24"], "mtu": 9000},
            "routes": [{"destination": "10.62.0.0/16", "gateway": "10.60.0.1"}]}, uid)
        for _ in range(2):  # kubelet retries: the same answer, nothing done twice
            resp = await kubelet.prepare(node.dra, "v1", [kubelet.ref(claim)])
            res = resp.claims[claim["metadata"]["uid"]]
            assert not res.error and [d.device_name for d in res.devices] == ["c0"]
        sandbox = pod(uid=uid, name="p", netns=f"/var/run/netns/{pod_ns.name}")
        await node.plugin.run_pod_sandbox(sandbox)
        assert addrs(pod_ns, "net1") == {"10.60.0.2/24"}
        assert link(pod_ns, "net1")["mtu"] == 9000
        assert "10.62.0.0/16 via 10.60.0.1" in pod_ns.ip("route")
        node_ns.ip("link", "set", "c0p", "mtu", "9000")
        out = await anyio.run_process(node_ns.exec_argv(["ping", "-c1", "-W2", "10.60.0.2"]),
                                      check=False)
        assert out.returncode == 0, out.stdout
        status = await node.until(lambda: node.agent.state_dir.joinpath(
            "api/resourceclaims/default/c.json").exists() and json.loads(
            node.agent.state_dir.joinpath("api/resourceclaims/default/c.json").read_text()
        )["status"].get("devices"))
        assert status[0]["networkData"]["interfaceName"] == "net1"
        assert "10.60.0.2/24" in status[0]["networkData"]["ips"]
        await node.plugin.stop_pod_sandbox(sandbox)
        await node.plugin.remove_pod_sandbox(sandbox)
        back = link(node_ns, "c0")
        assert (back["ifname"], back["mtu"], back["address"]) == (
            before["ifname"], before["mtu"], before["address"])
        assert addrs(node_ns, "c0") == {"10.61.0.5/24"}
        resp = await kubelet.unprepare(node.dra, "v1beta1", [kubelet.ref(claim)])
        assert not resp.claims[claim["metadata"]["uid"]].error
    finally:
        pod_ns.delete()


async def test_bad_config_is_refused_and_changes_nothing(node: Node, node_ns: NetNS):
    node_ns.veth("b0", "b0p")
    claim = await node.claim("bad", "b0", {"interface": {"mtu": 40}}, str(uuid.uuid4()))
    resp = await kubelet.prepare(node.dra, "v1", [kubelet.ref(claim)])
    err = resp.claims[claim["metadata"]["uid"]].error
    assert "interface.mtu" in err
    assert link(node_ns, "b0")["mtu"] == 1500


async def test_runtime_restart_plugin_registers_again(node: Node):
    first = node.plugin.registration
    await node.runtime.restart()
    again = await node.runtime.next_plugin(wait=30)
    assert again.registration.plugin_name == first.plugin_name == "knd"
    await again.handshake()
