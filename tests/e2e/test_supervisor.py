"""``knd up`` as a supervisor: ordered stop on Ctrl-C, no orphans after SIGKILL."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.e2e.agent import Agent, wait_for
from tests.helpers.netns import NetNS

pytestmark = pytest.mark.slow

EXPECTED = {"nats-server", "discovery", "publisher", "plumber", "kubelet-gateway"}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_ctrl_c_to_the_process_group_stops_everything_cleanly(node_ns: NetNS, short_dir: Path):
    agent = Agent(node_ns, short_dir / "state")
    agent.start()
    try:
        kids = wait_for(lambda: (c := agent.children()) and set(c) == EXPECTED and c,
                        what="the bus and every service running")
        node_ns.veth("cc-a", "cc-b")
        wait_for(lambda: "cc-a" in agent.devices() or None, what="publishing")
        # standalone, nothing speaks TLS: no service pays for OpenSSL (lean.without_tls)
        assert not [name for name, pid in kids.items()
                    if "libcrypto" in Path(f"/proc/{pid}/maps").read_text()]
        os.killpg(os.getpgid(agent.proc.pid), signal.SIGINT)  # what a terminal's Ctrl-C does
        assert agent.proc.wait(15) == 0
        assert not [p for p in kids.values() if alive(p)]
        log = agent.log.read_text()
        assert "restarting" not in log, log  # nothing was restarted during shutdown
        assert "Traceback" not in log, log
    finally:
        agent.stop()


def test_sigkilled_supervisor_leaves_no_orphans(node_ns: NetNS, short_dir: Path):
    agent = Agent(node_ns, short_dir / "state")
    agent.start()
    try:
        kids = wait_for(lambda: (c := agent.children()) and set(c) == EXPECTED and c,
                        what="children")
        agent.proc.kill()
        agent.proc.wait(5)
        wait_for(lambda: not [p for p in kids.values() if alive(p)] or None, timeout=10,
                 what="children to exit after their parent died")
    finally:
        agent.stop()
