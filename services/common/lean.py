"""Importing one module of a package without running the package's ``__init__``.

Some libraries' ``__init__`` imports far more than knd uses: kubernetes-asyncio every
API group and ~700 model classes, the CEL binding an interactive shell (prompt_toolkit,
rich). Each knd service is a process of its own on every node, so that is memory paid
thousands of times. :func:`empty_package` registers such a package as an empty module
with its real ``__path__``; its submodules then import as usual, alone.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path


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
