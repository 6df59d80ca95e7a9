"""The gateway's two kubelet-facing unix sockets, served with grpc.aio.

- ``<kubelet_root>/plugins/<driver>/dra.sock``: DRAPlugin v1 and v1beta1, and
  v1alpha1.DRAResourceHealth when an inventory source is given;
- ``<kubelet_root>/plugins_registry/<driver>-reg.sock``: pluginregistration.Registration.

The DRA socket listens before the registration socket appears, so kubelet never
registers an endpoint that does not answer yet. Stale socket files (a previous
run that was killed) are removed before listening: the gateway holds the kubelet
root's agent lock (services.common.agentlock) before it gets here, so a socket
file found here is a dead run's, never a live agent's; both sockets are removed on
the way out, cancellation included, the registration socket first so kubelet
deregisters the plugin before its endpoint goes away.

grpc.aio runs on asyncio, so this runs on anyio's asyncio backend.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import AsyncIterable
from dataclasses import dataclass
from pathlib import Path

import anyio
import grpc
from anyio.abc import TaskStatus

from schemas.inventory import InventorySnapshot
from services.common.api.port import ApiPort
from services.kubelet_gateway.dra import DraPlugin
from services.kubelet_gateway.health import DeviceHealth
from services.kubelet_gateway.plumber_client import PlumberClient
from services.kubelet_gateway.registration import Registration

log = logging.getLogger("knd.gateway.grpc")

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest request accepted: kubelet's are a few KiB (<= 32 results of a pod's claims)."""

SHUTDOWN_GRACE = 1.0
"""Seconds in-flight calls get to finish when the gateway stops."""


def dra_socket_path(kubelet_root: Path, driver: str) -> Path:
    return Path(kubelet_root).absolute() / "plugins" / driver / "dra.sock"


def registration_socket_path(kubelet_root: Path, driver: str) -> Path:
    return Path(kubelet_root).absolute() / "plugins_registry" / f"{driver}-reg.sock"


@dataclass
class GrpcStatus:
    """What serve_grpc reports once both sockets listen."""

    dra_socket: Path
    registration_socket: Path
    registration: Registration
    dra: DraPlugin
    health: DeviceHealth | None

    @property
    def registered(self) -> bool | None:
        """None until kubelet reported; then whether it accepted the plugin."""
        return self.registration.registered

    @property
    def registration_error(self) -> str:
        return self.registration.registration_error


def _server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_concurrent_streams", 64),
        # a peer that opens a connection and sends nothing is dropped eventually
        ("grpc.max_connection_idle_ms", 10 * 60 * 1000),
    ]


def _remove_stale(path: Path) -> None:
    """Remove a socket (or any file) left at our socket path by an earlier run."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise RuntimeError(f"{path} is a directory; cannot listen there")
    log.info("removing stale %s %s", "socket" if stat.S_ISSOCK(st.st_mode) else "file", path)
    path.unlink()


def _inode(path: Path) -> int | None:
    try:
        return path.lstat().st_ino
    except OSError:
        return None


def _remove_ours(path: Path, inode: int | None) -> None:
    """Remove the socket we created (not one a newer instance put in its place)."""
    if inode is not None and _inode(path) == inode:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            log.info("removed socket %s", path)


async def _stop(server: grpc.aio.Server | None, grace: float) -> None:
    if server is None:
        return
    try:
        await server.stop(grace)
    except Exception as exc:  # shutting down anyway
        log.warning("gRPC server stop: %s", exc)


MAX_UNIX_PATH = 107
"""sun_path holds 108 bytes including the terminating NUL."""


async def serve_grpc(*, kubelet_root: Path, driver: str, api: ApiPort, plumber: PlumberClient,
                     inventory_source: AsyncIterable[InventorySnapshot] | None = None,
                     advertise_health: bool = False,
                     max_message_bytes: int = MAX_MESSAGE_BYTES,
                     task_status: TaskStatus[GrpcStatus] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve kubelet's DRA and registration sockets until cancelled.

    ``inventory_source``: discovery's snapshots; when given, device health is
    served on the DRA socket. ``advertise_health`` adds
    ``v1alpha1.DRAResourceHealth`` to GetInfo's supported versions (off: the
    list is exactly ``["v1.DRAPlugin", "v1beta1.DRAPlugin"]``).
    """
    dra_sock = dra_socket_path(kubelet_root, driver)
    reg_sock = registration_socket_path(kubelet_root, driver)
    for sock in (dra_sock, reg_sock):
        if len(os.fsencode(sock)) > MAX_UNIX_PATH:
            raise ValueError(f"--kubelet-root: socket path {sock} is {len(os.fsencode(sock))} "
                             f"bytes; unix sockets allow {MAX_UNIX_PATH}")
        sock.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(sock)

    dra = DraPlugin(driver=driver, api=api, plumber=plumber)
    health = DeviceHealth() if inventory_source is not None else None
    registration = Registration(driver=driver, endpoint=dra_sock,
                                advertise_health=advertise_health)
    status = GrpcStatus(dra_socket=dra_sock, registration_socket=reg_sock,
                        registration=registration, dra=dra, health=health)

    options = _server_options(max_message_bytes)
    dra_server: grpc.aio.Server | None = None
    reg_server: grpc.aio.Server | None = None
    dra_inode = reg_inode = None
    try:
        dra_server = grpc.aio.server(options=options)
        handlers = dra.handlers() + ([health.handler()] if health is not None else [])
        dra_server.add_generic_rpc_handlers(handlers)
        if not dra_server.add_insecure_port(f"unix://{dra_sock}"):
            raise RuntimeError(f"cannot listen on {dra_sock}")
        await dra_server.start()
        dra_inode = _inode(dra_sock)
        os.chmod(dra_sock, 0o660)

        reg_server = grpc.aio.server(options=options)
        reg_server.add_generic_rpc_handlers([registration.handler()])
        if not reg_server.add_insecure_port(f"unix://{reg_sock}"):
            raise RuntimeError(f"cannot listen on {reg_sock}")
        await reg_server.start()
        reg_inode = _inode(reg_sock)
        os.chmod(reg_sock, 0o660)
        log.info("serving DRA driver %s on %s, registration on %s", driver, dra_sock, reg_sock)

        async with anyio.create_task_group() as tg:
            if health is not None and inventory_source is not None:
                tg.start_soon(_feed_health, health, inventory_source)
            task_status.started(status)
            await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            if health is not None:
                health.close()
            _remove_ours(reg_sock, reg_inode)
            await _stop(reg_server, 0)
            await _stop(dra_server, SHUTDOWN_GRACE)
            _remove_ours(dra_sock, dra_inode)
            # grpc may leave the file when stopping; a socket we made is ours to remove
            log.info("gRPC sockets closed")


async def _feed_health(health: DeviceHealth, source: AsyncIterable[InventorySnapshot]) -> None:
    try:
        await health.run(source)
    except Exception:  # health is optional; the DRA service must keep running
        log.exception("inventory feed for device health failed")
    else:
        log.warning("inventory feed for device health ended; health stays as last known")
