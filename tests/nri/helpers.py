"""NRI test helpers: a recording PodHandler and a plugin wired to the runtime stand-in."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from kndpeers.nri_runtime import FakeRuntime, PluginConn
from schemas.plumber import LinuxDevice
from services.kubelet_gateway.nri import NriPlugin, PodInfo, run_nri
from services.kubelet_gateway.nri.barrier import Hook
from services.kubelet_gateway.nri.handler import ContainerSetup
from tests.helpers.wait import until


@dataclass
class FakeHandler:
    """A PodHandler that records its calls; ``delay``/``fail`` per method name."""

    claims: set[str] = field(default_factory=set)
    """Uids of the pods that hold claims."""
    devices: list[LinuxDevice] = field(default_factory=list)
    delay: dict[str, float] = field(default_factory=dict)
    fail: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, object]] = field(default_factory=list)
    synced: list[list[PodInfo]] = field(default_factory=list)
    hook: Hook | None = None
    budgets: list[float] = field(default_factory=list)
    """The budget of each run_pod / create_container call."""

    async def _do(self, what: str, arg: object) -> None:
        self.calls.append((what, arg))
        if what in self.delay:
            await anyio.sleep(self.delay[what])
        if what in self.fail:
            raise RuntimeError(self.fail[what])

    def called(self, what: str) -> list:
        return [arg for name, arg in self.calls if name == what]

    async def run_pod(self, pod: PodInfo, budget: float) -> None:
        self.budgets.append(budget)
        await self._do("run_pod", pod)

    async def stop_pod(self, pod: PodInfo) -> None:
        await self._do("stop_pod", pod)

    async def remove_pod(self, pod: PodInfo) -> None:
        await self._do("remove_pod", pod)

    async def has_claims(self, pod: PodInfo) -> bool:
        await self._do("has_claims", pod)
        return pod.uid in self.claims

    async def create_container(self, pod: PodInfo, container_name: str,
                               budget: float) -> ContainerSetup:
        self.budgets.append(budget)
        await self._do("create_container", (pod, container_name))
        return ContainerSetup(self.devices, self.hook)

    async def sync(self, pods: list[PodInfo]) -> None:
        self.synced.append(pods)
        await self._do("sync", pods)


FAST = {"handler_timeout": 0.3, "register_timeout": 1.0, "backoff_initial": 0.02,
        "backoff_max": 0.1}


@asynccontextmanager
async def nri_setup(sock: Path, handler, *, handshake: bool = True, **options
                    ) -> AsyncIterator[tuple[FakeRuntime, PluginConn, NriPlugin]]:
    """The runtime stand-in and a plugin registered with it (short timeouts)."""
    opts = {**FAST, **options}
    async with FakeRuntime(sock) as rt, anyio.create_task_group() as tg:
        plugin = await tg.start(functools.partial(run_nri, socket_path=sock,
                                                  handler=handler, **opts))
        conn = await rt.next_plugin()
        await wait_for(lambda: plugin.connected)  # the reply to RegisterPlugin is in
        if handshake:
            await conn.handshake()
        try:
            yield rt, conn, plugin
        finally:
            tg.cancel_scope.cancel()


async def wait_for(pred: Callable[[], bool], limit: float = 5.0) -> None:
    await until(pred, limit)
