"""The DRA objects the allocator reads, decoded from any API version it may meet.

ResourceClaim, ResourceClaimTemplate, DeviceClass and ResourceSlice in
resource.k8s.io v1, v1beta2 (same shapes) and v1beta1 (request fields directly on
the request, device fields under ``basic``), plus Nodes for their labels. Anything
else is left out; a field of the wrong shape is an :class:`ObjectError` naming where
it is (``claims/gpu-efa: spec.devices.requests[1].exactly.count``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

GROUP = "resource.k8s.io"
VERSIONS = ("v1", "v1beta2", "v1beta1")
AttrValue = bool | int | str
"""A device attribute: ``version`` values are kept as their text (semver)."""


class ObjectError(ValueError):
    """An input object that cannot be read; the text says which and where."""


@dataclass(frozen=True)
class Device:
    driver: str
    pool: str
    name: str
    attributes: dict[str, AttrValue]
    """As published: names without a domain belong to the driver's."""
    versions: frozenset[str] = frozenset()
    """The names of ``version`` attributes."""
    capacity: dict[str, str] = field(default_factory=dict)
    node_name: str = ""
    all_nodes: bool = False
    node_selector: dict[str, Any] | None = None
    shared: bool = False
    """``allowMultipleAllocations`` (DRA consumable capacity): other claims' allocations
    of it leave it free."""

    @property
    def id(self) -> str:
        return f"{self.driver}/{self.pool}/{self.name}"

    def attribute(self, qualified: str) -> AttrValue | None:
        """By its full name; a name in the driver's domain also by its short one."""
        if qualified in self.attributes:
            return self.attributes[qualified]
        domain, _, ident = qualified.partition("/")
        if ident and domain == self.driver:
            return self.attributes.get(ident)
        return None


@dataclass(frozen=True)
class Slice:
    name: str
    driver: str
    pool: str
    generation: int
    slice_count: int
    devices: tuple[Device, ...]
    node_name: str = ""
    all_nodes: bool = False
    node_selector: dict[str, Any] | None = None
    per_device_node_selection: bool = False


@dataclass(frozen=True)
class DeviceClass:
    name: str
    selectors: tuple[str, ...]


@dataclass(frozen=True)
class Request:
    """One request or one of its ``firstAvailable`` subrequests (``name`` is then
    ``parent/sub``); ``subrequests`` is set on a parent only."""

    name: str
    class_name: str = ""
    selectors: tuple[str, ...] = ()
    all: bool = False
    count: int = 1
    admin_access: bool = False
    subrequests: tuple[Request, ...] = ()

    @property
    def parent(self) -> str:
        return self.name.partition("/")[0]


@dataclass(frozen=True)
class Constraint:
    requests: tuple[str, ...]
    match_attribute: str = ""
    distinct_attribute: str = ""

    def covers(self, request: str) -> bool:
        """Whether a device of ``request`` (``parent/sub`` for a subrequest) is bound."""
        return not self.requests or request in self.requests or \
            request.partition("/")[0] in self.requests


@dataclass(frozen=True)
class Claim:
    name: str
    """``namespace/name``; a template's name stands for the claims made from it."""
    requests: tuple[Request, ...]
    constraints: tuple[Constraint, ...] = ()
    allocated: tuple[str, ...] = ()
    """Devices (``driver/pool/device``) its status says it holds."""
    template: bool = False


@dataclass(frozen=True)
class Node:
    name: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Inputs:
    claims: list[Claim] = field(default_factory=list)
    """The claims to explain."""
    others: list[Claim] = field(default_factory=list)
    """Claims read only for the devices they hold (the cluster's)."""
    classes: dict[str, DeviceClass] = field(default_factory=dict)
    slices: list[Slice] = field(default_factory=list)
    nodes: dict[str, Node] = field(default_factory=dict)


# ---- decoding ------------------------------------------------------------------------------


class _At:
    """A place in a document, for errors: ``where`` names the object, ``path`` the field."""

    def __init__(self, where: str, path: str = "") -> None:
        self.where, self.path = where, path

    def __truediv__(self, key: str | int) -> _At:
        if isinstance(key, int):
            return _At(self.where, f"{self.path}[{key}]")
        return _At(self.where, f"{self.path}.{key}" if self.path else key)

    def fail(self, what: str) -> ObjectError:
        return ObjectError(f"{self.where}: {self.path}: {what}" if self.path else
                           f"{self.where}: {what}")


def _map(v: Any, at: _At, required: bool = False) -> dict[str, Any]:
    if v is None and not required:
        return {}
    if not isinstance(v, dict):
        raise at.fail(f"expected an object, got {type(v).__name__}")
    return v


def _list(v: Any, at: _At) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise at.fail(f"expected a list, got {type(v).__name__}")
    return v


def _str(v: Any, at: _At, default: str = "") -> str:
    if v is None:
        return default
    if not isinstance(v, str):
        raise at.fail(f"expected a string, got {type(v).__name__}")
    return v


def _int(v: Any, at: _At, default: int) -> int:
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise at.fail(f"expected an integer, got {type(v).__name__}")
    return v


