"""Shared fixtures: a real nats-server per session and a throwaway node netns per test."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.auth import Credentials
from services.common.natsd import EmbeddedBus
from tests.helpers.blocking import THRESHOLD, Watchdog
from tests.helpers.bpf import BpfLab
from tests.helpers.netns import NetNS

NODE = "node-a.example.com"

# An unset hint probes the clouds' metadata addresses (169.254.169.254, ...) from this
# machine's own network: the agents the tests start must never reach a real one.
os.environ.setdefault("KND_CLOUD_PROVIDER_HINT", "NONE")


WATCHDOG = Watchdog().start()


@pytest.fixture
def anyio_backend() -> tuple[str, dict]:
    """asyncio, on a loop the blocking-call watchdog looks at (tests/helpers/blocking.py)."""
    return "asyncio", {"loop_factory": WATCHDOG.loop}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Fail a test during which service code blocked the event loop."""
    WATCHDOG.take()
    result = yield
    found = WATCHDOG.take()
    if found and item.get_closest_marker("blocking_ok") is None:
        raise pytest.fail.Exception(
            f"service code blocked the event loop for over {THRESHOLD} s:\n"
            + "\n".join(found), pytrace=False)
    return result


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    """A test that runs ``knd`` in-process (cli.main) sets up logging as a command does:
    a handler on this test's captured stderr, which is closed once the test ends. Put
    the root logger back, so later tests' logs do not hit that closed file."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture(scope="session")
def bus_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bus-state")


@pytest.fixture(scope="session")
def bus(bus_state: Path) -> Iterator[Credentials]:
    """A real nats-server with knd's generated per-service users, for node NODE."""
    server = EmbeddedBus(bus_state, NODE)
    creds = server.start()
    try:
        yield creds
    finally:
        server.stop()


@pytest.fixture
def node_ns() -> Iterator[NetNS]:
    """The node under test: a fresh netns, removed with all its links afterwards."""
    ns = NetNS()
    try:
        yield ns
    finally:
        ns.delete()


@pytest.fixture
def lab() -> Iterator[BpfLab]:
    """Real BPF programs for one test, released (with their pins and mount) after it."""
    with BpfLab() as lab:
        yield lab
