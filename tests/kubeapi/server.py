"""A test Kubernetes API server that speaks real HTTP.

No kube-apiserver can run here, so this stands in for it: the real
kubernetes-asyncio client talks to it unchanged, which keeps the product's
API code (paths, query parameters, bodies, error mapping) honestly exercised.
It serves the subset knd uses (nodes, resourceslices, resourceclaims and
their status, events) and the discovery documents kubectl asks for, and can
be told to fail or hang on chosen requests, so retry and timeout paths can be
tested.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from aiohttp import web

from tests.kubeapi.discovery import document
from tests.kubeapi.store import FIELD_LABELS, KINDS, Kind, StatusError, Store, now
from tests.kubeapi.tables import event_table, wants_table

log = logging.getLogger("knd.tests.kubeapi")

VERBS = ("get", "list", "create", "update", "delete", "patch")
WRITE_VERBS = ("create", "update", "delete", "patch")
MERGE_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
APPLY_TYPES = ("application/apply-patch+yaml", "application/apply-patch+json")
STATUS_REASONS = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 409: "Conflict",
                  410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid",
                  429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
                  504: "Timeout"}


@dataclass
class _Fault:
    verb: str
    resource: str
    status: int | None
    delay: float
    times: int


@dataclass
class _Route:
    """A request path, parsed: ``resource`` includes ``/status`` for the subresource."""

    kind: Kind
    namespace: str | None
    name: str
    subresource: str

    @property
    def resource(self) -> str:
        return f"{self.kind.resource}/{self.subresource}" if self.subresource else \
            self.kind.resource


class KubeApiServer:
    """Serve the knd subset of the Kubernetes REST API on 127.0.0.1:<random port>."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.url = ""
        self.store = Store()
        self.requests: list[tuple[str, str, int]] = []
        self._faults: list[_Fault] = []
        self._raw: dict[str, bytes] = {}
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    async def __aenter__(self) -> KubeApiServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind first (port 0 = any free one) so ``url`` is known before serving."""
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self.url = f"http://{self.host}:{self.port}"
        # A short shutdown timeout: a test that injected a long delay must not
        # wait for it at teardown (the delays also end early on close).
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- test-facing helpers -------------------------------------------------------------

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig (JSON is valid YAML) pointing at this server over plain http."""
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "knd-test",
            "clusters": [{"name": "knd-test", "cluster": {"server": self.url}}],
            "users": [{"name": "knd-test", "user": {}}],
            "contexts": [{"name": "knd-test",
                          "context": {"cluster": "knd-test", "user": "knd-test"}}],
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2))
        return path

    def add_node(self, name: str) -> dict:
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": now(),
                             "labels": {"kubernetes.io/hostname": name}},
                "spec": {}, "status": {}}
        return self.store.seed("nodes", node)

    def objects(self, resource: str) -> list[dict]:
        return [copy.deepcopy(o) for o in self.store.data[resource].values()]

    def put_object(self, resource: str, obj: dict) -> dict:
        """Seed an object as given, bypassing validation (e.g. an allocated ResourceClaim)."""
        return self.store.seed(resource, obj)

    def inject(self, verb: str, resource: str, *, status: int | None = None,
               delay: float = 0.0, times: int = 1) -> None:
        """Make the next ``times`` matching requests sleep ``delay`` s, then fail with ``status``.

        ``resource`` "resourceclaims" also matches its ``resourceclaims/status``.
        """
        if verb != "*" and verb not in VERBS:
            raise ValueError(f"unknown verb {verb!r}")
        self._faults.append(_Fault(verb, resource, status, delay, times))

    def serve_raw(self, path: str, body: bytes) -> None:
        """Answer every GET of ``path`` with ``body`` as it is, 200, application/json: an
        object no real API server would store (wrong types, absurdly deep or large)."""
        self._raw[path] = body

    def writes(self, resource: str = "resourceslices") -> int:
        return sum(1 for verb, res, code in self.requests
                   if verb in WRITE_VERBS and _same_resource(resource, res) and code < 300)

    # ---- HTTP ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        verb, resource = request.method.lower(), ""
        raw = self._raw.get(request.path) if request.method == "GET" else None
        if raw is not None:
            self.requests.append(("get", request.path, 200))
            return web.Response(body=raw, content_type="application/json")
        found = document(request.path) if request.method == "GET" else None
        if found is not None:  # what kubectl asks first
            return web.json_response(found)
        try:
            route = self._route(request.path)
            verb = _verb(request.method, route)
            resource = route.resource
            fault = self._take_fault(verb, resource)
            if fault is not None:
                if fault.delay:
                    await self._sleep(fault.delay)
                if fault.status is not None:
                    raise StatusError(fault.status, STATUS_REASONS.get(fault.status, "Unknown"),
                                      f"injected failure ({fault.status})")
            code, body = await self._serve(request, verb, route)
        except StatusError as e:
            code, body = e.code, e.body()
        except Exception as e:  # a bug in this server must be visible, not a hang
            log.exception("test API server failed on %s %s", request.method, request.path)
            code, body = 500, StatusError(500, "InternalError", f"test server bug: {e!r}").body()
        self.requests.append((verb, resource, code))
        return web.json_response(body, status=code)

    async def _sleep(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._closing.wait(), delay)
        except TimeoutError:
            return
        raise StatusError(503, "ServiceUnavailable", "server shutting down")

    def _take_fault(self, verb: str, resource: str) -> _Fault | None:
        for fault in self._faults:
            if fault.times > 0 and fault.verb in ("*", verb) and \
                    _same_resource(fault.resource, resource):
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _route(path: str) -> _Route:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, rest = "", parts[2:]
        elif parts[:3] == ["apis", "resource.k8s.io", "v1"]:
            group, rest = "resource.k8s.io", parts[3:]
        else:
            raise _no_such_path()
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise _no_such_path()
        kind = KINDS.get(rest[0])
        if kind is None or kind.group != group or (ns is not None and not kind.namespaced):
            raise _no_such_path()
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if (sub and (sub != "status" or not kind.has_status)) or \
                (kind.namespaced and name and ns is None):
            raise _no_such_path()
        return _Route(kind, ns, name, sub)

    async def _serve(self, request: web.Request, verb: str, route: _Route) -> tuple[int, dict]:
        kind, ns, name = route.kind, route.namespace or "", route.name
        if verb == "list":
            if request.query.get("watch") in ("true", "1"):
                raise StatusError(405, "MethodNotAllowed", "watch is not served by the test server")
            fields = _parse_selector(request.query.get("fieldSelector", ""))
            for key, _, _ in fields:
                if key not in FIELD_LABELS[kind.resource]:
                    raise StatusError(400, "BadRequest",
                                      f'field label not supported: {key}')
            labels = _parse_selector(request.query.get("labelSelector", ""), labels=True)
            body = _page(self.store.list(kind, route.namespace, fields, labels),
                         request.query.get("limit", ""), request.query.get("continue", ""))
            if kind.resource == "events" and wants_table(request.headers.get("Accept", "")):
                return 200, event_table(body)
            return 200, body
        if verb == "get":
            return 200, self.store.get(kind, ns, name)
        if verb == "delete":
            options = await _json_body(request, allow_empty=True)
            return 200, self.store.delete(kind, ns, name, options)
        if verb == "create":
            body = self._typed(kind, await _json_body(request))
            meta = body.get("metadata") or {}
            if kind.namespaced and meta.get("namespace", ns) != ns:
                raise StatusError(400, "BadRequest", "the namespace of the provided object does "
                                  "not match the namespace sent on the request")
            return 201, self.store.create(kind, ns, body)
        if verb == "update":
            body = self._typed(kind, await _json_body(request))
            return 200, self.store.update(kind, ns, name, body, route.subresource)
        if verb == "patch":
            patch = await self._patch_body(request)
            return 200, self.store.patch(kind, ns, name, patch, route.subresource)
        raise StatusError(405, "MethodNotAllowed",
                          "the server does not allow this method on the requested resource")

    @staticmethod
    def _typed(kind: Kind, body: dict) -> dict:
        """Fill a missing apiVersion/kind from the URL, reject a mismatching one, as kube does."""
        if body.get("apiVersion", kind.api_version) != kind.api_version or \
                body.get("kind", kind.kind) != kind.kind:
            raise StatusError(400, "BadRequest", f"the API version in the data "
                              f"({body.get('apiVersion')}) or kind ({body.get('kind')}) does not "
                              f"match the expected {kind.api_version} {kind.kind}")
        body["apiVersion"], body["kind"] = kind.api_version, kind.kind
        return body

    @staticmethod
    async def _patch_body(request: web.Request) -> dict:
        ctype = request.content_type
        if ctype in APPLY_TYPES:
            if not request.query.get("fieldManager"):
                raise StatusError(400, "BadRequest", "PATCH, application/apply-patch+yaml "
                                  "requires fieldManager parameter")
            text = await request.text()
            try:
                patch = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise StatusError(400, "BadRequest", f"error decoding YAML: {e}") from e
        elif ctype in MERGE_TYPES:
            patch = await _json_body(request)
        else:
            raise StatusError(415, "UnsupportedMediaType",
                              f"the body of the request was in an unknown format - accepted "
                              f"media types include: {', '.join(MERGE_TYPES + APPLY_TYPES)}")
        if not isinstance(patch, dict):
            raise StatusError(400, "BadRequest", "a patch must be a JSON object")
        return patch


