"""Importing one module of a package without running the package's ``__init__``.

Some libraries' ``__init__`` imports far more than knd uses: kubernetes-asyncio every
API group and ~700 model classes, the CEL binding an interactive shell (prompt_toolkit,
rich). Each knd service is a process of its own on every node, so that is memory paid
thousands of times. :func:`empty_package` registers such a package as an empty module
with its real ``__path__``; its submodules then import as usual, alone. The
:class:`LeanFinder` does the same at import time for packages whose ``__init__`` must
still run for code that asks for it (:data:`LEAN`).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Callable
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


class _Without:
    """Runs a module with ``import <name>`` failing for each of ``names`` not loaded
    already (the module handles that); the names stay importable by anyone else."""

    def __init__(self, inner: Any, *names: str) -> None:
        self.inner = inner
        self.names = names

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        blocked = [n for n in self.names if n not in sys.modules]
        for name in blocked:
            sys.modules[name] = None  # type: ignore[assignment]
        try:
            self.inner.exec_module(module)
        finally:
            for name in blocked:
                if sys.modules.get(name, False) is None:
                    del sys.modules[name]


class _NatsClient(_Without):
    """nats-py's client reads its own version with importlib.metadata (which loads
    zipfile, csv, email...: 0.7 MB) and falls back to 0.0.0 without it; the version it
    tells the server is read here from its installed distribution's name instead."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner, "importlib.metadata")

    def exec_module(self, module: types.ModuleType) -> None:
        super().exec_module(module)
        if module.__dict__.get("__version__") == "0.0.0" and module.__file__:
            site = Path(module.__file__).parents[2]
            found = sorted(site.glob("nats_py-*.dist-info"))
            if found:
                module.__dict__["__version__"] = found[-1].name[len("nats_py-"):-len(".dist-info")]


class _OnDemand:
    """Loads a package without running its ``__init__`` until a name that only the
    ``__init__`` defines is asked for (``from pkg import X``, ``pkg.X``); then it runs,
    into the same module. Its submodules import as usual, alone, meanwhile: a process
    that imports only those never pays for the rest, and code that wants the whole
    package still gets it. ``then``: submodules to import at once (what other code
    reads as attributes of the package)."""

    def __init__(self, inner: Any, then: tuple[str, ...] = ()) -> None:
        self.inner = inner
        self.then = then

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        inner = self.inner

        def __getattr__(name: str) -> Any:
            if name.startswith("__") and name != "__all__":
                raise AttributeError(name)
            # `from . import sub` asks the package for a submodule by attribute first
            if importlib.util.find_spec(f"{module.__name__}.{name}") is not None:
                return importlib.import_module(f"{module.__name__}.{name}")
            del module.__dict__["__getattr__"]  # once: the __init__ defines the rest
            inner.exec_module(module)
            try:
                return module.__dict__[name]
            except KeyError:
                raise AttributeError(f"module {module.__name__!r} has no attribute "
                                     f"{name!r}") from None

        module.__dict__["__getattr__"] = __getattr__
        for sub in self.then:
            importlib.import_module(f"{module.__name__}.{sub}")


LEAN: dict[str, Callable[[Any], Any]] = {
    # nats-py imports aiohttp, when installed, for a WebSocket transport that the bus
    # never uses (knd's URLs are nats://): 20 MB in each service with no other use for
    # it. Its transport module runs with that import failing, which nats-py handles.
    "nats.aio.transport": lambda inner: _Without(inner, "aiohttp"),
    "nats.aio.client": _NatsClient,
    # JetStream (client, key-value and object stores), which knd never uses; the core
    # client reads only header names from nats.js.api.
    "nats.js": lambda inner: _OnDemand(inner, then=("api",)),
    # every netlink family, IPDB, NDB (with sqlite), IPVS, nl80211...: knd uses rtnl.
    "pyroute2": _OnDemand,
    # the push gateway client, WSGI/ASGI servers and the 0.0.4 text format: knd serves
    # its registry itself (services.common.httpserver).
    "prometheus_client": _OnDemand,
}
"""Modules loaded leaner than their own code would: each is memory paid by every
service process on every node. Measured per process: JetStream 0.4 MB, pyroute2's
other families 4.4 MB, prometheus-client's exposition 1.3 MB, importlib.metadata 0.7 MB."""


class LeanFinder:
    """Finds the modules in :data:`LEAN` as Python would and wraps their loaders."""

    def find_spec(self, fullname: str, path: Any, target: Any = None
                  ) -> importlib.machinery.ModuleSpec | None:
        wrap = LEAN.get(fullname)
        if wrap is None:
            return None
        for finder in sys.meta_path:  # the next finder that knows it, not this one
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = wrap(spec.loader)
                return spec
        return None


class TlsOff(RuntimeError):
    """TLS was asked for in a process that started without it (:func:`without_tls`)."""


class _Refused:
    """A name of the ``ssl`` stand-in: there to be referred to, refused when used."""

    def __init__(self, text: str) -> None:
        self._text = text

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TlsOff(self._text)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # typing and inspect probe for these
            raise AttributeError(name)
        raise TlsOff(self._text)

    def __repr__(self) -> str:
        return f"<{self._text}>"


def _tls_stand_in(why: str) -> types.ModuleType:
    """An ``ssl`` module for a process without TLS: the names other modules read when
    they load (asyncio's sslproto, anyio's TLS stream, nats-py) are there; making a
    context, or reading any other name, raises :class:`TlsOff` saying why."""
    mod = types.ModuleType("ssl", f"no TLS in this process: {why}")

    def refuse(*_: Any, **__: Any) -> Any:
        raise TlsOff(f"TLS is off in this process: {why}")

    class SSLError(OSError):
        """Never raised: nothing here speaks TLS."""

    class SSLContext:
        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            refuse()

    mod.__dict__.update(
        SSLError=SSLError, SSLContext=SSLContext, SSLObject=SSLContext, SSLSocket=SSLContext,
        MemoryBIO=SSLContext, create_default_context=refuse,
        _create_default_https_context=refuse, HAS_SNI=False)

    def __getattr__(name: str) -> Any:
        # other names are read when modules load, as defaults and annotations
        # (prometheus-client's TLS helpers): a stand-in that refuses to be used
        if name.startswith("__"):
            raise AttributeError(name)
        if name.endswith("Error"):  # SSLWantReadError...: one class, for except clauses
            mod.__dict__[name] = type(name, (SSLError,), {})
            return mod.__dict__[name]
        return _Refused(f"ssl.{name}: TLS is off in this process: {why}")

    mod.__dict__["__getattr__"] = __getattr__
    return mod


def without_tls(why: str) -> bool:
    """Starts this process without OpenSSL when nothing it talks to needs TLS (``why``
    says so in every error): ``import ssl`` gets a stand-in and hashlib and hmac their
    built-in digests. libssl and libcrypto cost each service 4.4 MB (3.2 MB of mapped
    library, 1.2 MB of OpenSSL's own tables), measured. False, and nothing changes,
    when OpenSSL is loaded already."""
    if any(sys.modules.get(name) is not None for name in ("_ssl", "_hashlib", "ssl")):
        return False
    sys.modules["_ssl"] = None  # type: ignore[assignment]
    sys.modules["_hashlib"] = None  # type: ignore[assignment]
    sys.modules["ssl"] = _tls_stand_in(why)
    return True


def install() -> None:
    """Before anything imports nats, pyroute2 or prometheus-client (services/__init__.py);
    a module already loaded stays as it is."""
    if not any(isinstance(f, LeanFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, LeanFinder())
