"""The parts of kubernetes-asyncio that knd uses, loaded without the rest.

Importing any module of kubernetes-asyncio runs its package ``__init__``, which
imports every API group and every one of its ~700 model classes: 31 MB and 0.3 s in
each process that talks to the API server (the publisher and the gateway). knd
calls a few methods of two API classes with ``_preload_content=False`` and decodes
the answers itself (services.common.api.decode), so no model class is ever used.
Here the packages ``kubernetes_asyncio``, ``.client``, ``.client.api`` and
``.client.models`` are registered empty (with their real ``__path__``) before the
modules knd needs are imported; Python finds those in the installed package as
usual. Where the whole package is loaded already (a test), it is used as it is.
"""

from __future__ import annotations

from pathlib import Path

from services.common import lean

_NAME = "kubernetes_asyncio"


def _register() -> None:
    root = lean.empty_package(_NAME)
    if root is None:  # the whole package is loaded already (a test)
        return
    base = Path(root.__path__[0])
    client = lean.empty_package(f"{_NAME}.client", base / "client")
    lean.empty_package(f"{_NAME}.client.api", base / "client" / "api")
    lean.empty_package(f"{_NAME}.client.models", base / "client" / "models")
    # what kubernetes_asyncio.config and the API classes import from the client package
    from kubernetes_asyncio.client import api_client, configuration
    from kubernetes_asyncio.client.api import core_v1_api, resource_v1_api

    for attr, value in (("ApiClient", api_client.ApiClient),
                        ("Configuration", configuration.Configuration),
                        ("CoreV1Api", core_v1_api.CoreV1Api),
                        ("ResourceV1Api", resource_v1_api.ResourceV1Api)):
        setattr(client, attr, value)


_register()

from kubernetes_asyncio import config as kube_config  # noqa: E402
from kubernetes_asyncio.client import (  # noqa: E402
    ApiClient,
    Configuration,
    CoreV1Api,
    ResourceV1Api,
)
from kubernetes_asyncio.client.exceptions import ApiException  # noqa: E402
from kubernetes_asyncio.config import ConfigException  # noqa: E402

__all__ = ["ApiClient", "ApiException", "ConfigException", "Configuration", "CoreV1Api",
           "ResourceV1Api", "kube_config"]
