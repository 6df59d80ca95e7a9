"""Publisher test fixtures: the test API server with the node, and a real client to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.api.kube import KubeApi
from tests.conftest import NODE
from tests.kubeapi.fixtures import kube_api  # noqa: F401
from tests.kubeapi.server import KubeApiServer


@pytest.fixture
def kubeconfig(kube_api: KubeApiServer, tmp_path: Path) -> str:  # noqa: F811
    """The server with NODE registered, as a kubeconfig file path."""
    kube_api.add_node(NODE)
    return str(kube_api.write_kubeconfig(tmp_path / "kubeconfig"))


@pytest.fixture
async def kube(kubeconfig: str) -> AsyncIterator[KubeApi]:
    """kubernetes-asyncio over real HTTP to the test server (short timeout for fault tests)."""
    api = KubeApi(kubeconfig=kubeconfig, timeout=2.0)
    try:
        yield api
    finally:
        await api.aclose()
