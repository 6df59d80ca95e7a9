"""knd as an NRI plugin of the container runtime (containerd, CRI-O).

The plugin connects to the runtime's socket, multiplexes it (``mux``), serves the
``Plugin`` service with ttrpc on conn 1 and registers itself through the runtime's
``Runtime`` service on conn 2. Pod events become ``PodHandler`` calls:

- RunPodSandbox (or StateChange RUN_POD_SANDBOX): ``run_pod`` with the pod's netns path;
  a host-network pod that holds claims is refused with a clear error.
- StopPodSandbox / RemovePodSandbox: ``stop_pod`` / ``remove_pod``.
- CreateContainer: ``create_container``'s device nodes become the ``linux.devices``
  adjustment, and while the pod's devices are still being attached, the barrier hook
  a ``createRuntime`` OCI hook (attach_jobs.py, barrier.py).
- Synchronize (possibly chunked): ``sync`` with every live pod, once the last chunk is in.

The runtime gives each request about 2 s and skips a slow plugin, so every handler
call is bounded (``handler_timeout``, and never more than 3/4 of the runtime's request
timeout): a stuck plumber becomes an error reply, never a hang. When the runtime
restarts, the plugin reconnects with backoff and registers again.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypedDict, TypeVar, Unpack

import anyio
from anyio.abc import TaskStatus
from prometheus_client.metrics import Counter, Histogram

from services.common.backoff import Backoff
from services.common.logs import fields
from services.kubelet_gateway.nri.handler import PlumberPodHandler, PodHandler, PodInfo
from services.kubelet_gateway.nri.mux import MAX_FRAME, PLUGIN_CONN, RUNTIME_CONN, Mux
from services.kubelet_gateway.nri.ttrpc import (
    Code,
    TtrpcClient,
    TtrpcError,
    TtrpcServer,
    code_name,
)
from services.kubelet_gateway.pb import nri_pb2 as api

log = logging.getLogger("knd.nri")

PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"
RUNTIME_SERVICE = "nri.pkg.api.v1alpha1.Runtime"
DEFAULT_SOCKET = Path("/var/run/nri/nri.sock")

SUBSCRIBED = (api.RUN_POD_SANDBOX, api.STOP_POD_SANDBOX, api.REMOVE_POD_SANDBOX,
              api.CREATE_CONTAINER)

NRI_REQUESTS = Counter("knd_nri_requests", "NRI requests served, by method and status",
                       ["method", "status"])
NRI_LATENCY = Histogram("knd_nri_request_seconds", "NRI request handling time",
                        ["method", "status"],
                        buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 1.5, 2, 5))

HOOKS = Counter("knd_nri_barrier_hooks", "Containers created with the barrier hook (their "
                "pod's devices were still being attached)")

MARGIN = 0.05
"""Seconds of a request's budget kept for answering the runtime."""
DEADLINE_MARGIN = 0.2
"""Seconds before the runtime's request deadline by which an attach request answers."""

_INDEX = re.compile(r"[0-9]{2}")
T = TypeVar("T")


def event_mask(events: tuple[int, ...] = SUBSCRIBED) -> int:
    """``ConfigureResponse.events``: bit (event - 1) for each event."""
    mask = 0
    for event in events:
        mask |= 1 << (event - 1)
    return mask


def validate_index(plugin_idx: str) -> str:
    if not isinstance(plugin_idx, str) or not _INDEX.fullmatch(plugin_idx):
        raise ValueError(f"NRI plugin index must be exactly two digits (00-99), "
                         f"not {plugin_idx!r}")
    return plugin_idx


def pod_info(pod: api.PodSandbox) -> PodInfo:
    netns = ""
    for ns in pod.linux.namespaces:
        if ns.type == "network":
            netns = ns.path
            break
    return PodInfo(uid=pod.uid, namespace=pod.namespace, name=pod.name, sandbox_id=pod.id,
                   netns=netns, labels=dict(pod.labels), annotations=dict(pod.annotations),
                   ips=tuple(pod.ips), pid=pod.pid)


class RegistrationError(RuntimeError):
    """The runtime did not accept the plugin."""


