"""Fixtures of the API tests: the test API server and a KubeApi connected to it."""

from __future__ import annotations

import pytest

from services.common.api.kube import KubeApi
from tests.kubeapi.fixtures import kube_api, kube_client  # noqa: F401


@pytest.fixture
async def api(kube_client: KubeApi) -> KubeApi:  # noqa: F811
    return kube_client
