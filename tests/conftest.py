"""Shared fixtures: a real nats-server per session and a throwaway node netns per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.auth import Credentials
from services.common.natsd import EmbeddedBus
from tests.helpers.bpf import BpfLab
from tests.helpers.netns import NetNS

NODE = "node-a.example.com"

# An unset hint probes the clouds' metadata addresses (169.254.169.254, ...) from this
# machine's own network: the agents the tests start must never reach a real one.
os.environ.setdefault("KND_CLOUD_PROVIDER_HINT", "NONE")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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
