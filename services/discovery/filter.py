"""The ``--filter`` CEL expression that decides which devices are published.

The expression sees a device the way a DRA selector does, in two spellings:
``attributes["knd.dev/type"]`` (flat, qualified names, as DRANET's filter) and
``device.attributes["knd.dev"].type`` (per domain, as in a DeviceClass
selector), plus ``device.name``. An expression that fails on one device (a
missing key, a type error) excludes that device and is counted, so one odd
device cannot stop publishing.

Without ``--filter`` discovery applies DRANET's default (hide the host ends of veth
pairs) as :class:`DefaultFilter`, the same rule written in Python: CEL's runtime costs
3 MB of every discovery process, paid only by nodes that ask for an expression.
"""

from __future__ import annotations

import logging

from prometheus_client.metrics import Counter

from schemas.inventory import Device

log = logging.getLogger("knd.discovery.filter")

FILTER_ERRORS = Counter("knd_discovery_filter_errors",
                        "Devices whose --filter evaluation failed (excluded)")


def default_expression(driver: str) -> str:
    """Hide the host ends of CNI veth pairs, as DRANET's default does."""
    key = f"{driver}/type"
    return f'!("{key}" in attributes) || attributes["{key}"] != "veth"'


class DefaultFilter:
    """:func:`default_expression`, evaluated without CEL."""

    def __init__(self, driver: str) -> None:
        self.expression = default_expression(driver)
        self.key = f"{driver}/type"

    def __call__(self, device: Device) -> bool:
        return device.attributes.get(self.key) != "veth"


def device_filter(expression: str | None, driver: str) -> DeviceFilter | DefaultFilter:
    """The filter of ``--filter expression``; DRANET's default when there is none.
    Raises :class:`services.common.celexpr.CelError` for one that does not compile."""
    return DeviceFilter(expression) if expression else DefaultFilter(driver)


def shared_filter(expression: str | None) -> DeviceFilter | None:
    """``--shared-devices``: which published devices several claims may hold at once
    (none without it). Same language and context as ``--filter``."""
    return DeviceFilter(expression, "--shared-devices") if expression else None


class DeviceFilter:
    """A ``--filter`` expression. Raises :class:`services.common.celexpr.CelError`
    (the text says where) for one that does not compile."""

    def __init__(self, expression: str, flag: str = "--filter") -> None:
        from services.common.celexpr import compile_checked

        self.expression = expression
        self._program = compile_checked(expression, flag)

    def __call__(self, device: Device) -> bool:
        per_domain: dict[str, dict[str, object]] = {}
        for name, value in device.attributes.items():
            domain, _, ident = name.rpartition("/")
            per_domain.setdefault(domain, {})[ident] = value
        ctx = {"attributes": dict(device.attributes),
               "device": {"name": device.name, "attributes": per_domain}}
        try:
            result = self._program.execute(ctx)
        except Exception as exc:
            FILTER_ERRORS.inc()
            log.warning("filter failed on device %s (excluded): %s", device.name, exc)
            return False
        if not isinstance(result, bool):
            FILTER_ERRORS.inc()
            log.warning("filter returned %r, not a bool, on device %s (excluded)",
                        result, device.name)
            return False
        return result
