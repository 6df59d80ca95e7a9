"""A stand-in Kubernetes API server for the tests (real HTTP, real client)."""

from tests.kubeapi.server import KubeApiServer

__all__ = ["KubeApiServer"]