def _bool(v: Any, at: _At) -> bool:
    if v is None:
        return False
    if not isinstance(v, bool):
        raise at.fail(f"expected true or false, got {type(v).__name__}")
    return v


def _selectors(raw: Any, at: _At) -> tuple[str, ...]:
    out = []
    for i, s in enumerate(_list(raw, at)):
        cel = _map(_map(s, at / i, True).get("cel"), at / i / "cel", True)
        out.append(_str(cel.get("expression"), at / i / "cel" / "expression"))
    return tuple(out)


def _attributes(raw: Any, at: _At) -> tuple[dict[str, AttrValue], frozenset[str]]:
    out: dict[str, AttrValue] = {}
    versions = set()
    for name, value in _map(raw, at).items():
        where = at / name
        value = _map(value, where, True)
        kinds = [k for k in ("bool", "int", "string", "version") if k in value]
        if len(kinds) != 1:
            raise where.fail("expected exactly one of bool, int, string, version")
        kind = kinds[0]
        if kind == "bool":
            out[name] = _bool(value[kind], where / kind)
        elif kind == "int":
            out[name] = _int(value[kind], where / kind, 0)
        else:
            out[name] = _str(value[kind], where / kind)
            if kind == "version":
                versions.add(name)
    return out, frozenset(versions)


def _device(raw: Any, at: _At, driver: str, pool: str, version: str) -> Device:
    raw = _map(raw, at, True)
    name = _str(raw.get("name"), at / "name")
    body = _map(raw.get("basic"), at / "basic") if version == "v1beta1" else raw
    where = at / "basic" if version == "v1beta1" else at
    attrs, versions = _attributes(body.get("attributes"), where / "attributes")
    capacity = {k: str(_map(v, where / "capacity" / k, True).get("value", ""))
                for k, v in _map(body.get("capacity"), where / "capacity").items()}
    return Device(driver=driver, pool=pool, name=name, attributes=attrs, versions=versions,
                  capacity=capacity, node_name=_str(body.get("nodeName"), where / "nodeName"),
                  all_nodes=_bool(body.get("allNodes"), where / "allNodes"),
                  node_selector=body.get("nodeSelector"),
                  shared=_bool(body.get("allowMultipleAllocations"),
                               where / "allowMultipleAllocations"))


def _slice(obj: dict[str, Any], at: _At, version: str) -> Slice:
    spec = _map(obj.get("spec"), at / "spec", True)
    sat = at / "spec"
    driver = _str(spec.get("driver"), sat / "driver")
    pool = _map(spec.get("pool"), sat / "pool", True)
    pool_name = _str(pool.get("name"), sat / "pool" / "name")
    devices = tuple(_device(d, sat / "devices" / i, driver, pool_name, version)
                    for i, d in enumerate(_list(spec.get("devices"), sat / "devices")))
    return Slice(name=_str(_map(obj.get("metadata"), at / "metadata").get("name"),
                           at / "metadata" / "name"),
                 driver=driver, pool=pool_name,
                 generation=_int(pool.get("generation"), sat / "pool" / "generation", 0),
                 slice_count=_int(pool.get("resourceSliceCount"),
                                  sat / "pool" / "resourceSliceCount", 1),
                 devices=devices, node_name=_str(spec.get("nodeName"), sat / "nodeName"),
                 all_nodes=_bool(spec.get("allNodes"), sat / "allNodes"),
                 node_selector=spec.get("nodeSelector"),
                 per_device_node_selection=_bool(spec.get("perDeviceNodeSelection"),
                                                 sat / "perDeviceNodeSelection"))


def _exact(body: dict[str, Any], at: _At, name: str) -> Request:
    mode = _str(body.get("allocationMode"), at / "allocationMode", "ExactCount")
    if mode not in ("ExactCount", "All"):
        raise (at / "allocationMode").fail(f"{mode!r}: expected ExactCount or All")
    count = _int(body.get("count"), at / "count", 1)
    if mode == "ExactCount" and count < 1:
        raise (at / "count").fail(f"{count}: expected at least 1")
    return Request(name=name, class_name=_str(body.get("deviceClassName"),
                                              at / "deviceClassName"),
                   selectors=_selectors(body.get("selectors"), at / "selectors"),
                   all=mode == "All", count=count,
                   admin_access=_bool(body.get("adminAccess"), at / "adminAccess"))


def _request(raw: Any, at: _At, version: str) -> Request:
    raw = _map(raw, at, True)
    name = _str(raw.get("name"), at / "name")
    if not name:
        raise (at / "name").fail("a request needs a name")
    subs_raw = raw.get("firstAvailable")
    if subs_raw:
        subs = []
        for i, s in enumerate(_list(subs_raw, at / "firstAvailable")):
            sat = at / "firstAvailable" / i
            sub = _map(s, sat, True)
            subs.append(_exact(sub, sat, f"{name}/{_str(sub.get('name'), sat / 'name')}"))
        return Request(name=name, subrequests=tuple(subs))
    if version == "v1beta1":
        return _exact(raw, at, name)
    if "exactly" not in raw:
        raise at.fail("expected exactly or firstAvailable")
    return _exact(_map(raw.get("exactly"), at / "exactly", True), at / "exactly", name)


