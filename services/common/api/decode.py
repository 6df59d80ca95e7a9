"""Reading API objects strictly: bounded in size and depth, every field checked by path.

An API object is input like any other: a broken webhook, a buggy controller or
a hand-edited standalone file can serve ``{"metadata": 5}`` or a body nested a
hundred thousand levels deep. Such input must become an error that names the
problem (``metadata: expected an object, got a number``; ``nested deeper than 64
levels``), never an ``AttributeError`` or a ``RecursionError`` from deep inside
the code that trusted it.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from schemas.text import q

MAX_OBJECT_BYTES = 3 * 1024 * 1024
"""One object: the API server's own request limit (etcd keeps at most 1.5 MiB)."""
MAX_LIST_BYTES = 64 * 1024 * 1024
"""One list answer (a node's ResourceSlices)."""
MAX_DEPTH = 64
"""Real objects nest about a dozen levels (a slice's device attributes, a claim's opaque
parameters); Python's JSON parser fails near a thousand."""

_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)

T = TypeVar("T")

_KINDS: dict[type, str] = {dict: "an object", list: "a list", str: "a string",
                           bool: "a boolean", int: "an integer", float: "a number"}


class ObjectError(ValueError):
    """An API object that is not what the API promises; the text starts with the field path."""


def nesting(raw: bytes, stop_after: int = MAX_DEPTH) -> int:
    """How deep ``raw``'s JSON nests (brackets inside strings do not count); stops counting
    once past ``stop_after``, so a hostile body costs no more than a real one."""
    depth = deepest = 0
    for m in _TOKENS.finditer(raw):
        tok = m.group()
        if tok in (b"{", b"["):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_after:
                    break
        elif tok in (b"}", b"]"):
            depth -= 1
    return deepest


def parse(raw: bytes, what: str, limit: int = MAX_OBJECT_BYTES) -> dict:
    """``raw`` as one JSON object, or :class:`ObjectError` naming what is wrong with it."""
    if len(raw) > limit:
        raise ObjectError(f"{what}: {len(raw)} bytes, more than the {limit} accepted")
    if nesting(raw) > MAX_DEPTH:
        raise ObjectError(f"{what}: nested deeper than {MAX_DEPTH} levels")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ObjectError(f"{what}: not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ObjectError(f"{what}: expected a JSON object, got {kind_of(body)}")
    return body


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return _KINDS.get(type(value), type(value).__name__)


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def expect(value: Any, kind: type[T], path: str) -> T:
    """``value`` if it is a ``kind``, else ObjectError ``path: expected ..., got ...``."""
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        shown = f" {q(value, 40)}" if isinstance(value, str) else ""
        raise ObjectError(f"{path}: expected {_KINDS.get(kind, kind.__name__)}, got "
                          f"{kind_of(value)}{shown}")
    return value


def field(obj: dict, key: str, kind: type[T], path: str, *,
          required: bool = False) -> T | None:
    """``obj[key]`` checked to be a ``kind``; absent or null is None (or an error when
    ``required``)."""
    value = obj.get(key)
    where = join(path, key)
    if value is None:
        if required:
            raise ObjectError(f"{where}: required")
        return None
    return expect(value, kind, where)


def metadata(obj: dict, *keys: str) -> dict[str, str]:
    """``metadata`` and the string fields ``keys`` of it (absent: ""), all type-checked."""
    meta = field(obj, "metadata", dict, "", required=True) or {}
    return {k: field(meta, k, str, "metadata") or "" for k in keys}
