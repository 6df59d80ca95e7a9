"""ResourceSlice validation as the resource.k8s.io/v1 API server does it.

Written independently of the product's ``schemas/limits.py`` on purpose: if
the publisher's own checks drift from the API server's rules, the tests that
publish through this server catch it instead of agreeing with the same bug.
Each problem becomes a cause with the field path the real server reports,
e.g. ``spec.devices[3].attributes[knd.dev/ifName].string``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
C_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Semantic Versioning 2.0.0, section 2, 9 and 10 (no leading zeros, no "v").
_NUM = r"(?:0|[1-9][0-9]*)"
_PRE = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_BUILD = r"[0-9A-Za-z-]+"
SEMVER = re.compile(
    rf"{_NUM}\.{_NUM}\.{_NUM}(?:-{_PRE}(?:\.{_PRE})*)?(?:\+{_BUILD}(?:\.{_BUILD})*)?")
QUANTITY = re.compile(
    r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?")

MAX_DEVICES = 128
MAX_DEVICES_TAINTS_OR_COUNTERS = 64
MAX_ATTRS_AND_CAPACITY = 32
MAX_STRING = 64
MAX_DRIVER = 63
MAX_DOMAIN = 63
MAX_IDENT = 32
MAX_LABEL = 63
MAX_SUBDOMAIN = 253
TAINT_EFFECTS = ("NoSchedule", "NoExecute")


@dataclass
class Cause:
    """One field error, shaped like a StatusCause of the real server."""

    field: str
    reason: str
    message: str

    def to_dict(self) -> dict:
        return {"field": self.field, "reason": self.reason, "message": self.message}


def is_label(s: Any) -> bool:
    return isinstance(s, str) and len(s) <= MAX_LABEL and DNS_LABEL.fullmatch(s) is not None


def is_subdomain(s: Any, limit: int = MAX_SUBDOMAIN) -> bool:
    return (isinstance(s, str) and 0 < len(s) <= limit
            and all(DNS_LABEL.fullmatch(p) for p in s.split(".")))


class _Checker:
    """Collects causes while walking one object."""

    def __init__(self) -> None:
        self.causes: list[Cause] = []

    def invalid(self, field: str, value: Any, why: str) -> None:
        self.causes.append(Cause(field, "FieldValueInvalid", f"Invalid value: {value!r}: {why}"))

    def required(self, field: str) -> None:
        self.causes.append(Cause(field, "FieldValueRequired", "Required value"))

    def too_long(self, field: str, limit: int) -> None:
        self.causes.append(Cause(field, "FieldValueTooLong",
                                 f"Too long: may not be more than {limit} bytes"))

    def too_many(self, field: str, count: int, limit: int) -> None:
        self.causes.append(Cause(field, "FieldValueTooMany",
                                 f"Too many: {count}: must have at most {limit} items"))

    def duplicate(self, field: str, value: Any) -> None:
        self.causes.append(Cause(field, "FieldValueDuplicate", f"Duplicate value: {value!r}"))

    def forbidden(self, field: str, why: str) -> None:
        self.causes.append(Cause(field, "FieldValueForbidden", f"Forbidden: {why}"))

    def subdomain(self, field: str, value: Any, limit: int = MAX_SUBDOMAIN) -> None:
        if not value:
            self.required(field)
        elif not isinstance(value, str):
            self.invalid(field, value, "must be a string")
        elif len(value) > limit:
            self.too_long(field, limit)
        elif not is_subdomain(value, limit):
            self.invalid(field, value, "a lowercase RFC 1123 subdomain must consist of lower case "
                         "alphanumeric characters, '-' or '.', and must start and end with an "
                         "alphanumeric character")

    def qualified_name(self, field: str, name: str) -> None:
        domain, sep, ident = name.rpartition("/")
        if sep:
            if not domain:
                self.invalid(field, name, "the domain must not be empty")
            elif len(domain) > MAX_DOMAIN:
                self.too_long(field, MAX_DOMAIN)
            elif not is_subdomain(domain):
                self.invalid(field, name, "the domain must be a DNS subdomain")
        if not ident:
            self.required(field)
        elif len(ident) > MAX_IDENT:
            self.too_long(field, MAX_IDENT)
        elif not C_IDENT.fullmatch(ident):
            self.invalid(field, name, "the identifier must be a C identifier "
                         "(letters, digits and '_', not starting with a digit)")


def validate_resource_slice(obj: Any) -> list[Cause]:
    """All the reasons ``obj`` would be rejected by the API server (empty: valid)."""
    c = _Checker()
    if not isinstance(obj, dict):
        c.invalid("", obj, "must be an object")
        return c.causes
    meta = obj.get("metadata") or {}
    if not isinstance(meta, dict):
        c.invalid("metadata", meta, "must be an object")
    else:
        c.subdomain("metadata.name", meta.get("name"))
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        c.required("spec")
        return c.causes
    c.subdomain("spec.driver", spec.get("driver"), MAX_DRIVER)
    _pool(c, spec.get("pool"))
    per_device = _node_selection(c, spec)
    _devices(c, spec.get("devices"), per_device)
    return c.causes


def _pool(c: _Checker, pool: Any) -> None:
    if not isinstance(pool, dict):
        c.required("spec.pool")
        return
    name = pool.get("name")
    if not name:
        c.required("spec.pool.name")
    elif not isinstance(name, str) or len(name) > MAX_SUBDOMAIN:
        c.too_long("spec.pool.name", MAX_SUBDOMAIN)
    elif not all(is_subdomain(seg) for seg in name.split("/")):
        c.invalid("spec.pool.name", name, "must be one or more DNS subdomains separated by '/'")
    gen = pool.get("generation", 0)
    if not isinstance(gen, int) or isinstance(gen, bool) or gen < 0:
        c.invalid("spec.pool.generation", gen, "must be greater than or equal to 0")
    count = pool.get("resourceSliceCount", 0)
    if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
        c.invalid("spec.pool.resourceSliceCount", count, "must be greater than zero")


def _node_selection(c: _Checker, spec: dict) -> bool:
    """Exactly one of the four ways to say where the devices are; True if per device."""
    chosen = [k for k in ("nodeName", "nodeSelector", "allNodes", "perDeviceNodeSelection")
              if spec.get(k) not in (None, "", False)]
    if len(chosen) != 1:
        c.invalid("spec", chosen, "exactly one of `nodeName`, `nodeSelector`, `allNodes`, "
                  "`perDeviceNodeSelection` is required")
    if spec.get("nodeName"):
        c.subdomain("spec.nodeName", spec["nodeName"])
    selector = spec.get("nodeSelector")
    if selector is not None and not (isinstance(selector, dict)
                                     and selector.get("nodeSelectorTerms")):
        c.required("spec.nodeSelector.nodeSelectorTerms")
    return chosen == ["perDeviceNodeSelection"]


def _devices(c: _Checker, devices: Any, per_device: bool) -> None:
    if devices is None:
        return
    if not isinstance(devices, list):
        c.invalid("spec.devices", devices, "must be a list")
        return
    heavy = any(isinstance(d, dict) and (d.get("taints") or d.get("consumesCounters"))
                for d in devices)
    limit = MAX_DEVICES_TAINTS_OR_COUNTERS if heavy else MAX_DEVICES
    if len(devices) > limit:
        c.too_many("spec.devices", len(devices), limit)
    seen: set[str] = set()
    for i, dev in enumerate(devices):
        path = f"spec.devices[{i}]"
        if not isinstance(dev, dict):
            c.invalid(path, dev, "must be an object")
            continue
        name = dev.get("name")
        if not name:
            c.required(f"{path}.name")
        elif not isinstance(name, str) or len(name) > MAX_LABEL:
            c.too_long(f"{path}.name", MAX_LABEL)
        elif not is_label(name):
            c.invalid(f"{path}.name", name, "a lowercase RFC 1123 label must consist of lower "
                      "case alphanumeric characters or '-', and must start and end with an "
                      "alphanumeric character")
        elif name in seen:
            c.duplicate(f"{path}.name", name)
        else:
            seen.add(name)
        _device_body(c, path, dev, per_device)


def _device_body(c: _Checker, path: str, dev: dict, per_device: bool) -> None:
    attrs = dev.get("attributes") or {}
    capacity = dev.get("capacity") or {}
    if not isinstance(attrs, dict):
        c.invalid(f"{path}.attributes", attrs, "must be a map")
        attrs = {}
    if not isinstance(capacity, dict):
        c.invalid(f"{path}.capacity", capacity, "must be a map")
        capacity = {}
    total = len(attrs) + len(capacity)
    if total > MAX_ATTRS_AND_CAPACITY:
        c.too_many(f"{path}.attributes", total, MAX_ATTRS_AND_CAPACITY)
    for key, value in attrs.items():
        c.qualified_name(f"{path}.attributes[{key}]", key)
        _attribute(c, f"{path}.attributes[{key}]", value)
    multi = dev.get("allowMultipleAllocations")
    if multi is not None and not isinstance(multi, bool):
        c.invalid(f"{path}.allowMultipleAllocations", multi, "must be a boolean")
    for key, value in capacity.items():
        c.qualified_name(f"{path}.capacity[{key}]", key)
        _capacity(c, f"{path}.capacity[{key}]", value)
        policy = value.get("requestPolicy") if isinstance(value, dict) else None
        if policy is None:
            continue
        if multi is not True:
            c.forbidden(f"{path}.capacity[{key}].requestPolicy",
                        "allowMultipleAllocations must be true")
        else:
            _request_policy(c, f"{path}.capacity[{key}].requestPolicy", value.get("value"),
                            policy)
    for j, taint in enumerate(dev.get("taints") or []):
        tpath = f"{path}.taints[{j}]"
        if not isinstance(taint, dict) or not taint.get("key"):
            c.required(f"{tpath}.key")
            continue
        c.qualified_name(f"{tpath}.key", str(taint["key"]))
        if taint.get("effect") not in TAINT_EFFECTS:
            c.invalid(f"{tpath}.effect", taint.get("effect"), f"must be one of {TAINT_EFFECTS}")
    where = [k for k in ("nodeName", "nodeSelector", "allNodes")
             if dev.get(k) not in (None, "", False)]
    if per_device and len(where) != 1:
        c.invalid(path, where, "exactly one of `nodeName`, `nodeSelector`, `allNodes` is "
                  "required when `perDeviceNodeSelection` is set")
    elif not per_device and where:
        c.forbidden(f"{path}.{where[0]}", "only allowed when `perDeviceNodeSelection` is set")


MAX_VALID_VALUES = 10
"""CapacityRequestPolicyDiscreteMaxOptions."""


def _quantity(q: Any) -> float | None:
    """A quantity's value, precisely enough to compare the ones tests write."""
    if isinstance(q, int | float) and not isinstance(q, bool):
        return float(q)
    if not isinstance(q, str) or not QUANTITY.fullmatch(q):
        return None
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
             "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "P": 1e15, "E": 1e18}
    for suffix in sorted(units, key=len, reverse=True):
        if q.endswith(suffix):
            return float(q[: -len(suffix)]) * units[suffix]
    return float(q)


