"""Two ``knd up`` on one node (a stray ``knd up --standalone``, two DaemonSet pods in
a rolling update), started at the same moment on the same state dir and kubelet
root: exactly one runs; the other exits non-zero with one line naming the first's
pid; the first's kubelet sockets stay and answer after the second is gone. Before,
the second removed the first's sockets as "stale" and took them over."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import anyio
import pytest

from kndpeers import kubelet
from tests.e2e.agent import Agent, wait_for
from tests.e2e.test_supervisor import EXPECTED
from tests.helpers.netns import NetNS

pytestmark = pytest.mark.slow


def test_two_agents_racing_one_runs(node_ns: NetNS, short_dir: Path) -> None:
    state = short_dir / "state"
    agents = [Agent(node_ns, state), Agent(node_ns, state)]
    agents[1].log = short_dir / "second.log"
    for agent in agents:
        agent.start()
    try:
        exited = wait_for(lambda: [a for a in agents if a.proc.poll() is not None] or None,
                          timeout=30, what="one of the two to refuse")
        assert len(exited) == 1, "both exited"
        loser = exited[0]
        winner = agents[1 - agents.index(loser)]
        assert loser.proc.returncode not in (0, None)
        lines = loser.log.read_text().strip().splitlines()
        assert len(lines) == 1, lines
        assert f"another knd agent (pid {winner.proc.pid}, knd up" in lines[0], lines
        wait_for(lambda: (c := winner.children()) and set(c) == EXPECTED and c,
                 timeout=30, what="the winner's bus and services")
        reg = winner.kubelet_root / "plugins_registry" / "knd.dev-reg.sock"
        dra = winner.kubelet_root / "plugins" / "knd.dev" / "dra.sock"
        wait_for(lambda: reg.is_socket() and dra.is_socket(), timeout=30,
                 what="the winner's sockets")
        # a bounded wait on purpose: what is tested is that nothing happens (a loser
        # still alive would take the sockets or stop the winner within this second)
        time.sleep(1)
        assert winner.proc.poll() is None
        info = anyio.run(kubelet.get_info, f"unix://{reg}")
        assert info.endpoint == str(dra)
        reply = anyio.run(kubelet.prepare, f"unix://{dra}", "v1", [])
        assert not reply.claims
        log = winner.log.read_text()
        assert "removing stale" not in log, log
    finally:
        for agent in agents:
            agent.stop()


def test_a_second_agent_on_a_node_changes_nothing(node_ns: NetNS, short_dir: Path) -> None:
    """Another state dir, the same kubelet root: refused before it writes a thing."""
    first = Agent(node_ns, short_dir / "state")
    first.start()
    try:
        wait_for(lambda: (first.kubelet_root / "plugins" / "knd.dev" / "dra.sock").is_socket(),
                 timeout=30, what="the first agent's DRA socket")
        other = short_dir / "other"
        # the last --kubelet-root given wins: the first agent's
        argv = Agent(node_ns, other, extra=("--kubelet-root", str(first.kubelet_root))).argv
        second = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert second.returncode != 0
        assert f"pid {first.proc.pid}, knd up" in second.stderr, second.stderr
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
        assert not other.exists()  # not even its state dir
        assert first.proc.poll() is None
    finally:
        first.stop()
