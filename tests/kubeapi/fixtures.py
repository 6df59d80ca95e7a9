"""The ``kube_api`` (server) and ``kube_client`` (KubeApi on it) fixtures; import them
into a test module or a conftest to use them.

It is not in tests/conftest.py so that only the test folders that talk to the
API pay for it, and import it explicitly:
``from tests.kubeapi.fixtures import kube_api  # noqa: F401``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.api.kube import KubeApi
from tests.kubeapi.server import KubeApiServer


@pytest.fixture
async def kube_api(anyio_backend: str) -> AsyncIterator[KubeApiServer]:
    """A started, empty test API server; ``anyio_backend`` ties it to the test's event loop."""
    async with KubeApiServer() as server:
        yield server


@pytest.fixture
async def kube_client(kube_api: KubeApiServer, tmp_path: Path) -> AsyncIterator[KubeApi]:
    """The product's KubeApi on ``kube_api``, configured only through a kubeconfig file,
    as in a cluster, with a short timeout so injected hangs end quickly."""
    client = KubeApi(kubeconfig=str(kube_api.write_kubeconfig(tmp_path / "kubeconfig")),
                     timeout=2.0)
    try:
        yield client
    finally:
        await client.aclose()