def _request_policy(c: _Checker, path: str, capacity: Any, policy: Any) -> None:
    """The API server's validateRequestPolicy: one of validValues / validRange, each
    with a default inside it and nothing above the capacity's value."""
    if not isinstance(policy, dict):
        c.invalid(path, policy, "must be an object")
        return
    top = _quantity(capacity)
    default = _quantity(policy.get("default")) if policy.get("default") is not None else None
    values, valid_range = policy.get("validValues") or [], policy.get("validRange")
    if values and valid_range is not None:
        c.forbidden(path, 'exactly one policy can be specified, cannot specify "validValues" '
                    'and "validRange" at the same time')
        return
    if values:
        if default is None:
            c.required(f"{path}.default")
            return
        if len(values) > MAX_VALID_VALUES:
            c.too_many(f"{path}.validValues", len(values), MAX_VALID_VALUES)
            return
        nums = [_quantity(v) for v in values]
        for i in range(1, len(nums)):
            if None not in (nums[i - 1], nums[i]) and nums[i - 1] > nums[i]:  # type: ignore[operator]
                c.invalid(f"{path}.validValues[{i}]", values[i],
                          "values must be sorted in ascending order")
        for i, n in enumerate(nums):
            if n is not None and top is not None and n > top:
                c.invalid(f"{path}.validValues[{i}]", values[i],
                          f"option is larger than capacity value: {capacity}")
            if n in nums[:i]:
                c.duplicate(f"{path}.validValues[{i}]", values[i])
        if default not in nums:
            c.invalid(f"{path}.validValues", policy.get("default"),
                      "default value is not valid according to the requestPolicy")
    elif valid_range is not None:
        if default is None:
            c.required(f"{path}.default")
            return
        low = _quantity((valid_range or {}).get("min"))
        if low is None:
            c.required(f"{path}.validRange.min")
            return
        if top is not None and low > top:
            c.invalid(f"{path}.validRange.min", valid_range["min"],
                      f"min is larger than capacity value: {capacity}")
        if default < low:
            c.invalid(f"{path}.validRange.min", policy["default"],
                      f"default is less than min: {valid_range['min']}")
        high = _quantity(valid_range.get("max")) if valid_range.get("max") is not None else None
        if high is not None:
            if low > high:
                c.invalid(f"{path}.validRange.max", valid_range["min"],
                          f"min is larger than max: {valid_range['max']}")
            if top is not None and high > top:
                c.invalid(f"{path}.validRange.max", valid_range["max"],
                          f"max is larger than capacity value: {capacity}")
            if default > high:
                c.invalid(f"{path}.validRange.max", policy["default"],
                          f"default is more than max: {valid_range['max']}")