class NriPlugin:
    """One NRI plugin instance; ``run()`` keeps it connected to the runtime."""

    def __init__(self, *, socket_path: Path, handler: PodHandler, plugin_name: str = "knd",
                 plugin_idx: str = "10", handler_timeout: float = 1.5,
                 register_timeout: float = 5.0, backoff_initial: float = 0.2,
                 backoff_max: float = 10.0, max_frame: int = MAX_FRAME) -> None:
        if not plugin_name:
            raise ValueError("NRI plugin name must not be empty")
        self.socket_path = Path(socket_path)
        self.handler = handler
        self.plugin_name = plugin_name
        self.plugin_idx = validate_index(plugin_idx)
        self.handler_timeout = handler_timeout
        self.register_timeout = register_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_frame = max_frame
        self.request_timeout = 2.0
        """The runtime's per-request timeout (from Configure), in seconds."""
        self.runtime = ("", "")
        """(name, version) of the runtime, from Configure."""
        self.registrations = 0
        self.connected = False
        self.last_error = ""
        self._sync_pods: list[PodInfo] = []

    # -- connection ---------------------------------------------------------------------

    async def run(self, *, reconnect: bool = True,
                  task_status: TaskStatus[NriPlugin] = anyio.TASK_STATUS_IGNORED) -> None:
        """Stay registered with the runtime; without ``reconnect``, one connection only."""
        task_status.started(self)
        backoff = Backoff(self.backoff_initial, self.backoff_max)
        while True:
            before = self.registrations
            try:
                reason = await self.session()
                self.last_error = reason or "runtime closed the connection"
                log.warning("nri: disconnected from %s: %s", self.socket_path, self.last_error)
            except (OSError, RegistrationError) as exc:
                repeated = self.last_error == str(exc)
                self.last_error = str(exc)
                if not reconnect:
                    raise
                (log.debug if repeated else log.info)(
                    "nri: cannot use %s (%s); retrying in %.1f s", self.socket_path, exc,
                    backoff.delay)
            except Exception as exc:  # a bug must not end the plugin for good
                self.last_error = repr(exc)
                if not reconnect:
                    raise
                log.exception("nri: connection to %s failed", self.socket_path)
            if not reconnect:
                return
            if self.registrations > before:
                backoff.reset()
            await backoff.sleep()

    async def session(self) -> str:
        """One connection: register, serve until it ends; returns why it ended."""
        stream = await anyio.connect_unix(self.socket_path)
        mux = Mux(stream, max_frame=self.max_frame)
        server = TtrpcServer(mux.open(PLUGIN_CONN), observer=_observe)
        self._register(server)
        client = TtrpcClient(mux.open(RUNTIME_CONN))
        self._sync_pods = []
        refused: TtrpcError | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(mux.run, shield=True))
            tg.start_soon(_then_close, server.serve, mux, lambda: server.error)
            tg.start_soon(_then_close, client.run, mux, lambda: client.error)
            try:
                req = api.RegisterPluginRequest(plugin_name=self.plugin_name,
                                                plugin_idx=self.plugin_idx)
                try:
                    await client.call(RUNTIME_SERVICE, "RegisterPlugin", req, api.Empty,
                                      deadline=self.register_timeout)
                except TtrpcError as exc:
                    refused = exc
                else:
                    self.registrations += 1
                    self.connected = True
                    log.info("nri: registered as %s-%s with the runtime at %s",
                             self.plugin_idx, self.plugin_name, self.socket_path)
                    await mux.closed.wait()
            finally:
                # the reader is shielded: closing the mux is what stops it
                self.connected = False
                with anyio.CancelScope(shield=True):
                    await mux.aclose()
            tg.cancel_scope.cancel()
        if refused is not None:
            raise RegistrationError(f"registration as {self.plugin_idx}-{self.plugin_name} "
                                    f"failed: {refused}")
        return mux.error

    # -- the Plugin service -------------------------------------------------------------

    def _register(self, server: TtrpcServer) -> None:
        reg = server.register
        reg(PLUGIN_SERVICE, "Configure", api.ConfigureRequest, self.configure)
        reg(PLUGIN_SERVICE, "Synchronize", api.SynchronizeRequest, self.synchronize)
        reg(PLUGIN_SERVICE, "Shutdown", api.Empty, self.shutdown)
        reg(PLUGIN_SERVICE, "RunPodSandbox", api.RunPodSandboxRequest, self.run_pod_sandbox)
        reg(PLUGIN_SERVICE, "StopPodSandbox", api.StopPodSandboxRequest, self.stop_pod_sandbox)
        reg(PLUGIN_SERVICE, "RemovePodSandbox", api.RemovePodSandboxRequest,
            self.remove_pod_sandbox)
        reg(PLUGIN_SERVICE, "CreateContainer", api.CreateContainerRequest,
            self.create_container)
        reg(PLUGIN_SERVICE, "StateChange", api.StateChangeEvent, self.state_change)

    async def configure(self, req: api.ConfigureRequest) -> api.ConfigureResponse:
        self.runtime = (req.runtime_name, req.runtime_version)
        if req.request_timeout > 0:
            self.request_timeout = req.request_timeout / 1000
        log.info("nri: configured by %s %s (request timeout %.1f s)", req.runtime_name,
                 req.runtime_version, self.request_timeout)
        return api.ConfigureResponse(events=event_mask())

    async def synchronize(self, req: api.SynchronizeRequest) -> api.SynchronizeResponse:
        self._sync_pods.extend(pod_info(pod) for pod in req.pods)
        if req.more:
            return api.SynchronizeResponse(more=True)
        pods, self._sync_pods = self._sync_pods, []
        # Pods that exist already were attached when they started: nothing to redo.
        # A sync that fails must not fail the registration: log it and go on.
        try:
            await self._bounded(lambda: self.handler.sync(pods), f"sync of {len(pods)} pods")
        except TtrpcError as exc:
            log.warning("nri: %s", exc.message)
        return api.SynchronizeResponse(more=False)

    async def shutdown(self, req: api.Empty) -> api.Empty:
        log.info("nri: the runtime is shutting down")
        return api.Empty()

    async def run_pod_sandbox(self, req: api.RunPodSandboxRequest) -> api.Empty:
        await self._run_pod(pod_info(req.pod))
        return api.Empty()

    async def stop_pod_sandbox(self, req: api.StopPodSandboxRequest) -> api.Empty:
        pod = pod_info(req.pod)
        await self._bounded(lambda: self.handler.stop_pod(pod), f"stop of pod {pod}", pod)
        return api.Empty()

    async def remove_pod_sandbox(self, req: api.RemovePodSandboxRequest) -> api.Empty:
        pod = pod_info(req.pod)
        await self._bounded(lambda: self.handler.remove_pod(pod), f"removal of pod {pod}",
                            pod)
        return api.Empty()

    async def create_container(self,
                               req: api.CreateContainerRequest) -> api.CreateContainerResponse:
        pod, name = pod_info(req.pod), req.container.name
        budget = self.attach_budget
        setup = await self._bounded(
            lambda: self.handler.create_container(pod, name, budget - MARGIN),
            f"creation of container {name} of pod {pod}", pod, budget)
        resp = api.CreateContainerResponse()
        for dev in setup.devices:
            resp.adjust.linux.devices.add(path=dev.path, type=dev.type, major=dev.major,
                                          minor=dev.minor,
                                          file_mode=api.OptionalFileMode(value=dev.file_mode))
        if setup.hook is not None:
            h = setup.hook
            resp.adjust.hooks.create_runtime.add(path=h.path, args=h.args, env=h.env,
                                                 timeout=api.OptionalInt(value=h.timeout))
            HOOKS.inc()
        return resp

    async def state_change(self, req: api.StateChangeEvent) -> api.Empty:
        pod = pod_info(req.pod)
        if req.event == api.RUN_POD_SANDBOX:
            await self._run_pod(pod)
        elif req.event == api.STOP_POD_SANDBOX:
            await self._bounded(lambda: self.handler.stop_pod(pod), f"stop of pod {pod}", pod)
        elif req.event == api.REMOVE_POD_SANDBOX:
            await self._bounded(lambda: self.handler.remove_pod(pod), f"removal of pod {pod}",
                                pod)
        return api.Empty()

    # -- helpers ------------------------------------------------------------------------

    async def _run_pod(self, pod: PodInfo) -> None:
        if pod.host_network:
            if await self._bounded(lambda: self.handler.has_claims(pod),
                                   f"claim lookup for pod {pod}", pod):
                raise TtrpcError(
                    Code.FAILED_PRECONDITION,
                    f"knd: pod {pod} uses the host network namespace but holds network "
                    f"claims; their interfaces cannot be moved into the host namespace "
                    f"(drop hostNetwork or the claims)")
            return
        budget = self.attach_budget
        await self._bounded(lambda: self.handler.run_pod(pod, budget - MARGIN),
                            f"attach for pod {pod}", pod, budget)

    @property
    def budget(self) -> float:
        """Seconds a handler call may take: well inside the runtime's request timeout."""
        return min(self.handler_timeout, 0.75 * self.request_timeout)

    @property
    def attach_budget(self) -> float:
        """Seconds RunPodSandbox and CreateContainer may take: all of the runtime's
        request less DRANET's margin. Their handlers answer in time themselves, with
        an attach that goes on in the background (attach_jobs.py)."""
        return max(0.1, self.request_timeout - DEADLINE_MARGIN)

    async def _bounded(self, fn: Callable[[], Awaitable[T]], what: str,
                       pod: PodInfo | None = None, budget: float | None = None) -> T:
        budget = self.budget if budget is None else budget
        where = fields(pod=pod.uid if pod is not None else None)
        try:
            with anyio.move_on_after(budget) as scope:
                return await fn()
        except TtrpcError:
            raise
        except Exception as exc:
            log.warning("nri: %s failed: %s", what, exc, extra=where)
            raise TtrpcError(Code.INTERNAL, f"knd: {what} failed: {exc}") from None
        assert scope.cancelled_caught
        log.warning("nri: %s did not finish within %.2f s", what, budget, extra=where)
        raise TtrpcError(Code.DEADLINE_EXCEEDED,
                         f"knd: {what} did not finish within {budget:.2f} s")


