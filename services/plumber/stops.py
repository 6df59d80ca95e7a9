"""When an attach must move no further device: its pod is being stopped, or its
deadline passed. An attach deferred past RunPodSandbox may still be moving devices
when StopPodSandbox comes; each device it has not moved yet is then one more to give
back, and past the deadline the whole attach is rolled back anyway."""

from __future__ import annotations

import errno
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Stops:
    """The pods with a detach waiting for their lock."""

    def __init__(self) -> None:
        self._waiting: dict[str, int] = {}

    @asynccontextmanager
    async def announced(self, pod_uid: str) -> AsyncIterator[None]:
        """Around a detach: the pod's attach stops moving devices meanwhile."""
        self._waiting[pod_uid] = self._waiting.get(pod_uid, 0) + 1
        try:
            yield
        finally:
            self._waiting[pod_uid] -= 1
            if not self._waiting[pod_uid]:
                del self._waiting[pod_uid]

    def why_not(self, pod_uid: str, deadline: float) -> tuple[str, int, str] | None:
        """Why a device of the pod must not move now (step, errno, text), or None.
        ``deadline``: epoch seconds, 0 for none."""
        if pod_uid in self._waiting:
            return "move", errno.ECANCELED, "the pod is being stopped"
        if 0 < deadline < time.time():
            return "deadline", errno.ETIMEDOUT, "not moved: the attach's deadline passed"
        return None