def _attribute(c: _Checker, path: str, value: Any) -> None:
    if not isinstance(value, dict):
        c.invalid(path, value, "must be an object")
        return
    kinds = [k for k in ("int", "bool", "string", "version") if value.get(k) is not None]
    if len(kinds) != 1:
        c.invalid(path, value, "exactly one value must be specified")
        return
    kind = kinds[0]
    v = value[kind]
    if kind == "int" and (not isinstance(v, int) or isinstance(v, bool)):
        c.invalid(f"{path}.int", v, "must be an integer")
    elif kind == "bool" and not isinstance(v, bool):
        c.invalid(f"{path}.bool", v, "must be a boolean")
    elif kind in ("string", "version"):
        if not isinstance(v, str):
            c.invalid(f"{path}.{kind}", v, "must be a string")
        elif len(v) > MAX_STRING:
            c.too_long(f"{path}.{kind}", MAX_STRING)
        elif kind == "version" and not SEMVER.fullmatch(v):
            c.invalid(f"{path}.version", v,
                      "must be a string compatible with semver.org spec 2.0.0")


def _capacity(c: _Checker, path: str, value: Any) -> None:
    if not isinstance(value, dict) or "value" not in value:
        c.required(f"{path}.value")
        return
    q = value["value"]
    if isinstance(q, bool) or not isinstance(q, int | float | str):
        c.invalid(f"{path}.value", q, "must be a quantity")
    elif isinstance(q, str) and not QUANTITY.fullmatch(q):
        c.invalid(f"{path}.value", q, "quantities must match the regular expression "
                  "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
