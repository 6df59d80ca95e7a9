"""Each service's HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz``.

The server runs in a thread of its own (the stdlib ``http.server``), so a scrape
never waits on the event loop and a loop that is stuck cannot hide it:

- ``/metrics``: the Prometheus exposition of the process's default registry, in
  OpenMetrics when the scraper accepts it (Prometheus does), else in the text
  format, whose writer is loaded on the first such scrape (1.3 MB a process).
- ``/healthz`` (liveness): the event loop answers. A task of the service beats a
  heartbeat every second; a heartbeat older than ``stale_after`` (10 s) is 503.
- ``/readyz`` (readiness): the bus is connected and the service's own checks pass
  (discovery has a snapshot, the publisher synced once, the plumber reconciled, the
  gateway's sockets listen). A check that is declared but not registered yet
  counts as failing, so a service is not ready until its wiring says so.

Both health answers are JSON: ``{"service": ..., "ready": ..., "checks": {...}}``.
``--metrics-address off`` serves nothing; an address already in use is logged and
the service runs on without its endpoint (a scrape port must not take a node's
network driver down).
"""

from __future__ import annotations

import asyncio
import json
import logging
import selectors
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio

# the default collectors (process, platform, gc), which the package's __init__ would add;
# `import a.b`, not `from a import b`, which would run that __init__ (services.common.lean)
import prometheus_client.gc_collector
import prometheus_client.openmetrics.exposition as openmetrics
import prometheus_client.platform_collector
import prometheus_client.process_collector  # noqa: F401
from prometheus_client.registry import REGISTRY, Collector

from services.common.address import format_address, parse_address

log = logging.getLogger("knd.http")

STALE_AFTER = 10.0
"""Seconds without a heartbeat after which ``/healthz`` fails."""
BEAT_EVERY = 1.0


