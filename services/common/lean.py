"""Importing one module of a package without running the package's ``__init__``.

Some libraries' ``__init__`` imports far more than knd uses: kubernetes-asyncio every
API group and ~700 model classes, the CEL binding an interactive shell (prompt_toolkit,
rich). Each knd service is a process of its own on every node, so that is memory paid
thousands of times. :func:`empty_package` registers such a package as an empty module
with its real ``__path__``; its submodules then import as usual, alone.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any


def empty_package(name: str, under: Path | None = None) -> types.ModuleType | None:
    """Register package ``name`` empty (``under``: its folder, found when None), unless
    it is loaded already (then None: the whole package is there to use as it is)."""
    if name in sys.modules:
        return None
    if under is None:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(f"{name} is not installed")
        under = Path(next(iter(spec.submodule_search_locations)))
    mod = types.ModuleType(name, "registered empty by services.common.lean")
    mod.__path__ = [str(under)]
    mod.__package__ = name
    sys.modules[name] = mod
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, mod)
    return mod


class _WithoutAiohttp(importlib.abc.Loader):
    """Runs a module with ``import aiohttp`` failing, unless aiohttp is loaded already."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        blocked = "aiohttp" not in sys.modules
        if blocked:
            sys.modules["aiohttp"] = None  # type: ignore[assignment]
        try:
            self.inner.exec_module(module)
        finally:
            if blocked and sys.modules.get("aiohttp", False) is None:
                del sys.modules["aiohttp"]


class NatsWithoutWebsockets(importlib.abc.MetaPathFinder):
    """nats-py imports aiohttp, when installed, for a WebSocket transport that the bus
    never uses (knd's URLs are ``nats://``): 20 MB in each service that has no other use
    for aiohttp. Its transport module is loaded with that import failing, which nats-py
    handles (``aiohttp = None``); aiohttp itself stays importable by anyone else."""

    def find_spec(self, fullname: str, path: Any, target: Any = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "nats.aio.transport":
            return None
        sys.meta_path.remove(self)  # once, and so that the lookup below finds the real one
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _WithoutAiohttp(spec.loader)
        return spec


def install() -> None:
    """Before anything imports nats (services/__init__.py)."""
    if "nats.aio.transport" not in sys.modules and not any(
            isinstance(f, NatsWithoutWebsockets) for f in sys.meta_path):
        sys.meta_path.insert(0, NatsWithoutWebsockets())
