"""The object store behind the test API server: etcd-like semantics, no HTTP.

Kept apart from the HTTP layer so the rules that the publisher depends on
(one global resourceVersion, optimistic concurrency on update, delete
preconditions, uid immutability, generation bumps on spec changes) read as
plain code and can be seeded directly by tests.
"""

from __future__ import annotations

import copy
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.kubeapi.eventrules import validate_event
from tests.kubeapi.validation import Cause, validate_resource_slice


@dataclass(frozen=True)
class Kind:
    """What the server knows about one resource type."""

    resource: str
    group: str  # "" for the core group
    version: str
    kind: str
    namespaced: bool
    has_status: bool  # status is a subresource: ignored by main-resource writes

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``resourceslices.resource.k8s.io``, as the real server names it in messages."""
        return f"{self.resource}.{self.group}" if self.group else self.resource


KINDS = {
    "nodes": Kind("nodes", "", "v1", "Node", False, True),
    "resourceslices": Kind("resourceslices", "resource.k8s.io", "v1", "ResourceSlice",
                           False, False),
    "resourceclaims": Kind("resourceclaims", "resource.k8s.io", "v1", "ResourceClaim",
                           True, True),
    "deviceclasses": Kind("deviceclasses", "resource.k8s.io", "v1", "DeviceClass",
                          False, False),
    "events": Kind("events", "", "v1", "Event", True, False),
}

# Fields the real server accepts in a fieldSelector, per resource.
FIELD_LABELS = {
    "nodes": {"metadata.name"},
    "resourceslices": {"metadata.name", "spec.nodeName", "spec.driver"},
    "resourceclaims": {"metadata.name", "metadata.namespace"},
    "deviceclasses": {"metadata.name"},
    # pkg/registry/core/event/strategy.go ToSelectableFields
    "events": {"metadata.name", "metadata.namespace", "involvedObject.kind",
               "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
               "involvedObject.apiVersion", "involvedObject.resourceVersion",
               "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"},
}

# Selector fields that are not the object's path of the same name.
FIELD_PATHS = {"events": {"source": "source.component"}}


@dataclass
class StatusError(Exception):
    """A failure answered as a v1 Status object."""

    code: int
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


def _details(kind: Kind, name: str, causes: list[Cause] | None = None) -> dict:
    d: dict[str, Any] = {"name": name, "group": kind.group, "kind": kind.resource}
    if causes:
        d["causes"] = [cause.to_dict() for cause in causes]
    return d


def not_found(kind: Kind, name: str) -> StatusError:
    return StatusError(404, "NotFound", f'{kind.qualified} "{name}" not found',
                       _details(kind, name))


def conflict(kind: Kind, name: str, why: str) -> StatusError:
    return StatusError(409, "Conflict",
                       f'Operation cannot be fulfilled on {kind.qualified} "{name}": {why}',
                       _details(kind, name))


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def get_path(obj: Any, dotted: str) -> str:
    """The value at ``a.b.c`` as a selector compares it ("" when absent)."""
    for part in dotted.split("."):
        if not isinstance(obj, dict):
            return ""
        obj = obj.get(part)
    return "" if obj is None else str(obj)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class Store:
    """All objects, keyed by resource then (namespace, name), and the global resourceVersion."""

    def __init__(self) -> None:
        self.rv = 0
        self.data: dict[str, dict[tuple[str, str], dict]] = {r: {} for r in KINDS}
        self.consumable_capacity = True
        """The DRAConsumableCapacity feature gate: off, a device's allowMultipleAllocations
        and its capacities' requestPolicy are dropped on write, as a server without the
        feature drops fields it does not serve."""

    def bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _stored(self, kind: Kind, ns: str, name: str) -> dict:
        obj = self.data[kind.resource].get((ns, name))
        if obj is None:
            raise not_found(kind, name)
        return obj

    def seed(self, resource: str, obj: dict) -> dict:
        """Store ``obj`` as given (no validation), filling only missing system fields."""
        kind = KINDS[resource]
        obj = copy.deepcopy(obj)
        obj.setdefault("apiVersion", kind.api_version)
        obj.setdefault("kind", kind.kind)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now())
        meta.setdefault("generation", 1)
        if meta.get("resourceVersion"):
            self.rv = max(self.rv, int(meta["resourceVersion"]))
        else:
            meta["resourceVersion"] = self.bump()
        ns = meta.get("namespace", "") if kind.namespaced else ""
        self.data[resource][(ns, meta["name"])] = obj
        return copy.deepcopy(obj)

    def get(self, kind: Kind, ns: str, name: str) -> dict:
        return copy.deepcopy(self._stored(kind, ns, name))

    def list(self, kind: Kind, ns: str | None,
             fields: list[tuple[str, str, str]], labels: list[tuple[str, str, str]]) -> dict:
        items = []
        for (obj_ns, _), obj in self.data[kind.resource].items():
            if ns is not None and obj_ns != ns:
                continue
            paths = FIELD_PATHS.get(kind.resource, {})
            if not all(_matches(get_path(obj, paths.get(k, k)), op, v) for k, op, v in fields):
                continue
            obj_labels = (obj.get("metadata") or {}).get("labels") or {}
            if not all(_label_matches(obj_labels, k, op, v) for k, op, v in labels):
                continue
            item = copy.deepcopy(obj)
            # Like the real server: list items carry neither apiVersion nor kind.
            item.pop("apiVersion", None)
            item.pop("kind", None)
            items.append(item)
        return {"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                "metadata": {"resourceVersion": str(self.rv)}, "items": items}

    def create(self, kind: Kind, ns: str, body: dict) -> dict:
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(
                random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
        name = meta.get("name") or ""
        if not name:
            causes = [Cause("metadata.name", "FieldValueRequired",
                            "name or generateName is required")]
            raise _invalid(kind, name, causes)
        if meta.get("resourceVersion"):
            raise StatusError(500, "InternalError",
                              "resourceVersion should not be set on objects to be created")
        if kind.has_status:
            body.pop("status", None)
        if kind.namespaced:  # the URL's (the server refused a body that says otherwise)
            meta["namespace"] = ns
        self._validate(kind, name, body)
        if (ns, name) in self.data[kind.resource]:
            raise StatusError(409, "AlreadyExists", f'{kind.qualified} "{name}" already exists',
                              _details(kind, name))
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        meta["generation"] = 1
        meta["resourceVersion"] = self.bump()
        self.data[kind.resource][(ns, name)] = body
        return copy.deepcopy(body)

    def update(self, kind: Kind, ns: str, name: str, body: dict, subresource: str = "") -> dict:
        """PUT semantics; ``subresource == "status"`` takes only the status from ``body``."""
        old = self._stored(kind, ns, name)
        meta = body.get("metadata") or {}
        if meta.get("name", name) != name:
            raise StatusError(400, "BadRequest", f"the name of the object ({meta.get('name')}) "
                              f"does not match the name on the URL ({name})")
        self._preconditions(kind, name, old, meta.get("uid"), meta.get("resourceVersion"),
                            modified=True)
        if subresource == "status":
            new = copy.deepcopy(old)
            new["status"] = copy.deepcopy(body.get("status"))
            if new["status"] is None:
                new.pop("status")
        else:
            new = copy.deepcopy(body)
            if kind.has_status:
                new.pop("status", None)
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
        return self._commit(kind, ns, name, old, new)

    def patch(self, kind: Kind, ns: str, name: str, patch: dict, subresource: str = "") -> dict:
        """Merge ``patch`` into the stored object; a resourceVersion in it is a precondition."""
        old = self._stored(kind, ns, name)
        pmeta = patch.get("metadata") if isinstance(patch.get("metadata"), dict) else {}
        self._preconditions(kind, name, old, pmeta.get("uid"), pmeta.get("resourceVersion"),
                            modified=True)
        merged = merge_patch(old, patch)
        if subresource == "status":
            new = copy.deepcopy(old)
            if merged.get("status") is None:
                new.pop("status", None)
            else:
                new["status"] = merged["status"]
        else:
            new = merged
            if kind.has_status:
                new.pop("status", None)
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
        return self._commit(kind, ns, name, old, new)

    def delete(self, kind: Kind, ns: str, name: str, options: dict) -> dict:
        old = self._stored(kind, ns, name)
        pre = options.get("preconditions") or {}
        self._preconditions(kind, name, old, pre.get("uid"), pre.get("resourceVersion"),
                            modified=False)
        del self.data[kind.resource][(ns, name)]
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = self.bump()
        return gone

    def _preconditions(self, kind: Kind, name: str, old: dict, uid: Any, rv: Any,
                       *, modified: bool) -> None:
        om = old["metadata"]
        if uid and uid != om["uid"]:
            raise conflict(kind, name, f"Precondition failed: UID in precondition: {uid}, "
                           f"UID in object meta: {om['uid']}")
        if rv and rv != om["resourceVersion"]:
            why = ("the object has been modified; please apply your changes to the latest "
                   "version and try again") if modified else (
                f"Precondition failed: ResourceVersion in precondition: {rv}, "
                f"ResourceVersion in object meta: {om['resourceVersion']}")
            raise conflict(kind, name, why)

    def _commit(self, kind: Kind, ns: str, name: str, old: dict, new: dict) -> dict:
        new.setdefault("apiVersion", kind.api_version)
        new.setdefault("kind", kind.kind)
        meta = new.setdefault("metadata", {})
        om = old["metadata"]
        meta["name"] = name
        if kind.namespaced:
            meta["namespace"] = ns
        for key in ("uid", "creationTimestamp"):
            meta[key] = om[key]
        meta["generation"] = om.get("generation", 1) + (new.get("spec") != old.get("spec"))
        self._validate(kind, name, new)
        meta["resourceVersion"] = om["resourceVersion"]
        if new == old:  # a no-op write does not bump the resourceVersion
            return copy.deepcopy(old)
        meta["resourceVersion"] = self.bump()
        self.data[kind.resource][(ns, name)] = new
        return copy.deepcopy(new)

    def _validate(self, kind: Kind, name: str, obj: dict) -> None:
        if kind.resource == "resourceslices" and not self.consumable_capacity:
            # a server without DRAConsumableCapacity drops the fields it gates
            for dev in (obj.get("spec") or {}).get("devices") or []:
                if isinstance(dev, dict):
                    dev.pop("allowMultipleAllocations", None)
                    for cap in (dev.get("capacity") or {}).values():
                        if isinstance(cap, dict):
                            cap.pop("requestPolicy", None)
        validate = {"resourceslices": validate_resource_slice,
                    "events": validate_event}.get(kind.resource)
        causes = validate(obj) if validate is not None else []
        if causes:
            raise _invalid(kind, name, causes)


def _invalid(kind: Kind, name: str, causes: list[Cause]) -> StatusError:
    listed = ", ".join(f"{c.field}: {c.message}" for c in causes)
    return StatusError(422, "Invalid", f'{kind.kind}.{kind.group or "core"} "{name}" is invalid: '
                       f"[{listed}]", {"name": name, "group": kind.group, "kind": kind.kind,
                                       "causes": [c.to_dict() for c in causes]})


def _matches(actual: str, op: str, want: str) -> bool:
    return actual != want if op == "!=" else actual == want


def _label_matches(labels: dict, key: str, op: str, want: str) -> bool:
    if op == "exists":
        return key in labels
    if op == "!exists":
        return key not in labels
    if op == "!=":
        return labels.get(key) != want
    return key in labels and labels[key] == want
