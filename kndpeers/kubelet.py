"""Playing kubelet: gRPC calls over the gateway's unix sockets, and claim builders."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import grpc

from services.kubelet_gateway.pb import (
    dra_health_v1alpha1_pb2,
    dra_v1_pb2,
    dra_v1beta1_pb2,
    pluginregistration_pb2,
)

DRIVER = "knd.dev"
PB = {"v1": dra_v1_pb2, "v1beta1": dra_v1beta1_pb2}
DRA_SERVICE = {"v1": "/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin",
               "v1beta1": "/k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin"}


def channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=[
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ("grpc.enable_retries", 0),
    ])


async def prepare(target: str, version: str, claims: list[tuple[str, str, str]],
                  seconds: float = 10.0) -> Any:
    """NodePrepareResources with (namespace, name, uid) claims."""
    pb = PB[version]
    async with channel(target) as ch:
        call = ch.unary_unary(f"{DRA_SERVICE[version]}/NodePrepareResources",
                              request_serializer=pb.NodePrepareResourcesRequest.SerializeToString,
                              response_deserializer=pb.NodePrepareResourcesResponse.FromString)
        return await call(pb.NodePrepareResourcesRequest(
            claims=[pb.Claim(namespace=ns, name=n, uid=u) for ns, n, u in claims]),
            timeout=seconds)


async def unprepare(target: str, version: str, claims: list[tuple[str, str, str]],
                    seconds: float = 10.0) -> Any:
    pb = PB[version]
    async with channel(target) as ch:
        call = ch.unary_unary(
            f"{DRA_SERVICE[version]}/NodeUnprepareResources",
            request_serializer=pb.NodeUnprepareResourcesRequest.SerializeToString,
            response_deserializer=pb.NodeUnprepareResourcesResponse.FromString)
        return await call(pb.NodeUnprepareResourcesRequest(
            claims=[pb.Claim(namespace=ns, name=n, uid=u) for ns, n, u in claims]),
            timeout=seconds)


class Kubelet:
    """Prepare and unprepare over one persistent channel, as kubelet keeps its own
    (the benchmarks: each call on a new channel would time the connection too)."""

    def __init__(self, target: str, version: str = "v1", seconds: float = 30.0) -> None:
        self.pb, self.seconds = PB[version], seconds
        self.ch = channel(target)
        self._calls = {verb: self.ch.unary_unary(
            f"{DRA_SERVICE[version]}/Node{verb}Resources",
            request_serializer=getattr(self.pb, f"Node{verb}ResourcesRequest").SerializeToString,
            response_deserializer=getattr(self.pb, f"Node{verb}ResourcesResponse").FromString)
            for verb in ("Prepare", "Unprepare")}

    async def call(self, verb: str, claim: dict) -> None:
        """``verb`` (Prepare or Unprepare) of one claim object; RuntimeError on its error."""
        ns, name, uid = ref(claim)
        request = getattr(self.pb, f"Node{verb}ResourcesRequest")(
            claims=[self.pb.Claim(namespace=ns, name=name, uid=uid)])
        resp = await self._calls[verb](request, timeout=self.seconds)
        if resp.claims[uid].error:
            raise RuntimeError(f"{verb} {name}: {resp.claims[uid].error}")

    async def aclose(self) -> None:
        await self.ch.close()


async def get_info(target: str) -> pluginregistration_pb2.PluginInfo:
    async with channel(target) as ch:
        call = ch.unary_unary("/pluginregistration.Registration/GetInfo",
                              request_serializer=pluginregistration_pb2.InfoRequest.SerializeToString,
                              response_deserializer=pluginregistration_pb2.PluginInfo.FromString)
        return await call(pluginregistration_pb2.InfoRequest(), timeout=5)


async def notify(target: str, registered: bool, error: str = "") -> None:
    pb = pluginregistration_pb2
    async with channel(target) as ch:
        call = ch.unary_unary("/pluginregistration.Registration/NotifyRegistrationStatus",
                              request_serializer=pb.RegistrationStatus.SerializeToString,
                              response_deserializer=pb.RegistrationStatusResponse.FromString)
        await call(pb.RegistrationStatus(plugin_registered=registered, error=error), timeout=5)


def health_stream(ch: grpc.aio.Channel) -> Any:
    pb = dra_health_v1alpha1_pb2
    call = ch.unary_stream("/v1alpha1.DRAResourceHealth/NodeWatchResources",
                           request_serializer=pb.NodeWatchResourcesRequest.SerializeToString,
                           response_deserializer=pb.NodeWatchResourcesResponse.FromString)
    return call(pb.NodeWatchResourcesRequest())


def make_claim(name: str, *, namespace: str = "default", uid: str | None = None,
               results: list[dict] | None = None, config: list[dict] | None = None,
               allocated: bool = True, pods: Sequence[tuple[str, str]] = (("pod-1", "pod-uid-1"),)
               ) -> dict:
    """An allocated ResourceClaim: by default one result for our driver on eth0."""
    if results is None:
        results = [result("nic", "eth0")]
    status: dict[str, Any] = {}
    if allocated:
        status["allocation"] = {"devices": {"results": results, "config": config or []}}
        status["reservedFor"] = [{"resource": "pods", "name": n, "uid": u} for n, u in pods]
    return {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4())},
        "spec": {"devices": {"requests": [
            {"name": r["request"], "exactly": {"deviceClassName": r["driver"]}}
            for r in results]}},
        "status": status,
    }


def result(request: str, device: str, *, driver: str = DRIVER, pool: str = "node-a",
           share_id: str = "") -> dict:
    r = {"request": request, "driver": driver, "pool": pool, "device": device}
    if share_id:
        r["shareID"] = share_id
    return r


def opaque(params: dict, *, source: str = "FromClaim", requests: list[str] | None = None,
           driver: str = DRIVER) -> dict:
    return {"source": source, "requests": requests or [],
            "opaque": {"driver": driver, "parameters": params}}


def ref(claim: dict) -> tuple[str, str, str]:
    m = claim["metadata"]
    return m["namespace"], m["name"], m["uid"]
