"""The ``--filter`` CEL expression that decides which devices are published.

The expression sees a device the way a DRA selector does, in two spellings:
``attributes["knd.dev/type"]`` (flat, qualified names, as DRANET's filter) and
``device.attributes["knd.dev"].type`` (per domain, as in a DeviceClass
selector), plus ``device.name``. An expression that fails on one device (a
missing key, a type error) excludes that device and is counted, so one odd
device cannot stop publishing.
"""

from __future__ import annotations

import logging

from prometheus_client.metrics import Counter

from schemas.inventory import Device
from services.common.celexpr import CelError, compile_checked

log = logging.getLogger("knd.discovery.filter")

FILTER_ERRORS = Counter("knd_discovery_filter_errors",
                        "Devices whose --filter evaluation failed (excluded)")


def default_expression(driver: str) -> str:
    """Hide the host ends of CNI veth pairs, as DRANET's default does."""
    key = f"{driver}/type"
    return f'!("{key}" in attributes) || attributes["{key}"] != "veth"'


FilterError = CelError
"""The expression does not compile; the text says where."""


class DeviceFilter:
    def __init__(self, expression: str) -> None:
        self.expression = expression
        self._program = compile_checked(expression, "--filter")

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