def _claim_spec(spec: dict[str, Any], at: _At, version: str, name: str,
                allocated: tuple[str, ...], template: bool) -> Claim:
    devices = _map(spec.get("devices"), at / "devices")
    dat = at / "devices"
    requests = tuple(_request(r, dat / "requests" / i, version)
                     for i, r in enumerate(_list(devices.get("requests"), dat / "requests")))
    constraints = []
    for i, c in enumerate(_list(devices.get("constraints"), dat / "constraints")):
        cat = dat / "constraints" / i
        c = _map(c, cat, True)
        constraints.append(Constraint(
            requests=tuple(_str(r, cat / "requests" / j)
                           for j, r in enumerate(_list(c.get("requests"), cat / "requests"))),
            match_attribute=_str(c.get("matchAttribute"), cat / "matchAttribute"),
            distinct_attribute=_str(c.get("distinctAttribute"), cat / "distinctAttribute")))
    return Claim(name=name, requests=requests, constraints=tuple(constraints),
                 allocated=allocated, template=template)


def _allocated(obj: dict[str, Any], at: _At) -> tuple[str, ...]:
    status = _map(obj.get("status"), at / "status")
    alloc = _map(status.get("allocation"), at / "status" / "allocation")
    devices = _map(alloc.get("devices"), at / "status" / "allocation" / "devices")
    out = []
    for i, r in enumerate(_list(devices.get("results"), at / "status.allocation.devices.results")):
        r = _map(r, at / "status.allocation.devices.results" / i, True)
        if r.get("adminAccess"):
            continue  # shared with other claims, as the scheduler counts it
        out.append(f"{r.get('driver')}/{r.get('pool')}/{r.get('device')}")
    return tuple(out)


def _name(obj: dict[str, Any], at: _At, namespaced: bool) -> str:
    meta = _map(obj.get("metadata"), at / "metadata")
    name = _str(meta.get("name"), at / "metadata" / "name")
    if not name:
        raise (at / "metadata" / "name").fail("an object needs a name")
    if namespaced:
        return f"{_str(meta.get('namespace'), at / 'metadata' / 'namespace', 'default')}/{name}"
    return name


def read(documents: Iterable[tuple[str, Any]], into: Inputs | None = None,
         explain: bool = True) -> Inputs:
    """``documents``: (where it came from, decoded YAML/JSON) pairs, added to ``into``.
    Lists (``kind: List``, ``*List``) are opened; kinds and groups the allocator does
    not read are left out. ``explain``: whether its claims are to be explained, or
    only hold devices."""
    out = Inputs() if into is None else into
    claims = out.claims if explain else out.others
    todo = [(src, doc) for src, doc in documents]
    while todo:
        src, doc = todo.pop(0)
        if doc is None:
            continue
        if not isinstance(doc, Mapping):
            raise ObjectError(f"{src}: expected an object, got {type(doc).__name__}")
        kind = doc.get("kind")
        if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
            items = _list(doc.get("items"), _At(src, "items"))
            todo[:0] = [(f"{src} items[{i}]", item) for i, item in enumerate(items)]
            continue
        api = str(doc.get("apiVersion", ""))
        group, _, version = api.rpartition("/")
        if kind == "Node" and api == "v1":
            name = _name(dict(doc), _At(f"{src} Node"), False)
            labels = _map(_map(doc.get("metadata"), _At(src, "metadata")).get("labels"),
                          _At(src, "metadata.labels"))
            out.nodes[name] = Node(name, {str(k): str(v) for k, v in labels.items()})
            continue
        if group != GROUP:
            continue
        if version not in VERSIONS:
            raise ObjectError(f"{src}: {api}: expected one of "
                              f"{', '.join(f'{GROUP}/{v}' for v in VERSIONS)}")
        obj = dict(doc)
        if kind == "ResourceSlice":
            out.slices.append(_slice(obj, _At(f"{src} ResourceSlice "
                                              f"{_name(obj, _At(src), False)}"), version))
        elif kind == "DeviceClass":
            name = _name(obj, _At(src), False)
            at = _At(f"{src} DeviceClass {name}")
            spec = _map(obj.get("spec"), at / "spec")
            out.classes[name] = DeviceClass(name, _selectors(spec.get("selectors"),
                                                             at / "spec" / "selectors"))
        elif kind == "ResourceClaim":
            name = _name(obj, _At(src), True)
            at = _At(f"{src} ResourceClaim {name}")
            claims.append(_claim_spec(_map(obj.get("spec"), at / "spec", True),
                                          at / "spec", version, name, _allocated(obj, at),
                                          False))
        elif kind == "ResourceClaimTemplate":
            name = _name(obj, _At(src), True)
            at = _At(f"{src} ResourceClaimTemplate {name}")
            spec = _map(_map(obj.get("spec"), at / "spec", True).get("spec"),
                        at / "spec" / "spec", True)
            if explain:  # a template holds nothing
                claims.append(_claim_spec(spec, at / "spec" / "spec", version, name, (), True))
    return out