class Health:
    """Liveness (a heartbeat) and readiness (named checks) of one service.

    ``requires`` names the checks that must exist and pass; checks are callables
    read from the HTTP thread, so they should only read state (no I/O, no locks).
    """

    def __init__(self, service: str, requires: Iterable[str] = ("bus",), *,
                 stale_after: float = STALE_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        self.stale_after = stale_after
        self.clock = clock
        self.started = clock()
        self.beat = clock()
        self._checks: dict[str, Callable[[], bool] | None] = dict.fromkeys(requires)
        self._reasons: dict[str, str] = {}
        self._info: dict[str, Callable[[], Any]] = {}

    def check(self, name: str, fn: Callable[[], bool], reason: str = "") -> None:
        """Register (or replace) a readiness check; ``reason`` is shown under ``reasons``
        while it fails, for a check a person has to act on (grant a capability...)."""
        self._checks[name] = fn
        self._reasons.pop(name, None)
        if reason:
            self._reasons[name] = reason

    def info(self, name: str, fn: Callable[[], Any]) -> None:
        """Something shown in ``/readyz`` that does not decide readiness."""
        self._info[name] = fn

    def start_heartbeat(self, every: float = BEAT_EVERY) -> Callable[[], None]:
        """Beat from the running event loop every ``every`` seconds (a loop callback, so a
        loop that is blocked stops beating); returns the function that stops it."""
        loop = asyncio.get_running_loop()
        handle: list[asyncio.TimerHandle] = []

        def beat() -> None:
            self.beat = self.clock()
            handle[:] = [loop.call_later(every, beat)]

        beat()
        return lambda: handle[0].cancel()

    def live(self) -> tuple[bool, dict]:
        age = max(0.0, self.clock() - self.beat)
        ok = age <= self.stale_after
        return ok, {"service": self.service, "live": ok, "heartbeat_age_s": round(age, 3),
                    "uptime_s": round(self.clock() - self.started, 3)}

    def ready(self) -> tuple[bool, dict]:
        checks: dict[str, bool] = {}
        errors: dict[str, str] = {}
        for name, fn in list(self._checks.items()):
            if fn is None:
                checks[name] = False
                continue
            try:
                checks[name] = bool(fn())
            except Exception as exc:  # a check must never break the endpoint
                checks[name], errors[name] = False, repr(exc)
        live, _ = self.live()
        ok = live and all(checks.values())
        body: dict[str, Any] = {"service": self.service, "ready": ok, "live": live,
                                "checks": checks}
        if errors:
            body["errors"] = errors
        reasons = {k: v for k, v in self._reasons.items() if not checks.get(k, True)}
        if reasons:
            body["reasons"] = reasons
        info = {}
        for name, fn in list(self._info.items()):
            try:
                info[name] = fn()
            except Exception as exc:
                info[name] = repr(exc)
        if info:
            body["info"] = info
        return ok, body


OWN_METRICS = {
    "discovery": ("knd_discovery_",),
    "publisher": ("knd_publisher_",),
    "plumber": ("knd_plumber_",),
    "kubelet-gateway": ("knd_gateway_", "knd_nri_"),
}
"""Each service's metric name prefixes. ``knd`` imports every service's module (to
build its command line), so every process registers every service's metrics; an
endpoint shows only its own service's and the shared ones (``knd_bus_``, process)."""


class _OwnMetrics:
    """The default registry without the other services' metric families."""

    def __init__(self, service: str) -> None:
        self.foreign = tuple(p for name, prefixes in OWN_METRICS.items() if name != service
                             for p in prefixes)

    def collect(self) -> Iterator[Any]:
        for family in REGISTRY.collect():
            if not family.name.startswith(self.foreign):
                yield family


def exposition(registry: Collector, accept: str) -> tuple[str, bytes]:
    """(content type, body) of ``registry`` in the format ``accept`` prefers."""
    if "application/openmetrics-text" in accept:
        return openmetrics.CONTENT_TYPE_LATEST, openmetrics.generate_latest(registry)
    import prometheus_client.exposition as text

    return text.CONTENT_TYPE_LATEST, text.generate_latest(registry)


def _handler(health: Health) -> type[BaseHTTPRequestHandler]:
    registry = _OwnMetrics(health.service)

    class Handler(BaseHTTPRequestHandler):
        server_version = "knd"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, *exposition(registry, self.headers.get("Accept", "")))
            elif path in ("/healthz", "/livez"):
                ok, body = health.live()
                self._json(ok, body)
            elif path == "/readyz":
                ok, body = health.ready()
                self._json(ok, body)
            elif path == "/":
                self._send(200, "text/plain; charset=utf-8",
                           b"knd " + health.service.encode() + b": /metrics /healthz /readyz\n")
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")

        def _json(self, ok: bool, body: dict) -> None:
            self._send(200 if ok else 503, "application/json",
                       json.dumps(body, sort_keys=True).encode() + b"\n")

        def _send(self, code: int, ctype: str, data: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
            log.debug("%s %s", self.address_string(), format % args)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class Endpoint:
    """A running HTTP endpoint (its own thread)."""

    def __init__(self, host: str, port: int, health: Health) -> None:
        cls = _Server6 if ":" in host else _Server
        self.server = cls((host, port), _handler(health))
        self.host = host
        self.port = self.server.server_address[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self.thread = threading.Thread(target=self._serve, name=f"knd-http-{health.service}",
                                       daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        """Requests until :meth:`close`. Not ``serve_forever``: it wakes every
        ``poll_interval`` to look for a shutdown, which is most of an idle service's CPU;
        this thread sleeps until a request comes or :meth:`close` wakes it."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.server, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r:
                        return
                    self.server.handle_request()  # ready: accepts without waiting

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    def close(self) -> None:
        self._wake_w.send(b"x")
        self.thread.join()
        self.server.server_close()
        self._wake_r.close()
        self._wake_w.close()


@asynccontextmanager
async def serving(address: str | None, health: Health) -> AsyncIterator[Endpoint | None]:
    """Serve ``health`` and the metrics on ``address`` (None/"off": nothing) while the body
    runs, and beat the heartbeat. Yields the endpoint, or None when none is served."""
    endpoint: Endpoint | None = None
    try:
        where = parse_address(address)
    except ValueError as exc:
        log.error("--metrics-address %s; serving no metrics", exc)
        where = None
    if where is not None:
        try:
            endpoint = Endpoint(where[0], where[1], health)
            log.info("%s: metrics and health on http://%s", health.service, endpoint.address)
        except OSError as exc:
            log.error("%s: cannot serve metrics on %s: %s; running without them",
                      health.service, address, exc)
    stop_beating = health.start_heartbeat()
    try:
        yield endpoint
    finally:
        stop_beating()
        if endpoint is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(endpoint.close)