async def _then_close(fn: Callable[[], Awaitable[None]], mux: Mux,
                      reason: Callable[[], str]) -> None:
    """Run one side of the connection; when it stops reading, the connection is over."""
    await fn()
    await mux.aclose(reason())


def _observe(service: str, method: str, code: int, seconds: float) -> None:
    label = method if service == PLUGIN_SERVICE and method else "unknown"
    status = code_name(code)
    NRI_REQUESTS.labels(label, status).inc()
    NRI_LATENCY.labels(label, status).observe(seconds)


class NriOptions(TypedDict, total=False):
    """``NriPlugin``'s tuning, as keyword arguments of :func:`run_nri`."""

    handler_timeout: float
    register_timeout: float
    backoff_initial: float
    backoff_max: float
    max_frame: int


async def run_nri(*, socket_path: Path = DEFAULT_SOCKET, plugin_name: str = "knd",
                  plugin_idx: str = "10", handler: PodHandler, reconnect: bool = True,
                  task_status: TaskStatus[NriPlugin] = anyio.TASK_STATUS_IGNORED,
                  **options: Unpack[NriOptions]) -> None:
    """Run knd's NRI plugin until cancelled (or, without ``reconnect``, one connection).

    ``task_status.started`` gets the ``NriPlugin`` at once (the runtime may come later);
    an invalid ``plugin_idx`` raises ``ValueError`` before that. ``options``: see
    ``NriPlugin``.
    """
    plugin = NriPlugin(socket_path=socket_path, handler=handler, plugin_name=plugin_name,
                       plugin_idx=plugin_idx, **options)
    await plugin.run(reconnect=reconnect, task_status=task_status)


__all__ = ["DEFAULT_SOCKET", "PLUGIN_SERVICE", "RUNTIME_SERVICE", "NriPlugin",
           "PlumberPodHandler", "PodHandler", "PodInfo", "RegistrationError", "event_mask",
           "pod_info", "run_nri", "validate_index"]
