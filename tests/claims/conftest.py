"""Claim tests: the test API server and a kubernetes-asyncio client to it."""

from __future__ import annotations

import pytest

from services.common.api.kube import KubeApi
from tests.kubeapi.fixtures import kube_api, kube_client  # noqa: F401


@pytest.fixture
async def kube(kube_client: KubeApi) -> KubeApi:  # noqa: F811
    return kube_client
