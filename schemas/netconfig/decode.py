"""Opaque ``parameters`` JSON to a :class:`NetworkConfig`: every structural problem
(unknown fields, wrong types) named by its field path, then :func:`validate`'s."""

from __future__ import annotations

from typing import Any

import msgspec

from schemas.netconfig.types import NetworkConfig
from schemas.netconfig.validate import MAX_PARAMETERS, validate


class ConfigError(ValueError):
    """An invalid claim configuration. ``errors`` holds one line per problem, each
    starting with its field path; the message joins them with "; "."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = list(errors)


def _join(path: str, rel: str) -> str:
    if not path:
        return rel
    return f"{path}{rel}" if rel.startswith("[") else f"{path}.{rel}"


def decode_config(parameters: dict | bytes | str, path: str = "") -> NetworkConfig:
    """Decode and validate one opaque ``parameters`` object.

    ``path`` is where the object sits (``status.allocation.devices.config[2].opaque.
    parameters``); every error is prefixed with it. Raises :class:`ConfigError`
    listing every problem found: all structural ones (unknown fields, wrong types)
    or, when the structure is sound, all of :func:`validate`'s.
    """
    where = path or "parameters"
    if isinstance(parameters, bytes | bytearray | memoryview):
        raw = bytes(parameters)
        try:
            data: Any = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise ConfigError([f"{where}: not valid JSON: {exc}"]) from None
    elif isinstance(parameters, str):
        return decode_config(parameters.encode(), path)
    else:
        data = parameters
        try:
            raw = msgspec.json.encode(data)
        except (TypeError, msgspec.EncodeError) as exc:
            raise ConfigError([f"{where}: cannot be encoded as JSON: {exc}"]) from None
    if len(raw) > MAX_PARAMETERS:
        raise ConfigError([f"{where}: {len(raw)} bytes, more than the {MAX_PARAMETERS} "
                           "allowed"])
    errors: list[str] = []
    _check_shape(data, _NETWORK_CONFIG_TYPE, path, errors)
    if errors:
        raise ConfigError(errors)
    try:
        cfg = msgspec.convert(data, NetworkConfig, strict=True)
    except msgspec.ValidationError as exc:  # the shape walk above should have caught it
        raise ConfigError([_msgspec_error(str(exc), path)]) from None
    problems = validate(cfg)
    if problems:
        raise ConfigError([_join(path, e) for e in problems])
    return cfg


def _msgspec_error(text: str, path: str) -> str:
    message, sep, at = text.partition(" - at `")
    rel = at.rstrip("`")[1:].lstrip(".") if sep else ""
    return f"{_join(path, rel) or 'parameters'}: {message}"


_NETWORK_CONFIG_TYPE = msgspec.inspect.type_info(NetworkConfig)
_JSON_NAMES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
               float: "number", type(None): "null"}


def _check_shape(value: Any, t: msgspec.inspect.Type, path: str, errors: list[str]) -> None:
    """Collect every structural error of decoded JSON ``value`` against type ``t``."""
    inspect = msgspec.inspect
    where = path or "parameters"
    got = _JSON_NAMES.get(type(value), type(value).__name__)
    if isinstance(t, inspect.UnionType):
        if value is None and any(isinstance(m, inspect.NoneType) for m in t.types):
            return
        members = [m for m in t.types if not isinstance(m, inspect.NoneType)]
        _check_shape(value, members[0], path, errors)  # our unions are "X | None"
    elif isinstance(t, inspect.StructType):
        if not isinstance(value, dict):
            errors.append(f"{where}: expected an object, got {got}")
            return
        fields = {f.encode_name: f for f in t.fields}
        for key, item in value.items():
            field = fields.get(key)
            if field is None:
                errors.append(f"{_join(path, str(key))}: unknown field")
            else:
                _check_shape(item, field.type, _join(path, key), errors)
        for f in t.fields:
            if f.required and f.encode_name not in value:
                errors.append(f"{_join(path, f.encode_name)}: required")
    elif isinstance(t, inspect.ListType):
        if not isinstance(value, list):
            errors.append(f"{where}: expected an array, got {got}")
            return
        for i, item in enumerate(value):
            _check_shape(item, t.item_type, f"{where}[{i}]", errors)
    elif isinstance(t, inspect.DictType):
        if not isinstance(value, dict):
            errors.append(f"{where}: expected an object, got {got}")
            return
        for key, item in value.items():
            _check_shape(item, t.value_type, f"{where}[{key}]", errors)
    elif isinstance(t, inspect.IntType):
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{where}: expected an integer, got {got}")
    elif isinstance(t, inspect.BoolType):
        if not isinstance(value, bool):
            errors.append(f"{where}: expected a boolean, got {got}")
    elif isinstance(t, inspect.StrType):
        if not isinstance(value, str):
            errors.append(f"{where}: expected a string, got {got}")
