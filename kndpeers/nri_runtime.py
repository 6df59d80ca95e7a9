"""A container runtime stand-in for NRI tests: listens on a real unix socket.

It speaks the plugin protocol from the runtime's side with knd's own ``Mux`` and ttrpc
classes: a ttrpc server on conn 2 (``Runtime.RegisterPlugin``) and a ttrpc client on
conn 1 (the ``Plugin`` methods). Every registered connection is handed to the test as a
``PluginConn`` (``await runtime.next_plugin()``), whose methods play the runtime's calls.

    async with FakeRuntime(path) as rt:
        ...start the plugin...
        conn = await rt.next_plugin()
        await conn.configure()
        await conn.synchronize([pod(...)], chunks=2)
        await conn.run_pod_sandbox(pod(...))
        await rt.restart()            # close everything, listen again
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import SocketStream, TaskGroup
from google.protobuf.message import Message as ProtoMessage

from services.kubelet_gateway.nri.mux import PLUGIN_CONN, RUNTIME_CONN, Mux
from services.kubelet_gateway.nri.plugin import PLUGIN_SERVICE, RUNTIME_SERVICE
from services.kubelet_gateway.nri.ttrpc import Code, TtrpcClient, TtrpcError, TtrpcServer
from services.kubelet_gateway.pb import nri_pb2 as api
from services.kubelet_gateway.pb import ttrpc_pb2

NETNS = "/var/run/netns/cni-0b7a2f3e"


def pod(uid: str = "uid-1", name: str = "pod-a", namespace: str = "default",
        netns: str | None = NETNS, sandbox_id: str | None = None) -> api.PodSandbox:
    """A PodSandbox; ``netns=""`` is a host-network pod, ``None`` has no network entry."""
    sb = api.PodSandbox(id=sandbox_id or f"sb-{uid}", name=name, uid=uid, namespace=namespace,
                        labels={"app": name}, ips=["10.0.0.7"], pid=4242)
    sb.linux.namespaces.add(type="ipc", path="/proc/4242/ns/ipc")
    if netns is not None:
        sb.linux.namespaces.add(type="network", path=netns)
    return sb


def container(name: str = "main", sandbox: api.PodSandbox | None = None) -> api.Container:
    sb = sandbox or pod()
    return api.Container(id=f"ctr-{name}", pod_sandbox_id=sb.id, name=name)


class PluginConn:
    """One registered plugin connection, seen from the runtime."""

    def __init__(self, mux: Mux, client: TtrpcClient, registration: api.RegisterPluginRequest,
                 deadline: float) -> None:
        self.mux = mux
        self.client = client
        self.registration = registration
        self.deadline = deadline
        self.disconnect_late = True
        self.timed_out: list[str] = []
        """Methods the plugin answered too late (the connection was closed after each)."""

    @property
    def closed(self) -> anyio.Event:
        return self.mux.closed

    async def call(self, method: str, request: ProtoMessage, response_type: type[ProtoMessage],
                   *, deadline: float | None = None, service: str = PLUGIN_SERVICE):
        """One request; a plugin that does not answer within the deadline is
        disconnected, as containerd does (``timed_out`` counts them)."""
        limit = deadline or self.deadline
        started = anyio.current_time()
        try:
            return await self.client.call(service, method, request, response_type,
                                          deadline=limit)
        except TtrpcError as exc:
            late = anyio.current_time() - started >= limit  # not the plugin's own error
            if exc.code == Code.DEADLINE_EXCEEDED and late and self.disconnect_late:
                self.timed_out.append(method)
                await self.mux.aclose()
            raise

    async def configure(self, *, registration_timeout_ms: int = 5000,
                        request_timeout_ms: int = 2000) -> api.ConfigureResponse:
        req = api.ConfigureRequest(config="", runtime_name="fake-runtime",
                                   runtime_version="v0.0.1",
                                   registration_timeout=registration_timeout_ms,
                                   request_timeout=request_timeout_ms, NRI_version="v0.test")
        return await self.call("Configure", req, api.ConfigureResponse)

    async def synchronize(self, pods: Sequence[api.PodSandbox],
                          containers: Sequence[api.Container] = (),
                          chunks: int = 1) -> list[api.SynchronizeResponse]:
        """Send the pods in ``chunks`` requests (``more`` on all but the last)."""
        replies = []
        per = max(1, -(-len(pods) // chunks))
        for i in range(chunks):
            req = api.SynchronizeRequest(pods=pods[i * per:(i + 1) * per],
                                         containers=containers if i == chunks - 1 else [],
                                         more=i < chunks - 1)
            replies.append(await self.call("Synchronize", req, api.SynchronizeResponse))
        return replies

    async def handshake(self, **kw) -> api.ConfigureResponse:
        """What a runtime does after a registration: Configure, then an empty Synchronize."""
        resp = await self.configure(**kw)
        await self.synchronize([])
        return resp

    async def run_pod_sandbox(self, sb: api.PodSandbox) -> api.Empty:
        return await self.call("RunPodSandbox", api.RunPodSandboxRequest(pod=sb), api.Empty)

    async def stop_pod_sandbox(self, sb: api.PodSandbox) -> api.Empty:
        return await self.call("StopPodSandbox", api.StopPodSandboxRequest(pod=sb), api.Empty)

    async def remove_pod_sandbox(self, sb: api.PodSandbox) -> api.Empty:
        return await self.call("RemovePodSandbox", api.RemovePodSandboxRequest(pod=sb),
                               api.Empty)

    async def create_container(self, sb: api.PodSandbox,
                               ctr: api.Container) -> api.CreateContainerResponse:
        return await self.call("CreateContainer",
                               api.CreateContainerRequest(pod=sb, container=ctr),
                               api.CreateContainerResponse)

    async def state_change(self, event: api.Event, sb: api.PodSandbox,
                           ctr: api.Container | None = None) -> api.Empty:
        req = api.StateChangeEvent(event=event, pod=sb)
        if ctr is not None:
            req.container.CopyFrom(ctr)
        return await self.call("StateChange", req, api.Empty)

    async def shutdown(self) -> api.Empty:
        return await self.call("Shutdown", api.Empty(), api.Empty)

    async def exchange(self, request: bytes) -> ttrpc_pb2.Response:
        """Send any bytes as the body of a ttrpc Request message; the raw Response."""
        return await self.client.exchange(request, deadline=self.deadline)

    async def send_frame(self, conn_id: int, payload: bytes) -> None:
        """A well-formed mux frame, on any conn id."""
        await self.mux.send(conn_id, payload)

    async def send_raw(self, data: bytes) -> None:
        """Bytes straight onto the socket, framing or not."""
        await self.mux.stream.send(data)

    async def close(self) -> None:
        await self.mux.aclose()


class HookFailed(RuntimeError):
    """An OCI hook exited non-zero or outlived its timeout: the container is not created."""


async def run_oci_hooks(hooks: Sequence[api.Hook], state: dict) -> None:
    """Run ``hooks`` as runc runs a container's ``createRuntime`` hooks: ``path`` with
    ``args`` (argv[0] included) and only ``env``, the container's state as JSON on stdin,
    killed after ``timeout`` seconds; the first failure stops creation with its stderr."""
    for hook in hooks:
        timeout = hook.timeout.value if hook.HasField("timeout") else None
        run = functools.partial(subprocess.run, list(hook.args) or [hook.path],
                                executable=hook.path, capture_output=True,
                                env=dict(e.split("=", 1) for e in hook.env),
                                input=json.dumps(state), text=True, timeout=timeout)
        try:
            res = await anyio.to_thread.run_sync(run)
        except subprocess.TimeoutExpired:
            raise HookFailed(f"{hook.path}: timed out after {timeout} s") from None
        if res.returncode:
            raise HookFailed(f"{hook.path}: exit status {res.returncode}: "
                             f"{res.stderr.strip()}")


class FakeRuntime:
    """The runtime's NRI socket. Use as an async context manager."""

    def __init__(self, socket_path: Path, *, deadline: float = 2.0) -> None:
        self.socket_path = Path(socket_path)
        self.deadline = deadline
        self.registrations: list[api.RegisterPluginRequest] = []
        self.refusals: list[str] = []
        self.connections = 0
        self.muxes: list[Mux] = []
        self._send, self._receive = anyio.create_memory_object_stream[PluginConn](100)
        self._tg: TaskGroup | None = None
        self._listen_scope: anyio.CancelScope | None = None

    async def __aenter__(self) -> FakeRuntime:
        self._tg = await anyio.create_task_group().__aenter__()
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        assert self._tg is not None
        await self.stop()
        self._tg.cancel_scope.cancel()
        try:
            return await self._tg.__aexit__(et, exc, tb)
        finally:
            self._send.close()
            self._receive.close()

    async def start(self) -> None:
        assert self._tg is not None
        self.socket_path.unlink(missing_ok=True)
        listener = await anyio.create_unix_listener(self.socket_path)
        self._listen_scope = anyio.CancelScope()

        async def serve(scope: anyio.CancelScope) -> None:
            with scope:
                async with listener:
                    await listener.serve(self._connection)

        self._tg.start_soon(serve, self._listen_scope)

    async def stop(self) -> None:
        """Stop listening and drop every connection (the runtime went away)."""
        for mux in self.muxes:  # first: their readers stop only when closed
            await mux.aclose()
        self.muxes.clear()
        if self._listen_scope is not None:
            self._listen_scope.cancel()
            self._listen_scope = None
        self.socket_path.unlink(missing_ok=True)

    async def restart(self) -> None:
        await self.stop()
        await anyio.lowlevel.checkpoint()
        await self.start()

    async def next_plugin(self, wait: float = 5.0) -> PluginConn:
        """The next plugin connection that registers (TimeoutError after ``wait`` s)."""
        with anyio.fail_after(wait):
            return await self._receive.receive()

    async def _connection(self, stream: SocketStream) -> None:
        self.connections += 1
        mux = Mux(stream)
        self.muxes.append(mux)
        server = TtrpcServer(mux.open(RUNTIME_CONN))
        client = TtrpcClient(mux.open(PLUGIN_CONN))

        async def register(req: api.RegisterPluginRequest) -> api.Empty:
            problem = ""
            if not req.plugin_name:
                problem = "plugin name is empty"
            elif not re.fullmatch(r"[0-9]{2}", req.plugin_idx):
                problem = f"plugin index {req.plugin_idx!r} is not two digits"
            if problem:
                self.refusals.append(problem)
                raise TtrpcError(Code.INVALID_ARGUMENT, problem)
            self.registrations.append(req)
            self._send.send_nowait(PluginConn(mux, client, req, self.deadline))
            return api.Empty()

        server.register(RUNTIME_SERVICE, "RegisterPlugin", api.RegisterPluginRequest, register)
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(mux.run, shield=True))
            tg.start_soon(server.serve)
            tg.start_soon(client.run)
            try:
                await mux.closed.wait()
            finally:
                with anyio.CancelScope(shield=True):
                    await mux.aclose()
            tg.cancel_scope.cancel()