def _page(body: dict, limit: str, token: str) -> dict:
    """``limit`` items from the ``continue`` token on, as the real server pages a list
    (its tokens are opaque; these are offsets, refused when they are not ours)."""
    if not limit and not token:
        return body
    try:
        size, start = int(limit or 0), int(token or 0)
        if size < 0 or start < 0:
            raise ValueError
    except ValueError:
        raise StatusError(400, "BadRequest",
                          f"invalid limit {limit!r} or continue {token!r}") from None
    items = body["items"][start:]
    if size and len(items) > size:
        body["metadata"]["continue"] = str(start + size)
        body["metadata"]["remainingItemCount"] = len(items) - size
        items = items[:size]
    body["items"] = items
    return body


def _same_resource(wanted: str, served: str) -> bool:
    return wanted in ("*", served) or served.split("/", 1)[0] == wanted


def _verb(method: str, route: _Route) -> str:
    return {
        "GET": "get" if route.name else "list",
        "POST": "create" if not route.name else "?",
        "PUT": "update" if route.name else "?",
        "PATCH": "patch" if route.name else "?",
        "DELETE": "delete" if route.name else "deletecollection",
    }.get(method, "?")


def _no_such_path() -> StatusError:
    return StatusError(404, "NotFound", "the server could not find the requested resource",
                       {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page "
                                    "not found"}]})


async def _json_body(request: web.Request, *, allow_empty: bool = False) -> dict:
    raw = await request.read()
    if not raw.strip() and allow_empty:
        return {}
    try:
        body: Any = json.loads(raw)
    except ValueError as e:
        raise StatusError(400, "BadRequest", f"the body could not be decoded as JSON: {e}") from e
    if not isinstance(body, dict):
        raise StatusError(400, "BadRequest", "the body must be a JSON object")
    return body


def _parse_selector(text: str, *, labels: bool = False) -> list[tuple[str, str, str]]:
    """``a=b,c!=d`` (and for labels ``k`` / ``!k``) as (key, op, value) triples."""
    terms = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        for op in ("!=", "==", "="):
            if op in term:
                key, value = term.split(op, 1)
                terms.append((key.strip(), "!=" if op == "!=" else "=", value.strip()))
                break
        else:
            if not labels:
                raise StatusError(400, "BadRequest", f"invalid field selector: {term!r}")
            if term.startswith("!"):
                terms.append((term[1:], "!exists", ""))
            else:
                terms.append((term, "exists", ""))
    return terms
