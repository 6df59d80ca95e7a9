"""The ``kube_api`` fixture; import it into a test module or a conftest to use it.

It is not in tests/conftest.py so that only the test folders that talk to the
API pay for it, and import it explicitly:
``from tests.kubeapi.fixtures import kube_api  # noqa: F401``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.kubeapi.server import KubeApiServer


@pytest.fixture
async def kube_api(anyio_backend: str) -> AsyncIterator[KubeApiServer]:
    """A started, empty test API server; ``anyio_backend`` ties it to the test's event loop."""
    async with KubeApiServer() as server:
        yield server
