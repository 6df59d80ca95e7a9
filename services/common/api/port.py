"""The small interface between knd and the Kubernetes API.

Objects are plain dicts shaped exactly as the API serves them (apiVersion,
kind, metadata, spec, status) so the real API, the standalone file store and
the tests' API server are interchangeable.
"""

from __future__ import annotations

from typing import Protocol


class ApiError(Exception):
    """An API call failed; ``status`` is the HTTP status (0: no answer)."""

    status = 0

    def __init__(self, message: str, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.reason = reason


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class Invalid(ApiError):
    status = 422


def error_for(status: int, message: str, reason: str = "") -> ApiError:
    """The port error for an HTTP status, so callers can catch Conflict/NotFound by type."""
    cls = {404: NotFound, 409: Conflict, 422: Invalid}.get(status, ApiError)
    return cls(message, status=status, reason=reason)


class ApiPort(Protocol):
    async def get_node(self, name: str) -> dict: ...

    async def list_slices(self, driver: str, node: str) -> list[dict]:
        """Slices of ``driver`` whose ``spec.nodeName`` is ``node``."""
        ...

    async def create_slice(self, obj: dict) -> dict: ...

    async def update_slice(self, obj: dict) -> dict:
        """Replace; ``metadata.resourceVersion`` must be the one read (else Conflict)."""
        ...

    async def delete_slice(self, name: str, uid: str, resource_version: str) -> None:
        """Delete with UID and resourceVersion preconditions (else Conflict)."""
        ...

    async def get_claim(self, namespace: str, name: str) -> dict:
        """The ResourceClaim as stored (NotFound if it is gone)."""
        ...

    async def update_claim_status(self, obj: dict) -> dict:
        """Replace the claim's ``status`` through the status subresource.

        ``obj`` is the claim as read with the new ``status``; its
        ``metadata.resourceVersion`` must still be current (else Conflict).
        Returns the stored claim.
        """
        ...

    async def create_event(self, obj: dict) -> dict:
        """Create a core/v1 Event in ``obj["metadata"]["namespace"]`` (Conflict with reason
        AlreadyExists when the name is taken; Invalid when the server refuses it)."""
        ...

    async def patch_event(self, namespace: str, name: str, patch: dict) -> dict:
        """Merge ``patch`` (a JSON merge patch: count, lastTimestamp, message) into the
        Event; NotFound once it expired (the server keeps events an hour by default)."""
        ...

    async def aclose(self) -> None: ...
