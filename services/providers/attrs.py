"""Provider attributes: checked against the ResourceSlice limits and merged into a device.

A provider speaks DRANET's JSON for a ``resource.k8s.io/v1`` DeviceAttribute
(``{"string": "x"}``, ``{"int": 3}``, ``{"bool": true}``, ``{"version": "1.2.3"}``).
Nothing it says is trusted: a bad name, a wrong type or a string over 64 bytes
drops that one attribute with a reason naming the provider and the field, so a
lying webhook costs its own attributes and never the device. Names the device
already has are kept as discovery found them: the plumber resolves a device by
its ``ifName``, and a provider must not be able to redirect it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from schemas.inventory import AttrValue, Device
from schemas.limits import (
    MAX_ATTRIBUTE_STRING,
    MAX_ATTRIBUTES_AND_CAPACITIES,
    is_semver,
    qualified_name_error,
)

log = logging.getLogger("knd.providers")

VALUE_KINDS = ("string", "int", "bool", "version")


def decode_attributes(raw: Any, source: str) -> tuple[dict[str, AttrValue], list[str]]:
    """(good attributes, one error per rejected one) of a provider's answer."""
    if raw is None:
        return {}, []
    if not isinstance(raw, dict):
        return {}, [f"{source}: expected an object of attributes, got {type(raw).__name__}"]
    good: dict[str, AttrValue] = {}
    errors: list[str] = []
    for name, value in raw.items():
        where = f"{source}: {name}"
        err = qualified_name_error(name) if isinstance(name, str) else "not a string"
        if err:
            errors.append(f"{where}: invalid name: {err}")
            continue
        if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in VALUE_KINDS:
            errors.append(f"{where}: expected exactly one of {', '.join(VALUE_KINDS)}, got "
                          f"{value!r:.80}")
            continue
        kind, v = next(iter(value.items()))
        if kind == "bool" and not isinstance(v, bool):
            errors.append(f"{where}.bool: expected true or false, got {v!r:.80}")
        elif kind == "int" and (isinstance(v, bool) or not isinstance(v, int)
                                or not -(2**63) <= v < 2**63):
            errors.append(f"{where}.int: expected a 64-bit integer, got {v!r:.80}")
        elif kind in ("string", "version") and not isinstance(v, str):
            errors.append(f"{where}.{kind}: expected a string, got {v!r:.80}")
        elif kind in ("string", "version") and len(v.encode()) > MAX_ATTRIBUTE_STRING:
            errors.append(f"{where}.{kind}: {len(v.encode())} bytes, more than the "
                          f"{MAX_ATTRIBUTE_STRING} a ResourceSlice allows")
        elif kind == "version" and not is_semver(v):
            errors.append(f"{where}.version: {v!r} is not a semantic version")
        elif kind == "version":
            # knd's inventory has no version type: a provider's version is kept as a string
            good[name] = v
        else:
            good[name] = v
    return good, errors


def merge_into(device: Device, extra: Mapping[str, AttrValue], source: str) -> Device:
    """``device`` with ``extra`` added, within the 32-attribute limit; what does not fit
    or would overwrite what discovery found is left out and logged."""
    if not extra:
        return device
    attrs = dict(device.attributes)
    room = MAX_ATTRIBUTES_AND_CAPACITIES - len(attrs) - len(device.capacity)
    kept_out: list[str] = []
    for name, value in extra.items():
        if name in device.attributes:
            if device.attributes[name] != value:
                kept_out.append(f"{name} (discovery's value is kept)")
            continue
        if room <= 0:
            kept_out.append(f"{name} (over {MAX_ATTRIBUTES_AND_CAPACITIES} attributes)")
            continue
        attrs[name] = value
        room -= 1
    if kept_out:
        log.warning("device %s: %s attributes left out: %s", device.name, source,
                    ", ".join(kept_out))
    return Device(name=device.name, attributes=attrs, capacity=device.capacity)
