"""Checking inventory devices against the ResourceSlice API limits before writing.

The API server rejects a whole ResourceSlice when one of its devices breaks a
limit, so one bad interface (an alias longer than 64 characters, a name that is
not a DNS label) would keep every other device of the node off the cluster.
The publisher therefore validates each device on its own, drops only the bad
ones with a reason that names the field, and publishes the rest.

Devices are checked in their wire shape (``{"string": "eth0"}``...), the shape
that :func:`to_wire` builds from an inventory :class:`schemas.inventory.Device`,
so a device written with a ``version`` attribute, taints or counters (shapes the
inventory schema does not carry yet) is checked the same way.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from schemas import limits
from schemas.inventory import Device
from services.publisher.metrics import DROPPED

log = logging.getLogger("knd.publisher.validation")

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
ATTRIBUTE_KINDS = ("bool", "int", "string", "version")
TAINT_EFFECTS = ("NoSchedule", "NoExecute")

# <sign><digits>[.<digits>]<suffix>: the quantity grammar of the API machinery.
_QUANTITY = re.compile(
    r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+|n|u|m|k|M|G|T|P|E)?$"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(text: object) -> Fraction | None:
    """The exact value of a Kubernetes quantity, or None when it is not one.

    Used both to validate capacities and to compare a capacity we wrote with
    the one the API server returns, which may be re-spelled canonically
    (``1024Mi`` comes back as ``1Gi``).
    """
    if not isinstance(text, str):
        return None
    m = _QUANTITY.match(text)
    if not m:
        return None
    suffix = m.group("suffix") or ""
    number = text[: len(text) - len(suffix)]
    try:
        value = Fraction(number)
    except (ValueError, ZeroDivisionError):
        return None
    if suffix in _BINARY:
        return value * _BINARY[suffix]
    if suffix in _DECIMAL:
        return value * Fraction(10) ** _DECIMAL[suffix]
    if suffix:
        return value * Fraction(10) ** int(suffix[1:])
    return value


def wire_attribute(value: bool | int | str) -> dict[str, Any]:
    """The ResourceSlice shape of an inventory attribute value (bool before int)."""
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": value}
    return {"string": value}


def to_wire(device: Device | Mapping[str, Any]) -> dict[str, Any]:
    """An inventory device as a ResourceSlice device dict.

    A mapping is taken to be already in wire shape and is copied as is.
    """
    if isinstance(device, Mapping):
        return dict(device)
    out: dict[str, Any] = {"name": device.name}
    if device.attributes:
        out["attributes"] = {k: wire_attribute(v) for k, v in device.attributes.items()}
    if device.capacity:
        out["capacity"] = {k: {"value": v} for k, v in device.capacity.items()}
    if device.shared:
        out["allowMultipleAllocations"] = True
    return out


def _attribute_error(value: Any) -> str | None:
    if not isinstance(value, Mapping):
        return "must be an object with one of bool, int, string, version"
    kinds = [k for k in value if k in ATTRIBUTE_KINDS]
    extra = [k for k in value if k not in ATTRIBUTE_KINDS]
    if extra:
        return f"unknown field {extra[0]!r}"
    if len(kinds) != 1:
        return "must have exactly one of bool, int, string, version"
    kind = kinds[0]
    v = value[kind]
    if kind == "bool":
        return None if isinstance(v, bool) else "bool value is not a boolean"
    if kind == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            return "int value is not an integer"
        return None if INT64_MIN <= v <= INT64_MAX else "int value does not fit in 64 bits"
    if not isinstance(v, str):
        return f"{kind} value is not a string"
    if len(v) > limits.MAX_ATTRIBUTE_STRING:
        return f"longer than {limits.MAX_ATTRIBUTE_STRING} characters"
    if kind == "version" and not limits.is_semver(v):
        return f"version {v!r} is not semantic versioning 2.0"
    return None


def _capacity_error(value: Any) -> str | None:
    if not isinstance(value, Mapping) or "value" not in value:
        return "must be an object with a value"
    if parse_quantity(value["value"]) is None:
        return f"value {value['value']!r} is not a quantity"
    return None


_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def _label_key_error(key: Any) -> str | None:
    """A taint key is a label key: ``[dns-subdomain/]name``, name <= 63 characters."""
    if not isinstance(key, str):
        return "key is not a string"
    prefix, sep, name = key.rpartition("/")
    if sep and not limits.is_dns_subdomain(prefix):
        return f"key {key!r} has a prefix that is not a DNS subdomain"
    if len(name) > limits.MAX_DNS_LABEL or not _LABEL_NAME.match(name):
        return f"key {key!r} is not a label key"
    return None


def _taint_error(taint: Any) -> str | None:
    if not isinstance(taint, Mapping):
        return "must be an object"
    why = _label_key_error(taint.get("key"))
    if why:
        return why
    if taint.get("effect") not in TAINT_EFFECTS:
        return f"effect {taint.get('effect')!r} is not one of {', '.join(TAINT_EFFECTS)}"
    value = taint.get("value", "")
    if not isinstance(value, str) or len(value) > limits.MAX_DNS_LABEL or (
            value and not _LABEL_NAME.match(value)):
        return f"value {value!r} is not a label value"
    return None


def device_errors(device: Mapping[str, Any]) -> list[str]:
    """Every reason the API server would reject ``device``, each naming the field."""
    name = device.get("name")
    where = f"devices[{name}]"
    errors: list[str] = []
    if not isinstance(name, str) or not limits.is_dns_label(name):
        errors.append(f"{where}.name: {name!r} is not a DNS label "
                      f"(lower case alphanumerics and '-', at most {limits.MAX_DNS_LABEL})")
    attributes = device.get("attributes") or {}
    capacity = device.get("capacity") or {}
    total = len(attributes) + len(capacity)
    if total > limits.MAX_ATTRIBUTES_AND_CAPACITIES:
        errors.append(f"{where}: {total} attributes and capacities, "
                      f"more than {limits.MAX_ATTRIBUTES_AND_CAPACITIES}")
    for section, items, check in (("attributes", attributes, _attribute_error),
                                  ("capacity", capacity, _capacity_error)):
        for key, value in items.items():
            path = f'{where}.{section}["{key}"]'
            why = limits.qualified_name_error(key) if isinstance(key, str) else "not a string"
            if why:
                errors.append(f"{path}: {why}")
                continue
            why = check(value)
            if why:
                errors.append(f"{path}: {why}")
    for i, taint in enumerate(device.get("taints") or []):
        why = _taint_error(taint)
        if why:
            errors.append(f"{where}.taints[{i}]: {why}")
    return errors


@dataclass
class Validated:
    """The devices that may be written, and why the others were left out."""

    devices: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def validate(devices: Iterable[Device | Mapping[str, Any]], *,
             rejected: Mapping[str, str] | None = None) -> Validated:
    """Keep the devices the API will accept, in order; drop the rest with a reason.

    ``rejected`` maps device names to a reason the API server itself gave for
    an earlier write (a limit this module does not know about): such a device
    stays out until its content changes the reconciler's mind.
    Duplicate names keep the first device, since a pool's device names are unique.
    """
    out = Validated()
    seen: set[str] = set()
    for raw in devices:
        dev = to_wire(raw)
        errors = device_errors(dev)
        # a device without errors has a str name; any other is only logged (as %s would)
        name = str(dev.get("name"))
        if not errors and name in seen:
            errors = [f"devices[{name}]: duplicate device name, the first one is kept"]
            why = "duplicate"
        elif not errors and rejected and name in rejected:
            errors = [rejected[name]]
            why = "rejected"
        else:
            why = "invalid"
        if errors:
            reason = "; ".join(errors)
            log.warning("leaving out device %s: %s", name, reason)
            DROPPED.labels(why).inc()
            out.dropped.append(reason)
            continue
        seen.add(name)
        out.devices.append(dev)
    return out
