"""A provider's configuration under the claim's, as DRANET merges them.

The claim wins: every interface field it sets overrides the provider's. Lists
combine: the provider's entries first, then the claim's, an address kept once,
a route once per (destination, table) and a neighbor once per destination, the
claim's entry winning; rules are added, exact repeats dropped. Maps (ethtool
features and private flags, sysctls) merge key by key. This differs on purpose
from :func:`schemas.netconfig.merge`, which replaces whole lists between a class
and a claim config: DRANET appends a provider's routes to the user's.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import msgspec

from schemas.netconfig import EthtoolConfig, InterfaceConfig, NetworkConfig

T = TypeVar("T")


def _is_set(struct: msgspec.Struct, field: msgspec.structs.FieldInfo) -> bool:
    value = getattr(struct, field.name)
    default = (field.default_factory() if field.default_factory is not msgspec.NODEFAULT
               else field.default)
    return value != default


def _last_wins(items: list[T], key: Callable[[T], Hashable]) -> list[T]:
    """``items`` with one entry per key, the last one, where it stands (DRANET's order)."""
    out: dict[Hashable, T] = {}
    for item in items:
        out.pop(key(item), None)
        out[key(item)] = item
    return list(out.values())


def merge_provider(user: NetworkConfig, provider: NetworkConfig | None) -> NetworkConfig:
    """The configuration to apply: ``user`` (the claim's) over ``provider``'s."""
    if provider is None:
        return user
    iface: dict[str, Any] = {}
    for field in msgspec.structs.fields(InterfaceConfig):
        for cfg in (provider, user):
            if _is_set(cfg.interface, field):
                iface[field.name] = getattr(cfg.interface, field.name)
    addresses = _last_wins([*provider.interface.addresses, *user.interface.addresses],
                           lambda a: a)
    if addresses:
        iface["addresses"] = addresses
    ethtool = None
    if provider.ethtool is not None or user.ethtool is not None:
        p, u = provider.ethtool or EthtoolConfig(), user.ethtool or EthtoolConfig()
        ethtool = EthtoolConfig(features={**p.features, **u.features},
                                privateFlags={**p.privateFlags, **u.privateFlags})
    merged = NetworkConfig(
        interface=InterfaceConfig(**iface),
        routes=_last_wins([*provider.routes, *user.routes],
                          lambda r: (r.destination, r.table)),
        rules=_last_wins([*provider.rules, *user.rules], msgspec.json.encode),
        neighbors=_last_wins([*provider.neighbors, *user.neighbors], lambda n: n.destination),
        ethtool=ethtool,
        sysctls={**provider.sysctls, **user.sysctls})
    profile = getattr(user, "profile", "") or getattr(provider, "profile", "")
    if profile:
        merged = msgspec.structs.replace(merged, profile=profile)
    return merged
