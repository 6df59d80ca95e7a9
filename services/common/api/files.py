"""The API port on plain JSON files, for ``knd up --standalone`` and the demo.

Without a cluster the publisher still needs somewhere to publish and the
gateway somewhere to read claims from; keeping the same objects and the same
semantics as the API server (uids, an increasing resourceVersion, 409 on a
stale write, 404 when missing) means the services run the very code paths
they run in a cluster. Layout under ``<state-dir>/api/``::

    resourceVersion                      the last resourceVersion handed out
    nodes/<name>.json
    resourceslices/<name>.json
    resourceclaims/<namespace>/<name>.json
    events/<namespace>/<name>.json       core/v1 Events, pruned an hour after their last
                                         write (the API server's default --event-ttl)

Every write replaces a whole file atomically (temp file, fsync, rename) so a
reader, or a restart after a crash, never sees half an object. Operations run
in a worker thread under an exclusive ``flock`` so several processes sharing
one state directory (publisher and gateway) stay consistent.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio

from services.common.api import decode
from services.common.api.port import ApiError, Conflict, Invalid, NotFound
from services.common.files import write_atomic

T = TypeVar("T")

SLICES, NODES, CLAIMS, EVENTS = "resourceslices", "nodes", "resourceclaims", "events"
EVENT_TTL = 3600.0
"""Seconds an event file is kept after its last write, as the API server keeps events."""
MAX_EVENT_NAME = 250
"""An event's file is ``<name>.json``: a file name has at most 255 bytes."""
SLICE_API_VERSION = "resource.k8s.io/v1"
STALE = "the object has been modified; please apply your changes to the latest version"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _safe(name: Any, what: str) -> str:
    """Names become file names: refuse anything that could leave its folder."""
    if not isinstance(name, str) or not name or name.startswith(".") or "/" in name \
            or "\0" in name or len(name) > 253:
        raise Invalid(f"{what} {name!r} is not a valid object name", reason="Invalid")
    return name


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` to ``path`` so that ``path`` holds either the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", 0o644)


class FileApi:
    """ApiPort on JSON files under ``<state_dir>/api``."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "api"
        self._scanned = False

    # ---- plumbing ------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """File I/O and fsync off the event loop, one operation at a time across processes."""
        return await anyio.to_thread.run_sync(self._locked, fn, *args)

    def _locked(self, fn: Callable[..., T], *args: Any) -> T:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return fn(*args)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _path(self, resource: str, name: object, namespace: object = None) -> Path:
        """The file of an object; ``name`` and ``namespace`` (as a client sent them, of
        any type) are checked here."""
        folder = self.root / resource
        if namespace is not None:
            folder = folder / _safe(namespace, "namespace")
        return folder / f"{_safe(name, 'name')}.json"

    def _read(self, path: Path, what: str) -> dict:
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise NotFound(f'{what} "{path.stem}" not found', reason="NotFound") from None
        try:
            return decode.parse(text.encode(), "object", decode.MAX_OBJECT_BYTES)
        except decode.ObjectError as e:
            raise ApiError(f"{path}: corrupt object file: {e}", 500, "InternalError") from None

    def _objects(self, folder: Path) -> Iterator[dict]:
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                if not path.name.startswith("."):
                    yield self._read(path, folder.name)

    def _next_rv(self) -> str:
        """One more than the last one handed out, persisted before it is used.

        Also above every resourceVersion found in the files, so a lost or older
        counter file can never make resourceVersions go backwards.
        """
        counter = self.root / "resourceVersion"
        try:
            last = int(counter.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            last = 0
        if not self._scanned:  # once per process: the files are the truth if they disagree
            last = max(last, self._highest_rv())
            self._scanned = True
        rv = last + 1
        write_json_atomic(counter, rv)
        return str(rv)

    def _highest_rv(self) -> int:
        best = 0
        for path in self.root.rglob("*.json"):
            with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
                best = max(best, int(json.loads(path.read_text())["metadata"]["resourceVersion"]))
        return best

    def _new_meta(self, meta: dict) -> None:
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        meta["resourceVersion"] = self._next_rv()

    @staticmethod
    def _check(what: str, name: object, stored: dict, uid: Any, rv: Any) -> None:
        meta = stored["metadata"]
        if uid and uid != meta.get("uid"):
            raise Conflict(f'{what} "{name}": Precondition failed: UID in precondition: {uid}, '
                           f"UID in object meta: {meta.get('uid')}", reason="Conflict")
        if rv and rv != meta.get("resourceVersion"):
            raise Conflict(f'Operation cannot be fulfilled on {what} "{name}": {STALE}',
                           reason="Conflict")

    # ---- nodes ---------------------------------------------------------------------------

    def _get_node(self, name: str) -> dict:
        path = self._path(NODES, name)
        try:
            return self._read(path, NODES)
        except NotFound:
            pass
        node: dict[str, Any] = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "spec": {}, "status": {}}
        self._new_meta(node["metadata"])
        write_json_atomic(path, node)
        return node

    async def get_node(self, name: str) -> dict:
        """The Node, created on first use: its uid is the slices' stable owner reference."""
        return await self._run(self._get_node, name)

    # ---- resourceslices ------------------------------------------------------------------

    def _list_slices(self, driver: str, node: str) -> list[dict]:
        return [obj for obj in self._objects(self.root / SLICES)
                if (obj.get("spec") or {}).get("driver") == driver
                and (obj.get("spec") or {}).get("nodeName") == node]

    async def list_slices(self, driver: str, node: str) -> list[dict]:
        return await self._run(self._list_slices, driver, node)

    def _create_slice(self, obj: dict) -> dict:
        obj = copy.deepcopy(obj)
        obj.setdefault("apiVersion", SLICE_API_VERSION)
        obj.setdefault("kind", "ResourceSlice")
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(
                random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
        if meta.get("resourceVersion"):
            raise ApiError("resourceVersion should not be set on objects to be created", 500,
                           "InternalError")
        path = self._path(SLICES, meta.get("name"))
        if path.exists():
            raise Conflict(f'{SLICES} "{meta["name"]}" already exists', reason="AlreadyExists")
        self._new_meta(meta)
        write_json_atomic(path, obj)
        return obj

    async def create_slice(self, obj: dict) -> dict:
        return await self._run(self._create_slice, obj)

    def _update_slice(self, obj: dict) -> dict:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        path = self._path(SLICES, name)
        stored = self._read(path, SLICES)
        self._check(SLICES, name, stored, meta.get("uid"), meta.get("resourceVersion"))
        old = stored["metadata"]
        obj.setdefault("apiVersion", SLICE_API_VERSION)
        obj.setdefault("kind", "ResourceSlice")
        meta["uid"], meta["creationTimestamp"] = old.get("uid"), old.get("creationTimestamp")
        meta["generation"] = old.get("generation", 1) + (obj.get("spec") != stored.get("spec"))
        meta["resourceVersion"] = old.get("resourceVersion")
        if obj == stored:  # as the API server: a no-op write keeps the resourceVersion
            return obj
        meta["resourceVersion"] = self._next_rv()
        write_json_atomic(path, obj)
        return obj

    async def update_slice(self, obj: dict) -> dict:
        return await self._run(self._update_slice, obj)

    def _delete_slice(self, name: str, uid: str, resource_version: str) -> None:
        path = self._path(SLICES, name)
        stored = self._read(path, SLICES)
        self._check(SLICES, name, stored, uid, None)  # uid first, as the API server does
        meta = stored["metadata"]
        if resource_version and resource_version != meta.get("resourceVersion"):
            raise Conflict(f'{SLICES} "{name}": Precondition failed: ResourceVersion in '
                           f"precondition: {resource_version}, ResourceVersion in object meta: "
                           f"{meta.get('resourceVersion')}", reason="Conflict")
        self._next_rv()  # a delete is a write: later resourceVersions stay above it
        path.unlink()

    async def delete_slice(self, name: str, uid: str, resource_version: str) -> None:
        await self._run(self._delete_slice, name, uid, resource_version)

    # ---- resourceclaims ------------------------------------------------------------------

    async def get_claim(self, namespace: str, name: str) -> dict:
        return await self._run(self._read, self._path(CLAIMS, name, namespace), CLAIMS)

    def _create_claim(self, obj: dict) -> dict:
        obj = copy.deepcopy(obj)
        obj.setdefault("apiVersion", SLICE_API_VERSION)
        obj.setdefault("kind", "ResourceClaim")
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        path = self._path(CLAIMS, meta.get("name"), meta["namespace"])
        if path.exists():
            raise Conflict(f'{CLAIMS} "{meta["name"]}" already exists', reason="AlreadyExists")
        self._new_meta(meta)
        write_json_atomic(path, obj)
        return obj

    async def create_claim(self, obj: dict) -> dict:
        """Store a claim, status included (not in the port: standalone has no scheduler,
        so whoever plays the scheduler writes allocated claims here)."""
        return await self._run(self._create_claim, obj)

    def _update_claim_status(self, obj: dict) -> dict:
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        path = self._path(CLAIMS, name, meta.get("namespace"))
        stored = self._read(path, CLAIMS)
        self._check(CLAIMS, name, stored, meta.get("uid"), meta.get("resourceVersion"))
        new = copy.deepcopy(stored)
        if obj.get("status") is None:
            new.pop("status", None)
        else:
            new["status"] = copy.deepcopy(obj["status"])
        if new == stored:
            return new
        new["metadata"]["resourceVersion"] = self._next_rv()
        write_json_atomic(path, new)
        return new

    async def update_claim_status(self, obj: dict) -> dict:
        return await self._run(self._update_claim_status, obj)

    # ---- events --------------------------------------------------------------------------

    def _event_path(self, namespace: object, name: object) -> Path:
        if isinstance(name, str) and len(name.encode()) > MAX_EVENT_NAME:
            raise Invalid(f"metadata.name: an event name of {len(name.encode())} bytes is "
                          f"over the {MAX_EVENT_NAME} a standalone event file can have",
                          reason="Invalid")
        return self._path(EVENTS, name, namespace)

    def _create_event(self, obj: dict) -> dict:
        obj = copy.deepcopy(obj)
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", "Event")
        meta = obj.setdefault("metadata", {})
        path = self._event_path(meta.get("namespace"), meta.get("name"))
        _check_event_namespace(obj)
        if meta.get("resourceVersion"):
            raise ApiError("resourceVersion should not be set on objects to be created", 500,
                           "InternalError")
        _prune(path.parent, time.time() - EVENT_TTL)
        if path.exists():
            raise Conflict(f'{EVENTS} "{meta["name"]}" already exists', reason="AlreadyExists")
        self._new_meta(meta)
        write_json_atomic(path, obj)
        return obj

    async def create_event(self, obj: dict) -> dict:
        return await self._run(self._create_event, obj)

    def _patch_event(self, namespace: str, name: str, patch: dict) -> dict:
        path = self._event_path(namespace, name)
        stored = self._read(path, EVENTS)
        pmeta = patch.get("metadata")
        if not isinstance(pmeta, dict):
            pmeta = {}
        self._check(EVENTS, name, stored, pmeta.get("uid"), pmeta.get("resourceVersion"))
        new = _merge_patch(stored, patch)
        if not isinstance(new.get("metadata"), dict):
            new["metadata"] = {}
        for key in ("name", "namespace", "uid", "creationTimestamp", "generation",
                    "resourceVersion"):  # as the API server: not the patch's to change
            new["metadata"][key] = stored["metadata"].get(key)
        _check_event_namespace(new)
        if new == stored:
            return new
        new["metadata"]["resourceVersion"] = self._next_rv()
        write_json_atomic(path, new)
        return new

    async def patch_event(self, namespace: str, name: str, patch: dict) -> dict:
        return await self._run(self._patch_event, namespace, name, patch)

    async def aclose(self) -> None:
        """Nothing held open between calls."""


def _check_event_namespace(obj: dict) -> None:
    """The API server's rule: an event lives in its object's namespace."""
    involved = obj.get("involvedObject")
    theirs = involved.get("namespace") if isinstance(involved, dict) else None
    ours = obj["metadata"].get("namespace")
    if (theirs or "") != ours:
        raise Invalid(f"involvedObject.namespace: Invalid value: {theirs!r}: does not match "
                      f"event.namespace ({ours!r})", reason="Invalid")


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


def _prune(folder: Path, before: float) -> None:
    """Forget the events last written before ``before``: with no API server to expire
    them, a standalone node would keep every event it ever wrote."""
    if not folder.is_dir():
        return
    for path in folder.glob("*.json"):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < before:
                path.unlink()
