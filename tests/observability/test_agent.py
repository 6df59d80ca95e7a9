"""``knd events`` and ``knd status`` against a whole ``knd up --standalone`` agent in a
throwaway node netns (the agent's bus and HTTP endpoints live on that netns' loopback)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agent import KND, Agent, wait_for
from tests.helpers.netns import NetNS
from tests.observability.conftest import wait_following

pytestmark = pytest.mark.slow

SERVICES = ("discovery", "publisher", "plumber", "kubelet-gateway")


@pytest.fixture
def agent(node_ns: NetNS, short_dir: Path) -> Iterator[Agent]:
    a = Agent(node_ns, short_dir / "state").start()
    try:
        wait_for(lambda: (a.state_dir / "bus" / "creds.json").exists(), what="bus credentials")
        yield a
    finally:
        code = a.stop()
        if code not in (0, -signal.SIGTERM):
            print(a.log.read_text())


def tool(agent: Agent, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(agent.ns.exec_argv([KND, *argv, "--state-dir", str(agent.state_dir)]),
                          capture_output=True, text=True, timeout=timeout)


def test_events_prints_a_new_device_as_json(agent: Agent, node_ns: NetNS) -> None:
    wait_for(lambda: agent.slices(), what="the first slice")
    proc = subprocess.Popen(node_ns.exec_argv([
        KND, "events", "--state-dir", str(agent.state_dir), "--count", "1",
        "--kind", "device.added", "--json", "--timeout", "30"]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_following(proc, timeout=15)
        node_ns.veth("ev-a", "ev-b")
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # reaps it and closes the pipes (after a kill too)
    assert proc.returncode == 0, err
    [line] = out.splitlines()
    ev = json.loads(line)
    assert ev["event"] == "device.added" and ev["kind"] == "added"
    assert ev["subject"] == "knd.e2e-node.events.device.added"
    assert ev["node"] == "e2e-node" and ev["device"] in ("ev-a", "ev-b")
    assert ev["attributes"]["knd.dev/ifName"] == ev["device"]
    assert ev["attributes"]["knd.dev/type"] == "veth"


def test_status_shows_devices_pool_and_every_service(agent: Agent, node_ns: NetNS) -> None:
    node_ns.veth("st-a", "st-b")
    wait_for(lambda: {"st-a", "st-b"} <= agent.devices().keys() or None, timeout=15,
             what="devices in the slice files")
    res = wait_for(lambda: (r := tool(agent, "status", "--json")).returncode == 0 and r,
                   timeout=20, what="every service ready")
    st = json.loads(res.stdout)
    assert st["node"] == "e2e-node" and st["bus"]["connected"] is True
    for name in SERVICES:
        svc = st["services"][name]
        assert svc["bus"] is True and svc["ready"] is True, (name, svc)
        # each service answers on its own port: knd up gave each child its own address
        assert svc["http"]["service"] == name and svc["http"]["http_status"] == 200
    assert {e["name"] for e in st["services"]["plumber"]["endpoints"]} >= {
        "prepare", "attach", "status"}
    devices = {d["name"]: d for d in st["devices"]}
    assert devices["st-a"]["interface"] == "st-a" and devices["st-a"]["type"] == "veth"
    assert devices["st-a"]["attached"] == []
    slices = agent.slices()
    pool = st["pool"]
    assert pool["synced"] is True and pool["slices"] == len(slices)
    assert pool["generation"] == slices[0]["spec"]["pool"]["generation"]
    assert pool["devices"] == len(agent.devices())
    assert st["plumber"]["claims"] == [] and st["healthy"] is True

    text = tool(agent, "status")
    assert text.returncode == 0, text.stderr
    assert "st-a" in text.stdout and "kubelet-gateway" in text.stdout
    assert f"generation {pool['generation']}" in text.stdout

    # the publisher's own /metrics, in the node netns, counts the published devices
    fetch = ("import urllib.request;"
             "print(urllib.request.urlopen('http://127.0.0.1:9502/metrics').read().decode())")
    metrics = subprocess.run(node_ns.exec_argv([sys.executable, "-c", fetch]),
                             capture_output=True, text=True, check=True).stdout
    assert f"knd_publisher_published_devices {float(pool['devices'])}" in metrics
