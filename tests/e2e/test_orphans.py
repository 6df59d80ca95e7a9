"""A SIGKILLed ``knd up`` leaves no service behind for more than 2 s, whatever state
its bus is in: alive, killed first, or hung (SIGSTOP). Before, services sat up to
10 s in a shielded stop waiting on a flush to a dead bus, and logged a
FlushTimeoutError traceback, while a new ``knd up`` started beside them."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.agent import Agent, wait_for
from tests.e2e.test_supervisor import EXPECTED, alive
from tests.helpers.netns import NetNS

pytestmark = pytest.mark.slow

SERVICES = EXPECTED - {"nats-server"}
BOUND = 2.0
"""Seconds from the supervisor's death to its last service's, as issue 8 states."""


@pytest.mark.parametrize("bus_state", ["alive", "killed", "hung"])
def test_services_die_with_a_killed_supervisor(node_ns: NetNS, short_dir: Path,
                                               bus_state: str) -> None:
    agent = Agent(node_ns, short_dir / "state")
    agent.start()
    kids: dict[str, int] = {}
    try:
        kids = wait_for(lambda: (c := agent.children()) and set(c) == EXPECTED and c,
                        timeout=30, what="the bus and every service running")
        node_ns.veth("or-a", "or-b")
        # every service on the bus and busy: the publisher has written the device
        wait_for(lambda: "or-a" in agent.devices() or None, timeout=30, what="publishing")
        bus = kids["nats-server"]
        if bus_state == "killed":
            os.kill(bus, signal.SIGKILL)
            wait_for(lambda: not alive(bus) or None, what="the bus to die")
        elif bus_state == "hung":
            os.kill(bus, signal.SIGSTOP)
        agent.proc.kill()
        agent.proc.wait(5)
        died = time.monotonic()
        pending = {n: kids[n] for n in SERVICES}
        gone: dict[str, float] = {}
        # polled finely and timed from the kill: a loaded machine can only make a
        # death look later than it was, never earlier
        while pending and time.monotonic() - died < BOUND + 5:
            for name, pid in list(pending.items()):
                if not alive(pid):
                    gone[name] = time.monotonic() - died
                    del pending[name]
            time.sleep(0.02)
        assert not pending, f"still alive {BOUND + 5:.0f}s after knd up died: {sorted(pending)}"
        late = {n: round(t, 2) for n, t in gone.items() if t > BOUND}
        assert not late, f"seconds from knd up's death to theirs: {late}"
        log = agent.log.read_text()
        assert "Traceback" not in log, log
    finally:
        for pid in kids.values():
            try:
                os.kill(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        agent.stop()

