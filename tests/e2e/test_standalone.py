"""End to end: ``knd up --standalone`` in a throwaway node netns, slices as files."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agent import Agent, wait_for
from tests.helpers.netns import NetNS
from tests.kubeapi.validation import validate_resource_slice

pytestmark = pytest.mark.slow


def macs(device: dict) -> tuple:
    a = device["attributes"]
    return a["knd.dev/ifName"], a["knd.dev/mac"]


@pytest.fixture
def agent(node_ns: NetNS, short_dir: Path) -> Iterator[Agent]:
    a = Agent(node_ns, short_dir / "state").start()
    try:
        yield a
    finally:
        code = a.stop()
        if code not in (0, -signal.SIGTERM):
            print(a.log.read_text())
        assert code == 0, f"knd up exited {code} on SIGTERM"


def test_veth_appears_and_disappears(agent: Agent, node_ns: NetNS):
    node_ns.veth("e2e-a", "e2e-b")
    node_ns.ip("link", "set", "e2e-a", "mtu", "9000")
    node_ns.ip("addr", "add", "10.9.0.1/24", "dev", "e2e-a")
    devs = wait_for(lambda: (d := agent.devices()) and "e2e-a" in d and "e2e-b" in d and d,
                    what="veth devices in the slice files")
    a = devs["e2e-a"]["attributes"]
    assert a["knd.dev/ifName"] == {"string": "e2e-a"}
    assert a["knd.dev/type"] == {"string": "veth"}
    assert a["knd.dev/virtual"] == {"bool": True}
    wait_for(lambda: agent.devices().get("e2e-a", {}).get("attributes", {}).get(
        "knd.dev/ipv4") == {"string": "10.9.0.1/24"}, what="address attribute")
    assert agent.devices()["e2e-a"]["attributes"]["knd.dev/mtu"] == {"int": 9000}
    s = agent.slices()[0]
    assert s["spec"]["nodeName"] == "e2e-node" and s["spec"]["pool"]["name"] == "e2e-node"
    owner = s["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "Node" and owner["name"] == "e2e-node" and owner["uid"]
    node_ns.ip("link", "del", "e2e-a")
    wait_for(lambda: not ({"e2e-a", "e2e-b"} & agent.devices().keys()) or None,
             what="veth gone from the slice files")


def test_300_interfaces_split_at_128_and_valid(agent: Agent, node_ns: NetNS):
    node_ns.batch([f"link add big{i}a type veth peer name big{i}b" for i in range(150)])
    wait_for(lambda: len(agent.devices()) == 300 or None, timeout=20, what="300 devices")
    slices = agent.slices()
    assert len(slices) == 3
    pools = {(s["spec"]["pool"]["generation"], s["spec"]["pool"]["resourceSliceCount"])
             for s in slices}
    assert len(pools) == 1 and next(iter(pools))[1] == 3
    for s in slices:
        assert len(s["spec"]["devices"]) <= 128
        assert validate_resource_slice(s) == []


def test_restart_of_each_service_keeps_names_and_slices(agent: Agent, node_ns: NetNS):
    node_ns.veth("rs-a", "rs-b")
    before = wait_for(lambda: (d := agent.devices()) and "rs-a" in d and d, what="devices")
    names = {s["metadata"]["name"] for s in agent.slices()}
    for service in ("discovery", "publisher"):
        pid = wait_for(lambda s=service: agent.children().get(s), what=f"{service} pid")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda s=service, p=pid: (q := agent.children().get(s)) and q != p,
                 timeout=15, what=f"{service} restarted")
        node_ns.veth(f"af-{service[:4]}", f"af-{service[:4]}-p")
        wait_for(lambda s=service: f"af-{s[:4]}" in agent.devices() or None,
                 timeout=15, what=f"publishing after {service} restart")
    after = agent.devices()
    # same names for the same interfaces (state may have moved on, identity may not)
    assert {k: macs(after[k]) for k in before} == {k: macs(v) for k, v in before.items()}
    assert {s["metadata"]["name"] for s in agent.slices()} == names


def test_whole_agent_restart_keeps_names(node_ns: NetNS, short_dir: Path):
    node_ns.veth("wr-a", "wr-b")
    first = Agent(node_ns, short_dir / "state").start()
    try:
        before = wait_for(lambda: (d := first.devices()) and "wr-a" in d and d, what="devices")
        slices_before = [s["metadata"]["name"] for s in first.slices()]
    finally:
        assert first.stop() == 0
    second = Agent(node_ns, short_dir / "state").start()
    try:
        node_ns.veth("wr-c", "wr-d")
        after = wait_for(lambda: (d := second.devices()) and "wr-c" in d and d, what="devices")
        assert {k: macs(after[k]) for k in before} == {k: macs(v) for k, v in before.items()}
        assert [s["metadata"]["name"] for s in second.slices()] == slices_before
    finally:
        assert second.stop() == 0
    assert not second.children()
