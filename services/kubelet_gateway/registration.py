"""Kubelet plugin registration (``pluginregistration.Registration``) on ``<driver>-reg.sock``.

Kubelet's plugin watcher finds the socket in ``<root>/plugins_registry/``, asks
GetInfo what the plugin is and where its DRA socket is, then reports the
outcome with NotifyRegistrationStatus. The outcome is kept (``registered``,
``registration_error``) for the gateway's health and status.

``supported_versions`` is exactly what kubelet's DRA plugin helper registers: kubelet
takes the first version it supports, so v1 comes first. The device health
service is served on the DRA socket whether or not it is listed (a kubelet that
watches health calls it on the DRA socket); listing it as
``v1alpha1.DRAResourceHealth`` is opt-in (``advertise_health``) and goes last,
so the list a kubelet picks its DRA version from never changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import grpc

from services.kubelet_gateway import rpc
from services.kubelet_gateway.pb import pluginregistration_pb2 as pb

log = logging.getLogger("knd.gateway.registration")

PLUGIN_TYPE = "DRAPlugin"
SUPPORTED_VERSIONS = ("v1.DRAPlugin", "v1beta1.DRAPlugin")
HEALTH_SERVICE = "v1alpha1.DRAResourceHealth"
SERVICE = pb.DESCRIPTOR.services_by_name["Registration"].full_name
"""``pluginregistration.Registration``."""


class Registration:
    """The registration service and the last status kubelet reported."""

    def __init__(self, *, driver: str, endpoint: Path, advertise_health: bool = False,
                 on_status: Callable[[bool, str], None] | None = None) -> None:
        self.driver = driver
        self.endpoint = Path(endpoint).absolute()
        self.supported_versions = list(SUPPORTED_VERSIONS)
        if advertise_health:
            self.supported_versions.append(HEALTH_SERVICE)
        self.on_status = on_status
        self.registered: bool | None = None
        """None until kubelet reports; then whether it accepted the plugin."""
        self.registration_error = ""

    def info(self) -> pb.PluginInfo:
        return pb.PluginInfo(type=PLUGIN_TYPE, name=self.driver, endpoint=str(self.endpoint),
                             supported_versions=self.supported_versions)

    def notify(self, registered: bool, error: str) -> None:
        self.registered, self.registration_error = registered, error
        if registered:
            log.info("kubelet registered DRA driver %s (endpoint %s)", self.driver, self.endpoint)
        else:
            log.error("kubelet refused to register DRA driver %s: %s", self.driver,
                      error or "(no reason given)")
        if self.on_status is not None:
            try:
                self.on_status(registered, error)
            except Exception:
                log.exception("registration status callback failed")

    def handler(self) -> grpc.GenericRpcHandler:
        async def get_info(data: bytes, context: grpc.aio.ServicerContext) -> pb.PluginInfo:
            try:
                rpc.parse(pb.InfoRequest, data, "GetInfo")
            except rpc.BadRequest as exc:
                await rpc.reject(context, exc)
            log.debug("kubelet asked for plugin info")
            return self.info()

        async def notify(data: bytes,
                         context: grpc.aio.ServicerContext) -> pb.RegistrationStatusResponse:
            try:
                request = rpc.parse(pb.RegistrationStatus, data, "NotifyRegistrationStatus")
            except rpc.BadRequest as exc:
                await rpc.reject(context, exc)
            self.notify(request.plugin_registered, request.error)
            return pb.RegistrationStatusResponse()

        return grpc.method_handlers_generic_handler(SERVICE, {
            "GetInfo": rpc.raw_unary(get_info, pb.PluginInfo),
            "NotifyRegistrationStatus": rpc.raw_unary(notify, pb.RegistrationStatusResponse),
        })
