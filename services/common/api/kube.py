"""The API port on a real API server, through kubernetes-asyncio.

Responses are read raw (``_preload_content=False``) and parsed as JSON so the
objects stay plain dicts exactly as the server sent them: the generated model
classes would rename fields (snake_case) and drop ones this client version
does not know, and a slice written back after such a round trip would lose
data. Every call has a deadline, because a hanging API server must turn into
an error the publisher retries, never into a stuck service.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from services.common.api import decode
from services.common.api.kubeclient import (
    ApiClient,
    ApiException,
    ConfigException,
    Configuration,
    CoreV1Api,
    ResourceV1Api,
    kube_config,
)
from services.common.api.port import ApiError, error_for

log = logging.getLogger("knd.api")

SLICE_API_VERSION = "resource.k8s.io/v1"


class KubeApi:
    """ApiPort on kubernetes-asyncio; connects lazily on the first call."""

    def __init__(self, *, kubeconfig: str | None = None, timeout: float = 10.0) -> None:
        self.kubeconfig = kubeconfig
        self.timeout = timeout
        self._client: ApiClient | None = None
        self._lock = anyio.Lock()

    # ---- connection ----------------------------------------------------------------------

    async def _connect(self) -> ApiClient:
        """In-cluster when running in a pod and no kubeconfig was named, else a kubeconfig."""
        async with self._lock:
            if self._client is not None:
                return self._client
            cfg = Configuration()
            try:
                if self.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                    kube_config.load_incluster_config(client_configuration=cfg)
                else:
                    # KUBECONFIG is already in self.kubeconfig (the --kubeconfig setting)
                    path = self.kubeconfig or str(Path.home() / ".kube" / "config")
                    await kube_config.load_kube_config(config_file=path, client_configuration=cfg,
                                                       persist_config=False)
            except (ConfigException, OSError, ValueError) as e:
                raise ApiError(f"cannot load Kubernetes client configuration: {e}") from e
            self._client = ApiClient(configuration=cfg)
            return self._client

    async def _call(self, method: Callable[..., Awaitable[Any]], *args: Any,
                    max_bytes: int = decode.MAX_OBJECT_BYTES, **kwargs: Any) -> dict:
        """Run one API method with a deadline; return its JSON body or raise a port error.

        A body over ``max_bytes`` bytes or nested too deep is refused by name before it is
        parsed (see :mod:`services.common.api.decode`)."""
        what = getattr(method, "__name__", "api call")
        try:
            with anyio.fail_after(self.timeout):
                resp = await method(*args, _preload_content=False,
                                    _request_timeout=self.timeout, **kwargs)
                try:
                    status, raw = resp.status, await _read(resp, max_bytes)
                finally:
                    resp.release()
        except decode.ObjectError as e:
            raise ApiError(f"{what}: the API server's answer {e}", 0) from None
        except ApiException as e:  # raised before sending (bad arguments) or by old clients
            # the body of an answer is the bytes read from the socket: as text, not b'...'
            body = e.body.decode(errors="replace") if isinstance(e.body, bytes) else e.body
            raise error_for(e.status or 0, f"{what}: {e.reason}: {body or ''}".strip()) from e
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise ApiError(f"{what}: no answer from the API server: {e!r}") from e
        if not 200 <= status < 300:
            message, reason = _failure(raw)
            raise error_for(status, f"{what}: {message}", reason)
        try:
            return decode.parse(raw, "body", max_bytes)
        except decode.ObjectError as e:
            raise ApiError(f"{what}: the API server's answer is unusable: {e}", status) from None

    async def _resource(self) -> ResourceV1Api:
        return ResourceV1Api(await self._connect())

    # ---- ApiPort -------------------------------------------------------------------------

    async def get_node(self, name: str) -> dict:
        node = await self._call(CoreV1Api(await self._connect()).read_node, name)
        return _checked(node, "read_node", "")

    async def list_slices(self, driver: str, node: str) -> list[dict]:
        api = await self._resource()
        body = await self._call(api.list_resource_slice, max_bytes=decode.MAX_LIST_BYTES,
                                field_selector=f"spec.nodeName={node},spec.driver={driver}")
        items = _checked(body, "list_resource_slice", "", "items").get("items") or []
        for i, item in enumerate(items):
            _checked(item, "list_resource_slice", f"items[{i}]")
        # The API server leaves apiVersion/kind out of list items; put them back so a
        # listed slice can be written back as it is.
        for item in items:
            item.setdefault("apiVersion", SLICE_API_VERSION)
            item.setdefault("kind", "ResourceSlice")
        return items

    async def create_slice(self, obj: dict) -> dict:
        return await self._call((await self._resource()).create_resource_slice, obj)

    async def update_slice(self, obj: dict) -> dict:
        api = await self._resource()
        return await self._call(api.replace_resource_slice, obj["metadata"]["name"], obj)

    async def delete_slice(self, name: str, uid: str, resource_version: str) -> None:
        options = {"apiVersion": "v1", "kind": "DeleteOptions",
                   "preconditions": {"uid": uid, "resourceVersion": resource_version}}
        await self._call((await self._resource()).delete_resource_slice, name, body=options)

    async def get_claim(self, namespace: str, name: str) -> dict:
        api = await self._resource()
        claim = await self._call(api.read_namespaced_resource_claim, name, namespace)
        return _checked(claim, "read_namespaced_resource_claim", "")

    async def update_claim_status(self, obj: dict) -> dict:
        meta = obj["metadata"]
        api = await self._resource()
        return await self._call(api.replace_namespaced_resource_claim_status,
                                meta["name"], meta["namespace"], obj)

    async def create_event(self, obj: dict) -> dict:
        namespace = obj["metadata"]["namespace"]
        api = CoreV1Api(await self._connect())
        event = await self._call(api.create_namespaced_event, namespace, obj)
        return _checked(event, "create_namespaced_event", "")

    async def patch_event(self, namespace: str, name: str, patch: dict) -> dict:
        # a merge patch, stated: the client would send a dict as a strategic merge patch,
        # which is the same for these scalar fields but not what the port promises
        api = CoreV1Api(await self._connect())
        event = await self._call(api.patch_namespaced_event, name, namespace, patch,
                                 _content_type="application/merge-patch+json")
        return _checked(event, "patch_namespaced_event", "")

    async def list_all(self, resource: str, page: int = 500) -> list[dict]:
        """Every object of ``resource`` (resourceslices, deviceclasses, resourceclaims,
        nodes) in the cluster, read ``page`` at a time, with apiVersion and kind."""
        client = await self._connect()
        methods: dict[str, tuple[Callable[..., Awaitable[Any]], str, str]] = {
            "resourceslices": (ResourceV1Api(client).list_resource_slice, SLICE_API_VERSION,
                               "ResourceSlice"),
            "deviceclasses": (ResourceV1Api(client).list_device_class, SLICE_API_VERSION,
                              "DeviceClass"),
            "resourceclaims": (ResourceV1Api(client).list_resource_claim_for_all_namespaces,
                               SLICE_API_VERSION, "ResourceClaim"),
            "nodes": (CoreV1Api(client).list_node, "v1", "Node"),
        }
        method, api_version, kind = methods[resource]
        out: list[dict] = []
        token = ""
        while True:
            body = await self._call(method, max_bytes=decode.MAX_LIST_BYTES, limit=page,
                                    **({"_continue": token} if token else {}))
            items = _checked(body, method.__name__, "", "items").get("items") or []
            for i, item in enumerate(items):
                _checked(item, method.__name__, f"items[{i}]")
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
            out += items
            token = str((body.get("metadata") or {}).get("continue") or "")
            if not token:
                return out

    async def aclose(self) -> None:
        async with self._lock:
            if self._client is not None:
                client, self._client = self._client, None
                await client.close()


def _checked(obj: Any, what: str, path: str, *lists: str) -> Any:
    """``obj`` if it has the shape every object (or list) has: an object with a well-typed
    ``metadata`` (name, namespace, uid, resourceVersion: strings), ``spec`` and ``status``
    objects, ``lists`` lists; else the ApiError that names the field. The fields within
    are for the reader to check (see kubelet_gateway.claims)."""
    try:
        decode.expect(obj, dict, path or "body")
        meta = decode.field(obj, "metadata", dict, path)
        for key in ("name", "namespace", "uid", "resourceVersion"):
            if meta is not None:
                decode.field(meta, key, str, decode.join(path, "metadata"))
        for key in ("spec", "status"):
            decode.field(obj, key, dict, path)
        for key in lists:
            decode.field(obj, key, list, path)
    except decode.ObjectError as e:
        raise ApiError(f"{what}: the API server's answer is unusable: {e}", 200) from None
    return obj


async def _read(resp: Any, limit: int) -> bytes:
    """The body, read no further than ``limit`` bytes (a huge answer is refused, not held)."""
    chunks: list[bytes] = []
    total = 0
    while chunk := await resp.content.read(1 << 16):
        total += len(chunk)
        if total > limit:
            raise decode.ObjectError(f"is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _failure(raw: bytes) -> tuple[str, str]:
    """Message and reason of a failed call, from its Status body when there is one."""
    try:
        status = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:500] or "no body", ""
    if not isinstance(status, dict):
        return str(status)[:500], ""
    return str(status.get("message") or "no message"), str(status.get("reason") or "")
