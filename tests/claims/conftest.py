"""Claim tests: the test API server and a kubernetes-asyncio client to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.api.kube import KubeApi
from tests.kubeapi.fixtures import kube_api  # noqa: F401
from tests.kubeapi.server import KubeApiServer


@pytest.fixture
async def kube(kube_api: KubeApiServer, tmp_path: Path) -> AsyncIterator[KubeApi]:  # noqa: F811
    api = KubeApi(kubeconfig=str(kube_api.write_kubeconfig(tmp_path / "kubeconfig")),
                  timeout=2.0)
    try:
        yield api
    finally:
        await api.aclose()
