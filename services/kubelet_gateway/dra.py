"""The kubelet DRA plugin service (``DRAPlugin``), v1 and v1beta1 from one implementation.

Kubelet sends only the namespace, name and UID of each claim of a pod for this
driver, in one call, and waits up to 45 s. Every claim is handled concurrently
and on its own: the claim is read from the API, checked (same UID, allocated)
and decoded into the devices of this driver with their configuration, and the
plumber is asked to prepare them. The answer maps every UID of the request, and
no other, either to its devices or to a non-empty error that says what was
wrong, so one bad claim never hides the others.

NodeUnprepareResources never reads the claim: it may come after the claim was
deleted, and the plumber works from its own checkpoint.

Both operations are idempotent here (kubelet retries failed calls): the gateway
keeps no state, and the plumber's prepare and unprepare are idempotent. Calls
for the same claim UID are serialised so that a retry overlapping a slow first
attempt cannot reorder a prepare and an unprepare at the plumber.

The gRPC handlers are registered from the generated messages with generic
handlers: the ``*_pb2_grpc`` modules grpcio-tools writes import their
``*_pb2`` module as a top-level module, which does not work inside the package.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import anyio
import grpc
from nats.aio.client import Client
from prometheus_client.metrics import Counter, Histogram

from schemas import plumber as p
from schemas.base import Message, encode
from schemas.events import ClaimPrepared, ClaimUnprepared
from schemas.subjects import Subjects
from schemas.text import one_line, q
from services.common.api.decode import ObjectError
from services.common.api.port import ApiError, ApiPort, NotFound
from services.common.locks import KeyedLocks
from services.common.logs import fields
from services.kubelet_gateway import rpc
from services.kubelet_gateway.claims import NAME_LIMIT, ClaimError, claim_pods, claim_requests
from services.kubelet_gateway.pb import dra_v1_pb2, dra_v1beta1_pb2
from services.kubelet_gateway.plumber_client import PlumberClient, PlumberError

log = logging.getLogger("knd.gateway.dra")

VERSIONS: dict[str, ModuleType] = {"v1": dra_v1_pb2, "v1beta1": dra_v1beta1_pb2}
"""API version -> generated messages; the service is ``<package>.DRAPlugin``."""

KUBELET_TIMEOUT = 45.0
"""What kubelet waits for one call; used when a call carries no deadline."""

PREPARE, UNPREPARE = "NodePrepareResources", "NodeUnprepareResources"

_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
"""A DNS label and a DNS subdomain: what the API accepts as a namespace and a claim name.
Anything else is not looked up (a megabyte of it would be sent to the API server)."""

REQUESTS = Counter("knd_gateway_dra_requests",
                   "DRA gRPC calls from kubelet, by method, API version and status "
                   "(ok, claim_error: at least one claim failed, or the gRPC code)",
                   ["method", "version", "status"])
LATENCY = Histogram("knd_gateway_dra_request_duration_seconds",
                    "Time to answer one DRA gRPC call, by method, API version and status",
                    ["method", "version", "status"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 45))
CLAIMS = Counter("knd_gateway_dra_claims",
                 "Claims handled in DRA gRPC calls, by method and result (ok, error)",
                 ["method", "result"])


class ClaimEvents:
    """``knd.<node>.events.claim.*`` on the bus: best effort, never fails a call."""

    def __init__(self, nc: Client, node: str) -> None:
        self.nc = nc
        self.node = node
        self.subjects = Subjects(node)

    async def publish(self, kind: str, msg: Message) -> None:
        try:  # a publish only fills nats-py's buffer: it does not wait for the server
            await self.nc.publish(self.subjects.event(kind), encode(msg))
        except Exception as exc:  # the bus may be restarting; it is only an event
            log.debug("event %s not sent: %r", kind, exc)


def service_name(version: str) -> str:
    """The full gRPC service name of ``version`` (``k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin``)."""
    return VERSIONS[version].DESCRIPTOR.services_by_name["DRAPlugin"].full_name


@dataclass(frozen=True)
class ClaimRef:
    """A claim as kubelet names it."""

    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:  # kubelet's strings, echoed: escaped and cut
        return f"claim {one_line(f'{self.namespace}/{self.name}', NAME_LIMIT)}"


@dataclass
class Prepared:
    """The outcome of preparing one claim: its devices, or an error."""

    devices: list[p.PreparedDevice] = field(default_factory=list)
    error: str = ""


def _budget(context: grpc.aio.ServicerContext | None) -> float:
    """Seconds this call may spend, leaving kubelet time to read the answer."""
    remaining = context.time_remaining() if context is not None else None
    if remaining is None:
        remaining = KUBELET_TIMEOUT
    return max(0.05, remaining - min(2.0, remaining * 0.1))


class DraPlugin:
    """NodePrepareResources / NodeUnprepareResources for one driver, version-independent."""

    def __init__(self, *, driver: str, api: ApiPort, plumber: PlumberClient,
                 events: ClaimEvents | None = None) -> None:
        self.driver = driver
        self.api = api
        self.plumber = plumber
        self.events = events
        """Where claim events go (None: nowhere); the gateway sets it once on the bus."""
        self._locks = KeyedLocks()

    # ---- the operations, free of gRPC ------------------------------------------------------

    async def prepare(self, claims: Sequence[ClaimRef], budget: float) -> dict[str, Prepared]:
        """Prepare every claim concurrently; one entry per distinct UID of ``claims``."""
        return await self._each(claims, budget, self._prepare_one,
                                lambda err: Prepared(error=err), PREPARE, needs_name=True)

    async def unprepare(self, claims: Sequence[ClaimRef], budget: float) -> dict[str, str]:
        """Unprepare every claim concurrently; UID -> error ("" on success).

        Only the UID is needed: the plumber works from its checkpoint."""
        return await self._each(claims, budget, self._unprepare_one, lambda err: err, UNPREPARE,
                                needs_name=False)

    async def _each(self, claims: Sequence[ClaimRef], budget: float,
                    one: Callable[[ClaimRef, float], Awaitable[Any]],
                    failed: Callable[[str], Any], method: str, *,
                    needs_name: bool) -> dict[str, Any]:
        deadline = time.monotonic() + budget
        unique: dict[str, ClaimRef] = {}
        for ref in claims:
            unique.setdefault(ref.uid, ref)
        results: dict[str, Any] = {}

        async def run(ref: ClaimRef) -> None:
            started = time.perf_counter()
            await attempt(ref)
            await self._done(method, ref, results[ref.uid], time.perf_counter() - started)

        async def attempt(ref: ClaimRef) -> None:
            error = ""
            if not ref.uid or (needs_name and not (ref.namespace and ref.name)):
                error = (f"{ref}: kubelet sent an incomplete claim reference "
                         f"(namespace={q(ref.namespace)}, name={q(ref.name)}, uid={q(ref.uid)})")
            elif needs_name and not (_NAMESPACE.fullmatch(ref.namespace)
                                     and _NAME.fullmatch(ref.name)):
                error = (f"{ref}: kubelet sent a namespace or name that is not a Kubernetes "
                         "name; the claim cannot exist")
            else:
                with anyio.move_on_after(max(0.0, deadline - time.monotonic())) as scope:
                    try:
                        async with self._locks.hold(ref.uid):
                            results[ref.uid] = await one(ref, deadline)
                        return
                    except ClaimError as exc:
                        error = str(exc)
                    except PlumberError as exc:
                        error = f"{ref}: {exc}"
                    except Exception as exc:  # never let one claim take the call down
                        log.exception("%s: %s failed", ref, method)
                        error = f"{ref}: internal error: {one_line(repr(exc), 300)}"
                if scope.cancelled_caught:
                    error = f"{ref}: no answer within the call's deadline ({budget:.1f} s)"
            results[ref.uid] = failed(error)

        async with anyio.create_task_group() as tg:
            for ref in unique.values():
                tg.start_soon(run, ref)
        for res in results.values():
            err = res.error if isinstance(res, Prepared) else res
            CLAIMS.labels(method, "error" if err else "ok").inc()
        return results

    async def _done(self, method: str, ref: ClaimRef, res: Prepared | str, seconds: float) -> None:
        """Log one claim's outcome and announce it (``events.claim.prepared|unprepared``)."""
        ms = seconds * 1000.0
        if isinstance(res, Prepared):
            err, devices = res.error, [d.device for d in res.devices]
        else:
            err, devices = res, []
        where = fields(claim=ref.uid, device=",".join(devices))
        if err:
            log.warning("%s %s (%s): %s", method, ref, ref.uid, err, extra=where)
        else:
            log.info("%s %s (%s): %s in %.1f ms", method, ref, ref.uid,
                     ", ".join(devices) if method == PREPARE else "done",
                     ms, extra=where)
        if self.events is not None:
            if method == PREPARE:
                msg: Message = ClaimPrepared(
                    node=self.events.node, claim_uid=ref.uid, namespace=ref.namespace,
                    name=ref.name, devices=devices, error=err, latency_ms=ms)
                await self.events.publish("claim.prepared", msg)
            else:
                msg = ClaimUnprepared(node=self.events.node, claim_uid=ref.uid,
                                      namespace=ref.namespace, name=ref.name, error=err,
                                      latency_ms=ms)
                await self.events.publish("claim.unprepared", msg)

    def _plumber_deadline(self, deadline: float) -> float:
        """The plumber's wait: its own timeout, ending a little before the call's deadline so
        that a silent plumber is reported as such rather than as a deadline."""
        return max(0.05, min(self.plumber.timeout, deadline - time.monotonic() - 0.1))

    async def _prepare_one(self, ref: ClaimRef, deadline: float) -> Prepared:
        try:
            claim = await self.api.get_claim(ref.namespace, ref.name)
        except NotFound:
            return Prepared(error=f"{ref}: not found in the API (deleted?)")
        except ApiError as exc:
            return Prepared(error=f"{ref}: cannot read it from the API: "
                                  f"{one_line(str(exc), 500)}")
        try:
            devices = claim_requests(claim, driver=self.driver, uid=ref.uid)
            pods = claim_pods(claim)
        except ObjectError as exc:
            return Prepared(error=f"{ref}: the API served a malformed claim: {exc}")
        if not devices:
            log.info("%s (%s): no device of driver %s allocated; nothing to prepare",
                     ref, ref.uid, self.driver)
            return Prepared()
        req = p.Prepare(claim_uid=ref.uid, namespace=ref.namespace, name=ref.name,
                        devices=devices, pods=pods)
        reply = await self.plumber.prepare(req, deadline=self._plumber_deadline(deadline))
        if reply.error:
            return Prepared(error=f"{ref}: plumber: {reply.error}")
        if reply.claim_uid != ref.uid:
            return Prepared(error=f"{ref}: plumber answered for claim UID {reply.claim_uid!r} "
                                  f"instead of {ref.uid!r}")
        return Prepared(devices=list(reply.devices))

    async def _unprepare_one(self, ref: ClaimRef, deadline: float) -> str:
        req = p.Unprepare(claim_uid=ref.uid, namespace=ref.namespace, name=ref.name)
        reply = await self.plumber.unprepare(req, deadline=self._plumber_deadline(deadline))
        if reply.error:
            return f"{ref}: plumber: {reply.error}"
        if reply.claim_uid != ref.uid:
            return (f"{ref}: plumber answered for claim UID {reply.claim_uid!r} "
                    f"instead of {ref.uid!r}")
        return ""

    # ---- gRPC ------------------------------------------------------------------------------

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        """One generic handler per API version, to add to the DRA socket's server."""
        return [self._handler(version) for version in VERSIONS]

    def _handler(self, version: str) -> grpc.GenericRpcHandler:
        pb = VERSIONS[version]
        with_share_id = "share_id" in pb.Device.DESCRIPTOR.fields_by_name

        def device(d: p.PreparedDevice) -> Any:
            msg = pb.Device(request_names=[d.request] if d.request else [],
                            pool_name=d.pool, device_name=d.device,
                            cdi_device_ids=list(d.cdi_ids))
            if with_share_id and d.share_id:
                msg.share_id = d.share_id
            return msg

        async def prepare(data: bytes, context: grpc.aio.ServicerContext) -> Any:
            async def work() -> tuple[Any, bool]:
                request = rpc.parse(pb.NodePrepareResourcesRequest, data, PREPARE)
                got = await self.prepare(_refs(request), _budget(context))
                resp = pb.NodePrepareResourcesResponse()
                for uid, res in got.items():
                    entry = resp.claims[uid]
                    if res.error:
                        entry.error = res.error
                    else:
                        entry.devices.extend(device(d) for d in res.devices)
                return resp, any(r.error for r in got.values())
            return await _measured(PREPARE, version, context, work)

        async def unprepare(data: bytes, context: grpc.aio.ServicerContext) -> Any:
            async def work() -> tuple[Any, bool]:
                request = rpc.parse(pb.NodeUnprepareResourcesRequest, data, UNPREPARE)
                got = await self.unprepare(_refs(request), _budget(context))
                resp = pb.NodeUnprepareResourcesResponse()
                for uid, err in got.items():
                    resp.claims[uid].error = err
                return resp, any(got.values())
            return await _measured(UNPREPARE, version, context, work)

        return grpc.method_handlers_generic_handler(service_name(version), {
            PREPARE: rpc.raw_unary(prepare, pb.NodePrepareResourcesResponse),
            UNPREPARE: rpc.raw_unary(unprepare, pb.NodeUnprepareResourcesResponse),
        })


def _refs(request: Any) -> list[ClaimRef]:
    return [ClaimRef(namespace=c.namespace, name=c.name, uid=c.uid) for c in request.claims]


async def _measured(method: str, version: str, context: grpc.aio.ServicerContext,
                    work: Callable[[], Awaitable[tuple[Any, bool]]]) -> Any:
    """Run one call, counting it and its latency by status."""
    start = time.perf_counter()
    status = "internal"
    try:
        resp, claim_error = await work()
        status = "claim_error" if claim_error else "ok"
        return resp
    except rpc.BadRequest as exc:
        status = "invalid_argument"
        await rpc.reject(context, exc)
    except BaseException as exc:
        status = "cancelled" if isinstance(exc, anyio.get_cancelled_exc_class()) else "internal"
        raise
    finally:
        REQUESTS.labels(method, version, status).inc()
        LATENCY.labels(method, version, status).observe(time.perf_counter() - start)
