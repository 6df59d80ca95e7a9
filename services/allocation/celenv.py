"""Device selectors in the DRA CEL environment, as the scheduler evaluates them.

One variable, ``device``: ``driver``, ``attributes[domain][id]`` and
``capacity[domain][id]``, where a name without a domain belongs to the device's
driver. A ``version`` attribute is its semver text, a capacity its quantity as a
number; ``semver()``, ``isSemver()``, ``quantity()`` and their methods
(``compareTo``, ``isGreaterThan``, ``isLessThan``, ``major``, ``minor``, ``patch``,
``asInteger``, ``asApproximateFloat``, ``sign``, ``isInteger``, ``add``, ``sub``) are
provided. A domain the device lacks is an empty map, so ``has()`` on it is false;
anything else an expression cannot evaluate (a missing attribute without ``has()``,
a result that is not a bool) is an error, which makes the scheduler abort the
allocation rather than skip the device.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from services.allocation.objects import Device
from services.common.celexpr import CelError, Context, Program, compile_checked

_DOMAIN_REF = re.compile(r"device\s*\.\s*(?:attributes|capacity)\s*\[\s*(['\"])(.*?)\1\s*\]")
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                     r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
                     r"(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
                     r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$")
_SUFFIX: dict[str, Decimal | int] = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))"
                       r"(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$")


class SelectorError(ValueError):
    """A selector that cannot be compiled or evaluated; the text says whose and where."""


def quantity(text: str) -> int | float:
    """A Kubernetes quantity (``1Gi``, ``500m``, ``1e3``) as a number."""
    m = _QUANTITY.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a quantity")
    try:
        value = Decimal(m.group(1) + (m.group(2) or "")) * _SUFFIX[m.group(3) or ""]
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a quantity") from None
    return int(value) if value == value.to_integral_value() else float(value)


def _semver_key(text: str) -> tuple[Any, ...]:
    m = _SEMVER.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a semantic version")
    pre = m.group(4)
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")) \
        if pre else ()
    # a release sorts after its pre-releases
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), 0 if pre else 1, ids)


def _compare(a: Any, b: Any) -> int:
    if isinstance(a, str) and isinstance(b, str):
        sa, sb = _semver_key(a), _semver_key(b)
        return (sa > sb) - (sa < sb)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        return (a > b) - (a < b)
    raise ValueError(f"cannot compare {type(a).__name__} with {type(b).__name__}")


def _semver(text: str) -> str:
    _semver_key(text)
    return text


def _is_semver(text: str) -> bool:
    return bool(_SEMVER.match(text))


def _part(i: int) -> Any:
    def get(version: str) -> int:
        return int(_semver_key(version)[i])
    return get


FUNCTIONS: dict[str, Any] = {
    "semver": _semver, "isSemver": _is_semver, "quantity": quantity,
    "compareTo": _compare,
    "isGreaterThan": lambda a, b: _compare(a, b) > 0,
    "isLessThan": lambda a, b: _compare(a, b) < 0,
    "major": _part(0), "minor": _part(1), "patch": _part(2),
    "asInteger": lambda q: int(q), "asApproximateFloat": lambda q: float(q),
    "sign": lambda q: (q > 0) - (q < 0), "isInteger": lambda q: float(q).is_integer(),
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b,
}


def _context() -> Context:
    ctx = Context()
    for name, fn in FUNCTIONS.items():
        ctx.add_function(name, fn)
    return ctx


def device_value(device: Device) -> dict[str, Any]:
    """``device`` as the expression sees it (without the empty domains it names)."""
    attributes: dict[str, dict[str, Any]] = {}
    for name, value in device.attributes.items():
        domain, _, ident = name.partition("/") if "/" in name else (device.driver, "", name)
        attributes.setdefault(domain, {})[ident] = value
    capacity: dict[str, dict[str, Any]] = {}
    for name, text in device.capacity.items():
        domain, _, ident = name.partition("/") if "/" in name else (device.driver, "", name)
        try:
            capacity.setdefault(domain, {})[ident] = quantity(text)
        except ValueError:
            continue  # a published capacity is validated by the API server; not ours
    return {"driver": device.driver, "attributes": attributes, "capacity": capacity}


class Selector:
    """One compiled selector; ``owner`` says whose it is in errors (``class
    gpu.nvidia.com``, ``claim default/train, request gpu``), ``index`` which one."""

    def __init__(self, expression: str, owner: str, index: int) -> None:
        self.expression, self.owner, self.index = expression, owner, index
        try:
            self.program: Program = compile_checked(expression, f"{owner}: selector #{index}")
        except CelError as exc:
            raise SelectorError(f"{owner}: selector #{index}: CEL compile error: "
                                f"{str(exc).split(': ', 2)[-1]}") from None
        self.domains = {m.group(2) for m in _DOMAIN_REF.finditer(expression)}
        self._ctx = _context()

    def matches(self, device: Device, value: dict[str, Any] | None = None) -> bool:
        """Whether ``device`` passes; raises :class:`SelectorError` where the scheduler
        would abort. ``value``: :func:`device_value` of it, if made already."""
        value = device_value(device) if value is None else value
        missing = self.domains - value["attributes"].keys()
        missing_cap = self.domains - value["capacity"].keys()
        if missing or missing_cap:
            value = {**value,
                     "attributes": {**value["attributes"], **{d: {} for d in missing}},
                     "capacity": {**value["capacity"], **{d: {} for d in missing_cap}}}
        self._ctx.add_variable("device", value)
        try:
            result = self.program.execute(self._ctx)
        except Exception as exc:  # the binding raises KeyError, ValueError, RuntimeError
            raise SelectorError(f"{self.owner}: selector #{self.index} on device {device.id}: "
                                f"CEL runtime error: {_runtime(exc)} (in: "
                                f"{' '.join(self.expression.split())})") from None
        if not isinstance(result, bool):
            raise SelectorError(f"{self.owner}: selector #{self.index} on device {device.id}: "
                                f"CEL result of type {type(result).__name__} could not be "
                                "converted to bool")
        return result


def _runtime(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"no such key: {exc.args[0] if exc.args else ''}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
