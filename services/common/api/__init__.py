"""The Kubernetes API port: the one place that reads and writes API objects."""

from __future__ import annotations

from pathlib import Path

from services.common.api.port import ApiError, ApiPort, Conflict, Invalid, NotFound, error_for

__all__ = ["ApiError", "ApiPort", "Conflict", "Invalid", "NotFound", "error_for", "open_api"]


def open_api(*, standalone: bool, state_dir: Path, kubeconfig: str | None,
             timeout: float = 10.0) -> ApiPort:
    """The API the services use: JSON files when standalone, else the cluster's API server.

    Imports lazily so a standalone run does not pay for loading kubernetes-asyncio.
    """
    if standalone:
        from services.common.api.files import FileApi

        return FileApi(state_dir)
    from services.common.api.kube import KubeApi

    return KubeApi(kubeconfig=kubeconfig, timeout=timeout)
