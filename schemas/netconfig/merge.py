"""Class and claim configurations that target one request, merged into one."""

from __future__ import annotations

from typing import Any

import msgspec

from schemas.netconfig.types import EthtoolConfig, InterfaceConfig, NetworkConfig


def _is_set(struct: msgspec.Struct, field: msgspec.structs.FieldInfo) -> bool:
    value = getattr(struct, field.name)
    default = field.default_factory() if field.default_factory is not msgspec.NODEFAULT \
        else field.default
    return value != default


def merge(configs: list[NetworkConfig]) -> NetworkConfig:
    """The configuration that applies when ``configs`` all target one request.

    Later configs override earlier ones; the gateway passes class configs first,
    then claim configs, in the order the claim lists them, so a claim overrides
    its class. Granularity: a field a config leaves unset (absent, ``null``, or
    its empty default) inherits; a set one replaces what came before:

    - ``profile``: a non-empty one replaces;
    - ``interface``: field by field (``name``, ``mtu``, ...); ``addresses`` is one
      field, replaced as a whole list, and ``vrf``, ``ipvlan``, ``macvlan`` one field each;
    - ``routes``, ``rules``, ``neighbors``: each replaced as a whole list;
    - ``ethtool.features``, ``ethtool.privateFlags``, ``sysctls``: key by key.

    An empty list or field cannot clear what an earlier config set. The inputs
    are not modified; the result is not validated (call :func:`validate`).
    """
    iface: dict[str, Any] = {}
    lists: dict[str, list] = {}
    features: dict[str, bool] = {}
    flags: dict[str, bool] = {}
    ethtool = False
    sysctls: dict[str, str] = {}
    profile = ""
    for cfg in configs:
        profile = cfg.profile or profile
        for field in msgspec.structs.fields(InterfaceConfig):
            if _is_set(cfg.interface, field):
                value = getattr(cfg.interface, field.name)
                iface[field.name] = list(value) if isinstance(value, list) else \
                    msgspec.structs.replace(value) if isinstance(value, msgspec.Struct) else value
        for name in ("routes", "rules", "neighbors"):
            if getattr(cfg, name):
                lists[name] = [msgspec.structs.replace(x) for x in getattr(cfg, name)]
        if cfg.ethtool is not None:
            ethtool = True
            features.update(cfg.ethtool.features)
            flags.update(cfg.ethtool.privateFlags)
        sysctls.update(cfg.sysctls)
    return NetworkConfig(
        profile=profile, interface=InterfaceConfig(**iface), **lists,
        ethtool=EthtoolConfig(features=features, privateFlags=flags) if ethtool else None,
        sysctls=sysctls)
